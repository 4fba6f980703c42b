"""Implicit reconstructors: x_hat = x*, the fixed point of a learned physics-aware map T(.; y).

    DE-GRAD   T(x) = x - eta * (A^T(A x - y) + R(x))      (gradient step on data fit + learned R)
    DE-Prox   T(x) = R(x - eta * A^T(A x - y))            (learned proximal / denoising step)

eta is learned, kept in (0, eta_max) by eta = eta_max * sigmoid(s) (or softplus(s) if eta_max is
None). With ``eta_scale="operator"`` eta and eta_max are in units of 1/L, L = ||A^T A|| = ||A||^2
estimated once (the data-fit step x - eta A^T(Ax - y) is non-expansive for eta <= 2/L), so the
same config suits operators of any scale. The solve and the gradient come from
:func:`jfb.deq.fixed_point`, so every solver and backward strategy of the engine applies.

Stability diagnostics at a fixed point x*: :meth:`ImplicitModel.contraction` (||J_T(x*)||_2 per
sample, power iteration) and :meth:`ImplicitModel.jacobian_frobenius` (Hutchinson estimate of
||J_T(x*)||_F^2, differentiable: the Jacobian regulariser of Bai, Koltun and Kolter, 2021).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from jfb.deq import JFB, Anderson, BackwardStrategy, SolverStats, contraction_estimate, fixed_point
from jfb.deq.solvers import _SolverBase
from jfb.models.init import INITS, initial_estimate
from jfb.nets import frozen_spectral_norm, has_batch_norm, spectral_norm_power_step
from jfb.physics import LinearOperator

#: How eta is measured: "none" (absolute) or "operator" (in units of 1 / ||A^T A||).
ETA_SCALES = ("none", "operator")
# Power iteration for L = ||A||^2: seeded (every DDP rank gets the same L), tight tolerance.
_NORM_SEED, _NORM_ITERS, _NORM_TOL = 0, 200, 1e-7


class ImplicitModel(nn.Module):
    """Common machinery of fixed-point reconstructors; subclasses define ``T(x, y)``.

    Args:
        op: the forward operator A (a ``jfb.physics.LinearOperator``).
        net: the learned part R; must act on each sample alone (no BatchNorm).
        solver: forward solver (default ``Anderson()``); its eval budget is used in eval mode.
        backward: gradient strategy (default ``JFB()``).
        init: initial iterate: "adjoint" (A^T y), "y", or "tikhonov" (a few CG steps of
            Tikhonov with gradient penalty).
        eta: initial step size; eta_max: its upper bound (None: positive, unbounded).
        contraction_iters: if > 0, every solve estimates ||J_T(x*)|| (stats.contraction).
        eta_scale: "none" (eta as given) or "operator": eta and eta_max in units of 1/L with
            L = ||A^T A||, estimated at the first forward (or by :meth:`calibrate`) and kept in
            the buffer ``ata_norm`` (registered only in this mode), so a checkpoint restores it.
    """

    def __init__(
        self,
        op: LinearOperator,
        net: nn.Module,
        *,
        solver: _SolverBase | None = None,
        backward: BackwardStrategy | None = None,
        init: str = "adjoint",
        eta: float = 1.0,
        eta_max: float | None = 2.0,
        contraction_iters: int = 0,
        eta_scale: str = "none",
    ) -> None:
        super().__init__()
        if not isinstance(op, LinearOperator):
            raise TypeError(f"op must be a jfb.physics.LinearOperator, got {type(op).__name__}")
        if has_batch_norm(net):
            raise ValueError(
                "the net contains BatchNorm: a fixed-point map must act on each sample alone "
                "(build the net with batch_norm=False)"
            )
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if not (math.isfinite(eta) and eta > 0):
            raise ValueError(f"eta must be a positive number, got {eta!r}")
        if eta_max is not None and not (math.isfinite(eta_max) and eta < eta_max):
            raise ValueError(f"need 0 < eta < eta_max, got eta={eta!r}, eta_max={eta_max!r}")
        if eta_scale not in ETA_SCALES:
            raise ValueError(f"eta_scale must be one of {ETA_SCALES}, got {eta_scale!r}")
        self.op = op
        self.net = net
        self.solver = Anderson() if solver is None else solver
        self.backward = JFB() if backward is None else backward
        self.init = init
        self.eta_max = eta_max
        self.contraction_iters = contraction_iters
        if eta_max is None:
            raw = math.log(math.expm1(eta))  # softplus^{-1}
        else:
            p = eta / eta_max
            raw = math.log(p / (1 - p))  # sigmoid^{-1}
        self.eta_raw = nn.Parameter(torch.tensor(raw))
        self.eta_scale = eta_scale
        if eta_scale == "operator":  # NaN: not estimated yet
            self.register_buffer("ata_norm", torch.tensor(float("nan")))
        self.last_stats: SolverStats | None = None

    @property
    def eta(self) -> torch.Tensor:
        """The learned step size, eta_max * sigmoid(s) or softplus(s), divided by L = ||A^T A||
        when ``eta_scale="operator"`` (NaN until L is estimated)."""
        if self.eta_max is None:
            eta = F.softplus(self.eta_raw)
        else:
            eta = self.eta_max * torch.sigmoid(self.eta_raw)
        return eta / self.ata_norm if self.eta_scale == "operator" else eta

    @torch.no_grad()
    def calibrate(self, x_shape: tuple[int, ...] | torch.Size) -> float:
        """Estimate L = ||A^T A|| = ||A||_2^2 on images of shape ``x_shape`` (C, H, W), store it in
        ``ata_norm`` and return it (``eta_scale="operator"`` only; seeded power iteration)."""
        if self.eta_scale != "operator":
            raise RuntimeError("calibrate() applies to eta_scale='operator' only")
        g = torch.Generator().manual_seed(_NORM_SEED)
        norm = self.op.norm_estimate(
            (1, *x_shape), n_iter=_NORM_ITERS, tol=_NORM_TOL, generator=g,
            device=self.ata_norm.device, dtype=self.ata_norm.dtype,
        )
        if not norm > 0:
            raise ValueError(f"eta_scale='operator' needs ||A|| > 0, got {norm!r}")
        self.ata_norm.fill_(norm**2)
        return norm**2

    def T(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The fixed-point map T(x; y)."""
        raise NotImplementedError

    def initial(self, y: torch.Tensor) -> torch.Tensor:
        """The first iterate x0 from the measurement (see ``init``)."""
        return initial_estimate(self.op, y, self.init)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """x_hat = x*(y); the solve's statistics are kept in ``self.last_stats``."""
        if y.dim() != 4:
            raise ValueError(f"expected a batch (N, C, H, W), got shape {tuple(y.shape)}")
        x0 = self.initial(y)
        if self.eta_scale == "operator" and bool(torch.isnan(self.ata_norm)):
            self.calibrate(x0.shape[1:])
        with self.fixed_map():
            x, stats = fixed_point(
                lambda x: self.T(x, y),
                x0,
                solver=self.solver,
                backward=self.backward,
                params=[*self.parameters(), y],
                training=self.training,
                contraction_iters=self.contraction_iters,
            )
        self.last_stats = stats
        return x

    def pretrain_forward(self, y: torch.Tensor) -> torch.Tensor:
        """A feedforward use of R for pre-training it (see the subclass)."""
        raise NotImplementedError

    def contraction(
        self, x_star: torch.Tensor, y: torch.Tensor, *, n_iter: int = 5,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """||J_T(x*)||_2 per sample (power iteration on J^T J, ``n_iter`` steps): the local
        contraction factor. T is frozen (no power step of spectral norm) and no parameter
        gradient is built; draws only from ``generator`` (else the global RNG)."""
        with torch.no_grad(), self.fixed_map(advance=False):
            return contraction_estimate(
                lambda x: self.T(x, y), x_star.detach(), n_iter=n_iter, generator=generator
            )

    def jacobian_frobenius(
        self, x_star: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Per-sample Hutchinson estimate of ||J_T(x*)||_F^2 / d: ||J^T v||^2 / d with one probe
        v ~ N(0, I) (E ||J^T v||^2 = ||J||_F^2; d = elements per sample), at the detached x*.

        Differentiable w.r.t. the parameters (VJP with ``create_graph``): adding ``gamma *
        mean`` to the loss is the Jacobian regulariser of Bai, Koltun and Kolter (2021).
        """
        z = x_star.detach().requires_grad_(True)
        v = torch.randn(z.shape, generator=generator, dtype=z.dtype, device="cpu").to(z.device)
        with torch.enable_grad(), self.fixed_map(advance=False):
            (jt_v,) = torch.autograd.grad(self.T(z, y), z, v, create_graph=True)
        return jt_v.flatten(1).square().sum(1) / z[0].numel()

    @contextlib.contextmanager
    def fixed_map(self, advance: bool = True) -> Iterator[None]:
        """Keep T the same map for a whole solve and its backward.

        Spectrally normalised layers advance their power iteration once (in training, with
        gradients on and ``advance``), then are frozen; parametrised weights are computed once and
        cached for the block, with their autograd graph when gradients are on, so every
        application of T reuses them.
        """
        if advance and self.training and torch.is_grad_enabled():
            spectral_norm_power_step(self.net)
        with frozen_spectral_norm(self.net), parametrize.cached():
            for module in self.net.modules():
                if parametrize.is_parametrized(module):
                    for name in module.parametrizations:
                        getattr(module, name)  # fill the cache (with graph if grad is on)
            yield


class DEGrad(ImplicitModel):
    """DE-GRAD: T(x) = x - eta * (A^T(A x - y) + R(x)).

    R plays the gradient of a learned regulariser; at x*, A^T(A x* - y) + R(x*) = 0.
    """

    def T(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x - self.eta * (self.op.A_adjoint(self.op.A(x) - y) + self.net(x))

    def pretrain_forward(self, y: torch.Tensor) -> torch.Tensor:
        """x0 - R(x0): R learns the residual between the initial estimate and the image."""
        x0 = self.initial(y)
        return x0 - self.net(x0)


class DEProx(ImplicitModel):
    """DE-Prox: T(x) = R(x - eta * A^T(A x - y)), R a learned denoiser (proximal step)."""

    def T(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(x - self.eta * self.op.A_adjoint(self.op.A(x) - y))

    def pretrain_forward(self, y: torch.Tensor) -> torch.Tensor:
        """R(x0): R learns to map the initial estimate to the image."""
        return self.net(self.initial(y))
