"""Total-variation regularised least squares by Chambolle-Pock primal-dual iterations.

x = argmin_x 0.5 ||A x - y||^2 + lam TV(x), with TV built on the forward-difference gradient
D (Neumann boundary, :func:`jfb.linalg.gradient`):

- isotropic (default): TV(x) = sum_{c, i, j} sqrt((D_v x)_{cij}^2 + (D_h x)_{cij}^2), per channel;
- vectorial (colour) TV: TV(x) = sum_{i, j} sqrt(sum_c (D_v x)_{cij}^2 + (D_h x)_{cij}^2), one
  edge set shared by the channels;
- anisotropic: TV(x) = sum |D_v x| + |D_h x|.

Chambolle-Pock (2011, Alg. 1, theta = 1) with K = [A; D], F(Ax, Dx) = 0.5||Ax - y||^2 + lam ||Dx||
and G = 0, one dual variable per block:
    p <- (p + sigma (A xbar - y)) / (1 + sigma)        (prox of sigma F1*, F1 = 0.5||. - y||^2)
    q <- proj_{dual-norm ball of radius lam}(q + sigma D xbar)
    x+ <- x - tau (A^T p + D^T q);   xbar <- 2 x+ - x
converging when tau sigma ||K||^2 < 1. Here tau = r 0.99 / L and sigma = 0.99 / (r L) with
L = sqrt(||A||^2 + 8) >= ||K|| (||K||^2 <= ||A||^2 + ||D||^2 and ||D||^2 < 8), so
tau sigma L^2 = 0.98. The ratio r = tau / sigma (``step_ratio``) only changes the speed: the
primal x lives on [0, 1] and the dual q on [-lam, lam], and r = 5 took 3-10x fewer iterations
than r = 1 to reach a given objective on 128 x 128 Gaussian deblurring (lam 0.002-0.01).
"""

from __future__ import annotations

import math

import torch

from jfb.errors import check_bool, check_int, check_number, check_positive
from jfb.linalg import (
    batch_weight,
    gradient,
    gradient_adjoint,
    iterate_per_sample,
    relative_change,
)
from jfb.physics.base import LinearOperator

__all__ = ["total_variation", "tv_objective", "tv_reconstruct"]

#: ||D||^2 < GRADIENT_NORM_SQ for the 2-D forward-difference gradient (4 per direction).
GRADIENT_NORM_SQ = 8.0


# ------------------------------------------------------------------------------------ TV terms
def _check_mode(isotropic: bool, vectorial: bool) -> None:
    check_bool("isotropic", isotropic)
    check_bool("vectorial", vectorial)
    if vectorial and not isotropic:
        raise ValueError("vectorial TV couples channels in an isotropic (l2) norm: "
                         "vectorial=True needs isotropic=True")


def _magnitude(g: torch.Tensor, isotropic: bool, vectorial: bool) -> torch.Tensor:
    """Pointwise norm of a gradient field g (N, C, 2, H, W), shaped to broadcast against g."""
    if not isotropic:
        return g.abs()
    dims = (1, 2) if vectorial else (2,)
    return torch.sqrt(torch.sum(g * g, dim=dims, keepdim=True))


def total_variation(
    x: torch.Tensor, *, isotropic: bool = True, vectorial: bool = False
) -> torch.Tensor:
    """TV(x) per sample (see the module docstring for the three variants) -> Tensor[N]."""
    _check_mode(isotropic, vectorial)
    if x.dim() != 4:
        raise ValueError(f"x must be a batch of images (N, C, H, W), got shape {tuple(x.shape)}")
    m = _magnitude(gradient(x), isotropic, vectorial)
    return m.reshape(x.shape[0], -1).sum(dim=1)


def tv_objective(
    op: LinearOperator,
    y: torch.Tensor,
    x: torch.Tensor,
    lam: float | torch.Tensor,
    *,
    isotropic: bool = True,
    vectorial: bool = False,
) -> torch.Tensor:
    """0.5 ||A x - y||^2 + lam TV(x) per sample -> Tensor[N]."""
    lam_b = batch_weight(lam, x).reshape(-1)
    r = (op.A(x) - y).reshape(x.shape[0], -1)
    tv = total_variation(x, isotropic=isotropic, vectorial=vectorial)
    return 0.5 * torch.sum(r * r, dim=1) + lam_b * tv


