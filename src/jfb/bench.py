"""Benchmarks of training and inference cost: ``jfb bench --scenario NAME``.

Scenarios (each writes ``<out>/<scenario>_<size>.json`` and a markdown table ``.md`` beside it,
with the device, date, torch version, thread count and exact command inside the JSON):

``step``       time per training step of DE-GRAD + DnCNN for JFB, JFB(2), IFT (Anderson, GMRES),
               Neumann(5) and Unrolled, split into forward solve / backward / optimiser step, and
               the size of the autograd graph (bytes of tensors saved for backward; plus
               ``torch.cuda.max_memory_allocated`` on CUDA). Three tables: all strategies at the
               same forward tolerance; a sweep over the forward iteration cap with a
               fixed-iteration forward (equal forward work); a sweep over the image size.
``solver``     applications of T and time to reach tol 1e-4 for Picard and Anderson, and a
               per-sample histogram of the iterations.
``floor``      t_f (one application of T, no grad), t_fb (one application, forward + backward);
               the floor of a JFB step with n forward iterations is n t_f + t_fb; the measured
               step over that floor, for Picard / Anderson and ``check_every`` 1 / 10, and each
               solver's own cost per iteration measured on a map that costs almost nothing.
``peer``       torchdeq 0.1.0 (optional, skipped when not importable) on the same T: its Anderson
               with its IFT backward and with its one-step phantom gradient, against ours.
``inference``  ms per 128x128 and per 512x512 image, eval mode, no grad.
``malloc``     (CPU, run on its own) inference and JFB steps with glibc's default allocator,
               then with :func:`tune_cpu_malloc`, in one process.

Rules (docs/PROTOCOL.md, "Cost measurements"): warm-up first, synchronise CUDA before every
clock read, median of repeats, ratios only between numbers of one run. Sizes: ``full`` (the
paper's 17-layer 64-channel DnCNN, batch 16, 128x128 RGB; meant for a GPU), ``small`` (a
CPU-sized version) and ``tiny`` (seconds; for tests).
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from jfb.deq import IFT, JFB, Anderson, BackwardStrategy, Neumann, Picard, Unrolled, fixed_point
from jfb.deq.solvers import _SolverBase
from jfb.models import DEGrad
from jfb.nets import DnCNN
from jfb.physics import Blur, kernels

__all__ = [
    "ALL",
    "SCENARIOS",
    "SIZES",
    "BenchSize",
    "SavedTensorMeter",
    "main",
    "run_scenario",
    "saved_tensor_bytes",
    "tune_cpu_malloc",
]

#: Noise level of the synthetic measurements (the protocol's celeba-gauss5 level).
NOISE = 0.005
#: A tolerance no float32 residual reaches: the solve does exactly ``max_iter`` iterations.
FIXED_TOL = 1e-30


# ----------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class BenchSize:
    """One preset of problem sizes (``--size``).

    Attributes:
        depth, width: DnCNN layers and channels. batch, image: training batch and square side.
        channels: image channels (RGB). tol, max_iter: forward solve of the at-tolerance table
            (the IFT backward uses the same tol and max_iter).
        iter_caps: forward iteration caps of the equal-work sweep (fixed-iteration forward).
        image_sizes, sweep_iters: sides of the image-size sweep and its fixed iteration count.
        floor_iters: forward iterations of the floor scenario.
        solver_samples, solver_max_iter: samples of the convergence histogram and the budget.
        infer_sizes, infer_batch: inference sides (128 and 512 in ``small``/``full``) and batch.
        repeats, warmup: timed repeats (median reported) and warm-up runs per configuration.
    """

    depth: int
    width: int
    batch: int
    image: int
    iter_caps: tuple[int, ...]
    image_sizes: tuple[int, ...]
    sweep_iters: int
    floor_iters: int
    solver_samples: int
    solver_max_iter: int
    infer_sizes: tuple[int, ...]
    infer_batch: tuple[int, ...]
    repeats: int
    warmup: int
    channels: int = 3
    tol: float = 1e-4
    max_iter: int = 50
    seed: int = 0


SIZES: dict[str, BenchSize] = {
    "full": BenchSize(
        depth=17, width=64, batch=16, image=128, iter_caps=(10, 25, 50, 100),
        image_sizes=(64, 128, 256, 512), sweep_iters=25, floor_iters=50, solver_samples=64,
        solver_max_iter=200, infer_sizes=(128, 512), infer_batch=(16, 4), repeats=5, warmup=2,
    ),
    "small": BenchSize(
        depth=5, width=16, batch=4, image=64, iter_caps=(10, 25, 50, 100),
        image_sizes=(32, 64, 128), sweep_iters=10, floor_iters=25, solver_samples=16,
        solver_max_iter=200, infer_sizes=(128, 512), infer_batch=(4, 1), repeats=5, warmup=2,
    ),
    "tiny": BenchSize(
        depth=3, width=4, batch=2, image=16, iter_caps=(2, 4), image_sizes=(12, 16),
        sweep_iters=2, floor_iters=3, solver_samples=4, solver_max_iter=10,
        infer_sizes=(16, 32), infer_batch=(2, 1), repeats=1, warmup=1, max_iter=5,
    ),
}


@dataclass
class _Context:
    """What every scenario receives: sizes, device, clock and options."""

    size_name: str
    cfg: BenchSize
    device: torch.device
    checkpoint: str | None = None
    quiet: bool = False
    notes: list[str] = field(default_factory=list)

    def log(self, msg: str) -> None:
        if not self.quiet:
            print(f"[bench] {msg}", file=sys.stderr, flush=True)

    def now(self) -> _Span:
        """Wall and process-CPU clocks, read after every queued device kernel has finished."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return _Span(time.perf_counter(), time.process_time())


class _Span(NamedTuple):
    """A clock reading or a duration: wall-clock seconds and CPU seconds of the process.

    With one thread and a quiet machine the two agree; on a shared machine the CPU time leaves
    out the time the process waited for a core (with several threads it adds up all of them).
    """

    wall: float
    cpu: float

    def __sub__(self, other: object) -> _Span:
        assert isinstance(other, _Span)
        return _Span(self.wall - other.wall, self.cpu - other.cpu)

    def __add__(self, other: object) -> _Span:  # type: ignore[override]
        assert isinstance(other, _Span)
        return _Span(self.wall + other.wall, self.cpu + other.cpu)

    def __truediv__(self, k: float) -> _Span:
        return _Span(self.wall / k, self.cpu / k)


# ----------------------------------------------------------------------------- CPU allocator
#: glibc's mallopt parameters (malloc.h) and the values ``tune_cpu_malloc`` sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 * 2**20  # glibc's largest allowed value on 64-bit
_TRIM_THRESHOLD = 2**31 - 1
_malloc_state = "default"


def tune_cpu_malloc() -> str:
    """Make glibc keep freed memory for reuse instead of returning it to the OS (Linux only).

    By default glibc serves blocks above a dynamic threshold (128 KiB at start) with fresh
    ``mmap`` pages and trims the heap top after frees, so every activation tensor of T can cost
    page faults on each application; on this project's CPU VM that made one T of the ``small``
    size 3-4x slower until a large enough free raised the thresholds (see docs/BENCHMARKS.md).
    Sets M_MMAP_THRESHOLD = 32 MiB and M_TRIM_THRESHOLD = 2 GiB - 1 for the whole process
    (irreversible) and returns the state recorded in every JSON written afterwards.
    """
    global _malloc_state
    if not sys.platform.startswith("linux"):
        return _malloc_state
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1
        ok = libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1 and ok
    except (OSError, AttributeError):
        return _malloc_state
    if ok:
        _malloc_state = (
            f"tuned: glibc mallopt(M_MMAP_THRESHOLD={_MMAP_THRESHOLD}, "
            f"M_TRIM_THRESHOLD={_TRIM_THRESHOLD})"
        )
    return _malloc_state


