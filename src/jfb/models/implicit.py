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

The physics is an argument of every call, in deepinv's convention: ``model(y, physics)`` with a
:class:`~jfb.physics.Physics` (operator and per-sample noise std) or a bare operator;
``model.solve(y, physics, tol=..., max_iter=...)`` returns ``(x_hat, stats)`` with a test-time
budget of its own. Nothing of the model changes in a call, so one model serves any operator,
any noise level and several threads; the operator given at construction (optional) is only the
default physics of a call that gives none.

Stability diagnostics at a fixed point s*: :meth:`ImplicitModel.contraction` (||J_T(s*)||_2 per
sample, power iteration) and :meth:`ImplicitModel.jacobian_frobenius` (Hutchinson estimate of
||J_T(s*)||_F^2, differentiable: the Jacobian regulariser of Bai, Koltun and Kolter, 2021). Both
take the model's output and rebuild the state from it (:meth:`ImplicitModel.state_at`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass

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
from jfb.physics import LinearOperator, Physics, as_physics

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


@dataclass(frozen=True)
class SolveContext:
    """What T needs for one solve, computed once: the physics and a per-sample tensor ``data``
    (y itself, or A^T y for DE-ADMM), plus DE-ADMM's penalty ``rho`` (0-d or (N, 1, 1, 1))."""

    physics: Physics
    data: torch.Tensor
    rho: torch.Tensor | None = None

    @property
    def op(self) -> LinearOperator:
        """The operator A."""
        return self.physics.op

    def select(self, idx: torch.Tensor) -> SolveContext | None:
        """The context of samples ``idx``; None when the operator cannot be restricted."""
        physics = self.physics.select(idx)
        if physics is None:
            return None
        rho = self.rho
        if rho is not None and rho.dim() > 0:
            rho = rho.index_select(0, idx)
        return SolveContext(physics, self.data.index_select(0, idx), rho)


