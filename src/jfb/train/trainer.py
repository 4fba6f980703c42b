"""The training loop: MSE between ``model(y)`` and ``x``, Adam/AdamW, warm-up + cosine schedule,
clipping, validation, checkpoints, exact resume, DDP, signals and divergence guards.

The trainer never builds a model or a dataset: it takes a model (any ``nn.Module`` mapping a
measurement batch ``y`` to ``x_hat``, optionally exposing ``last_stats`` with per-sample
``iterations``/``converged``, ``pretrain_forward(y)`` and ``feedforward(v)``), a training set
and a validation set of
``(x, y)`` pairs (the validation set with fixed noise).

Reproducibility. The order of the training data is a function of ``(seed, epoch)`` alone
(:func:`epoch_permutation`), and every training item is read with the global RNGs (python,
numpy, torch CPU) seeded from ``(seed, epoch, position in the epoch)`` and restored afterwards
(:class:`SeededItems`). Random noise and crops drawn by the dataset from the global RNGs are
therefore the same whether the run was interrupted and resumed, how many DataLoader workers read
the data, and how many DDP processes share each batch. (Randomness a dataset keeps in its own
generator objects is outside this guarantee; a dataset with a ``set_epoch(epoch)`` method, or
wrapping one, is told the epoch before it is read.) The global RNG states are also saved in
checkpoints and restored on resume, for randomness inside the model (dropout, ...); under DDP
each rank's global RNG is instead seeded from ``(seed, step, rank)`` at start and on resume.
Bitwise equality of a resumed run with an uninterrupted one also needs the same device and
number of intra-op threads (float reductions depend on them).

Steps. Global step ``g`` counts batches consumed, pre-training steps first: steps ``[0, P)``
pre-train (P = ``pretrain_steps``, when the model has the method) ``pretrain_forward(y)``
fitted to x (``pretrain="deblur"``), or ``feedforward(x + sigma n)`` fitted to x, a blind
denoiser (``pretrain="denoise"``); steps ``[P, P + steps)`` train ``model``. Pre-training uses
the peak learning rate after ``warmup_steps`` (capped at P), then logs one feedforward
validation (``pretrain_val``) and clears the optimizer's moments; the main phase has its own
warm-up and cosine/constant schedule.
Divergence. A step is *bad* when its loss or gradient is NaN/Inf, or when the solve of an
implicit model (``model.last_stats``) diverged: a final relative residual NaN/Inf or above
``diverge_residual``, or more than a fraction ``diverge_unconverged`` of the batch stopped at the
iteration cap. A bad step makes no update but still consumes its batch and its learning-rate
step; checkpoints are not written during a streak of bad steps. A diverged solve, or
``max_bad_steps`` bad steps in a row, *rolls back*: model, optimiser, scheduler, global RNG
states and the data position return to the last good state (an in-memory copy of what was last
written to ``last.safetensors`` at a validation point, or of the state ``fit`` started from; one
copy per checkpoint, never per step), the learning rate is multiplied by ``rollback_lr_factor``
(for the rest of the run), ``last.safetensors`` is rewritten with that factor, and training goes
on from there; the log gets an ``event`` saying what was detected, at which step, and the new
learning rate. When ``max_rollbacks`` rollbacks are used up (at once if it is 0), the next
trigger raises :class:`TrainingDivergedError` naming the cause and the kept checkpoint.

Stability logs. Every ``log_every`` steps the ``train`` record of an implicit model (one with
``contraction(x*, y)``) holds ``contraction`` / ``contraction_max``: ||J_T(x*)||_2 of the first
``CONTRACTION_SAMPLES`` samples of the batch, by ``CONTRACTION_ITERS`` power iterations at the
detached fixed point, before the update (``log_contraction``). ``jacobian_penalty`` = gamma > 0
adds gamma * mean_i ||J_T(x*_i)||_F^2 / d (Hutchinson, one probe;
``model.jacobian_frobenius``) to the loss; its mean over the window is logged as ``jacobian``.
Both draw from generators seeded by (seed, step), never from the global RNGs.

Signals. SIGINT/SIGTERM finish the current step, write ``last.safetensors`` and make ``fit``
return with ``summary["stopped"] == "signal"`` (a second SIGINT interrupts at once).
``train.max_minutes`` does the same once ``fit`` has run that long (``"time_limit"``): a run
that must fit a job's time limit stops where ``--resume`` continues it exactly.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import signal
import statistics
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from jfb.config import Config
from jfb.device import amp_dtype, device_name, resolve_device, synchronize, use_channels_last
from jfb.errors import CheckpointError, ConfigError, DataError, SolverError
from jfb.metrics import psnr
from jfb.train.checkpoint import (
    atomic_write_bytes,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    unwrap_model,
)
from jfb.train.distributed import (
    all_reduce_sum,
    barrier,
    get_dist_info,
    rank_slice,
    wrap_ddp,
)
from jfb.train.log import MetricLogger, Progress

__all__ = [
    "SeededItems",
    "Trainer",
    "TrainingDivergedError",
    "amp_dtype",
    "epoch_permutation",
    "lr_factor",
    "mix_seed",
    "solver_divergence",
    "use_channels_last",
]

LAST = "last.safetensors"
BEST = "best.safetensors"
#: The logged contraction factor: this many samples of the batch, this many power iterations.
CONTRACTION_SAMPLES, CONTRACTION_ITERS = 2, 5
_MASK64 = (1 << 64) - 1
# Salts of the generators of the stability diagnostics (kept apart from every other stream).
_SALT_CONTRACTION, _SALT_JACOBIAN = 0xC0417, 0x7AC0B
# ... and of the noise of denoising pre-training (training steps; validation).
_SALT_PRETRAIN, _SALT_PRETRAIN_VAL = 0xDE015E, 0xDE0FA1


class TrainingDivergedError(SolverError):
    """Training diverged beyond repair: ``max_bad_steps`` bad steps in a row or a diverged solve,
    with no rollback left (``max_rollbacks``)."""


# ---------------------------------------------------------------------- pure helpers
def mix_seed(*values: int) -> int:
    """A well-mixed 63-bit seed from integers (splitmix64 chain); stable across runs/platforms."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & _MASK64)) & _MASK64
        h = (h + 0x9E3779B97F4A7C15) & _MASK64
        z = h
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        h = z ^ (z >> 31)
    return h & ((1 << 63) - 1)


