"""Gradient strategies for a fixed point x* = T(x*; theta).

The exact (implicit-function) gradient of a loss L(x*) is
    dL/dtheta = (dT/dtheta)^T u,   where   (I - J^T) u = dL/dx*,   J = dT/dx at x*.
Every strategy here builds the output x_out = T(x*) (numerically x*) with an autograd graph into
theta, and differs only in the vector u that flows into that graph:
    JFB          u = dL/dx*                         (drop the Jacobian term; one application of T)
    JFB(k)       backpropagate through k applications of T from the detached x*
    Neumann(k)   u = sum_{j=0..k} (J^T)^j dL/dx*    (truncated Neumann series; k VJPs)
    IFT          u solves (I - J^T) u = dL/dx*      (fixed-point, Anderson or GMRES on VJPs)
    Unrolled     backpropagate through every solver iteration (memory grows with iterations).
IFT and Neumann are ``torch.autograd.Function``s (no tensor hooks), so they compose with the rest
of autograd; their backward statistics land in ``stats.backward`` once backpropagation has run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from jfb.deq.krylov import gmres
from jfb.deq.solvers import Anderson, Map, Picard, Solver, per_sample_norm
from jfb.deq.stats import SolverStats
from jfb.errors import check_choice, check_int, check_positive

_IFT_SOLVERS = ("fixed_point", "anderson", "gmres")


class BackwardStrategy:
    """How gradients reach theta through a fixed point; see the module docstring."""

    def run(
        self, f: Map, x0: torch.Tensor, solver: Solver, *, training: bool, needs_grad: bool
    ) -> tuple[torch.Tensor, SolverStats]:
        """Solve x = f(x) from x0 and return (x_out, stats) with this strategy's gradient."""
        with torch.no_grad():
            x_star, stats = solver.solve(f, x0.detach(), training=training)
        if not needs_grad:
            return x_star, stats
        return self.attach(f, x_star, stats), stats

    def attach(self, f: Map, x_star: torch.Tensor, stats: SolverStats) -> torch.Tensor:
        """Re-enter autograd at the detached fixed point ``x_star``."""
        raise NotImplementedError


@dataclass(frozen=True)
class JFB(BackwardStrategy):
    """Jacobian-free backpropagation: x_out = T^k(x*) with x* detached (k = 1 by default).

    The gradient is (dT/dtheta)^T dL/dx* for k = 1: the implicit gradient with the Jacobian
    term (I - J^T)^{-1} replaced by I. It costs one forward and one backward application of T.
    """

    k: int = 1

    def __post_init__(self) -> None:
        check_int("JFB k", self.k, minimum=1)

    def attach(self, f: Map, x_star: torch.Tensor, stats: SolverStats) -> torch.Tensor:
        x = x_star.detach()
        for _ in range(self.k):
            x = f(x)
        return x


@dataclass(frozen=True)
class Neumann(BackwardStrategy):
    """Truncated Neumann series u = sum_{j=0..k} (J^T)^j dL/dx*; k = 0 equals JFB.

    Converges to the IFT gradient as k grows when T is a contraction (||J|| < 1).
    """

    k: int = 5

    def __post_init__(self) -> None:
        check_int("Neumann k", self.k, minimum=0)

    def attach(self, f: Map, x_star: torch.Tensor, stats: SolverStats) -> torch.Tensor:
        return _implicit_output(f, x_star, stats, self._solve)

    def _solve(self, vjp: Callable, g: torch.Tensor):
        u, term = g, g
        for _ in range(self.k):
            term = vjp(term)
            u = u + term
        n = g.shape[0]
        iters = torch.full((n,), self.k, dtype=torch.long, device=g.device)
        return u, iters, None


