"""What every scenario shares: the size presets (``--size``), the context a scenario receives
(sizes, device, clock, options, and the model it times: fresh, or the ``--checkpoint`` one),
clock readings and their medians, the synthetic model and data, and the timed training step
(step, floor and malloc scenarios).
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from jfb.bench.memory import SavedTensorMeter
from jfb.deq import BackwardStrategy, Solver
from jfb.device import synchronize
from jfb.models import DEGrad, ImplicitModel
from jfb.nets import DnCNN
from jfb.physics import Blur, kernels

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
        photo_megapixels: the photo sizes of the ``photo`` scenario (``jfb deblur`` on them).
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
    photo_megapixels: tuple[float, ...] = (1.0, 4.0, 12.0)


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
        photo_megapixels=(0.01,),
    ),
}


@dataclass
class Context:
    """What every scenario receives: sizes, device, clock and options, and the model it times
    (:meth:`model`): a fresh DE-GRAD (:func:`fresh_model`), or a copy of the trained model of
    ``checkpoint`` (any implicit kind: DE-GRAD, DE-Prox, DE-ADMM), with its own net and
    operator."""

    size_name: str
    cfg: BenchSize
    device: torch.device
    checkpoint: str | None = None
    quiet: bool = False
    notes: list[str] = field(default_factory=list)
    _trained: ImplicitModel | None = field(default=None, repr=False)

    def model(
        self,
        *,
        solver: Solver | None = None,
        backward: BackwardStrategy | None = None,
    ) -> ImplicitModel:
        """A new model in training mode: :func:`fresh_model`, or a copy of the ``checkpoint``
        model (loaded once), with ``solver`` / ``backward`` replacing its own when given."""
        if self.checkpoint is None:
            return fresh_model(self.cfg, self.device, solver=solver, backward=backward)
        model = copy.deepcopy(self._checkpoint_model()).train()
        if solver is not None:
            model.solver = solver
        if backward is not None:
            model.backward = backward
        return model

    def _checkpoint_model(self) -> ImplicitModel:
        """The ``checkpoint`` model, loaded on first use (eval mode; :meth:`model` copies it)."""
        if self._trained is None:
            assert self.checkpoint is not None
            self._trained = load_checkpoint(self.checkpoint, self.device)
        return self._trained

    def describe_model(self, eta: float | None = 1.0) -> str:
        """What :meth:`model` builds, for the records (``eta=None``: a fresh model's eta is
        given elsewhere)."""
        if self.checkpoint is None:
            return model_description(self.cfg, eta=eta)
        model = self._checkpoint_model()
        n_params = sum(p.numel() for p in model.parameters())
        return (f"checkpoint {self.checkpoint}: {type(model).__name__}, {n_params} parameters, "
                f"operator {type(model.op).__name__}, its init {model.init!r}; synthetic smooth "
                f"images, noise {NOISE}")

    def log(self, msg: str) -> None:
        if not self.quiet:
            print(f"[bench] {msg}", file=sys.stderr, flush=True)

    def now(self) -> Span:
        """Wall and process-CPU clocks, read after every queued device kernel has finished."""
        synchronize(self.device)
        return Span(time.perf_counter(), time.process_time())


class Span(NamedTuple):
    """A clock reading or a duration: wall-clock seconds and CPU seconds of the process.

    With one thread and a quiet machine the two agree; on a shared machine the CPU time leaves
    out the time the process waited for a core (with several threads it adds up all of them).
    """

    wall: float
    cpu: float

    def __sub__(self, other: object) -> Span:
        assert isinstance(other, Span)
        return Span(self.wall - other.wall, self.cpu - other.cpu)

    def __add__(self, other: object) -> Span:  # type: ignore[override]
        assert isinstance(other, Span)
        return Span(self.wall + other.wall, self.cpu + other.cpu)

    def __truediv__(self, k: float) -> Span:
        return Span(self.wall / k, self.cpu / k)


# ----------------------------------------------------------------------------- building blocks
def synthetic_pair(
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


def fresh_model(
    cfg: BenchSize,
    device: torch.device,
    *,
    solver: Solver | None = None,
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


def load_checkpoint(path: str, device: torch.device) -> nn.Module:
    """A trained implicit model from ``--checkpoint``, in eval mode (ValueError when it has no
    solver)."""
    from jfb.pipeline import load_model

    model, _cfg, _info = load_model(path, device=device)
    if not isinstance(getattr(model, "solver", None), Solver):
        raise ValueError(f"{path}: not an implicit model (no fixed-point solver to benchmark)")
    return model


def model_description(cfg: BenchSize, eta: float | None) -> str:
    """The model and data of :func:`fresh_model` and :func:`synthetic_pair`, for the records
    (``eta=None``: said elsewhere)."""
    step = "eta as labelled" if eta is None else f"eta={eta}"
    return (
        f"DE-GRAD, Blur(gaussian 5x5, sigma 5, zero padding), fresh DnCNN(depth={cfg.depth}, "
        f"width={cfg.width}, spectral_norm=True, residual=True), {step}, seed {cfg.seed}; "
        f"synthetic smooth images, noise {NOISE}"
    )


# ----------------------------------------------------------------------------- medians, errors
def median(values: list[float]) -> float | None:
    """Median of the values; None when there are none."""
    return float(statistics.median(values)) if values else None


def median_wall(spans: list[Span]) -> float | None:
    """Median wall-clock seconds."""
    return median([s.wall for s in spans])


def median_cpu(spans: list[Span]) -> float | None:
    """Median process-CPU seconds."""
    return median([s.cpu for s in spans])


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is the device running out of memory."""
    oom = getattr(torch, "OutOfMemoryError", None)
    return (oom is not None and isinstance(exc, oom)) or "out of memory" in str(exc).lower()


def empty_cache(device: torch.device) -> None:
    """Give cached CUDA memory back after an out-of-memory or a finished group (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- training steps
class StepTimer:
    """Adam steps on MSE(model(y), x), each split into forward / backward / optimiser times."""

    def __init__(
        self, ctx: Context, model: ImplicitModel, x: torch.Tensor, y: torch.Tensor
    ) -> None:
        self.ctx, self.model, self.x, self.y = ctx, model, x, y
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        self.phases: dict[str, list[Span]] = {"forward": [], "backward": [], "optim": []}
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
        row: dict[str, Any] = {f"{k}_s": median_wall(v) for k, v in self.phases.items()}
        row["step_s"] = median_wall(steps)
        row.update({f"{k}_cpu_s": median_cpu(v) for k, v in self.phases.items()})
        row["step_cpu_s"] = median_cpu(steps)
        row["step_s_all"] = [s.wall for s in steps]
        row["forward_iters_mean"] = statistics.fmean(self.iters) if self.iters else None
        row["n_evals_median"] = median(self.evals)
        row["backward_iters_mean"] = statistics.fmean(self.b_iters) if self.b_iters else None
        row["peak_cuda_bytes"] = median(self.peaks)
        row["graph_bytes"] = None
        return row


def time_training(
    ctx: Context,
    model: ImplicitModel,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    repeats: int,
    warmup: int,
    measure_graph: bool = True,
) -> dict[str, Any]:
    """Warm-up then ``repeats`` Adam steps on MSE(model(y), x); medians of the phase times."""
    timer = StepTimer(ctx, model, x, y)
    for i in range(warmup + repeats):
        timer.step(record=i >= warmup)
    row = timer.row()
    if measure_graph:
        row["graph_bytes"] = timer.graph_bytes()
    return row
