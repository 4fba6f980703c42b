"""Wiener / Tikhonov deconvolution in closed form in Fourier, for circular (periodic) blurs.

x = argmin ||A x - y||^2 + lam ||L x||^2 with A a circular convolution, so A = F^-1 diag(K) F and
x = F^-1[ conj(K) Y / (|K|^2 + lam |L|^2) ], with the symbol |L|^2 = 1 ("identity") or
|L|^2 = 4 sin^2(pi u / H) + 4 sin^2(pi v / W) ("gradient": forward differences with *periodic*
boundaries, whose L^T L is the periodic 5-point Laplacian). The "identity" solution equals
:func:`jfb.baselines.tikhonov.tikhonov`'s; for "gradient" the two differ at the image border
because ``tikhonov`` uses Neumann boundaries (the last difference is 0), which no FFT
diagonalises. Frequencies where the denominator is 0 (lam = 0 and K = 0) are set to 0: the
minimum-norm least-squares solution.
"""

from __future__ import annotations

import torch

from jfb.errors import check_choice
from jfb.linalg import batch_weight
from jfb.physics.base import Identity, LinearOperator
from jfb.physics.blur import BatchBlur, Blur, gradient_symbol, wiener_filter

__all__ = ["gradient_symbol", "transfer_function", "wiener"]

PENALTIES = ("identity", "gradient")


def _check_circular(op: LinearOperator) -> None:
    if isinstance(op, Identity):
        return
    if isinstance(op, Blur) and op.padding == "circular":
        return
    what = f"Blur(padding={op.padding!r})" if isinstance(op, Blur) else type(op).__name__
    raise ValueError(
        f"wiener needs an operator diagonalised by the FFT (Blur(padding='circular') or "
        f"Identity), got {what}; for other boundaries solve the same problem iteratively with "
        f"jfb.baselines.tikhonov.tikhonov(op, y, lam, penalty=...)"
    )


def transfer_function(op: LinearOperator, shape: tuple[int, ...], *, dtype: torch.dtype,
                      device: torch.device) -> torch.Tensor:
    """rfft2 of the impulse response A(delta) of a circular operator on (1, C, H, W) images
    ((N, C, H, W) for a :class:`~jfb.physics.BatchBlur` of N kernels): K such that
    A x = irfft2(K rfft2(x)) -> complex (1 or N, C, H, W // 2 + 1)."""
    _check_circular(op)
    n = op.batch_size if isinstance(op, BatchBlur) else 1  # one response per kernel
    delta = torch.zeros((n, *shape[1:]), dtype=dtype, device=device)
    delta[..., 0, 0] = 1.0
    return torch.fft.rfft2(op.A(delta))


def wiener(
    op: LinearOperator,
    y: torch.Tensor,
    lam: float | torch.Tensor,
    *,
    penalty: str = "identity",
) -> torch.Tensor:
    """x = F^-1[ conj(K) Y / (|K|^2 + lam |L|^2) ], exact (module docstring).

    Args:
        op: ``Blur(..., padding="circular")`` (any method, shared or per-channel kernel) or
            ``Identity``; anything else raises ValueError (use ``tikhonov`` there).
        y: measurements (N, C, H, W).
        lam: weight >= 0, a number or one value per sample.
        penalty: "identity" (L = I) or "gradient" (periodic forward differences).
    Returns x (N, C, H, W) in y's dtype (half precision is computed in float32), no autograd.
    """
    check_choice("penalty", penalty, PENALTIES)
    _check_circular(op)
    if not isinstance(y, torch.Tensor) or not y.is_floating_point() or y.dim() != 4:
        raise ValueError("y must be a floating (N, C, H, W) tensor")
    if isinstance(op, Blur):
        return wiener_filter(op, y, batch_weight(lam, y), gradient=penalty == "gradient")
    out_dtype = y.dtype
    with torch.no_grad():
        yc = y.float() if y.dtype in (torch.float16, torch.bfloat16) else y
        h, w = yc.shape[-2:]
        k = transfer_function(op, tuple(yc.shape), dtype=yc.dtype, device=yc.device)
        lam_b = batch_weight(lam, yc)
        if penalty == "identity":
            reg = torch.ones((h, w // 2 + 1), dtype=yc.dtype, device=yc.device)
        else:
            reg = gradient_symbol(h, w, dtype=yc.dtype, device=yc.device)
        den = k.real**2 + k.imag**2 + lam_b * reg
        num = k.conj() * torch.fft.rfft2(yc)
        safe = torch.where(den > 0, den, torch.ones_like(den))
        xf = torch.where(den > 0, num / safe, torch.zeros_like(num))
        x = torch.fft.irfft2(xf, s=(h, w))
    return x.to(out_dtype)