def epoch_permutation(n: int, seed: int, epoch: int) -> list[int]:
    """The order of the ``n`` training items in ``epoch``: a permutation seeded by (seed, epoch)."""
    g = torch.Generator().manual_seed(mix_seed(seed, epoch, 0x5A3D))
    return torch.randperm(n, generator=g).tolist()


def lr_factor(step: int, *, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at 0-based ``step`` of ``total``.

    Linear warm-up ``(step + 1) / warmup`` for ``step < warmup``; then 1 (``"constant"``) or
    ``0.5 (1 + cos(pi t))`` with ``t = (step - warmup) / (total - warmup)`` (``"cosine"``).
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise ConfigError(f"train.schedule: unknown schedule {schedule!r}")
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(max(t, 0.0), 1.0)))


def solver_divergence(
    stats: Any, *, max_residual: float | None, max_unconverged: float | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Did a batched solve diverge? From ``stats`` (``SolverStats`` or any object with
    per-sample ``residual`` / ``converged``; a missing field is not checked).

    Returns 0-d float tensors on the stats' device (no host sync): ``blown`` = 1 when some
    sample's final relative residual is NaN/Inf or > ``max_residual``, ``capped`` = 1 when the
    fraction f of samples that did not converge is > ``max_unconverged``; and the worst residual
    (NaN/Inf -> inf) and f, for the message. A threshold of None switches its test off.
    """
    residual = getattr(stats, "residual", None)
    converged = getattr(stats, "converged", None)
    like = residual if residual is not None else converged
    zero = torch.zeros((), device=like.device if like is not None else None)
    worst, frac = zero, zero
    if residual is not None and residual.numel():
        worst = residual.detach().float().nan_to_num(nan=math.inf).max()
    if converged is not None and converged.numel():
        frac = (~converged.detach().bool()).float().mean()
    blown = (worst > max_residual).float() if max_residual is not None else zero
    capped = (frac > max_unconverged).float() if max_unconverged is not None else zero
    return blown, capped, worst, frac


def _step_problem(
    bad_loss: bool, bad_grad: bool, blown: bool, capped: bool, worst: float, unconverged: float,
    tc: Any,
) -> str | None:
    """What is wrong with a step, in words (None: nothing); a diverged solve is named first."""
    if blown:
        return (
            f"solver residual blow-up (max relative residual {worst:.3g} > "
            f"train.diverge_residual={tc.diverge_residual:g})"
        )
    if capped:
        return (
            f"solver stopped at its iteration cap for {100 * unconverged:.0f}% of the batch "
            f"(> train.diverge_unconverged={tc.diverge_unconverged:g})"
        )
    if bad_loss:
        return "non-finite loss"
    if bad_grad:
        return "non-finite gradient"
    return None


def _cpu_copy(obj: Any) -> Any:
    """A deep copy of nested dicts/lists with every tensor cloned to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_cpu_copy(v) for v in obj)
    return copy.deepcopy(obj)


def _seed_global(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))  # noqa: NPY002 - datasets may draw from the legacy RNG
    torch.default_generator.manual_seed(seed)


@contextlib.contextmanager
def _seeded_global_rng(seed: int) -> Iterator[None]:
    """Seed python/numpy/torch-CPU global RNGs for the block, then restore their states."""
    py = random.getstate()
    npy = np.random.get_state()  # noqa: NPY002
    th = torch.get_rng_state()
    try:
        _seed_global(seed)
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)  # noqa: NPY002
        torch.set_rng_state(th)


