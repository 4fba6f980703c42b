"""Tikhonov-regularised least squares solved by batched conjugate gradients.

x = argmin_x ||A x - y||^2 + lam ||L x||^2, i.e. (A^T A + lam L^T L) x = A^T y, with L the
identity or the forward-difference gradient (both directions, per channel, Neumann boundary).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from jfb.physics.base import LinearOperator

__all__ = ["conjugate_gradient", "gradient", "gradient_adjoint", "tikhonov"]

PENALTIES = ("gradient", "identity")


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample inner products <a_i, b_i> over all non-batch dimensions -> Tensor[N]."""
    return torch.sum((a * b).reshape(a.shape[0], -1), dim=1)


def _bview(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample vector (N,) to broadcast against ``like`` (N, ...)."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def batch_weight(lam: float | torch.Tensor, like: torch.Tensor, name: str = "lam") -> torch.Tensor:
    """A weight >= 0 given as a number or one value per sample, as an (N, 1, ..., 1) tensor
    broadcasting against ``like`` (same device and dtype)."""
    n = like.shape[0]
    if isinstance(lam, torch.Tensor):
        t = lam.detach().to(device=like.device, dtype=like.dtype).reshape(-1)
        if t.numel() not in (1, n):
            raise ValueError(f"{name} must be a number or hold one value per sample ({n}), "
                             f"got {lam.numel()} values")
    elif isinstance(lam, bool) or not isinstance(lam, (int, float)):
        raise TypeError(f"{name} must be a number or a tensor, got {type(lam).__name__}")
    else:
        t = torch.tensor([float(lam)], device=like.device, dtype=like.dtype)
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise ValueError(f"{name} must be finite and >= 0, got {lam}")
    return _bview(t.expand(n).clone(), like)


def conjugate_gradient(
    apply: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    x0: torch.Tensor | None = None,
    *,
    max_iter: int = 200,
    tol: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve M x = b for a symmetric positive (semi-)definite M, sample by sample, by CG.

    ``apply(x)`` computes M x on a batch (first dimension = batch; M must act on each sample
    alone). Each sample has its own step sizes alpha_i = <r_i, r_i> / <p_i, M p_i> and
    beta_i = <r_i+, r_i+> / <r_i, r_i>, and stops changing once ||r_i|| <= tol ||b_i|| (or on a
    breakdown <p_i, M p_i> <= 0). Returns (x, n_iter) with n_iter the per-sample number of
    iterations taken (LongTensor[N]). Runs without autograd.
    """
    if not isinstance(b, torch.Tensor) or b.dim() < 1:
        raise TypeError("b must be a tensor whose first dimension is the batch")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"max_iter must be an int >= 0, got {max_iter!r}")
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    if x0 is not None and x0.shape != b.shape:
        raise ValueError(f"x0 has shape {tuple(x0.shape)} but b has shape {tuple(b.shape)}")
    with torch.no_grad():
        if x0 is None:
            x = torch.zeros_like(b)
            r = b.clone()
        else:
            x = x0.to(device=b.device, dtype=b.dtype).clone()
            r = b - apply(x)
        p = r.clone()
        rs = _dot(r, r)
        thresh = (tol * torch.sqrt(_dot(b, b))) ** 2
        done = rs <= thresh
        n_iter = torch.zeros(b.shape[0], dtype=torch.long, device=b.device)
        for _ in range(max_iter):
            if bool(done.all()):
                break
            mp = apply(p)
            pmp = _dot(p, mp)
            active = ~done & (pmp > 0)
            alpha = torch.where(active, rs / torch.where(active, pmp, torch.ones_like(pmp)), 0.0)
            x = x + _bview(alpha, x) * p
            r = r - _bview(alpha, r) * mp
            rs_new = _dot(r, r)
            safe_rs = torch.where(rs > 0, rs, torch.ones_like(rs))
            beta = rs_new / safe_rs
            p = torch.where(_bview(active, p), r + _bview(beta, p) * p, p)
            rs = torch.where(active, rs_new, rs)
            n_iter = n_iter + active.long()
            done = done | (~active) | (rs <= thresh)
    return x, n_iter


def gradient(x: torch.Tensor) -> torch.Tensor:
    """Forward differences of (N, C, H, W) images, Neumann boundary (last difference = 0):
    D x = stack(x[i+1, j] - x[i, j], x[i, j+1] - x[i, j]) of shape (N, C, 2, H, W)."""
    dv = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    dh = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1))
    return torch.stack((dv, dh), dim=-3)


def gradient_adjoint(g: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`gradient` (minus the divergence): D^T g for g of shape (N, C, 2, H, W)."""
    gv = g[..., 0, :-1, :]
    gh = g[..., 1, :, :-1]
    return (
        F.pad(gv, (0, 0, 1, 0)) - F.pad(gv, (0, 0, 0, 1))
        + F.pad(gh, (1, 0)) - F.pad(gh, (0, 1))
    )


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
    if not isinstance(penalty, str) or penalty not in PENALTIES:
        raise ValueError(f"unknown penalty {penalty!r}; expected one of {PENALTIES}")
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
