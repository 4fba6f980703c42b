"""Regularised least squares by conjugate gradients, per sample:

- Tikhonov: x = argmin ||A x - y||^2 + lam ||L x||^2, i.e. (A^T A + lam L^T L) x = A^T y, with L
  the identity or the forward-difference gradient (both directions, per channel, Neumann
  boundary);
- the ridge (ADMM) x-update: x = (A^T A + rho I)^{-1} (A^T y + rho v), warm-started and
  differentiable, the data step of PnP-ADMM and of the learned DE-ADMM.

``op`` is any linear operator with ``A_adjoint`` and ``normal`` (a ``jfb.physics``
``LinearOperator``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from jfb.errors import check_choice
from jfb.linalg.batch import batch_weight
from jfb.linalg.cg import conjugate_gradient
from jfb.linalg.differences import gradient, gradient_adjoint

if TYPE_CHECKING:
    from jfb.physics.base import LinearOperator

__all__ = ["PENALTIES", "admm_x_update", "tikhonov"]

PENALTIES = ("gradient", "identity")


def tikhonov(
    op: LinearOperator,
    y: torch.Tensor,
    lam: float | torch.Tensor,
    *,
    penalty: str = "gradient",
    x0: torch.Tensor | None = None,
    max_iter: int = 200,
    tol: float = 1e-6,
) -> torch.Tensor:
    """x = argmin ||A x - y||^2 + lam ||L x||^2, by CG on (A^T A + lam L^T L) x = A^T y.

    Args:
        op: the forward operator A (x has the shape of A^T y, so "valid" blurs work).
        y: measurements (N, ...) ; each sample is solved independently.
        lam: regularisation weight >= 0, a number or a tensor of N per-sample weights.
        penalty: "gradient" (L = forward-difference gradient, Neumann boundary: smooth
            solutions) or "identity" (L = I).
        x0: initial guess (default zeros), shaped like A^T y.
        max_iter, tol: CG stops per sample when ||residual|| <= tol ||A^T y||.
    Returns the solution (no autograd graph), with A^T y's shape, dtype and device.
    """
    check_choice("penalty", penalty, PENALTIES)
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
    with torch.no_grad():
        b = op.A_adjoint(y)
        lam_b = batch_weight(lam, b)

        if penalty == "identity":
            def apply(x: torch.Tensor) -> torch.Tensor:
                return op.normal(x) + lam_b * x
        else:
            if b.dim() < 3:
                raise ValueError(
                    f"penalty='gradient' needs images (N, ..., H, W), got shape {tuple(b.shape)}"
                )

            def apply(x: torch.Tensor) -> torch.Tensor:
                return op.normal(x) + lam_b * gradient_adjoint(gradient(x))

        x, _ = conjugate_gradient(apply, b, x0, max_iter=max_iter, tol=tol)
    return x


def admm_x_update(
    op: LinearOperator,
    aty: torch.Tensor,
    z: torch.Tensor,
    u: torch.Tensor,
    rho: float | torch.Tensor,
    *,
    x0: torch.Tensor | None = None,
    cg_iters: int = 20,
    cg_tol: float = 1e-6,
    precondition: bool = True,
) -> torch.Tensor:
    """ADMM's data step x = argmin ||A x - y||^2 / 2 + rho/2 ||x - (z - u)||^2, i.e.
    (A^T A + rho I) x = A^T y + rho (z - u), by at most ``cg_iters`` CG steps from ``x0``
    (default zeros), stopping per sample at relative residual ``cg_tol``; preconditioned by
    ``op.ridge_preconditioner(rho)`` when ``precondition`` and the operator has one (plain CG
    otherwise).

    ``aty`` is A^T y. Differentiable in ``aty``, ``z``, ``u`` and ``rho`` (a number, a 0-d
    tensor, or one value per sample): the backward solves the same system for the incoming
    gradient g (same CG budget and preconditioner, from zeros), d/db = M^{-1} g and
    d/drho = -<M^{-1} g, x>, the derivative of the exact solve whatever the start; it is itself
    differentiable (double backward).
    """
    rho_t = torch.as_tensor(rho, dtype=aty.dtype, device=aty.device)
    if rho_t.dim() != 0:
        if rho_t.numel() != aty.shape[0]:
            raise ValueError(f"rho must be a number, a 0-d tensor or one value per sample, got "
                             f"shape {tuple(rho_t.shape)} for {aty.shape[0]} samples")
        rho_t = rho_t.reshape(-1, *([1] * (aty.dim() - 1)))
    return _RidgeSolve.apply(aty + rho_t * (z - u), rho_t, x0, op, cg_iters, cg_tol, precondition)


class _RidgeSolve(torch.autograd.Function):
    """x = M^{-1} b with M = A^T A + rho I, by (preconditioned) CG from x0; see
    :func:`admm_x_update`. Under CUDA autocast the solve runs in float32 (CG's recurrences lose
    their accuracy in bf16)."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, b, rho, x0, op, cg_iters, cg_tol, precondition):  # type: ignore[override]
        r = rho.detach()
        start = None if x0 is None else x0.detach()
        x, _ = conjugate_gradient(lambda v: op.normal(v) + r * v, b.detach(), start,
                                  max_iter=cg_iters, tol=cg_tol,
                                  precondition=op.ridge_preconditioner(r) if precondition else None)
        ctx.save_for_backward(rho, x)
        ctx.op, ctx.cg_iters, ctx.cg_tol, ctx.precondition = op, cg_iters, cg_tol, precondition
        return x

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, g):  # type: ignore[override]
        rho, x = ctx.saved_tensors
        w = _RidgeSolve.apply(g, rho, None, ctx.op, ctx.cg_iters, ctx.cg_tol,
                              ctx.precondition)  # M symmetric
        grad_rho = None
        if ctx.needs_input_grad[1]:  # per sample when rho is
            wx = w * x
            grad_rho = -(wx.sum() if rho.dim() == 0 else wx.sum(dim=tuple(range(1, wx.dim())),
                                                               keepdim=True))
        return w, grad_rho, None, None, None, None, None