class ImplicitModel(nn.Module):
    """Common machinery of fixed-point reconstructors; subclasses define ``T(s, y)``.

    The fixed-point state s is the image itself unless a subclass says otherwise (``initial``
    gives s0, ``output`` reads the image from a state, ``state_at`` rebuilds a fixed point's state
    from its output).

    Args:
        op: the default forward operator A (a ``jfb.physics.LinearOperator``), used by calls
            that give no physics; None: every call must give one.
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
        op: LinearOperator | None,
        net: nn.Module,
        *,
        solver: Solver | None = None,
        backward: BackwardStrategy | None = None,
        init: str = "adjoint",
        eta_scale: str = "none",
    ) -> None:
        super().__init__()
        if op is not None and not isinstance(op, LinearOperator):
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
        if self.op is None:
            raise RuntimeError("calibrate() needs the model's default operator")
        g = torch.Generator().manual_seed(_NORM_SEED)
        norm = self.op.norm_estimate(
            (1, *x_shape), n_iter=_NORM_ITERS, tol=_NORM_TOL, generator=g,
            device=self.ata_norm.device, dtype=self.ata_norm.dtype,
        )
        if not norm > 0:
            raise ValueError(f"eta_scale='operator' needs ||A|| > 0, got {norm!r}")
        self.ata_norm.fill_(norm**2)
        return norm**2

    def physics_of(self, physics: Physics | LinearOperator | None = None) -> Physics:
        """The physics of a call: the one given, else the model's default operator."""
        if physics is not None:
            return as_physics(physics)
        if self.op is None:
            raise ValueError(f"{type(self).__name__} has no default operator: call it with the "
                             "physics, model(y, physics)")
        return Physics(self.op)

    def context(self, y: torch.Tensor, physics: Physics) -> SolveContext:
        """What T needs of (y, physics), once per solve (here y itself)."""
        return SolveContext(physics, y)

    def T_with(self, s: torch.Tensor, ctx: SolveContext) -> torch.Tensor:
        """T(s; y) from the solve's context: the map every solve applies."""
        raise NotImplementedError

    def T(self, s: torch.Tensor, y: torch.Tensor,
          physics: Physics | LinearOperator | None = None) -> torch.Tensor:
        """The fixed-point map T(s; y) under ``physics`` (default: the model's operator)."""
        return self.T_with(s, self.context(y, self.physics_of(physics)))

    def initial_image(self, y: torch.Tensor,
                      physics: Physics | LinearOperator | None = None) -> torch.Tensor:
        """The initial image estimate x0 from the measurement (see ``init``)."""
        physics = self.physics_of(physics)
        return initial_estimate(physics.op, y, self.init, physics.sigma(y.shape[0], y))

    def initial(self, y: torch.Tensor, ctx: SolveContext | None = None) -> torch.Tensor:
        """The first iterate s0 of the fixed-point state (here x0 itself; ``ctx``: the solve's
        context, default that of the model's operator)."""
        ctx = ctx if ctx is not None else self.context(y, self.physics_of(None))
        return initial_estimate(ctx.op, y, self.init, ctx.physics.sigma(y.shape[0], y))

    def output(self, s: torch.Tensor) -> torch.Tensor:
        """The reconstruction held by a state (here the state itself)."""
        return s

    def state_at(self, x_hat: torch.Tensor, y: torch.Tensor,
                 physics: Physics | LinearOperator | None = None) -> torch.Tensor:
        """The fixed point s* whose output is ``x_hat`` (here x_hat itself)."""
        return x_hat

    def forward(self, y: torch.Tensor,
                physics: Physics | LinearOperator | None = None) -> torch.Tensor:
        """x_hat = output(s*(y)) under ``physics`` (default: the model's operator). The solve's
        statistics are recorded in ``self.last_stats`` for the trainer; :meth:`solve` returns
        them instead and changes nothing."""
        x_hat, stats = self.solve(y, physics)
        self.last_stats = stats
        return x_hat

    def solve(
        self, y: torch.Tensor, physics: Physics | LinearOperator | None = None, *,
        tol: float | None = None, max_iter: int | None = None,
    ) -> tuple[torch.Tensor, SolverStats]:
        """(x_hat, stats) for measurements ``y`` under ``physics``; ``tol``/``max_iter``
        replace the solver's budget of the current mode (eval or training) for this call only.
        The model is not changed."""
        if y.dim() != 4:
            raise ValueError(f"expected a batch (N, C, H, W), got shape {tuple(y.shape)}")
        solver = self._solver_for(tol, max_iter)
        ctx = self.context(y, self.physics_of(physics))
        s0 = self.initial(y, ctx)
        if self.eta_scale == "operator" and bool(torch.isnan(self.ata_norm)):
            self.calibrate(self.output(s0).shape[1:])
        with self.fixed_map():
            s, stats = fixed_point(
                self.fixed_point_map(ctx),
                s0,
                solver=solver,
                backward=self.backward,
                params=[*self.parameters(), y],
                training=self.training,
            )
        return self.output(s), stats

    def _solver_for(self, tol: float | None, max_iter: int | None) -> Solver:
        """The solver with the current mode's budget replaced (a copy), or the solver itself."""
        if tol is None and max_iter is None:
            return self.solver
        keys = ("tol", "max_iter") if self.training else ("eval_tol", "eval_max_iter")
        changes = {k: v for k, v in zip(keys, (tol, max_iter), strict=True) if v is not None}
        return dataclasses.replace(self.solver, **changes)

    def fixed_point_map(self, ctx: SolveContext) -> Map:
        """s -> T(s; y); a :class:`~jfb.deq.SubsetMap` when the physics can be restricted to
        some samples, so that the solver can apply T to the unfinished samples only."""
        if not ctx.op.selectable():
            return lambda s: self.T_with(s, ctx)

        def restrict(idx: torch.Tensor) -> Map:
            sub = ctx.select(idx)
            return lambda s: self.T_with(s, sub)

        return SubsetMap(lambda s: self.T_with(s, ctx), restrict)

    #: ``feedforward(v)``: R used once as a feedforward restoration of an image estimate v, what
    #: pre-training trains, as a deblurrer (v = x0) or as a denoiser (v = x + noise). Subclasses
    #: define it; None says that the model has none, so it cannot be pre-trained.
    feedforward = None

    def pretrain_forward(self, y: torch.Tensor,
                         physics: Physics | LinearOperator | None = None) -> torch.Tensor:
        """feedforward(x0): R learns to map the initial estimate x0(y) to the image."""
        return self.feedforward(self.initial_image(y, physics))

    def contraction(
        self, x_star: torch.Tensor, y: torch.Tensor,
        physics: Physics | LinearOperator | None = None, *, n_iter: int = 5,
        generator: torch.Generator | None = None, method: str = "power",
    ) -> torch.Tensor:
        """||J_T(s*)||_2 per sample at the state of the output ``x_star`` (``n_iter`` steps of
        power iteration or Lanczos on J^T J, :func:`jfb.deq.contraction_estimate`): the local
        contraction factor. T is frozen (no power step of spectral norm) and no parameter
        gradient is built; draws only from ``generator`` (else the global RNG)."""
        ctx = self.context(y, self.physics_of(physics))
        with torch.no_grad(), self.fixed_map(advance=False):
            return contraction_estimate(
                lambda s: self.T_with(s, ctx), self.state_at(x_star.detach(), y, ctx.physics),
                n_iter=n_iter, generator=generator, method=method,
            )

    def jacobian_frobenius(
        self, x_star: torch.Tensor, y: torch.Tensor,
        physics: Physics | LinearOperator | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Per-sample Hutchinson estimate of ||J_T(s*)||_F^2 / d: ||J^T v||^2 / d with one probe
        v ~ N(0, I) (E ||J^T v||^2 = ||J||_F^2; d = elements of a state), at the detached state
        s* of the output ``x_star``.

        Differentiable w.r.t. the parameters (VJP with ``create_graph``): adding ``gamma *
        mean`` to the loss is the Jacobian regulariser of Bai, Koltun and Kolter (2021).
        """
        ctx = self.context(y, self.physics_of(physics))
        with torch.no_grad():
            s = self.state_at(x_star.detach(), y, ctx.physics)
        s = s.requires_grad_(True)
        v = torch.randn(s.shape, generator=generator, dtype=s.dtype, device="cpu").to(s.device)
        with torch.enable_grad(), self.fixed_map(advance=False):
            (jt_v,) = torch.autograd.grad(self.T_with(s, ctx), s, v, create_graph=True)
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

    def T_with(self, x: torch.Tensor, ctx: SolveContext) -> torch.Tensor:
        op = ctx.op
        return x - self.eta * (op.A_adjoint(op.A(x) - ctx.data) + self.net(x))

    def feedforward(self, v: torch.Tensor) -> torch.Tensor:
        """v - R(v): R learns the residual between an estimate and the image (as a denoiser,
        R(v) = v - D(v) is the gradient of RED's regulariser)."""
        return v - self.net(v)


class DEProx(StepModel):
    """DE-Prox: T(x) = R(x - eta * A^T(A x - y)), R a learned denoiser (proximal step)."""

    def T_with(self, x: torch.Tensor, ctx: SolveContext) -> torch.Tensor:
        op = ctx.op
        return self.net(x - self.eta * op.A_adjoint(op.A(x) - ctx.data))

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
    strength sigma_D. With ``noise_ref`` set, a call whose physics carries the noise std sigma_i
    of each sample applies it per sample:

        rho_i = rho (sigma_i^2 + f^2) / (noise_ref^2 + f^2),

    rho the learned penalty at noise ``noise_ref`` and f the noise floor (``noise_floor``,
    learned when > 0: what 8-bit rounding and the model's own error add to a clean
    measurement), so one model serves every noise level, in training as at test time.
    :meth:`adapt_noise` is the older form of the same rule, a factor set on the model.

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
        alpha, in (0, 2); noise_ref: the noise std the learned rho is for (None: calls may
        not give a noise std); noise_floor: the initial noise floor f (0: none, not learned).
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
        noise_ref: float | None = None,
        noise_floor: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(op, net, **kwargs)
        check_positive("rho", rho, type_error=TypeError)
        if noise_ref is not None:
            check_positive("noise_ref", noise_ref, type_error=TypeError)
        check_number("noise_floor", noise_floor, low=0, type_error=TypeError)
        if noise_floor > 0 and noise_ref is None:
            raise ValueError("noise_floor needs noise_ref")
        self.noise_ref = noise_ref
        if noise_floor > 0:
            self.noise_floor_raw = nn.Parameter(torch.tensor(_raw_of(noise_floor, None)))
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

    def noise_floor(self) -> torch.Tensor | float:
        """The learned noise floor f = softplus(s) (0 when the model has none)."""
        raw = getattr(self, "noise_floor_raw", None)
        return 0.0 if raw is None else _bounded(raw, None)

    def rho_of(self, physics: Physics, like: torch.Tensor) -> torch.Tensor:
        """The penalty of a call: rho, or rho_i (N, 1, 1, 1) by the noise rule (class
        docstring) when ``physics`` carries the noise std."""
        sigma = physics.sigma(like.shape[0], like)
        if sigma is None:
            return self.rho
        if self.noise_ref is None:
            raise ValueError(f"this {type(self).__name__} has no noise rule (noise_ref): give a "
                             "physics without noise_std, or build it with noise_ref")
        f2 = self.noise_floor() ** 2
        factor = (sigma**2 + f2) / (self.noise_ref**2 + f2)
        return self.rho * factor.view(-1, 1, 1, 1)

    def adapt_noise(self, sigma: float, trained_sigma: float) -> float:
        """Use the model on measurements with noise std ``sigma`` when it was trained at
        ``trained_sigma``: rho_factor = (sigma / trained_sigma)^2, plug-and-play's rule
        rho ~ sigma^2 with the learned denoiser unchanged. Returns the factor. A test-time
        setting: checkpoints do not save it, and calling again replaces it."""
        check_positive("sigma", sigma)
        check_positive("trained_sigma", trained_sigma)
        self.rho_factor = (sigma / trained_sigma) ** 2
        return self.rho_factor

    def x_update(self, z: torch.Tensor, u: torch.Tensor, y: torch.Tensor,
                 physics: Physics | LinearOperator | None = None) -> torch.Tensor:
        """x = argmin ||A x - y||^2 / 2 + rho/2 ||x - (z - u)||^2 (CG warm-started at z)."""
        return self._x_update(z, u, self.context(y, self.physics_of(physics)))

    def _x_update(self, z: torch.Tensor, u: torch.Tensor, ctx: SolveContext) -> torch.Tensor:
        return admm_x_update(ctx.op, ctx.data, z, u, ctx.rho, x0=z, cg_iters=self.cg_iters,
                             cg_tol=self.cg_tol, precondition=self.precondition)

    def context(self, y: torch.Tensor, physics: Physics) -> SolveContext:
        """A^T y and rho, once per solve (with their graphs into y and the parameters)."""
        return SolveContext(physics, physics.op.A_adjoint(y), self.rho_of(physics, y))

    def T_with(self, s: torch.Tensor, ctx: SolveContext) -> torch.Tensor:
        """One (over-relaxed) ADMM iteration on s = (z, u) given the context (A^T y, rho)."""
        z, u = s.chunk(2, dim=1)
        x = self._x_update(z, u, ctx)
        if self.relax != 1.0:
            x = self.relax * x + (1 - self.relax) * z
        z_new = self.net(x + u)
        return torch.cat([z_new, u + x - z_new], dim=1)

    def initial(self, y: torch.Tensor, ctx: SolveContext | None = None) -> torch.Tensor:
        """s0 = (z0, u0) = (x0, 0)."""
        x0 = super().initial(y, ctx)
        return torch.cat([x0, torch.zeros_like(x0)], dim=1)

    def output(self, s: torch.Tensor) -> torch.Tensor:
        """z."""
        return s.chunk(2, dim=1)[0]

    def state_at(self, x_hat: torch.Tensor, y: torch.Tensor,
                 physics: Physics | LinearOperator | None = None) -> torch.Tensor:
        """(z*, u*) with u* = -A^T(A z* - y) / rho: at a fixed point x* = z*, and the x-update's
        normal equations give rho u* = A^T y - A^T A z*."""
        physics = self.physics_of(physics)
        op = physics.op
        u = -op.A_adjoint(op.A(x_hat) - y) / self.rho_of(physics, y)
        return torch.cat([x_hat, u], dim=1)

    feedforward = DEProx.feedforward  # R(v): R learns to map an estimate to the image
