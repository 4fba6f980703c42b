"""Implicit reconstructors: x_hat = x*, the fixed point of a learned physics-aware map T(.; y).

    DE-GRAD   T(x) = x - eta * (A^T(A x - y) + R(x))      (gradient step on data fit + learned R)
    DE-Prox   T(x) = R(x - eta * A^T(A x - y))            (learned proximal / denoising step)

eta is learned, kept in (0, eta_max) by eta = eta_max * sigmoid(s) (or softplus(s) if eta_max is
None). The solve and the gradient come from :func:`jfb.deq.fixed_point`, so every solver and
backward strategy of the engine applies.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from jfb.deq import JFB, Anderson, BackwardStrategy, SolverStats, fixed_point
from jfb.deq.solvers import _SolverBase
from jfb.models.init import INITS, initial_estimate
from jfb.nets import frozen_spectral_norm, has_batch_norm, spectral_norm_power_step
from jfb.physics import LinearOperator


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
        self.last_stats: SolverStats | None = None

    @property
    def eta(self) -> torch.Tensor:
        """The learned step size, eta_max * sigmoid(s) or softplus(s)."""
        if self.eta_max is None:
            return F.softplus(self.eta_raw)
        return self.eta_max * torch.sigmoid(self.eta_raw)

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

    @contextlib.contextmanager
    def fixed_map(self) -> Iterator[None]:
        """Keep T the same map for a whole solve and its backward.

        Spectrally normalised layers advance their power iteration once (in training), then are
        frozen; parametrised weights are computed once and cached for the block, with their
        autograd graph when gradients are on, so every application of T reuses them.
        """
        if self.training and torch.is_grad_enabled():
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
