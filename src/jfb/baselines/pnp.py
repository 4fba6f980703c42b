"""Plug-and-play reconstructions: a denoiser D in place of a proximal operator.

- PnP-ADMM:  x <- argmin 0.5||A x - y||^2 + rho/2 ||x - (z - u)||^2  (CG on A^T A + rho I),
             z <- D(x + u),  u <- u + x - z.
- PnP-PGD:   x <- D(x - step A^T (A x - y)).
- HQS (DPIR, Zhang et al. 2021): for k = 1..K with a noise schedule sigma_k decreasing
  log-linearly from ``sigma_start`` to the measurement's sigma,
             x <- argmin ||A x - y||^2 + mu_k ||x - z||^2,  mu_k = lambda sigma^2 / sigma_k^2,
             z <- D(x, sigma_k)  (or D(x) for a denoiser without a noise level).

The ADMM data step, :func:`jfb.linalg.admm_x_update` (importable from here too), is
differentiable (implicit differentiation of the linear solve), and is also the x-update of the
learned ``jfb.models.DEADMM``. Both solvers freeze each sample on its own
(:func:`jfb.linalg.iterate_per_sample`).

``denoiser`` is any callable ``D(v) -> v`` or, with ``sigma`` given, ``D(v, sigma) -> v``; it
must act on each sample alone (no batch statistics), because converged samples are frozen and
only the active ones are passed on. :class:`DenoiserWrapper` adapts a trained ``nn.Module``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from jfb.errors import check_int, check_number, check_positive
from jfb.linalg import admm_x_update, iterate_per_sample, relative_change
from jfb.physics.base import LinearOperator

__all__ = ["DenoiserWrapper", "admm_x_update", "pnp_admm", "pnp_hqs", "pnp_pgd"]

Denoiser = Callable[..., torch.Tensor]


def _denoise(denoiser: Denoiser, v: torch.Tensor, sigma: float | None) -> torch.Tensor:
    out = denoiser(v) if sigma is None else denoiser(v, sigma)
    if not isinstance(out, torch.Tensor) or out.shape != v.shape:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the denoiser must return a tensor of its input's shape "
                         f"{tuple(v.shape)}, got {shape}")
    return out.to(dtype=v.dtype)


def _start(op: LinearOperator, y: torch.Tensor, x0: torch.Tensor | None) -> torch.Tensor:
    if not isinstance(y, torch.Tensor) or not y.is_floating_point():
        raise TypeError("y must be a floating torch.Tensor")
    aty = op.A_adjoint(y)
    if x0 is None:
        return aty
    if x0.shape != aty.shape:
        raise ValueError(f"x0 has shape {tuple(x0.shape)}, expected A^T y's {tuple(aty.shape)}")
    return x0.detach().to(device=aty.device, dtype=aty.dtype)


def _check_sigma(sigma: float | None) -> float | None:
    return None if sigma is None else check_positive("sigma", sigma, type_error=TypeError)


def pnp_admm(
    op: LinearOperator,
    y: torch.Tensor,
    denoiser: Denoiser,
    *,
    rho: float,
    max_iter: int = 50,
    tol: float = 1e-4,
    cg_iters: int = 20,
    cg_tol: float = 1e-6,
    sigma: float | None = None,
    x0: torch.Tensor | None = None,
) -> torch.Tensor:
    """PnP-ADMM (module docstring), batched; returns z = D(x + u), the denoiser's output.

    Args:
        op, y: forward operator A and measurements (N, ...).
        denoiser: D(v) (or D(v, sigma) when ``sigma`` is given).
        rho: ADMM penalty > 0 (larger: x stays closer to the denoised z).
        max_iter: ADMM iterations at most; 0 returns the starting point.
        tol: sample i is frozen once ||z_{k+1} - z_k|| <= tol ||z_{k+1}||.
        cg_iters: CG iterations at most per x-update (warm-started at the previous x).
        cg_tol: CG stops once ||residual|| <= cg_tol ||right-hand side||; the fixed point is
            only as accurate as the x-updates.
        sigma: noise level passed to the denoiser as its second argument (None: not passed).
        x0: starting x = z (default A^T y); u starts at 0.
    """
    check_int("max_iter", max_iter, minimum=0)
    check_number("tol", tol, low=0)
    rho = check_positive("rho", rho, type_error=TypeError)
    sigma = _check_sigma(sigma)
    check_int("cg_iters", cg_iters, minimum=1)
    check_number("cg_tol", cg_tol, low=0)
    with torch.no_grad():
        x = _start(op, y, x0)
        aty = op.A_adjoint(y)

        def step(state, consts):
            x, z, u = state
            (aty_,) = consts
            x = admm_x_update(op, aty_, z, u, rho, x0=x, cg_iters=cg_iters, cg_tol=cg_tol)
            z_new = _denoise(denoiser, x + u, sigma)
            u = u + x - z_new
            return (x, z_new, u), relative_change(z_new, z)

        (_, z, _), _ = iterate_per_sample(step, (x, x, torch.zeros_like(x)), (aty,),
                                          max_iter=max_iter, tol=tol)
    return z


def pnp_hqs(
    op: LinearOperator,
    y: torch.Tensor,
    denoiser: Denoiser,
    *,
    sigma: float,
    iters: int = 8,
    sigma_start: float = 49 / 255,
    lam: float = 0.23,
    cg_iters: int = 20,
    noise_level_input: bool = False,
) -> torch.Tensor:
    """DPIR's half-quadratic splitting (module docstring), batched: ``iters`` iterations with
    the schedule sigma_k = sigma_start (sigma / sigma_start)^((k - 1) / (K - 1)) and
    mu_k = lam sigma^2 / sigma_k^2 (DPIR's defaults: K = 8, 49/255, lambda = 0.23); the
    denoiser is given sigma_k when ``noise_level_input``. The x-update is
    :func:`admm_x_update` (u = 0, rho = mu_k, preconditioned CG). Returns the last z."""
    check_int("iters", iters, minimum=1)
    sigma = check_positive("sigma", sigma, type_error=TypeError)
    sigma_start = check_positive("sigma_start", sigma_start, type_error=TypeError)
    lam = check_positive("lam", lam, type_error=TypeError)
    with torch.no_grad():
        z = _start(op, y, None)
        aty = op.A_adjoint(y)
        zero = torch.zeros_like(z)
        for k in range(iters):
            t = k / (iters - 1) if iters > 1 else 1.0
            sigma_k = sigma_start * (sigma / sigma_start) ** t
            mu = lam * sigma**2 / sigma_k**2
            x = admm_x_update(op, aty, z, zero, mu, x0=z, cg_iters=cg_iters)
            z = _denoise(denoiser, x, sigma_k if noise_level_input else None)
    return z


def pnp_pgd(
    op: LinearOperator,
    y: torch.Tensor,
    denoiser: Denoiser,
    *,
    step: float,
    max_iter: int = 100,
    tol: float = 1e-4,
    sigma: float | None = None,
    x0: torch.Tensor | None = None,
) -> torch.Tensor:
    """PnP proximal gradient x <- D(x - step A^T (A x - y)), batched.

    Args:
        op, y: forward operator A and measurements (N, ...).
        denoiser: D(v) (or D(v, sigma) when ``sigma`` is given).
        step: gradient step > 0 (stable for step < 2 / ||A||^2 with a non-expansive D).
        max_iter: iterations at most; 0 returns the starting point.
        tol: sample i is frozen once ||x_{k+1} - x_k|| <= tol ||x_{k+1}||.
        sigma: noise level passed to the denoiser as its second argument (None: not passed).
        x0: starting point (default A^T y).
    """
    check_int("max_iter", max_iter, minimum=0)
    check_number("tol", tol, low=0)
    step_size = check_positive("step", step, type_error=TypeError)
    sigma = _check_sigma(sigma)
    with torch.no_grad():
        x = _start(op, y, x0)

        def update(state, consts):
            (x,) = state
            (y_,) = consts
            x_new = _denoise(denoiser, x - step_size * op.A_adjoint(op.A(x) - y_), sigma)
            return (x_new,), relative_change(x_new, x)

        (x,), _ = iterate_per_sample(update, (x,), (y,), max_iter=max_iter, tol=tol)
    return x


def _first_conv_in_channels(net: nn.Module) -> int | None:
    if isinstance(getattr(net, "in_channels", None), int):
        return int(net.in_channels)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            return int(m.in_channels)
    return None


class DenoiserWrapper:
    """Adapt a trained ``nn.Module`` denoiser to the PnP call ``D(v)`` / ``D(v, sigma)``.

    The net runs in eval mode (its previous mode is restored afterwards) without gradients. If
    the net takes C + 1 input channels for C-channel images, a constant noise-level map equal to
    sigma is appended as the last channel (sigma = the call's argument, else ``sigma_in``); if it
    takes C channels, v is passed as is (sigma is then ignored). The net's input channel count is
    ``in_channels`` if given, else the net's ``in_channels`` attribute, else its first Conv2d's.
    """

    def __init__(self, net: nn.Module, sigma_in: float | None = None, *,
                 in_channels: int | None = None) -> None:
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be an nn.Module, got {type(net).__name__}")
        self.net = net
        self.sigma_in = _check_sigma(sigma_in)
        if in_channels is None:
            in_channels = _first_conv_in_channels(net)
            if in_channels is None:
                raise ValueError("cannot tell the net's input channels (no in_channels attribute "
                                 "and no Conv2d): pass in_channels=")
        else:
            check_int("in_channels", in_channels, minimum=1)
        self.in_channels = int(in_channels)

    def __repr__(self) -> str:
        return (f"DenoiserWrapper({type(self.net).__name__}, sigma_in={self.sigma_in}, "
                f"in_channels={self.in_channels})")

    def __call__(self, v: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
        """D(v) for v (N, C, H, W), with the noise-level channel when the net expects one."""
        if v.dim() != 4:
            raise ValueError(f"expected (N, C, H, W) images, got shape {tuple(v.shape)}")
        c = v.shape[1]
        if self.in_channels == c + 1:
            level = self.sigma_in if sigma is None else _check_sigma(sigma)
            if level is None:
                raise ValueError("the net takes a noise-level channel: pass sigma (to the call "
                                 "or as sigma_in)")
            inp = torch.cat([v, torch.full_like(v[:, :1], level)], dim=1)
        elif self.in_channels == c:
            inp = v
        else:
            raise ValueError(f"the net takes {self.in_channels} channels; images with {c} need "
                             f"{c} (plain) or {c + 1} (with a noise-level map)")
        was_training = self.net.training
        self.net.eval()
        try:
            with torch.no_grad():
                out = self.net(inp)
        finally:
            self.net.train(was_training)
        if out.shape != v.shape:
            raise ValueError(f"the net returned shape {tuple(out.shape)} for images of shape "
                             f"{tuple(v.shape)}")
        return out
