"""Direct (non-iterative) inverses: the "input" row of a comparison for each kind of operator.

- Same-size operators (blur, denoising, inpainting): the measurement y itself.
- Super-resolution: bicubic interpolation of y to the image size.
- Tomography: filtered back-projection, x = (pi / n_angles) R^T (h * y), h the Ram-Lak ramp
  filter in its band-limited spatial form (Kak & Slaney, eq. 61: h[0] = 1/4, h[n] = -1/(pi n)^2
  for odd n, 0 for even n), applied along the detector axis with zero padding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from jfb.physics import Downsample, LinearOperator

__all__ = ["bicubic_upsample", "direct_inverse", "filtered_backprojection", "ramp_filter"]


def bicubic_upsample(y: torch.Tensor, factor: int) -> torch.Tensor:
    """Bicubic interpolation of y (N, C, h, w) to (N, C, factor h, factor w)."""
    if y.dim() != 4:
        raise ValueError(f"expected a batch (N, C, h, w), got shape {tuple(y.shape)}")
    return F.interpolate(y, scale_factor=factor, mode="bicubic", align_corners=False)


def ramp_filter(n: int, *, device=None, dtype=torch.float64) -> torch.Tensor:
    """Frequency response (length-n real FFT) of the Ram-Lak filter for detector spacing 1."""
    k = torch.arange(-(n // 2), n - n // 2, device=device, dtype=dtype)
    h = torch.zeros_like(k)
    h[k == 0] = 0.25
    odd = k.remainder(2) == 1
    h[odd] = -1.0 / (math.pi * k[odd]) ** 2
    return torch.fft.rfft(torch.fft.ifftshift(h)).real


def filtered_backprojection(op: LinearOperator, y: torch.Tensor) -> torch.Tensor:
    """x = (pi / n_angles) R^T (h * y) for a :class:`jfb.physics.radon.Radon` operator."""
    n_angles = getattr(op, "n_angles", None)
    if n_angles is None:
        raise TypeError(f"filtered back-projection needs a Radon operator, got {type(op).__name__}")
    n_det = y.shape[-1]
    pad = 1 << (2 * n_det - 1).bit_length()  # >= 2 n_det: no wrap-around of the filter
    spec = torch.fft.rfft(y, n=pad, dim=-1) * ramp_filter(pad, device=y.device, dtype=y.dtype)
    q = torch.fft.irfft(spec, n=pad, dim=-1)[..., :n_det]
    return op.A_adjoint(q) * (math.pi / n_angles)


def direct_inverse(op: LinearOperator, y: torch.Tensor) -> torch.Tensor:
    """The direct inverse of the module docstring for ``op``'s kind of operator."""
    if isinstance(op, Downsample):
        return bicubic_upsample(y, op.factor)
    if hasattr(op, "n_angles"):
        return filtered_backprojection(op, y)
    with torch.no_grad():
        shape = op.image_shape(y.shape)
    if tuple(shape) != tuple(y.shape):
        raise ValueError(f"no direct inverse for {type(op).__name__} (it changes the size)")
    return y
