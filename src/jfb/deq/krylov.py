"""Batched restarted GMRES for per-sample linear systems M_i u_i = b_i.

Used by the implicit backward: M = I - J_T^T is applied only through vector-Jacobian products, and
it is block diagonal over the batch (T acts on each sample alone), so every sample gets its own
Krylov space, inner products and least-squares problem, advanced together in one batched loop.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from jfb.deq.solvers import per_sample_norm


def gmres(
    apply: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    *,
    tol: float = 1e-6,
    max_iter: int = 100,
    restart: int = 20,
    eps: float = 1e-30,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Solve apply(u) = b per sample by GMRES(restart), from u = 0.

    Stops when every sample's relative residual ||b_i - M u_i|| / ||b_i|| < tol or after
    ``max_iter`` applications of M. Returns (u, iterations LongTensor[N], relative residual[N]),
    where iterations counts the applications of M a sample needed to reach tol (max_iter if never).
    """
    n = b.shape[0]
    shape = b.shape
    bf = b.reshape(n, -1)
    bnorm = per_sample_norm(bf).clamp_min(eps)
    u = torch.zeros_like(bf)
    iterations = torch.zeros(n, dtype=torch.long, device=b.device)
    done = per_sample_norm(bf) <= eps  # b = 0 -> u = 0 exactly
    rel = torch.where(done, torch.zeros_like(bnorm), torch.ones_like(bnorm))
    used = 0
    while used < max_iter and not bool(done.all()):
        r = bf - apply(u.reshape(shape)).reshape(n, -1)
        used += 1
        beta = per_sample_norm(r)
        rel = beta / bnorm
        newly = ~done & (rel < tol)
        iterations = torch.where(newly, torch.full_like(iterations, used), iterations)
        done = done | newly
        if bool(done.all()) or used >= max_iter:
            break
        steps = min(restart, max_iter - used)
        basis = [r / beta.clamp_min(eps)[:, None]]
        hess = torch.zeros(n, steps + 1, steps, dtype=bf.dtype, device=bf.device)
        coef = None
        for j in range(steps):
            w = apply(basis[j].reshape(shape)).reshape(n, -1)
            used += 1
            for i in range(j + 1):  # modified Gram-Schmidt, per sample
                h = (w * basis[i]).sum(dim=1)
                hess[:, i, j] = h
                w = w - h[:, None] * basis[i]
            hn = per_sample_norm(w)
            hess[:, j + 1, j] = hn
            basis.append(w / hn.clamp_min(eps)[:, None])
            rhs = torch.zeros(n, j + 2, dtype=bf.dtype, device=bf.device)
            rhs[:, 0] = beta
            coef = torch.linalg.lstsq(hess[:, : j + 2, : j + 1], rhs[..., None]).solution
            lsq_res = per_sample_norm(rhs - (hess[:, : j + 2, : j + 1] @ coef).squeeze(-1))
            rel = torch.where(done, rel, lsq_res / bnorm)
            newly = ~done & (rel < tol)
            iterations = torch.where(newly, torch.full_like(iterations, used), iterations)
            done = done | newly
            if bool(done.all()):
                break
        k = coef.shape[1]
        step = torch.bmm(torch.stack(basis[:k], dim=2), coef).squeeze(-1)
        u = u + step
    iterations = torch.where(done, iterations, torch.full_like(iterations, used))
    return u.reshape(shape), iterations, rel