class SeededItems(Dataset):
    """Dataset view whose items are ``(index, seed)`` pairs: ``dataset[index]`` is read with the
    global RNGs seeded by ``seed`` (and restored after), so its random draws are a function of
    the seed, not of the process, worker or history that reads it."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with _seeded_global_rng(seed):
            return self.dataset[index]


def _set_epoch(dataset: Any, epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on the dataset and the datasets it wraps, where defined."""
    seen: set[int] = set()
    stack = [dataset]
    while stack:
        d = stack.pop()
        if d is None or id(d) in seen:
            continue
        seen.add(id(d))
        if callable(getattr(d, "set_epoch", None)):
            d.set_epoch(epoch)
        for attr in ("dataset", "clean", "base"):
            inner = getattr(d, attr, None)
            if isinstance(inner, Dataset):
                stack.append(inner)


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _worker_init(worker_id: int) -> None:
    """DataLoader workers ignore SIGINT/SIGTERM: a Ctrl-C sent to the whole process group must
    reach only the main process, which finishes its step and shuts the workers down itself.
    Workers are forked with these signals blocked (:func:`_start`), so one that arrived while the
    worker started stays pending until here, where it is discarded."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


def _start(loader: DataLoader) -> Iterator[Any]:
    """``iter(loader)``, forking its workers with SIGINT/SIGTERM blocked.

    Without this a stop signal sent to the process group while a worker starts (every epoch)
    reaches the worker before ``_worker_init`` makes it ignore the signal, kills it, and crashes
    the main process instead of letting it checkpoint. The main process gets any signal that
    arrived meanwhile when the mask is restored.
    """
    if loader.num_workers == 0 or not hasattr(signal, "pthread_sigmask"):
        return iter(loader)
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        return iter(loader)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _collate(batch: list[Any]) -> Any:
    try:
        from jfb.data.datasets import collate_images
    except ImportError:  # pragma: no cover
        return torch.utils.data.default_collate(batch)
    return collate_images(batch)


def _first(dataset: Dataset, n: int | None) -> Dataset:
    if n is None or n >= len(dataset):  # type: ignore[arg-type]
        return dataset
    return Subset(dataset, range(n))


# ---------------------------------------------------------------------- the trainer
class Trainer:
    """Train ``model`` on ``train_set`` and validate on ``val_set`` as ``config`` says.

    ``out_dir`` (default ``config.train.out_dir``) receives ``metrics.jsonl``, ``train.csv``,
    ``val.csv``, ``config.json``, ``last.safetensors`` (resumable) and ``best.safetensors``
    (best validation PSNR, weights only). ``device`` defaults to ``config.train.device``.
    ``progress``: True (stderr), False, or a text stream. Under an initialised process group
    (``jfb.train.distributed.init_distributed``) the model is wrapped in DDP, ``batch_size`` is
    per process, and only rank 0 logs and writes files.
    """

    def __init__(
        self,
        model: nn.Module,
        train_set: Dataset,
        val_set: Dataset | None,
        config: Config | dict[str, Any],
        *,
        out_dir: str | Path | None = None,
        device: str | torch.device | None = None,
        progress: bool | TextIO = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.config = config if isinstance(config, Config) else Config.from_dict(config)
        tc, dc = self.config.train, self.config.data
        self.dist = get_dist_info()
        self.device = resolve_device(device if device is not None else tc.device, self.dist)
        self.out_dir = Path(out_dir if out_dir is not None else tc.out_dir)
        self.notes: list[str] = []

        self.train_set = _first(train_set, dc.max_train_images)
        self.val_set = None if val_set is None else _first(val_set, dc.max_val_images)
        self.batch_size = dc.batch_size
        self.global_batch = dc.batch_size * self.dist.world_size
        n_train = len(self.train_set)  # type: ignore[arg-type]
        if n_train < self.global_batch:
            raise DataError(
                f"the training set has {n_train} items, fewer than one batch of "
                f"{self.global_batch} (data.batch_size={dc.batch_size} x "
                f"{self.dist.world_size} processes)"
            )
        self.batches_per_epoch = n_train // self.global_batch
        if self.val_set is not None and len(self.val_set) == 0:  # type: ignore[arg-type]
            raise DataError("the validation set is empty")

        # model, memory format, autocast, compile, DDP
        self.model = unwrap_model(model).to(self.device)
        self.channels_last = use_channels_last(self.device, tc.channels_last)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        elif tc.channels_last:
            self.notes.append("train.channels_last ignored: it applies on CUDA only")
        self.amp = amp_dtype(self.device, tc.amp)
        if tc.amp != "none" and self.amp is None:
            self.notes.append(f"train.amp={tc.amp!r} ignored: bf16 autocast is used on CUDA only")
        self.ddp = wrap_ddp(self.model, self.device)
        self.forward_module: nn.Module = self.ddp
        if tc.compile:
            self.forward_module = torch.compile(self.ddp)

        self.can_pretrain = _can_pretrain(self.model, tc.pretrain)
        self.pretrain_steps = tc.pretrain_steps if self.can_pretrain else 0
        if tc.pretrain_steps and not self.can_pretrain:
            method = "pretrain_forward(y)" if tc.pretrain == "deblur" else "feedforward(v)"
            self.notes.append(
                f"model {type(self.model).__name__} has no {method}: "
                f"skipping {tc.pretrain_steps} pre-training steps"
            )
        self.total_steps = self.pretrain_steps + tc.steps
        self.implicit = callable(getattr(self.model, "contraction", None))
        self.jacobian_on = tc.jacobian_penalty > 0 and callable(
            getattr(self.model, "jacobian_frobenius", None)
        )
        if tc.jacobian_penalty > 0 and not self.jacobian_on:
            self.notes.append(
                f"train.jacobian_penalty ignored: {type(self.model).__name__} is not an "
                "implicit model (no jacobian_frobenius)"
            )

        self.rollbacks = 0
        self.lr_scale = 1.0  # product of rollback_lr_factor over the rollbacks so far
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters")
        self.params = params
        opt_cls = torch.optim.AdamW if tc.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(params, lr=tc.lr, weight_decay=tc.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_lambda)

        is_main = self.dist.is_main
        self.logger = MetricLogger(self.out_dir, tensorboard=tc.tensorboard, enabled=is_main)
        if self.logger.warning:
            self.notes.append(self.logger.warning)
        stream = progress if not isinstance(progress, bool) else None
        self.progress = Progress(
            self.total_steps,
            stream=stream,
            every=tc.log_every,
            enabled=is_main and progress is not False,
        )

        self.step = 0  # global steps done
        self.best_val_psnr = -math.inf
        self.best_step: int | None = None
        self.last_val: dict[str, float] | None = None
        self.bad_streak = 0
        self.skipped_steps = 0
        self._snapshot: dict[str, Any] | None = None  # the rollback target
        self._stop_signal: int | None = None
        self._seconds_before = 0.0  # training time of the runs this one resumes
        self._fit_start: float | None = None

    # ------------------------------------------------------------------ schedule
    def _lr_lambda(self, g: int) -> float:
        """lr(g) / peak lr: the schedule times ``lr_scale`` (the rollbacks' reductions)."""
        tc = self.config.train
        p = self.pretrain_steps
        if g < p:  # pre-training: warm-up then constant
            f = lr_factor(g, total=p, warmup=min(tc.warmup_steps, p), schedule="constant")
        else:
            f = lr_factor(g - p, total=tc.steps, warmup=tc.warmup_steps, schedule=tc.schedule)
        return self.lr_scale * f

    # ------------------------------------------------------------------ data
    def _global_indices(self, epoch: int, b: int) -> tuple[list[int], list[int]]:
        perm = epoch_permutation(len(self.train_set), self.config.train.seed, epoch)
        start = b * self.global_batch
        positions = list(range(start, start + self.global_batch))
        return [perm[i] for i in positions], positions

    def _train_batches(self, start: int) -> Iterator[Any]:
        """Batches of this rank from global step ``start`` on, forever."""
        tc, dc = self.config.train, self.config.data
        items = SeededItems(self.train_set)
        step = start
        n = len(self.train_set)  # type: ignore[arg-type]
        while True:
            epoch, offset = divmod(step, self.batches_per_epoch)
            perm = epoch_permutation(n, tc.seed, epoch)
            keys = []
            for b in range(offset, self.batches_per_epoch):
                pos = range(b * self.global_batch, (b + 1) * self.global_batch)
                glob = [(perm[i], mix_seed(tc.seed, epoch, i)) for i in pos]
                keys.append(rank_slice(glob, self.dist.rank, self.dist.world_size))
            _set_epoch(self.train_set, epoch)
            loader = DataLoader(
                items,
                batch_sampler=keys,
                num_workers=dc.num_workers,
                collate_fn=_collate,
                pin_memory=self.device.type == "cuda",
                worker_init_fn=_worker_init if dc.num_workers > 0 else None,
                generator=torch.Generator().manual_seed(mix_seed(tc.seed, epoch, offset)),
            )
            for batch in _start(loader):
                yield batch
                step += 1

    def _val_loader(self) -> DataLoader:
        assert self.val_set is not None
        n = len(self.val_set)  # type: ignore[arg-type]
        shard = Subset(self.val_set, range(self.dist.rank, n, self.dist.world_size))
        workers = self.config.data.num_workers
        return DataLoader(
            shard,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_worker_init if workers > 0 else None,
        )

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to(self.device, non_blocking=True)
        if self.channels_last and t.dim() == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    # ------------------------------------------------------------------ one step
    def _step_generator(self, salt: int) -> torch.Generator:
        """A CPU generator seeded by (seed, step, salt): a step's side randomness (diagnostics,
        pre-training noise) never touches the global RNGs."""
        return torch.Generator().manual_seed(mix_seed(self.config.train.seed, self.step, salt))

    def _is_log_step(self, g: int) -> bool:
        return g % self.config.train.log_every == 0 or g == self.total_steps

    def _contraction(self, x_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """||J_T(x*)||_2 of the first CONTRACTION_SAMPLES samples (detached; no gradient)."""
        k = CONTRACTION_SAMPLES
        return self.model.contraction(
            x_hat.detach()[:k].to(y.dtype),
            y[:k],
            n_iter=CONTRACTION_ITERS,
            generator=self._step_generator(_SALT_CONTRACTION),
        )

    def _pretrain_output(self, x: torch.Tensor, y: torch.Tensor, *,
                         val_batch: int | None = None) -> torch.Tensor:
        """What pre-training fits to x: ``pretrain_forward(y)`` (``pretrain="deblur"``), or
        ``feedforward(x + sigma * n)`` (``"denoise"``) with sigma ~ U[0, pretrain_noise] per
        sample in training and pretrain_noise / 2 in validation (batch ``val_batch`` of this
        rank's shard). The noise of a training step is drawn for the whole global batch from
        (seed, step) and sliced by rank, so it does not depend on the number of processes;
        validation noise is the same at every validation."""
        tc = self.config.train
        if tc.pretrain == "deblur":
            return self.model.pretrain_forward(y)
        if val_batch is not None:
            g = torch.Generator().manual_seed(
                mix_seed(tc.seed, _SALT_PRETRAIN_VAL, self.dist.rank, val_batch)
            )
            noise = torch.randn(x.shape, generator=g, dtype=torch.float32)
            sigma = torch.full((x.shape[0],), tc.pretrain_noise / 2)
        else:
            g = self._step_generator(_SALT_PRETRAIN)
            n, world = x.shape[0], self.dist.world_size
            full = (n * world, *x.shape[1:])
            mine = slice(self.dist.rank * n, (self.dist.rank + 1) * n)
            noise = torch.randn(full, generator=g, dtype=torch.float32)[mine]
            sigma = (torch.rand(n * world, generator=g) * tc.pretrain_noise)[mine]
        noise = noise.mul_(sigma.view(-1, 1, 1, 1)).to(device=x.device, dtype=x.dtype)
        return self.model.feedforward(x + noise)

    def _train_step(self, x: torch.Tensor, y: torch.Tensor, pretrain: bool) -> dict[str, Any]:
        tc = self.config.train
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            x_hat = self._pretrain_output(x, y) if pretrain else self.forward_module(y)
        stats = None if pretrain else getattr(self.model, "last_stats", None)
        blown, capped, worst, unconv = solver_divergence(
            stats, max_residual=tc.diverge_residual, max_unconverged=tc.diverge_unconverged
        )
        loss = F.mse_loss(x_hat.float(), x.float())
        total = loss
        jac = None
        if self.jacobian_on and not pretrain:
            jac = self.model.jacobian_frobenius(
                x_hat.detach(), y, generator=self._step_generator(_SALT_JACOBIAN)
            ).mean()
            total = loss + tc.jacobian_penalty * jac
        total.backward()
        contraction = None
        if not pretrain and tc.log_contraction and self.implicit and self._is_log_step(
            self.step + 1
        ):  # at the map whose fixed point x_hat is: before the update
            contraction = self._contraction(x_hat, y)
        if pretrain and self.dist.distributed:  # pre-training bypasses DDP's gradient hooks
            for p in self.params:
                if p.grad is not None:
                    all_reduce_sum(p.grad).div_(self.dist.world_size)
        grads = [p.grad for p in self.params if p.grad is not None]
        if tc.grad_clip is not None:
            gnorm = torch.nn.utils.clip_grad_norm_(self.params, tc.grad_clip)
        elif grads:
            gnorm = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads])
            )
        else:
            gnorm = torch.zeros((), device=self.device)
        dev = loss.device
        timed_out = self._out_of_time()
        flags = torch.stack(
            [
                (~torch.isfinite(total.detach())).float(),
                (~torch.isfinite(gnorm.detach().float())).float(),
                torch.tensor(float(self._stop_signal is not None or timed_out), device=dev),
                blown.to(dev),
                capped.to(dev),
                worst.to(dev),
                unconv.to(dev),
            ]
        )
        if self.dist.distributed:  # every rank takes the same decisions
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        values = flags.tolist()
        bad_loss, bad_grad, stop, is_blown, is_capped = (bool(v) for v in values[:5])
        lr = self.optimizer.param_groups[0]["lr"]
        problem = _step_problem(
            bad_loss, bad_grad, is_blown, is_capped, values[5], values[6], tc
        )
        if problem is None:
            self.optimizer.step()
        with warnings.catch_warnings():  # skipped first step: "scheduler.step() before optimizer"
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()
        out: dict[str, Any] = {
            "loss": loss.detach(),
            "grad_norm": gnorm.detach(),
            "lr": lr,
            "bad": problem is not None,
            "problem": problem,
            "solver_diverged": is_blown or is_capped,
            "stop": stop,
            "timed_out": timed_out,
            "n": x.shape[0],
        }
        if contraction is not None:
            out["contraction"] = contraction
        if jac is not None:
            out["jacobian"] = jac.detach()
        with torch.no_grad():
            out["psnr_sum"] = psnr(x_hat.detach().float().clamp(0, 1), x.float()).sum()
        if stats is not None and getattr(stats, "iterations", None) is not None:
            out["iters_sum"] = stats.iterations.detach().float().sum()
            conv = getattr(stats, "converged", None)
            out["conv_sum"] = conv.detach().float().sum() if conv is not None else None
        return out

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self, *, pretrain: bool = False) -> dict[str, float] | None:
        """Mean PSNR (clamped to [0, 1]), solver iterations and converged fraction on the
        validation set (sharded over ranks); None without a validation set. The global RNG
        states are left as they were (validation never shifts the training randomness)."""
        if self.val_set is None:
            return None
        t0 = time.perf_counter()
        was_training = self.model.training
        self.model.eval()
        acc = torch.zeros(5, dtype=torch.float64, device=self.device)
        cuda_devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=cuda_devices):
                for i, (x, y) in enumerate(_start(self._val_loader())):
                    x, y = self._to_device(x), self._to_device(y)
                    with self._autocast():
                        x_hat = (
                            self._pretrain_output(x, y, val_batch=i) if pretrain else self.model(y)
                        )
                    p = psnr(x_hat.float().clamp(0, 1), x.float())
                    acc[0] += p.sum().double()
                    acc[1] += p.numel()
                    stats = None if pretrain else getattr(self.model, "last_stats", None)
                    if stats is not None and getattr(stats, "iterations", None) is not None:
                        acc[2] += stats.iterations.double().sum()
                        acc[3] += stats.iterations.numel()
                        conv = getattr(stats, "converged", None)
                        if conv is not None:
                            acc[4] += conv.double().sum()
        finally:
            self.model.train(was_training)
        all_reduce_sum(acc)
        s, n, it, nit, conv = acc.tolist()
        out = {"psnr": s / max(n, 1), "n": int(n), "seconds": time.perf_counter() - t0}
        if nit > 0:
            out["iters"] = it / nit
            out["converged"] = conv / nit
        return out

    # ------------------------------------------------------------------ checkpoints
    def _extra(self) -> dict[str, Any]:
        return {
            "best_val_psnr": self.best_val_psnr if math.isfinite(self.best_val_psnr) else None,
            "best_step": self.best_step,
            "last_val": self.last_val,
            "bad_streak": self.bad_streak,
            "skipped_steps": self.skipped_steps,
            "rollbacks": self.rollbacks,
            "lr_scale": self.lr_scale,
            "world_size": self.dist.world_size,
            "pretrain_steps": self.pretrain_steps,
            "epoch": self.step // self.batches_per_epoch,
            "train_seconds": round(self._train_seconds(), 3),
            "device": device_name(self.device),
        }

    def _train_seconds(self) -> float:
        """Wall-clock seconds spent in ``fit`` so far, over all resumed runs of this training."""
        running = 0.0 if self._fit_start is None else time.perf_counter() - self._fit_start
        return self._seconds_before + running

    def save_last(self) -> Path:
        """Write the resumable ``last.safetensors`` (rank 0; every rank returns the path)."""
        path = self.out_dir / LAST
        if self.dist.is_main:
            save_checkpoint(
                path,
                model=self.model,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                step=self.step,
                config=self.config.to_dict(),
                extra=self._extra(),
                rng=True,
            )
        return path

    def _save_best(self) -> None:
        if self.dist.is_main:
            save_checkpoint(
                self.out_dir / BEST,
                model=self.model,
                step=self.step,
                config=self.config.to_dict(),
                extra=self._extra(),
                rng=False,
            )

    def _resume(self) -> None:
        path = self.out_dir / LAST
        if not path.exists():
            raise CheckpointError(f"cannot resume: no {LAST} in {self.out_dir}")
        single = not self.dist.distributed
        state = load_checkpoint(
            path,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            expected_config=self.config.to_dict(),
            restore_rng=single,
        )
        self.step = state["step"]
        extra = state["extra"]
        best = extra.get("best_val_psnr")
        self.best_val_psnr = -math.inf if best is None else float(best)
        self.best_step = extra.get("best_step")
        self.last_val = extra.get("last_val")
        self.bad_streak = int(extra.get("bad_streak", 0))
        self.skipped_steps = int(extra.get("skipped_steps", 0))
        self.rollbacks = int(extra.get("rollbacks", 0))
        self.lr_scale = float(extra.get("lr_scale", 1.0))
        self._seconds_before = float(extra.get("train_seconds", 0.0))
        if not single:  # per-rank RNG streams: re-derived from (seed, step, rank)
            _seed_global(mix_seed(self.config.train.seed, self.step, self.dist.rank))
        if extra.get("pretrain_steps", self.pretrain_steps) != self.pretrain_steps:
            self.notes.append(
                f"resuming with {self.pretrain_steps} pre-training steps; the "
                f"checkpoint was written with {extra.get('pretrain_steps')}"
            )

    # ------------------------------------------------------------------ rollback
    def _take_snapshot(self) -> None:
        """Keep the current state (what ``last.safetensors`` holds) in memory, on the CPU, as the
        rollback target; one copy, replaced at each checkpoint."""
        self._snapshot = {
            "step": self.step,
            "model": _cpu_copy(self.model.state_dict()),
            "optimizer": _cpu_copy(self.optimizer.state_dict()),
            "scheduler": _cpu_copy(self.scheduler.state_dict()),
            "rng": None if self.dist.distributed else capture_rng_state(),
        }

    def _restore_snapshot(self) -> None:
        """Model, optimiser, scheduler, step (hence data position) and RNGs as in the snapshot."""
        snap = self._snapshot
        assert snap is not None
        self.model.load_state_dict(snap["model"])
        self.optimizer.load_state_dict(copy.deepcopy(snap["optimizer"]))
        self.scheduler.load_state_dict(copy.deepcopy(snap["scheduler"]))
        self.step = snap["step"]
        if snap["rng"] is not None:
            restore_rng_state(snap["rng"])
        else:  # DDP: per-rank streams re-derived from (seed, step, rank), as on resume
            _seed_global(mix_seed(self.config.train.seed, self.step, self.dist.rank))

    def _set_lr(self) -> float:
        """Set every group's lr to peak * ``_lr_lambda`` at the scheduler's position; returns it."""
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs, strict=True):
            group["lr"] = base * self._lr_lambda(self.scheduler.last_epoch)
        return self.optimizer.param_groups[0]["lr"]

    def _roll_back(self, cause: str) -> None:
        """Return to the snapshot with the learning rate times ``rollback_lr_factor``, say so and
        rewrite ``last.safetensors``; raise TrainingDivergedError when no rollback is left."""
        tc = self.config.train
        detected = self.step
        if self.rollbacks >= tc.max_rollbacks:
            used = (
                f"after {self.rollbacks} rollbacks (train.max_rollbacks={tc.max_rollbacks})"
                if tc.max_rollbacks
                else "(rollback off: train.max_rollbacks=0)"
            )
            self._diverged(f"{cause} at step {detected} {used}")
        self._restore_snapshot()
        self.rollbacks += 1
        self.lr_scale *= tc.rollback_lr_factor
        lr = self._set_lr()
        self.bad_streak = 0
        self._message(
            f"step {detected}: {cause}; rolled back to step {self.step} (rollback "
            f"{self.rollbacks}/{tc.max_rollbacks}), learning rate x{tc.rollback_lr_factor:g} "
            f"-> {lr:.3g}",
            rollback=self.rollbacks,
            detected_at=detected,
            lr=lr,
            lr_scale=self.lr_scale,
        )
        self.save_last()

    def _diverged(self, cause: str) -> NoReturn:
        """Log and raise TrainingDivergedError naming ``cause`` and the checkpoint kept."""
        last = self.out_dir / LAST
        kept = (
            f"the last good checkpoint is {last}" if last.exists()
            else "no checkpoint was written before"
        )
        text = (
            f"training diverged: {cause}; {kept} (try a lower train.lr, train.grad_clip, or a "
            "stricter solver)"
        )
        self._message(text, diverged=True)
        self.logger.close()
        raise TrainingDivergedError(text)

    def _bad_step(self, problem: str, solver_diverged: bool) -> bool:
        """Count a skipped step; roll back (True) on a diverged solve when rollback is on, or
        after ``max_bad_steps`` bad steps in a row; else False."""
        tc = self.config.train
        self.bad_streak += 1
        self.skipped_steps += 1
        self._message(
            f"step {self.step}: {problem}, update skipped "
            f"({self.bad_streak}/{tc.max_bad_steps} in a row)",
            skipped=True,
        )
        if solver_diverged and tc.max_rollbacks > 0:
            self._roll_back(problem)
            return True
        if self.bad_streak >= tc.max_bad_steps:
            self._roll_back(
                f"{self.bad_streak} consecutive steps with a NaN/Inf loss or gradient or a "
                f"diverged solve (train.max_bad_steps={tc.max_bad_steps})"
            )
            return True
        return False

    # ------------------------------------------------------------------ signals
    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self._stop_signal = signum

    @contextlib.contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in previous:
            signal.signal(s, self._on_signal)
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    # ------------------------------------------------------------------ the loop
    def _out_of_time(self) -> bool:
        """Whether this ``fit`` has run ``train.max_minutes`` of wall time."""
        limit = self.config.train.max_minutes
        return limit is not None and time.perf_counter() - self._fit_start >= 60 * limit

    def _message(self, text: str, **fields: Any) -> None:
        self.progress.message(text)
        self.logger.log("event", self.step, message=text, **fields)

    def fit(self, *, resume: bool = False, max_steps: int | None = None) -> dict[str, Any]:
        """Train to ``pretrain_steps + steps`` global steps (or stop at global step
        ``max_steps``, writing ``last.safetensors``); ``resume=True`` continues from
        ``out_dir/last.safetensors`` exactly. Returns a summary dict (see module docs)."""
        tc = self.config.train
        t_start = time.perf_counter()
        self._fit_start = t_start
        self._stop_signal = None
        if resume:
            self._resume()
            self.logger.rewind(self.step)
        else:
            seed = tc.seed if not self.dist.distributed else mix_seed(tc.seed, 0, self.dist.rank)
            _seed_global(seed)
            if self.dist.is_main:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(
                    self.out_dir / "config.json", (self.config.to_json() + "\n").encode()
                )
        self.progress.restart(self.step)  # rate and ETA of this run's steps only
        for note in self.notes:
            self._message(note)
        self._take_snapshot()  # the rollback target until the first checkpoint
        if self.step == 0:
            n_params = sum(p.numel() for p in self.params)
            self._message(
                f"training {type(self.model).__name__} ({n_params:,} parameters) on "
                f"{self.device} x{self.dist.world_size}: {self.pretrain_steps} pre-training + "
                f"{tc.steps} steps, batch {self.global_batch}, "
                f"{len(self.train_set)} training images"
            )  # type: ignore[arg-type]

        step_ms: list[float] = []
        iters_all = [0.0, 0.0]
        window: dict[str, float] = {}
        stopped = "completed"
        self.model.train()
        batches = self._train_batches(self.step)
        try:
            with self._signal_handlers():
                while self.step < self.total_steps:
                    if max_steps is not None and self.step >= max_steps:
                        stopped = "max_steps"
                        break
                    pretrain = self.step < self.pretrain_steps
                    t0 = time.perf_counter()
                    x, y = next(batches)
                    x, y = self._to_device(x), self._to_device(y)
                    t1 = time.perf_counter()
                    out = self._train_step(x, y, pretrain)
                    synchronize(self.device)
                    t2 = time.perf_counter()
                    self.step += 1
                    if not pretrain:
                        step_ms.append(1000 * (t2 - t1))
                    rolled_back = False
                    if out["bad"]:
                        rolled_back = self._bad_step(out["problem"], out["solver_diverged"])
                    else:
                        self.bad_streak = 0
                        self._account(out, window, iters_all, (t1 - t0, t2 - t1))
                    if out["stop"] or (not self.dist.distributed and self._stop_signal is not None):
                        timed_out = self._stop_signal is None and out["timed_out"]
                        stopped = "time_limit" if timed_out else "signal"
                    if rolled_back:  # go on from the restored step with its data
                        batches.close()
                        window.clear()
                        batches = self._train_batches(self.step)
                    else:
                        self._after_step(pretrain, window, stopped)
                    if stopped in ("signal", "time_limit"):
                        break
        finally:
            if hasattr(batches, "close"):
                batches.close()
            self.progress.close()
        if stopped in ("signal", "max_steps", "time_limit"):
            self.save_last()
            what = {"signal": "signal", "max_steps": f"max_steps={max_steps}",
                    "time_limit": f"max_minutes={tc.max_minutes}"}[stopped]
            self._message(
                f"stopped at step {self.step} ({what}); resume with resume=True", stopped=stopped
            )
        barrier()  # no rank leaves before rank 0 has written its last checkpoint
        summary = {
            "steps": max(0, self.step - self.pretrain_steps),
            "pretrain_steps": min(self.step, self.pretrain_steps),
            "global_step": self.step,
            "stopped": stopped,
            "seconds": time.perf_counter() - t_start,
            "train_seconds": self._train_seconds(),
            "final_val_psnr": None if self.last_val is None else self.last_val["psnr"],
            "best_val_psnr": self.best_val_psnr if math.isfinite(self.best_val_psnr) else None,
            "best_step": self.best_step,
            "mean_solver_iters": iters_all[0] / iters_all[1] if iters_all[1] else None,
            "val_solver_iters": None if self.last_val is None else self.last_val.get("iters"),
            "train_step_ms": _typical(step_ms),
            "skipped_steps": self.skipped_steps,
            "rollbacks": self.rollbacks,
            "lr_scale": self.lr_scale,
            "out_dir": str(self.out_dir),
        }
        self.logger.log(
            "summary",
            self.step,
            **{k: v for k, v in summary.items() if not isinstance(v, str) or k == "stopped"},
        )
        self.logger.close()
        return summary

    def _account(
        self,
        out: dict[str, Any],
        window: dict[str, float],
        iters_all: list[float],
        times: tuple[float, float],
    ) -> None:
        """Add a good step's metrics to the log window (and the live progress line)."""
        vals = {
            "loss_sum": float(out["loss"]) * out["n"],
            "psnr_sum": float(out["psnr_sum"]),
            "n": float(out["n"]),
            "grad_norm": float(out["grad_norm"]),
            "steps": 1.0,
            "data_s": times[0],
            "step_s": times[1],
        }
        if out.get("iters_sum") is not None:
            vals["iters_sum"] = float(out["iters_sum"])
            vals["iters_n"] = float(out["n"])
            if out.get("conv_sum") is not None:
                vals["conv_sum"] = float(out["conv_sum"])
            iters_all[0] += vals["iters_sum"]
            iters_all[1] += vals["iters_n"]
        if out.get("jacobian") is not None:
            vals["jac_sum"] = float(out["jacobian"])
            vals["jac_n"] = 1.0
        for k, v in vals.items():
            window[k] = window.get(k, 0.0) + v
        window["lr"] = out["lr"]
        if out.get("contraction") is not None:  # the last measurement of the window
            window["contraction"] = float(out["contraction"].mean())
            window["contraction_max"] = float(out["contraction"].max())
        if self.progress.is_tty:  # live line; plain logs get one line per log window instead
            iters = vals["iters_sum"] / vals["iters_n"] if "iters_sum" in vals else None
            self.progress.update(
                self.step,
                loss=vals["loss_sum"] / vals["n"],
                psnr=vals["psnr_sum"] / vals["n"],
                iters=iters,
                step_ms=1000 * times[1],
            )

    def _after_step(self, pretrain: bool, window: dict[str, float], stopped: str) -> None:
        tc = self.config.train
        g = self.step
        if g % tc.log_every == 0 or g == self.total_steps:
            self._log_window(window, "pretrain" if pretrain else "train")
        if pretrain and g == self.pretrain_steps:
            val = self.validate(pretrain=True)
            self.optimizer.state.clear()  # fresh Adam moments for the implicit model
            msg = f"pre-training done at step {g}"
            if val is not None:
                self.logger.log("pretrain_val", g, **val)
                msg += f": feedforward val PSNR {val['psnr']:.2f} dB"
            self._message(msg)
        main_done = g - self.pretrain_steps
        if (
            not pretrain
            and main_done > 0
            and (main_done % tc.val_every == 0 or g == self.total_steps)
        ):
            val = self.validate()
            if val is not None:
                self.last_val = val
                improved = val["psnr"] > self.best_val_psnr
                if improved:
                    self.best_val_psnr, self.best_step = val["psnr"], g
                    self._save_best()
                self.logger.log("val", g, best=improved, **val)
                self.progress.update(g, force=True, val_psnr=val["psnr"], iters=val.get("iters"))
            # While updates are being skipped, keep the checkpoint of the last good step.
            if stopped not in ("signal", "time_limit") and self.bad_streak == 0:
                self.save_last()
                self._take_snapshot()

    def _log_window(self, window: dict[str, float], phase: str) -> None:
        if self.dist.distributed:
            keys = ["loss_sum", "psnr_sum", "n", "iters_sum", "iters_n", "conv_sum"]
            t = torch.tensor(
                [window.get(k, 0.0) for k in keys], dtype=torch.float64, device=self.device
            )
            all_reduce_sum(t)
            window.update(dict(zip(keys, t.tolist(), strict=True)))
        if not window.get("steps"):
            window.clear()
            return
        n, steps = window["n"], window["steps"]
        rec: dict[str, Any] = {
            "phase": phase,
            "loss": window["loss_sum"] / n,
            "psnr": window["psnr_sum"] / n,
            "lr": window.get("lr"),
            "grad_norm": window["grad_norm"] / steps,
            "step_ms": 1000 * window["step_s"] / steps,
            "data_ms": 1000 * window["data_s"] / steps,
        }
        if window.get("iters_n"):
            rec["iters"] = window["iters_sum"] / window["iters_n"]
            rec["converged"] = window.get("conv_sum", 0.0) / window["iters_n"]
        for key in ("contraction", "contraction_max"):
            if key in window:
                rec[key] = window[key]
        if window.get("jac_n"):
            rec["jacobian"] = window["jac_sum"] / window["jac_n"]
        self.logger.log("train", self.step, **rec)
        self.progress.update(
            self.step,
            force=True,
            loss=rec["loss"],
            psnr=rec["psnr"],
            iters=rec.get("iters"),
            step_ms=rec["step_ms"],
        )
        window.clear()


def _can_pretrain(model: nn.Module, mode: str) -> bool:
    """Whether ``model`` has what pre-training in ``mode`` calls: ``pretrain_forward(y)``
    ("deblur") or ``feedforward(v)`` ("denoise"), and, if it has ``feedforward``, one that is
    not the implicit base class's NotImplementedError stub."""
    name = "pretrain_forward" if mode == "deblur" else "feedforward"
    if not callable(getattr(model, name, None)):
        return False
    from jfb.models.implicit import ImplicitModel

    return getattr(type(model), "feedforward", None) is not ImplicitModel.feedforward


def _typical(ms: Sequence[float]) -> float | None:
    """Median step time, leaving out the first steps (warm-up) when there are enough."""
    if not ms:
        return None
    ms = list(ms[2:]) if len(ms) > 5 else list(ms)
    return statistics.median(ms)
