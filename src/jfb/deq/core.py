"""The engine's one entry point: solve x = f(x) and attach a gradient strategy."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from jfb.deq.backward import JFB, BackwardStrategy
from jfb.deq.contraction import contraction_estimate
from jfb.deq.solvers import Anderson, Map, Solver
from jfb.deq.stats import SolverStats


def fixed_point(
    f: Map,
    x0: torch.Tensor,
    *,
    solver: Solver | None = None,
    backward: BackwardStrategy | None = None,
    params: Iterable[torch.Tensor] | None = None,
    training: bool | None = None,
    contraction_iters: int = 0,
) -> tuple[torch.Tensor, SolverStats]:
    """Find x* = f(x*) from ``x0`` and return (x_out, stats) with ``backward``'s gradient.

    Args:
        f: any callable x -> T(x) acting on each sample alone; an ``nn.Module`` or a closure.
        x0: initial iterate, a batch of any shape (first dimension = batch).
        solver: ``Picard``, ``Anderson`` or ``Broyden`` (default ``Anderson()``).
        backward: ``JFB()`` (default), ``JFB(k)``, ``Neumann(k)``, ``IFT(...)`` or ``Unrolled()``.
        params: the tensors f depends on that may need gradients, for a closure f (as
            torchdiffeq's ``adjoint_params``); an ``nn.Module`` f uses its own parameters. When
            none of them (nor x0) requires grad, or grad mode is off, the solve returns x* itself
            with no gradient step (one application of T fewer). Gradients reach every tensor in
            f's autograd graph, closure captures such as the measurement included.
        training: selects the solver's training or evaluation budget; default: grad mode.
        contraction_iters: when > 0, estimate ||J_f(x*)||_2 per sample with this many power
            iterations and store it in ``stats.contraction``.
    """
    solver = Anderson() if solver is None else solver
    backward = JFB() if backward is None else backward
    if not isinstance(solver, Solver):
        raise TypeError(
            f"solver must be a jfb.deq solver (Picard, Anderson, Broyden), got {solver!r}"
        )
    if not isinstance(backward, BackwardStrategy):
        raise TypeError(f"backward must be a jfb.deq strategy (JFB, IFT, ...), got {backward!r}")
    if not isinstance(x0, torch.Tensor):
        raise TypeError(f"x0 must be a tensor, got {type(x0).__name__}")
    training = torch.is_grad_enabled() if training is None else training
    needs_grad = torch.is_grad_enabled() and _depends_on_grad(f, x0, params)
    x_out, stats = backward.run(f, x0, solver, training=training, needs_grad=needs_grad)
    if contraction_iters > 0:
        stats.contraction = contraction_estimate(f, x_out.detach(), n_iter=contraction_iters)
    return x_out, stats


def _depends_on_grad(f: Map, x0: torch.Tensor, params: Iterable[torch.Tensor] | None) -> bool:
    if x0.requires_grad:
        return True
    if params is not None:
        return any(p.requires_grad for p in params)
    if isinstance(f, torch.nn.Module):
        return any(p.requires_grad for p in f.parameters())
    return True  # a closure with unknown captures: assume it needs a gradient