def _project(q: torch.Tensor, lam_b: torch.Tensor, isotropic: bool, vectorial: bool):
    """Projection onto {q : |q|_* <= lam} pointwise (the dual ball of the TV norm)."""
    lam_q = lam_b.unsqueeze(-1)  # (N, 1, 1, 1, 1) against (N, C, 2, H, W)
    if not isotropic:
        return torch.maximum(torch.minimum(q, lam_q), -lam_q)
    m = _magnitude(q, True, vectorial)
    return q / torch.clamp(m / torch.clamp(lam_q, min=torch.finfo(q.dtype).tiny), min=1.0)


# ---------------------------------------------------------------------------------- the solver
def tv_reconstruct(
    op: LinearOperator,
    y: torch.Tensor,
    lam: float | torch.Tensor,
    *,
    max_iter: int = 300,
    tol: float = 1e-5,
    isotropic: bool = True,
    vectorial: bool = False,
    x0: torch.Tensor | None = None,
    op_norm: float | None = None,
    step_ratio: float = 5.0,
) -> torch.Tensor:
    """x = argmin 0.5 ||A x - y||^2 + lam TV(x) by Chambolle-Pock (module docstring), batched.

    Args:
        op: forward operator A; x has the shape of A^T y (so "valid" blurs work).
        y: measurements (N, ...); each sample is solved on its own.
        lam: TV weight >= 0, a number or a tensor of N per-sample weights.
        max_iter: iterations at most; 0 returns the starting point.
        tol: sample i stops (is frozen) once ||x_{k+1} - x_k|| <= tol ||x_{k+1}||.
        isotropic: l2 norm of (D_v, D_h) per pixel (True) or l1, anisotropic TV (False).
        vectorial: with isotropic, one l2 norm over channels and directions (colour TV).
        x0: starting point (default A^T y).
        op_norm: ||A||_2 if known; default 1.02 x a power-iteration estimate (which approaches
            from below).
        step_ratio: r = tau / sigma > 0; tau = 0.99 r / L, sigma = 0.99 / (r L),
            L = sqrt(op_norm^2 + 8). Changes the path, not the limit.
    An operator whose norm s lies outside [1/2, 2] (super-resolution, tomography) is solved in
    the equivalent form with A / s, y / s and lam / s^2 (same minimiser), starting from
    A^T y / s^2: otherwise one of the two dual steps is tiny and the start far off in scale.
    Returns x without an autograd graph and without clamping (callers clamp).
    """
    check_int("max_iter", max_iter, minimum=0)
    check_number("tol", tol, low=0)
    _check_mode(isotropic, vectorial)
    if not isinstance(y, torch.Tensor) or not y.is_floating_point():
        raise TypeError("y must be a floating torch.Tensor")
    with torch.no_grad():
        aty = op.A_adjoint(y)
        if aty.dim() != 4:
            raise ValueError(f"TV needs images: A^T y must be (N, C, H, W), got {tuple(aty.shape)}")
        lam_b = batch_weight(lam, aty)
        if op_norm is None:
            gen = torch.Generator(device="cpu").manual_seed(0)
            op_norm = 1.02 * op.norm_estimate((1, *aty.shape[1:]), n_iter=60, tol=1e-5,
                                              generator=gen, device=aty.device, dtype=aty.dtype)
        else:
            check_number("op_norm", op_norm, low=0)
        scale = float(op_norm) if not 0.5 <= op_norm <= 2.0 else 1.0
        if scale != 1.0:  # the equivalent, well-scaled problem (see the docstring)
            y, aty, lam_b, op_norm = y / scale, aty / scale**2, lam_b / scale**2, 1.0
        if x0 is None:
            x = aty
        else:
            if x0.shape != aty.shape:
                raise ValueError(f"x0 has shape {tuple(x0.shape)}, expected A^T y's "
                                 f"{tuple(aty.shape)}")
            x = x0.detach().to(device=aty.device, dtype=aty.dtype)
        ratio = check_positive("step_ratio", step_ratio, type_error=TypeError)
        big_l = math.sqrt(float(op_norm) ** 2 + GRADIENT_NORM_SQ)
        tau, sigma = 0.99 * ratio / big_l, 0.99 / (ratio * big_l)

        def step(state, consts):
            x, xbar, p, q = state
            y_, lam_ = consts
            p = (p + sigma * (op.A(xbar) / scale - y_)) / (1.0 + sigma)
            q = _project(q + sigma * gradient(xbar), lam_, isotropic, vectorial)
            x_new = x - tau * (op.A_adjoint(p) / scale + gradient_adjoint(q))
            return (x_new, 2.0 * x_new - x, p, q), relative_change(x_new, x)

        p0 = torch.zeros_like(y)
        q0 = torch.zeros_like(gradient(x))
        (x, _, _, _), _ = iterate_per_sample(step, (x, x, p0, q0), (y, lam_b),
                                             max_iter=max_iter, tol=tol)
    return x
