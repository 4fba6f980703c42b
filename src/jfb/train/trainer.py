"""The training loop: the trainer composes the parts of training and runs the steps.

Each step fits ``model(y)`` to ``x`` (MSE) with Adam/AdamW and gradient clipping; the loop logs,
validates, checkpoints, resumes exactly, runs under DDP, and stops on time limits and signals.
The parts have modules of their own, and none imports the trainer: :mod:`~jfb.train.schedule`
(learning rate), :mod:`~jfb.train.seeding` and :mod:`~jfb.train.loading` (reproducible batches
sharded over ranks), :mod:`~jfb.train.pretrain` (pre-training R), :mod:`~jfb.train.guard`
(divergence and rollback), :mod:`~jfb.train.diagnostics` (contraction and Jacobian),
:mod:`~jfb.train.monitor` (the JFB direction against the exact gradient),
:mod:`~jfb.train.validation`, :mod:`~jfb.train.run_checkpoints` (``last``/``best``),
:mod:`~jfb.train.signals`, :mod:`~jfb.train.cost` (budgets and cost fields of ``val`` records),
:mod:`~jfb.train.log` and :mod:`~jfb.train.distributed`.

The trainer never builds a model or a dataset: it takes a model (an ``nn.Module`` mapping ``y``
to ``x_hat``, maybe with ``last_stats`` (per-sample ``iterations``/``converged``/``residual``),
``pretrain_forward``, ``feedforward``, ``contraction`` and ``jacobian_frobenius``), training and
validation sets of ``(x, y)`` pairs, or ``(x, y, physics)`` for ``model(y, physics)`` (the
validation set with fixed noise), and how to batch their items.

Steps. Global step ``g`` counts batches consumed, pre-training steps first: steps ``[0, P)``
pre-train (P = ``pretrain_steps``, when the model can); steps ``[P, P + steps)`` train
``model``. Pre-training ends with one feedforward validation (``pretrain_val``) and clears the
optimizer's moments. A bad step makes no update but consumes its batch and its learning-rate
step; checkpoints are not written during a streak of bad steps; a rollback logs an ``event``
(what was detected, at which step, the new learning rate) and rewrites ``last.safetensors``.

Reproducibility. Data order and item draws are functions of the seed (:mod:`jfb.train.loading`).
Checkpoints also hold the global RNG states, restored on resume (randomness inside the model:
dropout, ...); under DDP each rank's global RNGs are seeded from ``(seed, step, rank)`` at start,
on resume and after a rollback. A resumed run equals an uninterrupted one bitwise on the same
device with the same number of intra-op threads (float reductions depend on them).

Stopping. SIGINT/SIGTERM finish the current step, write ``last.safetensors`` and make ``fit``
return with ``summary["stopped"] == "signal"`` (a second SIGINT interrupts at once).
``train.max_minutes`` does the same once ``fit`` has run that long (``"time_limit"``): a run
that must fit a job's time limit stops where ``--resume`` continues it exactly; so does
``train.max_cpu_minutes`` once the training has used that much CPU time (``"cpu_limit"``).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, default_collate

from jfb.config import Config
from jfb.device import amp_dtype, device_name, resolve_device, synchronize, use_channels_last
from jfb.errors import DataError
from jfb.metrics import psnr
from jfb.train.checkpoint import unwrap_model
from jfb.train.cost import BUDGET_STOPS, EARLY_STOPS, CostMeter
from jfb.train.diagnostics import contraction_factor, jacobian_penalty
from jfb.train.distributed import all_reduce_sum, barrier, get_dist_info, wrap_ddp
from jfb.train.guard import (
    DivergenceGuard,
    Snapshot,
    TrainingDivergedError,
    solver_divergence,
    step_verdict,
)
from jfb.train.loading import (
    LoaderOptions,
    SeededItems,
    TrainBatches,
    first_items,
    validation_batches,
)
from jfb.train.log import MetricLogger, Progress, StepWindow, typical_step_ms
from jfb.train.monitor import monitor_for
from jfb.train.pretrain import can_pretrain, pretrain_output
from jfb.train.run_checkpoints import BEST, LAST, RunCheckpoints
from jfb.train.schedule import lr_factor, phase_lr_factor, reset_lr
from jfb.train.seeding import epoch_permutation, mix_seed, seed_global_rngs
from jfb.train.signals import StopSignals
from jfb.train.validation import validate

# Besides the trainer, the names that moved to the part modules stay importable from here.
__all__ = ["BEST", "LAST", "SeededItems", "Trainer", "TrainingDivergedError", "amp_dtype",
           "epoch_permutation", "lr_factor", "mix_seed", "solver_divergence", "use_channels_last"]


class Trainer:
    """Train ``model`` on ``train_set`` and validate on ``val_set`` as ``config`` says.

    ``out_dir`` (default ``config.train.out_dir``) receives ``metrics.jsonl``, ``train.csv``,
    ``val.csv``, ``config.json``, ``last.safetensors`` (resumable) and ``best.safetensors``
    (best validation PSNR, weights only). ``device`` defaults to ``config.train.device``.
    ``progress``: True (stderr), False, or a text stream. ``collate_fn`` batches the items (e.g.
    :func:`jfb.data.collate_images`, which explains images of different sizes). Under an
    initialised process group (``jfb.train.distributed.init_distributed``) the model is wrapped
    in DDP, ``batch_size`` is per process, and only rank 0 logs and writes files.
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
        collate_fn: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.config = config if isinstance(config, Config) else Config.from_dict(config)
        tc, dc = self.config.train, self.config.data
        self.dist = get_dist_info()
        self.device = resolve_device(device if device is not None else tc.device, self.dist)
        self.out_dir = Path(out_dir if out_dir is not None else tc.out_dir)
        self.checkpoints = RunCheckpoints(self.out_dir, self.config, is_main=self.dist.is_main)
        self.notes: list[str] = []

        self.train_set = first_items(train_set, dc.max_train_images)
        self.val_set = None if val_set is None else first_items(val_set, dc.max_val_images)
        self.batch_size = dc.batch_size
        self.val_batch_size = dc.val_batch_size or dc.batch_size  # 1: photos of any size
        self.loader_options = LoaderOptions(
            dc.num_workers, collate_fn or default_collate, self.device.type == "cuda"
        )
        self.batches = TrainBatches(
            self.train_set, seed=tc.seed, batch_size=dc.batch_size, rank=self.dist.rank,
            world_size=self.dist.world_size, options=self.loader_options,
        )
        self.global_batch = self.batches.global_batch
        self.batches_per_epoch = self.batches.per_epoch
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

        self.can_pretrain = can_pretrain(self.model, tc.pretrain)
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

        self.guard = DivergenceGuard(max_bad_steps=tc.max_bad_steps,
                                     max_rollbacks=tc.max_rollbacks,
                                     rollback_lr_factor=tc.rollback_lr_factor)
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
        self.progress = Progress(self.total_steps, stream=stream, every=tc.log_every,
                                 enabled=is_main and progress is not False)

        self.step = 0  # global steps done
        self.best_val_psnr = -math.inf
        self.best_step: int | None = None
        self.last_val: dict[str, float] | None = None
        self.stop = StopSignals()
        self.cost = CostMeter(tc.max_cpu_minutes, tc.max_minutes)
        self.monitor = monitor_for(self.model, tc.monitor_jfb_every, self.logger, self.notes,
                                   self.cost.excluded, tc.seed, self.pretrain_steps)
        self._seconds_before = 0.0  # training time of the runs this one resumes
        self._fit_start: float | None = None

    bad_streak = property(lambda self: self.guard.bad_streak, doc="Bad steps in a row now.")
    skipped_steps = property(lambda self: self.guard.skipped_steps, doc="Bad steps so far.")
    rollbacks = property(lambda self: self.guard.rollbacks, doc="Rollbacks so far.")
    lr_scale = property(lambda self: self.guard.lr_scale, doc="The rollbacks' lr reduction.")

    # ------------------------------------------------------------------ parts
    def _lr_lambda(self, g: int) -> float:
        """lr(g) / peak lr: the schedule times the rollbacks' reductions. A bound method, so
        that the scheduler's state dict (in checkpoints) holds nothing of it."""
        tc = self.config.train
        return self.guard.lr_scale * phase_lr_factor(g, pretrain_steps=self.pretrain_steps,
                                                     steps=tc.steps, warmup=tc.warmup_steps,
                                                     schedule=tc.schedule)

    def _seed_rank_streams(self) -> None:
        """Under DDP: this rank's global RNGs from (seed, step, rank), at start, on resume and
        after a rollback (the states of the other ranks are not in the checkpoint)."""
        seed_global_rngs(mix_seed(self.config.train.seed, self.step, self.dist.rank))

    def _to_device(self, t: Any) -> Any:
        t = t.to(self.device, non_blocking=True) if torch.is_tensor(t) else t.to(self.device)
        if self.channels_last and torch.is_tensor(t) and t.dim() == 4:  # not a Physics
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def _is_log_step(self, g: int) -> bool:
        return g % self.config.train.log_every == 0 or g == self.total_steps

    def _pretrain_output(self, x: torch.Tensor, y: torch.Tensor, cond: tuple[Any, ...] = (), *,
                         val_batch: int | None = None) -> torch.Tensor:
        """What pre-training fits to x at this step (:func:`jfb.train.pretrain.pretrain_output`)."""
        tc = self.config.train
        return pretrain_output(
            self.model, x, y, cond, mode=tc.pretrain, noise=tc.pretrain_noise, seed=tc.seed,
            step=self.step, rank=self.dist.rank, world_size=self.dist.world_size,
            val_batch=val_batch,
        )

    # ------------------------------------------------------------------ one step
    def _train_step(self, x: torch.Tensor, y: torch.Tensor, pretrain: bool,
                    cond: tuple[Any, ...] = ()) -> dict[str, Any]:
        tc = self.config.train
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            x_hat = self._pretrain_output(x, y, cond) if pretrain else self.forward_module(y, *cond)
        stats = None if pretrain else getattr(self.model, "last_stats", None)
        divergence = solver_divergence(
            stats, max_residual=tc.diverge_residual, max_unconverged=tc.diverge_unconverged
        )
        loss = F.mse_loss(x_hat.float(), x.float())
        total = loss
        jac = None
        if self.jacobian_on and not pretrain:
            jac = jacobian_penalty(self.model, x_hat, y, cond, seed=tc.seed, step=self.step)
            total = loss + tc.jacobian_penalty * jac
        total.backward()
        self.cost.count(stats)  # the backward has filled in its iterations
        contraction = None
        if not pretrain and tc.log_contraction and self.implicit and self._is_log_step(
            self.step + 1
        ):  # at the map whose fixed point x_hat is: before the update
            contraction = contraction_factor(self.model, x_hat, y, cond, seed=tc.seed,
                                             step=self.step)
        self.monitor(self.model, x, y, cond, self.params, self.step)  # when due: JFB vs IFT
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
        timed_out = self._out_of_time()
        problem, stop, solver_diverged = step_verdict(  # every rank takes the same decisions
            total, gnorm, stop=self.stop.requested is not None or timed_out is not None,
            divergence=divergence, tc=tc, distributed=self.dist.distributed,
        )
        lr = self.optimizer.param_groups[0]["lr"]
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
            "solver_diverged": solver_diverged,
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
    def validate(self, *, pretrain: bool = False) -> dict[str, float] | None:
        """Mean PSNR (clamped to [0, 1]), solver iterations and converged fraction on the
        validation set (:func:`jfb.train.validation.validate`), of what pre-training fits when
        ``pretrain``; None without a validation set. The global RNG states are left alone."""
        if self.val_set is None:
            return None
        val_set = self.val_set

        def batches() -> Iterator[tuple[Any, ...]]:
            shard = validation_batches(val_set, batch_size=self.val_batch_size,
                                       rank=self.dist.rank, world_size=self.dist.world_size,
                                       options=self.loader_options)
            return (tuple(self._to_device(t) for t in batch) for batch in shard)

        def output(x: torch.Tensor, y: torch.Tensor, i: int, *cond: Any) -> torch.Tensor:
            with self._autocast():
                return (self._pretrain_output(x, y, cond, val_batch=i) if pretrain
                        else self.model(y, *cond))

        return validate(self.model, batches, output, device=self.device, solver_stats=not pretrain)

    # ------------------------------------------------------------------ checkpoints
    def _extra(self) -> dict[str, Any]:
        return {
            "best_val_psnr": self.best_val_psnr if math.isfinite(self.best_val_psnr) else None,
            "best_step": self.best_step,
            "last_val": self.last_val,
            **self.guard.state(),
            **self.cost.state(),
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
        return self.checkpoints.save_last(model=self.model, optimizer=self.optimizer,
                                          scheduler=self.scheduler, step=self.step,
                                          extra=self._extra())

    def _resume(self) -> None:
        state = self.checkpoints.load_last(model=self.model, optimizer=self.optimizer,
                                           scheduler=self.scheduler,
                                           restore_rng=not self.dist.distributed)
        self.step = state["step"]
        extra = state["extra"]
        best = extra.get("best_val_psnr")
        self.best_val_psnr = -math.inf if best is None else float(best)
        self.best_step = extra.get("best_step")
        self.last_val = extra.get("last_val")
        self.guard.load_state(extra)
        self._seconds_before = float(extra.get("train_seconds", 0.0))
        self.cost.load_state(extra)
        if self.dist.distributed:
            self._seed_rank_streams()
        if extra.get("pretrain_steps", self.pretrain_steps) != self.pretrain_steps:
            self.notes.append(
                f"resuming with {self.pretrain_steps} pre-training steps; the "
                f"checkpoint was written with {extra.get('pretrain_steps')}"
            )

    # ------------------------------------------------------------------ divergence
    def _take_snapshot(self) -> None:
        """Keep the current state (what ``last.safetensors`` holds) as the rollback target."""
        self.guard.snapshot = Snapshot.take(
            self.step, self.model, self.optimizer, self.scheduler, rng=not self.dist.distributed
        )

    def _bad_step(self, problem: str, solver_diverged: bool) -> bool:
        """Count a skipped step, and roll back (True) when the guard says one is due."""
        message, cause = self.guard.skip(problem, self.step, solver_diverged)
        self._message(message, skipped=True)
        if cause is None:
            return False
        self._roll_back(cause)
        return True

    def _roll_back(self, cause: str) -> None:
        """Return to the snapshot with the learning rate times ``rollback_lr_factor``, say so and
        rewrite ``last.safetensors``; raise TrainingDivergedError when no rollback is left."""
        detected = self.step
        fatal = self.guard.exhausted(cause, detected)
        if fatal is not None:
            self._diverged(fatal)
        assert self.guard.snapshot is not None
        self.step = self.guard.snapshot.restore(self.model, self.optimizer, self.scheduler)
        if self.dist.distributed:
            self._seed_rank_streams()
        self.guard.count_rollback()
        lr = reset_lr(self.optimizer, self.scheduler, self._lr_lambda)
        self._message(self.guard.rollback_message(cause, detected, self.step, lr),
                      rollback=self.guard.rollbacks, detected_at=detected, lr=lr,
                      lr_scale=self.guard.lr_scale)
        self.save_last()

    def _diverged(self, cause: str) -> NoReturn:
        """Log and raise TrainingDivergedError naming ``cause`` and the checkpoint kept."""
        last = self.checkpoints.last
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

    # ------------------------------------------------------------------ the loop
    def _out_of_time(self) -> str | None:
        """The time budget used up (:meth:`jfb.train.cost.CostMeter.limit`), or None."""
        return self.cost.limit(fit_seconds=time.perf_counter() - self._fit_start)

    def _message(self, text: str, **fields: Any) -> None:
        self.progress.message(text)
        self.logger.log("event", self.step, message=text, **fields)

    def fit(self, *, resume: bool = False, max_steps: int | None = None) -> dict[str, Any]:
        """Train to ``pretrain_steps + steps`` global steps (or stop at global step
        ``max_steps``, writing ``last.safetensors``); ``resume=True`` continues from
        ``out_dir/last.safetensors`` exactly. Returns a summary dict (see module docs)."""
        tc = self.config.train
        t_start = self._fit_start = time.perf_counter()
        self.stop = StopSignals()
        if resume:
            self._resume()
            self.logger.rewind(self.step)
        else:
            rank = self.dist.rank
            seed_global_rngs(mix_seed(tc.seed, 0, rank) if self.dist.distributed else tc.seed)
            self.checkpoints.write_config()
        self.cost.start()
        self.progress.restart(self.step)  # rate and ETA of this run's steps only
        for note in self.notes:
            self._message(note)
        self._take_snapshot()  # the rollback target until the first checkpoint
        if self.step == 0:
            n_params = sum(p.numel() for p in self.params)
            self._message(
                f"training {type(self.model).__name__} ({n_params:,} parameters) on "
                f"{self.device} x{self.dist.world_size}: {self.pretrain_steps} pre-training + "
                f"{tc.steps} steps, batch {self.global_batch}, {len(self.train_set)} train images"
            )  # type: ignore[arg-type]

        step_ms: list[float] = []
        window = StepWindow()
        stopped = "completed"
        self.model.train()
        batches = self.batches.from_step(self.step)
        try:
            with self.stop.installed():
                while self.step < self.total_steps:
                    if max_steps is not None and self.step >= max_steps:
                        stopped = "max_steps"
                        break
                    pretrain = self.step < self.pretrain_steps
                    t0 = time.perf_counter()
                    x, y, *cond = (self._to_device(t) for t in next(batches))
                    t1 = time.perf_counter()
                    out = self._train_step(x, y, pretrain, tuple(cond))
                    synchronize(self.device)
                    t2 = time.perf_counter()
                    self.step += 1
                    if not pretrain:
                        step_ms.append(1000 * (t2 - t1))
                    rolled_back = False
                    if out["bad"]:
                        rolled_back = self._bad_step(out["problem"], out["solver_diverged"])
                    else:
                        self.guard.bad_streak = 0
                        live = window.add(out, data_s=t1 - t0, step_s=t2 - t1)
                        if self.progress.is_tty:  # plain logs get a line per log window instead
                            self.progress.update(self.step, **live)
                    signalled = self.stop.requested is not None
                    if out["stop"] or (not self.dist.distributed and signalled):
                        stopped = "signal" if signalled else out["timed_out"] or "signal"
                    if rolled_back:  # go on from the restored step with its data
                        batches.close()
                        window.clear()
                        batches = self.batches.from_step(self.step)
                    else:
                        self._after_step(pretrain, window, stopped)
                    if stopped in EARLY_STOPS:
                        break
        finally:
            batches.close()
            self.progress.close()
        if stopped in (*EARLY_STOPS, "max_steps"):
            self.save_last()
            what = {"signal": "signal", "max_steps": f"max_steps={max_steps}",
                    **self.cost.limits()}[stopped]
            self._message(f"stopped at step {self.step} ({what}); resume with resume=True",
                          stopped=stopped)
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
            "mean_solver_iters": window.mean_solver_iters,
            "val_solver_iters": None if self.last_val is None else self.last_val.get("iters"),
            "train_step_ms": typical_step_ms(step_ms),
            "skipped_steps": self.guard.skipped_steps,
            "rollbacks": self.guard.rollbacks,
            "lr_scale": self.guard.lr_scale,
            "out_dir": str(self.out_dir),
        }
        self.logger.log(
            "summary",
            self.step,
            **{k: v for k, v in summary.items() if not isinstance(v, str) or k == "stopped"},
        )
        self.logger.close()
        return summary

    def _after_step(self, pretrain: bool, window: StepWindow, stopped: str) -> None:
        """Log the window, end pre-training, validate and checkpoint, as the step number says."""
        tc = self.config.train
        g = self.step
        if self._is_log_step(g):
            self._log_window(window, "pretrain" if pretrain else "train")
        if pretrain and g == self.pretrain_steps:
            with self.cost.excluded():
                val = self.validate(pretrain=True)
            self.checkpoints.save_pretrained(model=self.model, step=g, extra=self._extra())
            self.optimizer.state.clear()  # fresh Adam moments for the implicit model
            msg = f"pre-training done at step {g}"
            if val is not None:
                self.logger.log("pretrain_val", g, **val,
                                **self.cost.record(wall_seconds=self._train_seconds()))
                msg += f": feedforward val PSNR {val['psnr']:.2f} dB"
            self._message(msg)
        main_done = g - self.pretrain_steps  # a budget's end is validated: the curve's last point
        at_end = g == self.total_steps or stopped in BUDGET_STOPS
        if not pretrain and main_done > 0 and (main_done % tc.val_every == 0 or at_end):
            with self.cost.excluded():
                val = self.validate()
            if val is not None:
                self.last_val = val
                improved = val["psnr"] > self.best_val_psnr
                if improved:
                    self.best_val_psnr, self.best_step = val["psnr"], g
                    self.checkpoints.save_best(model=self.model, step=g, extra=self._extra())
                self.logger.log("val", g, best=improved, **val,
                                **self.cost.record(wall_seconds=self._train_seconds()))
                self.progress.update(g, force=True, val_psnr=val["psnr"], iters=val.get("iters"))
            # While updates are being skipped, keep the checkpoint of the last good step.
            if stopped not in EARLY_STOPS and self.guard.bad_streak == 0:
                self.save_last()
                self._take_snapshot()

    def _log_window(self, window: StepWindow, phase: str) -> None:
        """Log the window's ``train`` record (summed over ranks) and show it."""
        rec = window.record(phase, self._sum_over_ranks if self.dist.distributed else None)
        if rec is None:
            return
        self.logger.log("train", self.step, **rec)
        self.progress.update(self.step, force=True, loss=rec["loss"], psnr=rec["psnr"],
                             iters=rec.get("iters"), step_ms=rec["step_ms"])

    def _sum_over_ranks(self, values: Sequence[float]) -> list[float]:
        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        return all_reduce_sum(t).tolist()
