"""Per-sample estimate of ||J_T(x*)||_2, the local contraction factor of a fixed-point map."""

from __future__ import annotations

import torch

from jfb.deq.solvers import Map, per_sample_norm
from jfb.errors import check_int


def contraction_estimate(
    f: Map, x: torch.Tensor, *, n_iter: int = 20, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Largest singular value of J = df/dx at x, per sample, by power iteration on J^T J.

    J v is obtained from VJPs by the double-backward trick: w -> J^T w is linear in w, so
    J v = d/dw <J^T w, v>. Returns Tensor[N]; values < 1 mean f is locally a contraction.
    """
    check_int("n_iter", n_iter, minimum=1)
    n = x.shape[0]
    with torch.enable_grad():
        z = x.detach().requires_grad_(True)
        fz = f(z)
        v = torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)
        v = v / per_sample_norm(v).view(-1, *([1] * (x.dim() - 1)))
        sigma = torch.zeros(n, dtype=x.dtype, device=x.device)
        for _ in range(n_iter):
            w = torch.zeros_like(fz, requires_grad=True)
            (jt_w,) = torch.autograd.grad(fz, z, w, create_graph=True, retain_graph=True)
            (jv,) = torch.autograd.grad(jt_w, w, v, retain_graph=True)
            (jtjv,) = torch.autograd.grad(fz, z, jv, retain_graph=True)
            norm = per_sample_norm(jtjv)
            sigma = norm.sqrt()
            v = jtjv / norm.clamp_min(1e-30).view(-1, *([1] * (x.dim() - 1)))
    return sigma.detach()