@dataclass(frozen=True)
class IFT(BackwardStrategy):
    """Exact implicit gradient: solve (I - J^T) u = dL/dx* with VJPs of T at x*.

    Args:
        solver: "fixed_point" (u <- g + J^T u), "anderson" (Anderson on that map) or "gmres"
            (restarted GMRES on I - J^T; converges even when ||J|| >= 1 if I - J^T is invertible).
        tol: per-sample relative residual of the linear system.
        max_iter: most VJPs per backward.
        m: Anderson memory / GMRES restart length.
    """

    solver: str = "anderson"
    tol: float = 1e-6
    max_iter: int = 100
    m: int = 10

    def __post_init__(self) -> None:
        check_choice("IFT solver", self.solver, _IFT_SOLVERS)
        check_positive("IFT tol", self.tol, type_error=TypeError)
        check_int("IFT max_iter", self.max_iter, minimum=1)
        check_int("IFT m", self.m, minimum=1)

    def attach(self, f: Map, x_star: torch.Tensor, stats: SolverStats) -> torch.Tensor:
        return _implicit_output(f, x_star, stats, self._solve)

    def _solve(self, vjp: Callable, g: torch.Tensor):
        if self.solver == "gmres":
            u, iters, res = gmres(
                lambda v: v - vjp(v), g, tol=self.tol, max_iter=self.max_iter, restart=self.m
            )
            return u, iters, res
        inner = (
            Picard(tol=self.tol, max_iter=self.max_iter)
            if self.solver == "fixed_point"
            else Anderson(tol=self.tol, max_iter=self.max_iter, m=self.m)
        )
        u, st = inner.solve(lambda v: g + vjp(v), g, training=True)
        # Report the true residual of the linear system, ||(I - J^T)u - g|| / ||g||.
        res = per_sample_norm(u - vjp(u) - g) / per_sample_norm(g).clamp_min(1e-30)
        return u, st.iterations, res


@dataclass(frozen=True)
class Unrolled(BackwardStrategy):
    """Backpropagation through every iteration of the forward solver (no detaching).

    The gradient is exact for the truncated iteration actually run; memory grows linearly with
    the number of iterations, which is what the implicit strategies avoid.
    """

    def run(
        self, f: Map, x0: torch.Tensor, solver: Solver, *, training: bool, needs_grad: bool
    ) -> tuple[torch.Tensor, SolverStats]:
        if not needs_grad:
            with torch.no_grad():
                return solver.solve(f, x0, training=training)
        return solver.solve(f, x0, training=training)

    def attach(self, f: Map, x_star: torch.Tensor, stats: SolverStats) -> torch.Tensor:
        raise TypeError("Unrolled differentiates the solve itself; it has no attach step")


def _implicit_output(f: Map, x_star: torch.Tensor, stats: SolverStats, solve) -> torch.Tensor:
    """x_out = T(z) at z = x* (a leaf), whose backward maps g to u = solve(g) before entering T."""
    z = x_star.detach().requires_grad_(True)
    fz = f(z)
    return _ImplicitGradient.apply(fz, z, solve, stats)


class _ImplicitGradient(torch.autograd.Function):
    """Identity on T(x*) in the forward; in the backward replaces g by u solving the linear system.

    The VJPs v -> J^T v reuse the graph of T(z) built in the forward (retain_graph), so the only
    extra forward work of IFT/Neumann over JFB is none: one application of T serves both.
    """

    @staticmethod
    def forward(ctx, fz: torch.Tensor, z: torch.Tensor, solve, stats: SolverStats):  # type: ignore[override]
        ctx.fz, ctx.z, ctx.solve, ctx.stats = fz, z, solve, stats
        return fz.detach().clone()

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        fz, z = ctx.fz, ctx.z

        def vjp(v: torch.Tensor) -> torch.Tensor:
            (out,) = torch.autograd.grad(fz, z, v, retain_graph=True)
            return out

        with torch.no_grad():  # the VJPs need no graph of their own (no double backward)
            u, iters, res = ctx.solve(vjp, g.detach())
        ctx.stats.backward["iterations"] = iters
        if res is not None:
            ctx.stats.backward["residual"] = res.detach()
        del ctx.fz, ctx.z
        return u, None, None, None