def _malloc_record() -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
    return {"state": _malloc_state, "env": env}


# ----------------------------------------------------------------------------- memory measure
class _Held:
    """A saved tensor as the autograd graph holds it; releases its count when the graph does."""

    __slots__ = ("key", "meter", "tensor")

    def __init__(self, meter: SavedTensorMeter | None, key: int, tensor: torch.Tensor) -> None:
        self.meter, self.key, self.tensor = meter, key, tensor

    def __del__(self) -> None:
        if self.meter is not None:
            self.meter._release(self.key)


class SavedTensorMeter:
    """Bytes of the distinct storages that live autograd graphs hold for backward.

    Used as a context manager around a forward pass: every tensor autograd saves for the
    backward (``torch.autograd.graph.saved_tensors_hooks``) is counted once per storage for as
    long as some graph node holds it, so ``current`` is the size of the graph alive now and
    ``peak`` its largest value during the block. Parameters (``exclude``) are not counted: they
    exist whatever the strategy. This is the quantity that grows with the iterations for
    Unrolled; it leaves out the solver's own working memory (no-grad iterates, Anderson history)
    and whatever the backward allocates (IFT's linear solve), which ``max_memory_allocated``
    on CUDA includes.
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self._exclude = {_storage_key(t) for t in exclude}
        self._live: dict[int, list[int]] = {}  # storage key -> [holders, nbytes]
        self.current = 0
        self.peak = 0
        self._hooks: Any = None

    def _pack(self, t: torch.Tensor) -> _Held:
        key = _storage_key(t)
        if key in self._exclude or t.device.type == "meta":
            return _Held(None, key, t)
        entry = self._live.get(key)
        if entry is None:
            nbytes = int(t.untyped_storage().nbytes())
            self._live[key] = [1, nbytes]
            self.current += nbytes
            self.peak = max(self.peak, self.current)
        else:
            entry[0] += 1
        return _Held(self, key, t)

    @staticmethod
    def _unpack(held: _Held) -> torch.Tensor:
        return held.tensor

    def _release(self, key: int) -> None:
        entry = self._live.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            self.current -= entry[1]
            del self._live[key]

    def __enter__(self) -> SavedTensorMeter:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)
        self._hooks = None


def _storage_key(t: torch.Tensor) -> int:
    try:
        return int(t.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):  # tensors without a storage (e.g. subclasses)
        return id(t)


def saved_tensor_bytes(
    fn: Callable[[], torch.Tensor], exclude: Iterable[torch.Tensor] = ()
) -> int:
    """Peak bytes of tensors saved for backward while ``fn()`` builds its graph (see the meter)."""
    meter = SavedTensorMeter(exclude)
    with meter:
        out = fn()
    del out
    return meter.peak


# ----------------------------------------------------------------------------- building blocks
def _synthetic_pair(
    n: int, side: int, channels: int, op: nn.Module, seed: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random images in [0, 1] (bilinear upsampling of 1/8-size noise) and y = A x + n."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(n, channels, max(2, side // 8), max(2, side // 8), generator=gen)
    x = F.interpolate(low, size=(side, side), mode="bilinear", align_corners=False).clamp(0, 1)
    noise = NOISE * torch.randn(x.shape, generator=gen)
    x, noise = x.to(device), noise.to(device)
    with torch.no_grad():
        y = op.A(x) + noise
    return x, y


def _fresh_model(
    cfg: BenchSize,
    device: torch.device,
    *,
    solver: _SolverBase | None = None,
    backward: BackwardStrategy | None = None,
    eta: float = 1.0,
) -> DEGrad:
    """DE-GRAD with a freshly initialised DnCNN (spectral norm, residual=True), seeded.

    With ``residual=True`` the untrained R(x) = x - net(x) is close to x, so T is close to a
    gradient step on ||Ax - y||^2/2 + ||x||^2/2 and the fixed point exists (Anderson reaches
    tol 1e-4 in a few iterations); the same seed gives the same weights to every strategy.
    """
    torch.manual_seed(cfg.seed)
    net = DnCNN(cfg.channels, depth=cfg.depth, width=cfg.width, spectral_norm=True, residual=True)
    op = Blur(kernels.gaussian(5, 5.0))
    return DEGrad(op, net, solver=solver, backward=backward, eta=eta).to(device)


def _load_checkpoint(path: str, device: torch.device) -> nn.Module:
    from jfb.pipeline import load_model

    model, _cfg, _info = load_model(path, device=device)
    if not isinstance(getattr(model, "solver", None), _SolverBase):
        raise ValueError(f"{path}: not an implicit model (no fixed-point solver to benchmark)")
    return model


def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _wall(spans: list[_Span]) -> float | None:
    """Median wall-clock seconds."""
    return _median([s.wall for s in spans])


def _cpu(spans: list[_Span]) -> float | None:
    """Median process-CPU seconds."""
    return _median([s.cpu for s in spans])


def _is_oom(exc: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None)
    return (oom is not None and isinstance(exc, oom)) or "out of memory" in str(exc).lower()


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- scenario: step
def _strategies(cfg: BenchSize) -> dict[str, BackwardStrategy]:
    """The gradient strategies compared; IFT solves to the forward's tol with its budget."""
    return {
        "JFB": JFB(),
        "JFB(2)": JFB(2),
        "IFT-anderson": IFT(solver="anderson", tol=cfg.tol, max_iter=cfg.max_iter),
        "IFT-gmres": IFT(solver="gmres", tol=cfg.tol, max_iter=cfg.max_iter),
        "Neumann(5)": Neumann(5),
        "Unrolled": Unrolled(),
    }


class _StepTimer:
    """Adam steps on MSE(model(y), x), each split into forward / backward / optimiser times."""

    def __init__(self, ctx: _Context, model: DEGrad, x: torch.Tensor, y: torch.Tensor) -> None:
        self.ctx, self.model, self.x, self.y = ctx, model, x, y
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        self.phases: dict[str, list[_Span]] = {"forward": [], "backward": [], "optim": []}
        self.iters: list[float] = []
        self.evals: list[float] = []
        self.b_iters: list[float] = []
        self.peaks: list[float] = []

    def step(self, record: bool = True) -> None:
        """One training step; its times and solver statistics are kept when ``record``."""
        ctx, model = self.ctx, self.model
        cuda = ctx.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(ctx.device)
        self.opt.zero_grad(set_to_none=True)
        t0 = ctx.now()
        loss = F.mse_loss(model(self.y), self.x)
        t1 = ctx.now()
        loss.backward()
        t2 = ctx.now()
        self.opt.step()
        t3 = ctx.now()
        if not record:
            return
        self.phases["forward"].append(t1 - t0)
        self.phases["backward"].append(t2 - t1)
        self.phases["optim"].append(t3 - t2)
        st = model.last_stats
        self.iters.append(st.mean_iterations())
        self.evals.append(float(st.n_evals))
        if "iterations" in st.backward:
            self.b_iters.append(float(st.backward["iterations"].float().mean()))
        if cuda:
            self.peaks.append(float(torch.cuda.max_memory_allocated(ctx.device)))

    def graph_bytes(self) -> int:
        """Peak saved-tensor bytes of one more (untimed) step: the hooks cost Python time."""
        self.opt.zero_grad(set_to_none=True)
        meter = SavedTensorMeter(exclude=self.model.parameters())
        with meter:
            loss = F.mse_loss(self.model(self.y), self.x)
        loss.backward()
        return meter.peak

    def row(self) -> dict[str, Any]:
        """Medians of the recorded steps."""
        steps = [a + b + c for a, b, c in zip(*self.phases.values(), strict=True)]
        row: dict[str, Any] = {f"{k}_s": _wall(v) for k, v in self.phases.items()}
        row["step_s"] = _wall(steps)
        row.update({f"{k}_cpu_s": _cpu(v) for k, v in self.phases.items()})
        row["step_cpu_s"] = _cpu(steps)
        row["step_s_all"] = [s.wall for s in steps]
        row["forward_iters_mean"] = statistics.fmean(self.iters) if self.iters else None
        row["n_evals_median"] = _median(self.evals)
        row["backward_iters_mean"] = statistics.fmean(self.b_iters) if self.b_iters else None
        row["peak_cuda_bytes"] = _median(self.peaks)
        row["graph_bytes"] = None
        return row


