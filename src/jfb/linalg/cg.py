"""Conjugate gradients, batched: every sample solves its own symmetric positive (semi-)definite
system M x_i = b_i with its own step sizes and its own stop, optionally preconditioned by a
symmetric positive definite P ~ M^{-1} (PCG)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from jfb.errors import check_int, check_number
from jfb.linalg.batch import batch_dot, batch_view

__all__ = ["conjugate_gradient"]


def conjugate_gradient(
    apply: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    x0: torch.Tensor | None = None,
    *,
    max_iter: int = 200,
    tol: float = 1e-6,
    precondition: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve M x = b for a symmetric positive (semi-)definite M, sample by sample, by CG, or by
    preconditioned CG (PCG) with z = P r, P a symmetric positive definite approximation of M^{-1}.

    ``apply(x)`` computes M x on a batch (first dimension = batch; M must act on each sample
    alone), and so does ``precondition(r)`` for P r (None: P = I, plain CG, and the very same
    arithmetic as without the argument). Each sample has its own step sizes
    alpha_i = <r_i, z_i> / <p_i, M p_i> and beta_i = <r_i+, z_i+> / <r_i, z_i>, and stops changing
    once its true residual ||r_i|| <= tol ||b_i|| (or on a breakdown <p_i, M p_i> <= 0). Returns
    (x, n_iter) with n_iter the per-sample number of iterations taken (LongTensor[N]). Runs
    without autograd.
    """
    if not isinstance(b, torch.Tensor) or b.dim() < 1:
        raise TypeError("b must be a tensor whose first dimension is the batch")
    check_int("max_iter", max_iter, minimum=0)
    check_number("tol", tol, low=0)
    if x0 is not None and x0.shape != b.shape:
        raise ValueError(f"x0 has shape {tuple(x0.shape)} but b has shape {tuple(b.shape)}")
    with torch.no_grad():
        if x0 is None:
            x = torch.zeros_like(b)
            r = b.clone()
        else:
            x = x0.to(device=b.device, dtype=b.dtype).clone()
            r = b - apply(x)
        rs = batch_dot(r, r)
        z, rz = _preconditioned(precondition, r, rs)
        p = z.clone()
        thresh = (tol * torch.sqrt(batch_dot(b, b))) ** 2
        done = rs <= thresh
        active, rs_new = ~done, rs  # what a step leaves for the next one's direction
        n_iter = torch.zeros(b.shape[0], dtype=torch.long, device=b.device)
        for step in range(max_iter):
            if bool(done.all()):
                break
            if step > 0:  # the new direction, only when a step will use it (P may be costly)
                z, rz_new = _preconditioned(precondition, r, rs_new)
                safe_rz = torch.where(rz > 0, rz, torch.ones_like(rz))
                beta = rz_new / safe_rz
                # p = where(active, z + beta p, p), in place (x, r and p are this solve's own)
                direction = torch.addcmul(z, batch_view(beta, p), p)
                torch.where(batch_view(active, p), direction, p, out=p)
                del direction
                rz = torch.where(active, rz_new, rz)
            mp = apply(p)
            pmp = batch_dot(p, mp)
            active = ~done & (pmp > 0)
            alpha = torch.where(active, rz / torch.where(active, pmp, torch.ones_like(pmp)), 0.0)
            x.addcmul_(batch_view(alpha, x), p)  # x + alpha p, without the two temporaries
            r.addcmul_(batch_view(-alpha, r), mp)
            rs_new = batch_dot(r, r)
            rs = torch.where(active, rs_new, rs)
            n_iter = n_iter + active.long()
            done = done | (~active) | (rs <= thresh)
    return x, n_iter


def _preconditioned(
    precondition: Callable[[torch.Tensor], torch.Tensor] | None,
    r: torch.Tensor,
    rs: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, <r, z>) with z = P r; without a preconditioner z is r itself and <r, z> is ``rs``
    (= <r, r>, already computed), so plain CG does no extra work."""
    if precondition is None:
        return r, rs
    z = precondition(r)
    return z, batch_dot(r, z)
