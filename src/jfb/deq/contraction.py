"""Per-sample estimate of ||J_T(x*)||_2, the local contraction factor of a fixed-point map."""

from __future__ import annotations

from collections.abc import Callable

import torch

from jfb.deq.solvers import Map, per_sample_norm
from jfb.errors import check_choice, check_int

#: How the largest singular value is found: power iteration on J^T J, or Lanczos on J^T J (the
#: largest Ritz value of the same Krylov space, far closer where the top of the spectrum is a
#: cluster, as a blur's is; it keeps every Lanczos vector).
METHODS = ("power", "lanczos")


def contraction_estimate(
    f: Map, x: torch.Tensor, *, n_iter: int = 20, generator: torch.Generator | None = None,
    method: str = "power",
) -> torch.Tensor:
    """Largest singular value of J = df/dx at x, per sample, from ``n_iter`` products with J^T J
    (power iteration or Lanczos, see :data:`METHODS`); both approach it from below.

    J v is obtained from VJPs by the double-backward trick: w -> J^T w is linear in w, so
    J v = d/dw <J^T w, v>. Returns Tensor[N]; values < 1 mean f is locally a contraction.
    """
    check_int("n_iter", n_iter, minimum=1)
    check_choice("method", method, METHODS)
    shape = (-1, *([1] * (x.dim() - 1)))
    with torch.enable_grad():
        z = x.detach().requires_grad_(True)
        fz = f(z)
        w = torch.zeros_like(fz, requires_grad=True)
        (jt_w,) = torch.autograd.grad(fz, z, w, create_graph=True, retain_graph=True)

        def jtj(v: torch.Tensor) -> torch.Tensor:
            (jv,) = torch.autograd.grad(jt_w, w, v, retain_graph=True)
            (out,) = torch.autograd.grad(fz, z, jv, retain_graph=True)
            return out

        v = torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)
        v = v / per_sample_norm(v).view(shape)
        run = _lanczos if method == "lanczos" else _power
        return run(jtj, v, n_iter, shape).detach()


def _power(jtj: Callable, v: torch.Tensor, n_iter: int, shape: tuple) -> torch.Tensor:
    """sqrt(||J^T J v_k||), v_{k+1} = J^T J v_k / ||J^T J v_k||."""
    for _ in range(n_iter):
        jtjv = jtj(v)
        norm = per_sample_norm(jtjv)
        v = jtjv / norm.clamp_min(1e-30).view(shape)
    return norm.sqrt()


def _lanczos(jtj: Callable, v: torch.Tensor, n_iter: int, shape: tuple) -> torch.Tensor:
    """sqrt(largest eigenvalue of the Lanczos tridiagonal of J^T J), per sample, with full
    reorthogonalisation (a breakdown leaves a zero vector, which adds a zero Ritz value)."""
    basis, alphas, betas = [v], [], []

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).flatten(1).sum(1)

    eps = torch.finfo(v.dtype).eps
    for _ in range(n_iter):
        u = jtj(basis[-1])
        alphas.append(dot(u, basis[-1]))
        scale = per_sample_norm(u)
        for _ in range(2):  # Gram-Schmidt twice: one pass loses orthogonality
            for q in basis:
                u = u - dot(u, q).view(shape) * q
        beta = per_sample_norm(u)
        beta = torch.where(beta > 100 * eps * scale, beta, 0)  # an invariant subspace: stop
        betas.append(beta)
        basis.append(torch.where(beta.view(shape) > 0, u / beta.clamp_min(eps).view(shape), 0))
    off = torch.stack(betas[:-1], 1)
    tri = torch.diag_embed(torch.stack(alphas, 1)) + torch.diag_embed(off, 1) \
        + torch.diag_embed(off, -1)
    return torch.linalg.eigvalsh(tri)[:, -1].clamp_min(0).sqrt()