def _time_training(
    ctx: _Context,
    model: DEGrad,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    repeats: int,
    warmup: int,
    measure_graph: bool = True,
) -> dict[str, Any]:
    """Warm-up then ``repeats`` Adam steps on MSE(model(y), x); medians of the phase times."""
    timer = _StepTimer(ctx, model, x, y)
    for i in range(warmup + repeats):
        timer.step(record=i >= warmup)
    row = timer.row()
    if measure_graph:
        row["graph_bytes"] = timer.graph_bytes()
    return row


def _run_strategy_rows(
    ctx: _Context, label: str, configs: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One row per (strategy, image side, forward solver) in ``configs``.

    Configurations with the same image side and iteration cap form a group whose strategies are
    timed round-robin (one step of each in turn, ``repeats`` times, after each one's warm-up), so
    that a change of load on a shared machine falls on all of them alike.
    """
    cfg = ctx.cfg
    rows: list[dict[str, Any]] = []
    groups: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for conf in configs:
        groups.setdefault((conf["image"], conf["solver"].max_iter), []).append(conf)
    for (side, cap), group in groups.items():
        timers: dict[str, _StepTimer] = {}
        group_rows: dict[str, dict[str, Any]] = {}
        x = y = None
        for conf in group:
            name, solver = conf["strategy"], conf["solver"]
            model = _fresh_model(cfg, ctx.device, solver=solver, backward=_strategies(cfg)[name])
            if x is None:
                x, y = _synthetic_pair(cfg.batch, side, cfg.channels, model.op, 1, ctx.device)
            group_rows[name] = {"strategy": name, "image": side, "batch": cfg.batch,
                                "max_iter": cap, "tol": solver.tol, "oom": False}
            timer = _StepTimer(ctx, model, x, y)  # type: ignore[arg-type]
            try:
                for _ in range(cfg.warmup):
                    timer.step(record=False)
                timers[name] = timer
            except RuntimeError as exc:
                if not _is_oom(exc):
                    raise
                group_rows[name]["oom"] = True
                del timer, model
                _free(ctx.device)
        for _ in range(cfg.repeats):
            for name in list(timers):
                try:
                    timers[name].step()
                except RuntimeError as exc:
                    if not _is_oom(exc):
                        raise
                    group_rows[name]["oom"] = True
                    del timers[name]
                    _free(ctx.device)
        for name, timer in timers.items():
            group_rows[name].update(timer.row())
            try:
                group_rows[name]["graph_bytes"] = timer.graph_bytes()
            except RuntimeError as exc:
                if not _is_oom(exc):
                    raise
            _free(ctx.device)
        del timers
        _free(ctx.device)
        for name, row in group_rows.items():
            rows.append(row)
            ctx.log(f"step/{label}: {name} side={side} cap={cap} -> "
                    + ("OOM" if row["oom"] else f"{row['step_s'] * 1e3:.1f} ms/step"))
    return rows


def _add_ratios(rows: list[dict[str, Any]], group: tuple[str, ...]) -> None:
    """step_s and graph_bytes of each row over those of JFB in the same group (same run)."""
    ref: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        if r["strategy"] == "JFB":
            ref[tuple(r[k] for k in group)] = r
    for r in rows:
        base = ref.get(tuple(r[k] for k in group))
        for key, out in (("step_s", "step_over_jfb"), ("graph_bytes", "graph_over_jfb")):
            ok = base is not None and not r["oom"] and not base["oom"]
            ok = ok and r.get(key) is not None and base.get(key)  # type: ignore[union-attr]
            r[out] = (r[key] / base[key]) if ok else None  # type: ignore[index]


def scenario_step(ctx: _Context) -> dict[str, Any]:
    """Training-step cost of every gradient strategy (see the module docstring)."""
    cfg = ctx.cfg
    names = list(_strategies(cfg))
    at_tol = _run_strategy_rows(ctx, "at_tol", [
        {"strategy": n, "image": cfg.image,
         "solver": Anderson(m=5, tol=cfg.tol, max_iter=cfg.max_iter)} for n in names
    ])
    sweep = _run_strategy_rows(ctx, "iter_sweep", [
        {"strategy": n, "image": cfg.image,
         "solver": Anderson(m=5, tol=FIXED_TOL, max_iter=cap)}
        for cap in cfg.iter_caps for n in names
    ])
    sizes = _run_strategy_rows(ctx, "size_sweep", [
        {"strategy": n, "image": side,
         "solver": Anderson(m=5, tol=FIXED_TOL, max_iter=cfg.sweep_iters)}
        for side in cfg.image_sizes for n in names
    ])
    for rows in (at_tol, sweep, sizes):
        _add_ratios(rows, ("image", "max_iter"))

    def pick(rows: list[dict[str, Any]], strategy: str, key: str) -> float | None:
        vals = [r[key] for r in rows if r["strategy"] == strategy and not r["oom"]]
        return vals[0] if vals and vals[0] is not None else None

    headline: dict[str, Any] = {}
    jfb_t, jfb_g = pick(at_tol, "JFB", "step_s"), pick(at_tol, "JFB", "graph_bytes")
    for name in names:
        t, g = pick(at_tol, name, "step_s"), pick(at_tol, name, "graph_bytes")
        headline[f"JFB/{name} step time"] = jfb_t / t if jfb_t and t else None
        headline[f"{name}/JFB graph bytes"] = g / jfb_g if g and jfb_g else None
    return {
        "model": _model_description(cfg, eta=1.0),
        "forward_solver": "Anderson(m=5, lam=1e-4); at_tol: tol and max_iter below; sweeps: "
        f"tol={FIXED_TOL:g} so every solve does exactly max_iter iterations",
        "ift_backward": f"tol={cfg.tol:g}, max_iter={cfg.max_iter}, Anderson m=10 / GMRES "
        "restart 10",
        "loss": "MSE(x_hat, x), Adam lr 1e-3",
        "memory_measure": "graph_bytes: peak bytes of distinct storages saved for backward by "
        "autograd during the forward (parameters excluded); peak_cuda_bytes: "
        "torch.cuda.max_memory_allocated over the step (CUDA only)",
        "at_tol": at_tol,
        "iter_sweep": sweep,
        "size_sweep": sizes,
        "ratios_at_tol": headline,
    }


def _model_description(cfg: BenchSize, eta: float) -> str:
    return (
        f"DE-GRAD, Blur(gaussian 5x5, sigma 5, zero padding), fresh DnCNN(depth={cfg.depth}, "
        f"width={cfg.width}, spectral_norm=True, residual=True), eta={eta}, seed {cfg.seed}; "
        f"synthetic smooth images, noise {NOISE}"
    )


# ----------------------------------------------------------------------------- scenario: solver
def _histogram(values: list[int], max_iter: int) -> dict[str, Any]:
    edges = [e for e in (1, 2, 3, 5, 8, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000)
             if e <= max_iter]
    edges = sorted(set([*edges, max_iter + 1]))
    counts = [0] * (len(edges) - 1)
    for v in values:
        for i in range(len(edges) - 1):
            if edges[i] <= v < edges[i + 1]:
                counts[i] += 1
                break
    pairs = zip(edges, edges[1:], strict=False)
    labels = [f"{a}" if b == a + 1 else f"{a}-{b - 1}" for a, b in pairs]
    return {"bins": labels, "edges": edges, "counts": counts}


def scenario_solver(ctx: _Context) -> dict[str, Any]:
    """Applications of T and time to tol 1e-4, Picard against Anderson, eval mode, no grad."""
    cfg = ctx.cfg
    if ctx.checkpoint:
        models = {f"checkpoint {ctx.checkpoint}": _load_checkpoint(ctx.checkpoint, ctx.device)}
    else:
        models = {
            f"fresh eta={eta}": _fresh_model(cfg, ctx.device, eta=eta).eval()
            for eta in (1.0, 0.5)
        }
    tol = 1e-4
    solvers = {
        "Picard": Picard(tol=tol, max_iter=cfg.solver_max_iter),
        "Anderson(m=5)": Anderson(m=5, tol=tol, max_iter=cfg.solver_max_iter),
        # The default lam (1e-4 times the mean of the Gram diagonal) is dominated by the oldest,
        # largest residual of the history; a much smaller lam shows what that costs.
        "Anderson(m=5, lam=1e-8)": Anderson(m=5, lam=1e-8, tol=tol,
                                            max_iter=cfg.solver_max_iter),
    }
    rows = []
    for mname, model in models.items():
        model.eval()
        op = model.op
        batches = []
        for start in range(0, cfg.solver_samples, cfg.batch):
            n = min(cfg.batch, cfg.solver_samples - start)
            batches.append(_synthetic_pair(n, cfg.image, cfg.channels, op, 100 + start,
                                           ctx.device))
        times: dict[str, list[_Span]] = {sname: [] for sname in solvers}
        last: dict[str, tuple[list[int], int, list[bool]]] = {}
        for rep in range(cfg.warmup + cfg.repeats):
            for sname, solver in solvers.items():  # round-robin over the solvers
                t0 = ctx.now()
                run_iters, run_evals, run_conv = [], 0, []
                for _x, y in batches:
                    with torch.no_grad(), model.fixed_map():
                        _, st = fixed_point(lambda z, y=y, m=model: m.T(z, y), model.initial(y),
                                            solver=solver, training=False)
                    run_iters += st.iterations.tolist()
                    run_evals += st.n_evals
                    run_conv += st.converged.tolist()
                t1 = ctx.now()
                if rep >= cfg.warmup:
                    times[sname].append(t1 - t0)
                last[sname] = (run_iters, run_evals, run_conv)
        for sname in solvers:
            per_sample, evals, conv = last[sname]
            row = {
                "model": mname,
                "solver": sname,
                "tol": tol,
                "max_iter": cfg.solver_max_iter,
                "samples": len(per_sample),
                "time_s": _wall(times[sname]),
                "time_cpu_s": _cpu(times[sname]),
                "ms_per_sample": 1e3 * _wall(times[sname]) / len(per_sample),  # type: ignore
                "batched_T_calls": evals,
                "iters_mean": statistics.fmean(per_sample),
                "iters_median": statistics.median(per_sample),
                "iters_max": max(per_sample),
                "converged_frac": sum(conv) / len(conv),
                "iterations_per_sample": per_sample,
                "histogram": _histogram(per_sample, cfg.solver_max_iter),
            }
            rows.append(row)
            ctx.log(f"solver: {mname} {sname}: {row['iters_mean']:.1f} it, "
                    f"{row['converged_frac']:.0%} converged, {row['time_s']:.3f} s")
    ratios = {}
    for mname in models:
        pic = next(r for r in rows if r["model"] == mname and r["solver"] == "Picard")
        anc = next(r for r in rows if r["model"] == mname and r["solver"] == "Anderson(m=5)")
        ratios[f"{mname}: Picard/Anderson time"] = pic["time_s"] / anc["time_s"]
        ratios[f"{mname}: Picard/Anderson T calls"] = pic["batched_T_calls"] / anc[
            "batched_T_calls"]
        small = next(r for r in rows if r["model"] == mname and "lam=1e-8" in r["solver"])
        ratios[f"{mname}: Anderson lam=1e-8 / lam=1e-4 T calls"] = small["batched_T_calls"] / anc[
            "batched_T_calls"]
    return {
        "model_source": "checkpoint" if ctx.checkpoint else "freshly initialised (untrained)",
        "model": ("loaded from --checkpoint" if ctx.checkpoint
                  else _model_description(cfg, eta=float("nan")).replace("eta=nan", "eta as "
                                                                            "labelled")),
        "image": cfg.image,
        "batch": cfg.batch,
        "rows": rows,
        "ratios": ratios,
    }


# ----------------------------------------------------------------------------- scenario: floor
class _CheapMap:
    """x -> 0.9 roll(x) + c: a map that costs one copy, to time a solver's own work."""

    def __init__(self, like: torch.Tensor) -> None:
        self.c = torch.rand_like(like)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return 0.9 * torch.roll(x, 1, dims=-1) + self.c


def scenario_floor(ctx: _Context) -> dict[str, Any]:
    """t_f, t_fb and the measured JFB step against its floor n t_f + t_fb."""
    cfg = ctx.cfg
    n = cfg.floor_iters
    reps = max(cfg.repeats, 5)
    model = _fresh_model(cfg, ctx.device)
    x, y = _synthetic_pair(cfg.batch, cfg.image, cfg.channels, model.op, 1, ctx.device)
    x0 = model.initial(y)
    variants = {
        "Picard, check_every=1": Picard(tol=FIXED_TOL, max_iter=n, check_every=1),
        "Picard, check_every=10": Picard(tol=FIXED_TOL, max_iter=n, check_every=10),
        "Anderson(m=5), check_every=1": Anderson(m=5, tol=FIXED_TOL, max_iter=n, check_every=1),
        "Anderson(m=5), check_every=10": Anderson(m=5, tol=FIXED_TOL, max_iter=n,
                                                  check_every=10),
    }
    timers = {}
    for vname, solver in variants.items():
        copy_ = copy.deepcopy(model)
        copy_.solver, copy_.backward = solver, JFB()
        timers[vname] = _StepTimer(ctx, copy_, x, y)
    g = torch.randn_like(x0)
    per_call = 5  # applications of T per t_f sample

    def one_t_f() -> _Span:
        """One application of T without grad (map frozen, as inside a solve)."""
        with torch.no_grad(), model.fixed_map():
            t0 = ctx.now()
            for _ in range(per_call):
                model.T(x0, y)
            return (ctx.now() - t0) / per_call

    def one_t_fb() -> _Span:
        """One application with grad + its backward to the parameters, setting up the frozen
        map included (spectral-norm power step), as a JFB step does once."""
        model.zero_grad(set_to_none=True)
        t0 = ctx.now()
        with model.fixed_map():
            out = model.T(x0, y)
        (out * g).sum().backward()
        return ctx.now() - t0

    # Round-robin: every repeat measures t_f, t_fb and one step of each variant, so that a
    # change of load on a shared machine falls on the floor and the steps alike. The first
    # rounds (warm-up, at least one) include full training steps, so that t_f meets the process
    # in the state a training run is in (allocator and kernel caches warm).
    t_f_all, t_fb_all = [], []
    for i in range(max(cfg.warmup, 1) + reps):
        record = i >= max(cfg.warmup, 1)
        for timer in timers.values():
            timer.step(record=record)
        tf, tfb = one_t_f(), one_t_fb()
        if record:
            t_f_all.append(tf)
            t_fb_all.append(tfb)
    t_f, t_fb = _wall(t_f_all), _wall(t_fb_all)
    floor = n * t_f + t_fb  # type: ignore[operator]
    t_f_cpu, t_fb_cpu = _cpu(t_f_all), _cpu(t_fb_all)
    floor_cpu = n * t_f_cpu + t_fb_cpu  # type: ignore[operator]

    # Each solver's own cost per iteration, on a map that costs one copy (round-robin too).
    cheap = _CheapMap(x0)
    t_map_all: list[_Span] = []
    over: dict[str, list[_Span]] = {v: [] for v in variants}
    with torch.no_grad():
        for i in range(cfg.warmup + reps):
            t0 = ctx.now()
            for _ in range(n):
                cheap(x0)
            t_map = (ctx.now() - t0) / n
            for vname, solver in variants.items():
                t0 = ctx.now()
                _, st = solver.solve(cheap, x0)
                per_iter = (ctx.now() - t0) / st.n_evals
                if i >= cfg.warmup:
                    over[vname].append(per_iter - t_map)
            if i >= cfg.warmup:
                t_map_all.append(t_map)
    t_map = _Span(_wall(t_map_all), _cpu(t_map_all))  # type: ignore[arg-type]

    rows = []
    for vname, timer in timers.items():
        timed = timer.row()
        overhead, overhead_cpu = _wall(over[vname]), _cpu(over[vname])
        fb = timed["forward_s"] + timed["backward_s"]
        fb_cpu = timed["forward_cpu_s"] + timed["backward_cpu_s"]
        predicted = floor + n * overhead  # type: ignore[operator]
        predicted_cpu = floor_cpu + n * overhead_cpu  # type: ignore[operator]
        rows.append({
            "solver": vname,
            "iterations": n,
            "n_evals": timed["n_evals_median"],
            "solver_overhead_per_iter_s": overhead,
            "solver_overhead_per_iter_cpu_s": overhead_cpu,
            "forward_s": timed["forward_s"],
            "backward_s": timed["backward_s"],
            "optim_s": timed["optim_s"],
            "step_s": timed["step_s"],
            "step_cpu_s": timed["step_cpu_s"],
            "floor_s": floor,
            "floor_cpu_s": floor_cpu,
            "fwd_bwd_over_floor": fb / floor,
            "fwd_bwd_over_floor_cpu": fb_cpu / floor_cpu,
            "floor_plus_overhead_s": predicted,
            "fwd_bwd_over_floor_plus_overhead": fb / predicted,
            "fwd_bwd_over_floor_plus_overhead_cpu": fb_cpu / predicted_cpu,
        })
        ctx.log(f"floor: {vname}: step {timed['step_s'] * 1e3:.1f} ms, floor {floor * 1e3:.1f} "
                f"ms, ratio {fb / floor:.2f}")
    return {
        "model": _model_description(cfg, eta=1.0),
        "image": cfg.image,
        "batch": cfg.batch,
        "t_f_s": t_f,
        "t_fb_s": t_fb,
        "t_fb_over_t_f": t_fb / t_f,  # type: ignore[operator]
        "t_f_cpu_s": t_f_cpu,
        "t_fb_cpu_s": t_fb_cpu,
        "t_cheap_map_s": t_map.wall,
        "t_f_all": [s.wall for s in t_f_all],
        "t_fb_all": [s.wall for s in t_fb_all],
        "floor_definition": "floor = n * t_f + t_fb (n no-grad applications in the solve, one "
        "application with forward + backward); fwd_bwd_over_floor compares the measured forward "
        "+ backward of a JFB step with it (the optimiser step is reported apart)",
        "rows": rows,
    }


# ----------------------------------------------------------------------------- scenario: peer
def _flat_grad(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) if p.grad is not None else torch.zeros_like(p).reshape(-1)
                      for p in model.parameters()])


