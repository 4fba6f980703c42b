"""Implicit reconstructors: x_hat = the output of s*, the fixed point of a learned physics-aware
map T(.; y).

    DE-GRAD   T(x) = x - eta * (A^T(A x - y) + R(x))      (gradient step on data fit + learned R)
    DE-Prox   T(x) = R(x - eta * A^T(A x - y))            (learned proximal / denoising step)
    DE-ADMM   s = (z, u):  x = (A^T A + rho I)^{-1} (A^T y + rho (z - u)),  z+ = R(x + u),
              u+ = u + x - z+                             (one ADMM iteration, R a learned denoiser;
                                                           x over-relaxed by ``relax``)

For DE-GRAD and DE-Prox the state s is the image; DE-ADMM (Gilton, Ongie and Willett, 2021)
stacks z and the scaled dual u along the channels and outputs z*. eta is learned, kept in
(0, eta_max) by eta = eta_max * sigmoid(s) (or softplus(s) if eta_max is None); rho is learned as
softplus(s). With ``eta_scale="operator"`` eta and eta_max are in units of 1/L and rho in units of
L, L = ||A^T A|| = ||A||^2 estimated once (the data-fit step x - eta A^T(Ax - y) is non-expansive
for eta <= 2/L), so the same config suits operators of any scale. The solve and the gradient come
from :func:`jfb.deq.fixed_point`, so every solver and backward strategy of the engine applies.

Stability diagnostics at a fixed point s*: :meth:`ImplicitModel.contraction` (||J_T(s*)||_2 per
sample, power iteration) and :meth:`ImplicitModel.jacobian_frobenius` (Hutchinson estimate of
||J_T(s*)||_F^2, differentiable: the Jacobian regulariser of Bai, Koltun and Kolter, 2021). Both
take the model's output and rebuild the state from it (:meth:`ImplicitModel.state_at`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from jfb.deq import (
    JFB,
    Anderson,
    BackwardStrategy,
    Solver,
    SolverStats,
    SubsetMap,
    contraction_estimate,
    fixed_point,
)
from jfb.deq.solvers import Map
from jfb.errors import check_choice, check_int, check_number, check_positive
from jfb.linalg import admm_x_update
from jfb.models.init import INITS, initial_estimate
from jfb.nets import frozen_spectral_norm, has_batch_norm, spectral_norm_power_step
from jfb.physics import LinearOperator

#: How eta (and rho) are measured: "none" (absolute) or "operator" (in units of 1 / ||A^T A||,
#: rho in units of ||A^T A||).
ETA_SCALES = ("none", "operator")
# Power iteration for L = ||A||^2: seeded (every DDP rank gets the same L), tight tolerance.
_NORM_SEED, _NORM_ITERS, _NORM_TOL = 0, 200, 1e-7


def _raw_of(value: float, upper: float | None) -> float:
    """The s with :func:`_bounded` (s, upper) = value: logit(value / upper) or softplus^{-1}."""
    if upper is None:
        return value + math.log(-math.expm1(-value))  # log(e^v - 1), stable for large v
    p = value / upper
    return math.log(p / (1 - p))


def _bounded(raw: torch.Tensor, upper: float | None) -> torch.Tensor:
    """A learned positive number: upper * sigmoid(raw) in (0, upper), or softplus(raw) > 0."""
    return F.softplus(raw) if upper is None else upper * torch.sigmoid(raw)


class ImplicitModel(nn.Module):
    """Common machinery of fixed-point reconstructors; subclasses define ``T(s, y)``.

    The fixed-point state s is the image itself unless a subclass says otherwise (``initial``
    gives s0, ``output`` reads the image from a state, ``state_at`` rebuilds a fixed point's state
    from its output).

    Args:
        op: the forward operator A (a ``jfb.physics.LinearOperator``).
        net: the learned part R; must act on each sample alone (no BatchNorm).
        solver: forward solver (default ``Anderson()``); its eval budget is used in eval mode.
        backward: gradient strategy (default ``JFB()``).
        init: initial image estimate: "adjoint" (A^T y), "y", or "tikhonov" (a few CG steps of
            Tikhonov with gradient penalty).
        eta_scale: "none" (step sizes as given) or "operator": step sizes in units of 1/L (rho in
            units of L) with L = ||A^T A||, estimated at the first forward (or by
            :meth:`calibrate`) and kept in the buffer ``ata_norm`` (registered only in this mode),
            so a checkpoint restores it.
    """

    def __init__(
        self,
        op: LinearOperator,
        net: nn.Module,
        *,
        solver: Solver | None = None,
        backward: BackwardStrategy | None = None,
        init: str = "adjoint",
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
        check_choice("init", init, INITS)
        check_choice("eta_scale", eta_scale, ETA_SCALES)
        self.op = op
        self.net = net
        self.solver = Anderson() if solver is None else solver
        self.backward = JFB() if backward is None else backward
        self.init = init
        self.eta_scale = eta_scale
        if eta_scale == "operator":  # NaN: not estimated yet
            self.register_buffer("ata_norm", torch.tensor(float("nan")))
        self.last_stats: SolverStats | None = None

    def _operator_scale(self) -> torch.Tensor | float:
        """L = ||A^T A|| with ``eta_scale="operator"`` (NaN until estimated), else 1."""
        return self.ata_norm if self.eta_scale == "operator" else 1.0

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

    def T(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The fixed-point map T(s; y)."""
        raise NotImplementedError

    def solve_constants(self, y: torch.Tensor) -> torch.Tensor:
        """c(y): what T needs of the measurement, computed once per solve (here y itself); a
        tensor whose rows are the samples, so that T(s; y[idx]) = T_with(s, c[idx])."""
        return y

    def T_with(self, s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """T(s; y) from c = :meth:`solve_constants` (y): the map every solve applies."""
        return self.T(s, c)

    def initial_image(self, y: torch.Tensor) -> torch.Tensor:
        """The initial image estimate x0 from the measurement (see ``init``)."""
        return initial_estimate(self.op, y, self.init)

    def initial(self, y: torch.Tensor) -> torch.Tensor:
        """The first iterate s0 of the fixed-point state (here x0 itself)."""
        return self.initial_image(y)

    def output(self, s: torch.Tensor) -> torch.Tensor:
        """The reconstruction held by a state (here the state itself)."""
        return s

    def state_at(self, x_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The fixed point s* whose output is ``x_hat`` (here x_hat itself)."""
        return x_hat

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """x_hat = output(s*(y)); the solve's statistics are kept in ``self.last_stats``."""
        if y.dim() != 4:
            raise ValueError(f"expected a batch (N, C, H, W), got shape {tuple(y.shape)}")
        s0 = self.initial(y)
        if self.eta_scale == "operator" and bool(torch.isnan(self.ata_norm)):
            self.calibrate(self.output(s0).shape[1:])
        with self.fixed_map():
            s, stats = fixed_point(
                self.fixed_point_map(y),
                s0,
                solver=self.solver,
                backward=self.backward,
                params=[*self.parameters(), y],
                training=self.training,
            )
        self.last_stats = stats
        return self.output(s)

    def fixed_point_map(self, y: torch.Tensor) -> Map:
        """s -> T(s; y); a :class:`~jfb.deq.SubsetMap` when A is the same for every sample, so
        that the solver can apply T to the unfinished samples only (T(s[idx]; y[idx])). What T
        needs of y (:meth:`solve_constants`) is computed here, once for the whole solve."""
        c = self.solve_constants(y)
        if not self.op.shared_across_batch():
            return lambda s: self.T_with(s, c)
        return SubsetMap(lambda s: self.T_with(s, c),
                         lambda idx: lambda s: self.T_with(s, c.index_select(0, idx)))

    #: ``feedforward(v)``: R used once as a feedforward restoration of an image estimate v, what
    #: pre-training trains, as a deblurrer (v = x0) or as a denoiser (v = x + noise). Subclasses
    #: define it; None says that the model has none, so it cannot be pre-trained.
    feedforward = None

    def pretrain_forward(self, y: torch.Tensor) -> torch.Tensor:
        """feedforward(x0): R learns to map the initial estimate x0(y) to the image."""
        return self.feedforward(self.initial_image(y))

    def contraction(
        self, x_star: torch.Tensor, y: torch.Tensor, *, n_iter: int = 5,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """||J_T(s*)||_2 per sample at the state of the output ``x_star`` (power iteration on
        J^T J, ``n_iter`` steps): the local contraction factor. T is frozen (no power step of
        spectral norm) and no parameter gradient is built; draws only from ``generator`` (else
        the global RNG)."""
        with torch.no_grad(), self.fixed_map(advance=False):
            return contraction_estimate(
                lambda s: self.T(s, y), self.state_at(x_star.detach(), y),
                n_iter=n_iter, generator=generator,
            )

    def jacobian_frobenius(
        self, x_star: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Per-sample Hutchinson estimate of ||J_T(s*)||_F^2 / d: ||J^T v||^2 / d with one probe
        v ~ N(0, I) (E ||J^T v||^2 = ||J||_F^2; d = elements of a state), at the detached state
        s* of the output ``x_star``.

        Differentiable w.r.t. the parameters (VJP with ``create_graph``): adding ``gamma *
        mean`` to the loss is the Jacobian regulariser of Bai, Koltun and Kolter (2021).
        """
        with torch.no_grad():
            s = self.state_at(x_star.detach(), y)
        s = s.requires_grad_(True)
        v = torch.randn(s.shape, generator=generator, dtype=s.dtype, device="cpu").to(s.device)
        with torch.enable_grad(), self.fixed_map(advance=False):
            (jt_v,) = torch.autograd.grad(self.T(s, y), s, v, create_graph=True)
        return jt_v.flatten(1).square().sum(1) / s[0].numel()

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


class StepModel(ImplicitModel):
    """An implicit model with a learned step size eta (DE-GRAD, DE-Prox).

    Args (besides :class:`ImplicitModel`'s):
        eta: initial step size; eta_max: its upper bound (None: positive, unbounded).
    """

    def __init__(
        self,
        op: LinearOperator,
        net: nn.Module,
        *,
        eta: float = 1.0,
        eta_max: float | None = 2.0,
        **kwargs,
    ) -> None:
        super().__init__(op, net, **kwargs)
        check_positive("eta", eta, type_error=TypeError)
        if eta_max is not None and not (math.isfinite(eta_max) and eta < eta_max):
            raise ValueError(f"need 0 < eta < eta_max, got eta={eta!r}, eta_max={eta_max!r}")
        self.eta_max = eta_max
        self.eta_raw = nn.Parameter(torch.tensor(_raw_of(eta, eta_max)))

    @property
    def eta(self) -> torch.Tensor:
        """The learned step size, eta_max * sigmoid(s) or softplus(s), divided by L = ||A^T A||
        when ``eta_scale="operator"`` (NaN until L is estimated)."""
        return _bounded(self.eta_raw, self.eta_max) / self._operator_scale()


class DEGrad(StepModel):
    """DE-GRAD: T(x) = x - eta * (A^T(A x - y) + R(x)).

    R plays the gradient of a learned regulariser; at x*, A^T(A x* - y) + R(x*) = 0.
    """

    def T(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x - self.eta * (self.op.A_adjoint(self.op.A(x) - y) + self.net(x))

    def feedforward(self, v: torch.Tensor) -> torch.Tensor:
        """v - R(v): R learns the residual between an estimate and the image (as a denoiser,
        R(v) = v - D(v) is the gradient of RED's regulariser)."""
        return v - self.net(v)


class DEProx(StepModel):
    """DE-Prox: T(x) = R(x - eta * A^T(A x - y)), R a learned denoiser (proximal step)."""

    def T(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(x - self.eta * self.op.A_adjoint(self.op.A(x) - y))

    def feedforward(self, v: torch.Tensor) -> torch.Tensor:
        """R(v): R learns to map an estimate to the image."""
        return self.net(v)


class DEADMM(ImplicitModel):
    """DE-ADMM (Gilton, Ongie and Willett, 2021): one ADMM iteration with a learned denoiser R,
    on the state s = (z, u) stacked along the channels (u: the scaled dual variable):

        x = (A^T A + rho I)^{-1} (A^T y + rho (z - u)),   z+ = R(x + u),   u+ = u + x - z+.

    The output is z* (the denoiser's output; x* = z* at a fixed point). s0 = (x0, 0) with x0 from
    ``init``. The x-update is :func:`jfb.linalg.admm_x_update`: at most ``cg_iters`` CG
    steps warm-started at z (which is x at a fixed point, so the truncation does not move the
    fixed point), differentiable by implicit differentiation of the solve, so every backward
    strategy applies. rho = softplus(s) is learned (times L = ||A^T A|| when
    ``eta_scale="operator"``).

    rho balances data fit and denoiser: x-update and denoiser step are those of plug-and-play
    ADMM, whose rule is rho = sigma^2 / sigma_D^2 for measurement noise sigma and a denoiser of
    strength sigma_D. :meth:`adapt_noise` applies that rule at test time, for measurements
    noisier or cleaner than those the model was trained on.

    Over-relaxation (Eckstein and Bertsekas, 1992): with ``relax`` = alpha != 1 the denoiser and
    the dual see x_a = alpha x + (1 - alpha) z instead of x,

        z+ = R(x_a + u),   u+ = u + x_a - z+,

    which leaves the fixed points unchanged (u+ = u forces x_a = z, hence x = z) and, with alpha
    in (1, 2), usually reaches them in fewer iterations. A test-time setting as much as a
    training one: a model trained at alpha = 1 has the same fixed points at any alpha.

    Args (besides :class:`ImplicitModel`'s):
        rho: initial ADMM penalty (> 0); cg_iters: CG steps at most per x-update (and per
        backward solve); cg_tol: CG's relative residual tolerance; precondition: precondition CG
        by the operator's ``ridge_preconditioner`` when it has one (for a blur the circulant
        approximation of (A^T A + rho I)^{-1}, applied by FFT); relax: the over-relaxation
        alpha, in (0, 2).
    """

    def __init__(
        self,
        op: LinearOperator,
        net: nn.Module,
        *,
        rho: float = 1.0,
        cg_iters: int = 20,
        cg_tol: float = 1e-6,
        precondition: bool = True,
        relax: float = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(op, net, **kwargs)
        check_positive("rho", rho, type_error=TypeError)
        self.relax = check_number("relax", relax, low=0, high=2, low_open=True, high_open=True,
                                  type_error=TypeError)
        check_int("cg_iters", cg_iters, minimum=1)
        check_number("cg_tol", cg_tol, low=0, type_error=TypeError)
        self.cg_iters, self.cg_tol = cg_iters, cg_tol
        self.precondition = bool(precondition)
        self.rho_raw = nn.Parameter(torch.tensor(_raw_of(rho, None)))
        #: Test-time factor on the learned rho, set by :meth:`adapt_noise` (not saved).
        self.rho_factor = 1.0

    @property
    def rho(self) -> torch.Tensor:
        """The learned ADMM penalty softplus(s), times L = ||A^T A|| when
        ``eta_scale="operator"`` (NaN until L is estimated), times ``rho_factor``."""
        return _bounded(self.rho_raw, None) * self._operator_scale() * self.rho_factor

    def adapt_noise(self, sigma: float, trained_sigma: float) -> float:
        """Use the model on measurements with noise std ``sigma`` when it was trained at
        ``trained_sigma``: rho_factor = (sigma / trained_sigma)^2, plug-and-play's rule
        rho ~ sigma^2 with the learned denoiser unchanged. Returns the factor. A test-time
        setting: checkpoints do not save it, and calling again replaces it."""
        check_positive("sigma", sigma)
        check_positive("trained_sigma", trained_sigma)
        self.rho_factor = (sigma / trained_sigma) ** 2
        return self.rho_factor

    def x_update(self, z: torch.Tensor, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x = argmin ||A x - y||^2 / 2 + rho/2 ||x - (z - u)||^2 (CG warm-started at z)."""
        return self._x_update(z, u, self.op.A_adjoint(y))

    def _x_update(self, z: torch.Tensor, u: torch.Tensor, aty: torch.Tensor) -> torch.Tensor:
        return admm_x_update(self.op, aty, z, u, self.rho, x0=z, cg_iters=self.cg_iters,
                             cg_tol=self.cg_tol, precondition=self.precondition)

    def solve_constants(self, y: torch.Tensor) -> torch.Tensor:
        """A^T y, once per solve (with its graph into y when y requires grad)."""
        return self.op.A_adjoint(y)

    def T(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.T_with(s, self.solve_constants(y))

    def T_with(self, s: torch.Tensor, aty: torch.Tensor) -> torch.Tensor:
        """One (over-relaxed) ADMM iteration on s = (z, u) given ``aty`` = A^T y."""
        z, u = s.chunk(2, dim=1)
        x = self._x_update(z, u, aty)
        if self.relax != 1.0:
            x = self.relax * x + (1 - self.relax) * z
        z_new = self.net(x + u)
        return torch.cat([z_new, u + x - z_new], dim=1)

    def initial(self, y: torch.Tensor) -> torch.Tensor:
        """s0 = (z0, u0) = (x0, 0)."""
        x0 = self.initial_image(y)
        return torch.cat([x0, torch.zeros_like(x0)], dim=1)

    def output(self, s: torch.Tensor) -> torch.Tensor:
        """z."""
        return s.chunk(2, dim=1)[0]

    def state_at(self, x_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(z*, u*) with u* = -A^T(A z* - y) / rho: at a fixed point x* = z*, and the x-update's
        normal equations give rho u* = A^T y - A^T A z*."""
        u = -self.op.A_adjoint(self.op.A(x_hat) - y) / self.rho
        return torch.cat([x_hat, u], dim=1)

    feedforward = DEProx.feedforward  # R(v): R learns to map an estimate to the image