class _Counter:
    """Counts the calls of T (batched applications)."""

    def __init__(self, f: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.f, self.calls = f, 0

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.f(z)


def scenario_peer(ctx: _Context) -> dict[str, Any]:
    """torchdeq's Anderson + IFT / one-step phantom gradient against ours, on the same T."""
    try:
        import torchdeq  # noqa: F401
        from torchdeq import get_deq
    except ImportError as exc:
        ctx.notes.append(f"torchdeq not importable ({exc}); scenario skipped. Install it with "
                         "'pip install --no-deps torchdeq==0.1.0'.")
        return {"skipped": True, "reason": f"torchdeq not importable: {exc}", "rows": []}
    version = getattr(sys.modules["torchdeq"], "__version__", None)
    if version is None:
        from importlib.metadata import version as _version

        version = _version("torchdeq")
    cfg = ctx.cfg
    m = 6  # torchdeq's default Anderson memory; used by both libraries here
    model = _fresh_model(cfg, ctx.device)
    x, y = _synthetic_pair(cfg.batch, cfg.image, cfg.channels, model.op, 1, ctx.device)
    init = copy.deepcopy(model.state_dict())

    def torchdeq_deq(ift: bool, tol: float) -> nn.Module:
        kw: dict[str, Any] = {"core": "indexing", "f_solver": "anderson", "f_max_iter":
                              cfg.max_iter, "f_tol": tol, "f_stop_mode": "rel"}
        if ift:
            kw.update(ift=True, b_solver="anderson", b_max_iter=cfg.max_iter, b_tol=cfg.tol,
                      b_stop_mode="rel")
        else:
            kw.update(grad=1)
        return get_deq(**kw)

    class Method:
        """One method on its own copy of the model (same initial weights for all)."""

        def __init__(self, name: str, regime: str, tol: float) -> None:
            self.name, self.regime, self.tol = name, regime, tol
            self.model = copy.deepcopy(model)
            self.model.load_state_dict(init)
            self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
            self.deq = None
            if name.startswith("torchdeq"):
                self.deq = torchdeq_deq("IFT" in name, tol).to(ctx.device).train()
            else:
                self.model.solver = Anderson(m=m, lam=1e-4, tol=tol, max_iter=cfg.max_iter)
                self.model.backward = (
                    IFT(solver="anderson", tol=cfg.tol, max_iter=cfg.max_iter, m=m)
                    if "IFT" in name else JFB())
            self.spans: dict[str, list[_Span]] = {"forward": [], "backward": [], "optim": []}
            self.calls: dict[str, list[float]] = {"forward": [], "backward": []}
            self.b_iters: list[float] = []
            self._b_info: list[float] = []
            self.grad: torch.Tensor | None = None
            self.graph: int | None = None

        def step(self, record: bool, first: bool = False) -> None:
            mdl = self.model
            self.opt.zero_grad(set_to_none=True)
            meter = SavedTensorMeter(exclude=mdl.parameters()) if first else None
            t0 = ctx.now()
            with mdl.fixed_map():
                counter = _Counter(lambda z: mdl.T(z, y))
                if meter is not None:
                    meter.__enter__()
                stats = None
                self._b_info.clear()
                if self.deq is None:
                    out, stats = fixed_point(counter, mdl.initial(y), solver=mdl.solver,
                                             backward=mdl.backward, params=[*mdl.parameters()])
                else:
                    zs, _info = self.deq(counter, mdl.initial(y), solver_kwargs={"m": m},
                                         backward_writer=self._writer)
                    out = zs[-1]
                loss = F.mse_loss(out, x)
                if meter is not None:
                    meter.__exit__(None, None, None)
                t1 = ctx.now()
                n_fwd = counter.calls
                loss.backward()
                t2 = ctx.now()
                n_bwd = counter.calls - n_fwd
            if first:  # the gradient at the initial weights, and the graph size
                self.grad = _flat_grad(mdl).detach().clone()
                self.graph = meter.peak if meter is not None else None
            self.opt.step()
            t3 = ctx.now()
            if record:
                self.spans["forward"].append(t1 - t0)
                self.spans["backward"].append(t2 - t1)
                self.spans["optim"].append(t3 - t2)
                self.calls["forward"].append(float(n_fwd))
                self.calls["backward"].append(float(n_bwd))
                if stats is not None and "iterations" in stats.backward:
                    self.b_iters.append(float(stats.backward["iterations"].float().mean()))
                elif self._b_info:
                    self.b_iters.append(self._b_info[-1])

        def _writer(self, info: dict[str, Any]) -> None:
            """torchdeq's backward_writer: the backward solver's statistics."""
            nstep = info.get("nstep")
            if nstep is not None:
                self._b_info.append(float(torch.as_tensor(nstep).float().mean()))

        def row(self) -> dict[str, Any]:
            steps = [a + b + c for a, b, c in zip(*self.spans.values(), strict=True)]
            row = {"method": self.name, "regime": self.regime, "tol": self.tol,
                   "max_iter": cfg.max_iter}
            row.update({f"{k}_s": _wall(v) for k, v in self.spans.items()})
            row["step_s"] = _wall(steps)
            row["step_cpu_s"] = _cpu(steps)
            row["T_calls_forward"] = _median(self.calls["forward"])
            row["T_calls_backward"] = _median(self.calls["backward"])
            row["backward_iters_mean"] = statistics.fmean(self.b_iters) if self.b_iters else None
            row["graph_bytes"] = self.graph
            return row

    method_names = ["ours JFB", "torchdeq 1-step phantom", "ours IFT", "torchdeq IFT"]
    rows, grads = [], {}
    for regime, tol in (("tol", cfg.tol), ("fixed", FIXED_TOL)):
        methods = [Method(name, regime, tol) for name in method_names]
        for meth in methods:  # gradient at the initial weights + graph size, then warm-up
            meth.step(record=False, first=True)
            for _ in range(cfg.warmup):
                meth.step(record=False)
        for _ in range(cfg.repeats):  # round-robin: load changes fall on all methods alike
            for meth in methods:
                meth.step(record=True)
        for meth in methods:
            row = meth.row()
            rows.append(row)
            grads[(regime, meth.name)] = meth.grad
            ctx.log(f"peer: {meth.name} ({regime}): {row['step_s'] * 1e3:.1f} ms/step, "
                    f"{row['T_calls_forward']:.0f}+{row['T_calls_backward']:.0f} T calls")
        del methods

    def cos(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(F.cosine_similarity(a.double(), b.double(), dim=0))

    agreement = {}
    for regime in ("tol", "fixed"):
        for a, b in (("ours JFB", "torchdeq 1-step phantom"), ("ours IFT", "torchdeq IFT"),
                     ("ours JFB", "ours IFT")):
            ga, gb = grads[(regime, a)], grads[(regime, b)]
            agreement[f"{regime}: cos({a}, {b})"] = cos(ga, gb)
            agreement[f"{regime}: |{a} - {b}| / |{b}|"] = float(
                (ga - gb).norm() / gb.norm().clamp_min(1e-30))
    ratios = {}
    for regime in ("tol", "fixed"):
        by = {r["method"]: r for r in rows if r["regime"] == regime}
        ratios[f"{regime}: torchdeq IFT / ours IFT step"] = (
            by["torchdeq IFT"]["step_s"] / by["ours IFT"]["step_s"])
        ratios[f"{regime}: torchdeq 1-step / ours JFB step"] = (
            by["torchdeq 1-step phantom"]["step_s"] / by["ours JFB"]["step_s"])
        ratios[f"{regime}: ours IFT / ours JFB step"] = (
            by["ours IFT"]["step_s"] / by["ours JFB"]["step_s"])
    return {
        "skipped": False,
        "torchdeq_version": version,
        "model": _model_description(cfg, eta=1.0),
        "image": cfg.image,
        "batch": cfg.batch,
        "settings": f"Anderson m={m}, lam=1e-4 (ours scales lam by tr(GG^T)/n, torchdeq does "
        "not), relative-residual stop in both; torchdeq stops when the worst sample reaches tol "
        "and returns the lowest-residual iterate, ours freezes each sample at its own tol. "
        f"IFT backward: Anderson, tol {cfg.tol:g}, max_iter {cfg.max_iter}. Regime 'tol': "
        f"forward tol {cfg.tol:g}; 'fixed': tol {FIXED_TOL:g} (every solve runs max_iter).",
        "rows": rows,
        "gradient_agreement": agreement,
        "ratios": ratios,
    }


# ----------------------------------------------------------------------------- scenario: inference
def scenario_inference(ctx: _Context) -> dict[str, Any]:
    """ms per image at each side in ``infer_sizes`` (eval mode, no grad, Anderson to tol 1e-4)."""
    cfg = ctx.cfg
    if ctx.checkpoint:
        model = _load_checkpoint(ctx.checkpoint, ctx.device)
        source = f"checkpoint {ctx.checkpoint}"
    else:
        model = _fresh_model(cfg, ctx.device)
        source = "freshly initialised (untrained)"
        model.solver = Anderson(m=5, tol=cfg.tol, max_iter=cfg.max_iter)
    model.eval()
    tol, max_iter = model.solver.budget(training=False)
    rows = []
    for side, batch in zip(cfg.infer_sizes, cfg.infer_batch, strict=True):
        _x, y = _synthetic_pair(batch, side, cfg.channels, model.op, 7, ctx.device)
        times, iters = [], []
        try:
            with torch.no_grad():
                for i in range(cfg.warmup + cfg.repeats):
                    t0 = ctx.now()
                    model(y)
                    t1 = ctx.now()
                    if i >= cfg.warmup:
                        times.append(t1 - t0)
                        iters.append(model.last_stats.mean_iterations())
                with model.fixed_map():
                    t_t = []
                    for i in range(cfg.warmup + cfg.repeats):
                        t0 = ctx.now()
                        model.T(y, y)
                        t1 = ctx.now()
                        if i >= cfg.warmup:
                            t_t.append(t1 - t0)
        except RuntimeError as exc:
            if not _is_oom(exc):
                raise
            rows.append({"image": side, "batch": batch, "oom": True})
            _free(ctx.device)
            continue
        t = _wall(times)
        row = {
            "image": side,
            "batch": batch,
            "oom": False,
            "ms_per_image": 1e3 * t / batch,  # type: ignore[operator]
            "ms_per_batch": 1e3 * t,  # type: ignore[operator]
            "iters_mean": statistics.fmean(iters),
            "ms_per_image_cpu": 1e3 * _cpu(times) / batch,  # type: ignore[operator]
            "ms_per_T_per_image": 1e3 * _wall(t_t) / batch,  # type: ignore[operator]
        }
        rows.append(row)
        ctx.log(f"inference: {side}x{side}: {row['ms_per_image']:.1f} ms/image, "
                f"{row['iters_mean']:.1f} it")
    return {
        "model_source": source,
        "model": source if ctx.checkpoint else _model_description(cfg, eta=1.0),
        "solver": f"{type(model.solver).__name__}, eval tol {tol:g}, eval max_iter {max_iter}",
        "rows": rows,
    }


# ----------------------------------------------------------------------------- reporting
def scenario_malloc(ctx: _Context) -> dict[str, Any]:
    """Inference and JFB training steps with glibc's default allocator settings, then the same
    after :func:`tune_cpu_malloc`, in one process (the tuning cannot be undone, so the order is
    fixed: default first). Skipped on CUDA, off Linux, or when the process is already tuned."""
    if ctx.device.type != "cpu" or not sys.platform.startswith("linux"):
        return {"skipped": True, "reason": "CPU on Linux (glibc) only", "rows": []}
    if _malloc_state != "default":
        return {"skipped": True, "rows": [],
                "reason": "the allocator was already tuned in this process (run this scenario "
                "on its own: jfb bench --scenario malloc)"}
    cfg = ctx.cfg
    base = _fresh_model(cfg, ctx.device)
    x, y = _synthetic_pair(cfg.batch, cfg.image, cfg.channels, base.op, 1, ctx.device)
    n = cfg.floor_iters

    def measure(state: str) -> dict[str, Any]:
        model = copy.deepcopy(base).eval()
        model.solver = Anderson(m=5, tol=FIXED_TOL, max_iter=n)
        spans = []
        with torch.no_grad():  # inference first, as a process that only restores images
            for i in range(cfg.warmup + cfg.repeats):
                t0 = ctx.now()
                model(y)
                if i >= cfg.warmup:
                    spans.append(ctx.now() - t0)
        model.train()
        model.backward = JFB()
        timed = _time_training(ctx, model, x, y, repeats=cfg.repeats, warmup=cfg.warmup,
                               measure_graph=False)
        return {"malloc": state, "inference_s": _wall(spans), "inference_cpu_s": _cpu(spans),
                "step_s": timed["step_s"], "step_cpu_s": timed["step_cpu_s"],
                "forward_s": timed["forward_s"], "backward_s": timed["backward_s"]}

    before = measure("default")
    after = measure(tune_cpu_malloc())
    for row in (before, after):
        ctx.log(f"malloc: {row['malloc'][:7]}: inference {row['inference_s'] * 1e3:.1f} ms, "
                f"JFB step {row['step_s'] * 1e3:.1f} ms")
    return {
        "skipped": False,
        "model": _model_description(cfg, eta=1.0),
        "image": cfg.image,
        "batch": cfg.batch,
        "iterations": n,
        "protocol": f"one process: {cfg.warmup} warm-up + {cfg.repeats} inference solves "
        f"(Anderson, exactly {n} iterations, no grad), then as many JFB training steps; "
        "default allocator first, then tuned",
        "rows": [before, after],
        "ratios": {
            "default/tuned inference time": before["inference_s"] / after["inference_s"],
            "default/tuned JFB step time": before["step_s"] / after["step_s"],
        },
    }


SCENARIOS: dict[str, Callable[[_Context], dict[str, Any]]] = {
    "step": scenario_step,
    "solver": scenario_solver,
    "floor": scenario_floor,
    "peer": scenario_peer,
    "inference": scenario_inference,
    "malloc": scenario_malloc,
}
#: What ``--scenario all`` runs (``malloc`` must run on its own, before any tuning).
ALL = ("step", "solver", "floor", "peer", "inference")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _ms(v: Any) -> str:
    return "-" if v is None else f"{1e3 * v:.1f}"


def _mib(v: Any) -> str:
    return "-" if v is None else f"{v / 2**20:.2f}"


def _num(v: Any, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def _table(rows: list[dict[str, Any]], cols: list[tuple[str, Callable[[dict], str]]]) -> str:
    head = "| " + " | ".join(h for h, _ in cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    body = ["| " + " | ".join(fn(r) for _, fn in cols) + " |" for r in rows]
    return "\n".join([head, sep, *body])


_STEP_COLS: list[tuple[str, Callable[[dict], str]]] = [
    ("strategy", lambda r: r["strategy"]),
    ("side", lambda r: str(r["image"])),
    ("max_iter", lambda r: str(r["max_iter"])),
    ("fwd it", lambda r: "OOM" if r["oom"] else _num(r["forward_iters_mean"], ".1f")),
    ("bwd it", lambda r: "-" if r["oom"] else _num(r["backward_iters_mean"], ".1f")),
    ("forward ms", lambda r: "-" if r["oom"] else _ms(r["forward_s"])),
    ("backward ms", lambda r: "-" if r["oom"] else _ms(r["backward_s"])),
    ("optim ms", lambda r: "-" if r["oom"] else _ms(r["optim_s"])),
    ("step ms", lambda r: "-" if r["oom"] else _ms(r["step_s"])),
    ("step CPU ms", lambda r: "-" if r["oom"] else _ms(r["step_cpu_s"])),
    ("step / JFB", lambda r: _num(r.get("step_over_jfb"))),
    ("graph MiB", lambda r: "-" if r["oom"] else _mib(r["graph_bytes"])),
    ("graph / JFB", lambda r: _num(r.get("graph_over_jfb"))),
    ("peak CUDA MiB", lambda r: "-" if r["oom"] else _mib(r["peak_cuda_bytes"])),
]


def to_markdown(record: dict[str, Any]) -> str:
    """A human-readable summary (markdown tables) of one scenario's JSON record."""
    res = record["results"]
    lines = [
        f"## `{record['scenario']}` ({record['size']})",
        "",
        f"- command: `{record['command']}`",
        f"- device: {record['device_name']} ({record['device']}), {record['threads']} threads, "
        f"torch {record['torch']}, {record['date']}, load average at start "
        f"{record['loadavg_start']}",
        "",
    ]
    name = record["scenario"]
    if name == "step":
        lines += [f"Model: {res['model']}.", f"Forward: {res['forward_solver']}.",
                  f"Memory: {res['memory_measure']}.", ""]
        for key, title in (("at_tol", "All strategies at the same forward tolerance"),
                           ("iter_sweep", "Forward iteration cap (fixed-iteration forward)"),
                           ("size_sweep", "Image side (fixed-iteration forward)")):
            lines += [f"### {title}", "", _table(res[key], _STEP_COLS), ""]
    elif name == "solver":
        lines += [f"Model: {res['model_source']}; {res['model']}.", ""]
        lines += [_table(res["rows"], [
            ("model", lambda r: r["model"]), ("solver", lambda r: r["solver"]),
            ("samples", lambda r: str(r["samples"])),
            ("mean it", lambda r: _num(r["iters_mean"], ".1f")),
            ("max it", lambda r: str(r["iters_max"])),
            ("converged", lambda r: f"{r['converged_frac']:.0%}"),
            ("batched T calls", lambda r: str(r["batched_T_calls"])),
            ("time s", lambda r: _num(r["time_s"], ".3f")),
            ("CPU s", lambda r: _num(r["time_cpu_s"], ".3f")),
            ("ms/sample", lambda r: _num(r["ms_per_sample"], ".1f")),
        ]), "", "Per-sample iteration histogram:", ""]
        for r in res["rows"]:
            h = r["histogram"]
            pairs = ", ".join(f"{b}: {c}" for b, c in zip(h["bins"], h["counts"], strict=True) if c)
            lines.append(f"- {r['model']}, {r['solver']}: {pairs}")
        lines.append("")
    elif name == "floor":
        lines += [
            f"t_f = {_ms(res['t_f_s'])} ms, t_fb = {_ms(res['t_fb_s'])} ms "
            f"(t_fb/t_f = {res['t_fb_over_t_f']:.2f}); CPU time: t_f = {_ms(res['t_f_cpu_s'])} "
            f"ms, t_fb = {_ms(res['t_fb_cpu_s'])} ms; batch {res['batch']}, side {res['image']}.",
            f"{res['floor_definition']}.", "",
            _table(res["rows"], [
                ("solver", lambda r: r["solver"]), ("n", lambda r: str(r["iterations"])),
                ("overhead ms/it", lambda r: _num(1e3 * r["solver_overhead_per_iter_s"], ".3f")),
                ("fwd ms", lambda r: _ms(r["forward_s"])),
                ("bwd ms", lambda r: _ms(r["backward_s"])),
                ("optim ms", lambda r: _ms(r["optim_s"])),
                ("floor ms", lambda r: _ms(r["floor_s"])),
                ("(fwd+bwd)/floor", lambda r: _num(r["fwd_bwd_over_floor"])),
                ("(fwd+bwd)/(floor+n overhead)",
                 lambda r: _num(r["fwd_bwd_over_floor_plus_overhead"])),
                ("CPU-time: (fwd+bwd)/floor", lambda r: _num(r["fwd_bwd_over_floor_cpu"])),
                ("CPU-time: .../(floor+n overhead)",
                 lambda r: _num(r["fwd_bwd_over_floor_plus_overhead_cpu"])),
            ]), "",
        ]
    elif name == "peer":
        if res["skipped"]:
            lines += [f"Skipped: {res['reason']}.", ""]
        else:
            lines += [f"torchdeq {res['torchdeq_version']}. {res['settings']}", "",
                      _table(res["rows"], [
                          ("method", lambda r: r["method"]), ("regime", lambda r: r["regime"]),
                          ("T calls fwd", lambda r: _num(r["T_calls_forward"], ".0f")),
                          ("T calls bwd", lambda r: _num(r["T_calls_backward"], ".0f")),
                          ("bwd solver it", lambda r: _num(r["backward_iters_mean"], ".1f")),
                          ("forward ms", lambda r: _ms(r["forward_s"])),
                          ("backward ms", lambda r: _ms(r["backward_s"])),
                          ("step ms", lambda r: _ms(r["step_s"])),
                          ("step CPU ms", lambda r: _ms(r["step_cpu_s"])),
                          ("graph MiB", lambda r: _mib(r["graph_bytes"])),
                      ]), "", "Gradient agreement at the initial weights:", ""]
            lines += [f"- {k}: {v:.4g}" for k, v in res["gradient_agreement"].items()]
            lines.append("")
    elif name == "inference":
        lines += [f"Model: {res['model']}. Solver: {res['solver']}.", "",
                  _table(res["rows"], [
                      ("side", lambda r: str(r["image"])), ("batch", lambda r: str(r["batch"])),
                      ("ms/image", lambda r: "OOM" if r["oom"] else _num(r["ms_per_image"], ".1f")),
                      ("CPU ms/image",
                       lambda r: "-" if r["oom"] else _num(r["ms_per_image_cpu"], ".1f")),
                      ("mean it", lambda r: "-" if r["oom"] else _num(r["iters_mean"], ".1f")),
                      ("ms per T per image",
                       lambda r: "-" if r["oom"] else _num(r["ms_per_T_per_image"], ".2f")),
                  ]), ""]
    elif name == "malloc":
        if res["skipped"]:
            lines += [f"Skipped: {res['reason']}.", ""]
        else:
            lines += [f"Model: {res['model']}. {res['protocol']}.", "",
                      _table(res["rows"], [
                          ("allocator", lambda r: r["malloc"]),
                          ("inference ms", lambda r: _ms(r["inference_s"])),
                          ("inference CPU ms", lambda r: _ms(r["inference_cpu_s"])),
                          ("JFB step ms", lambda r: _ms(r["step_s"])),
                          ("JFB step CPU ms", lambda r: _ms(r["step_cpu_s"])),
                      ]), ""]
    ratios = {k: v for k, v in res.items() if k.startswith("ratio")}
    for title, d in ratios.items():
        lines += [f"{title}:", ""] + [f"- {k}: {_num(v, '.3g')}" for k, v in d.items()] + [""]
    for note in record.get("notes", []):
        lines.append(f"Note: {note}")
    return "\n".join(lines).rstrip() + "\n"


def run_scenario(
    name: str,
    *,
    size: str = "small",
    device: str | torch.device = "cpu",
    out: str | Path | None = None,
    repeats: int | None = None,
    warmup: int | None = None,
    checkpoint: str | None = None,
    threads: int | None = None,
    quiet: bool = False,
    command: str | None = None,
) -> dict[str, Any]:
    """Run one scenario and return its record; with ``out``, also write ``<name>_<size>.json``
    and ``.md`` there. ``repeats``/``warmup`` override the size preset."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but CUDA is not available")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    cfg = SIZES[size]
    if repeats is not None:
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        cfg = replace(cfg, repeats=repeats)
    if warmup is not None:
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        cfg = replace(cfg, warmup=warmup)
    ctx = _Context(size, cfg, dev, checkpoint=checkpoint, quiet=quiet)
    if command is None:
        command = f"jfb.bench.run_scenario({name!r}, size={size!r}, device={str(dev)!r}, " \
                  f"repeats={repeats!r}, warmup={warmup!r}, checkpoint={checkpoint!r}, " \
                  f"threads={threads!r})"
    start = _loadavg()
    t0 = time.perf_counter()
    threads_before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        used_threads = torch.get_num_threads()
        results = SCENARIOS[name](ctx)
    finally:
        torch.set_num_threads(threads_before)
    record = {
        "scenario": name,
        "size": size,
        "device": str(dev),
        "device_name": _device_name(dev),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if dev.type == "cuda" else None,
        "cuda_settings": {
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
        } if dev.type == "cuda" else None,
        "threads": used_threads,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_start": start,
        "loadavg_end": _loadavg(),
        "wall_s": time.perf_counter() - t0,
        "config": asdict(cfg),
        "timing": "median of repeats after warm-up; CUDA synchronised before every clock read; "
        "*_s: wall clock, *_cpu_s: CPU time of the process (time.process_time)",
        "cpu_malloc": _malloc_record(),
        "results": results,
        "notes": ctx.notes,
    }
    if out is not None:
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = out_dir / f"{name}_{size}"
        stem.with_suffix(".json").write_text(json.dumps(record, indent=1, default=_json_default)
                                             + "\n")
        stem.with_suffix(".md").write_text(to_markdown(record))
    return record


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def build_parser() -> argparse.ArgumentParser:
    """The ``jfb bench`` argument parser."""
    p = argparse.ArgumentParser(
        prog="jfb bench",
        description="Training and inference cost of implicit models: per-step time and memory "
        "of every gradient strategy, solver convergence, the floor of a JFB step, torchdeq, "
        "inference. Writes JSON + markdown per scenario.",
    )
    p.add_argument("--scenario", default="all", choices=[*SCENARIOS, "all"],
                   help="which benchmark (default: all = every one but malloc, which "
                   "compares the CPU allocator settings and must run on its own)")
    p.add_argument("--size", default="small", choices=list(SIZES),
                   help="full: the paper's sizes (for a GPU); small: CPU-sized; tiny: seconds")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    p.add_argument("--out", default="bench-results", help="output folder (default bench-results)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (median reported)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up runs per configuration")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--checkpoint", default=None,
                   help="a trained checkpoint for the solver and inference scenarios")
    p.add_argument("--malloc", default="tuned", choices=["tuned", "default"],
                   help="CPU only: 'tuned' (default) keeps freed memory in glibc's heap "
                   "(see tune_cpu_malloc); 'default' leaves the allocator as it is")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    """``jfb bench``: run the chosen scenario(s); returns the exit status."""
    prog = "jfb bench" if argv is not None else "python -m jfb.bench"
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--"]:  # "jfb bench -- --scenario step" passes the separator through
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    names = list(ALL) if args.scenario == "all" else [args.scenario]
    command = " ".join([prog, *argv])
    if args.malloc == "tuned" and "malloc" not in names and not args.device.startswith("cuda"):
        tune_cpu_malloc()
    for name in names:
        record = run_scenario(
            name, size=args.size, device=args.device, out=args.out, repeats=args.repeats,
            warmup=args.warmup, checkpoint=args.checkpoint, threads=args.threads,
            quiet=args.quiet, command=command,
        )
        if not args.quiet:
            print(f"[bench] wrote {Path(args.out) / f'{name}_{args.size}'}.json/.md "
                  f"({record['wall_s']:.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
