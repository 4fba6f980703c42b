"""Additive measurement noise models."""

from __future__ import annotations

import math

import torch

__all__ = ["GaussianNoise", "estimate_noise_std"]


class GaussianNoise:
    """Additive white Gaussian noise: y_noisy = y + sigma * n with n ~ N(0, I).

    ``sigma`` is the standard deviation in the units of y (pixels in [0, 1]: the protocol's
    0.005 for ``celeba-gauss5``).
    """

    def __init__(self, sigma: float) -> None:
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
            raise TypeError(f"sigma must be a number, got {type(sigma).__name__} {sigma!r}")
        sigma = float(sigma)
        if not math.isfinite(sigma) or sigma < 0:
            raise ValueError(f"noise sigma must be a finite number >= 0, got {sigma}")
        self.sigma = sigma

    def __repr__(self) -> str:
        return f"GaussianNoise(sigma={self.sigma})"

    def __call__(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Return y + sigma * n, n ~ N(0, 1) i.i.d. with y's shape, device and dtype.

        With a ``generator`` the draw is reproducible: n is drawn on the generator's device (a CPU
        generator gives the same noise whatever device y is on) and then moved to y's device.
        ``sigma = 0`` returns a copy of y. Not in-place.
        """
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
        if not y.is_floating_point():
            raise TypeError(f"y must be a floating tensor, got dtype {y.dtype}")
        if self.sigma == 0:
            return y.clone()
        device = generator.device if generator is not None else y.device
        n = torch.randn(y.shape, generator=generator, device=device, dtype=y.dtype)
        return y + self.sigma * n.to(y.device)


#: median(|n|) / sigma for n ~ N(0, sigma^2): the MAD-to-std factor.
_MAD_TO_STD = 0.6744897501960817


def estimate_noise_std(y: torch.Tensor) -> torch.Tensor:
    """Per-sample std of additive white Gaussian noise in images y (N, C, H, W) -> Tensor[N].

    sigma = median |HH| / 0.6745 (Donoho and Johnstone, 1994), HH = (a - b - c + d) / 2 the
    finest diagonal Haar coefficient of every 2x2 block [[a, b], [c, d]], pooled over the
    channels. HH is orthonormal, so pure noise gives HH ~ N(0, sigma^2); it is near zero where
    the image is smooth, as a blurred image is, so the median sees the noise. Edges and texture
    push the estimate up, quantisation (8-bit files: 1/255 / sqrt(12) = 0.0011) adds to it.
    """
    if not isinstance(y, torch.Tensor) or not y.is_floating_point() or y.dim() != 4:
        raise ValueError("y must be a floating tensor of images (N, C, H, W)")
    h, w = (y.shape[-2] // 2) * 2, (y.shape[-1] // 2) * 2
    if h == 0 or w == 0:
        raise ValueError(f"images of at least 2x2 pixels are needed, got {tuple(y.shape[-2:])}")
    v = y[..., :h, :w]
    hh = (v[..., 0::2, 0::2] - v[..., 0::2, 1::2] - v[..., 1::2, 0::2] + v[..., 1::2, 1::2]) / 2
    return hh.abs().flatten(1).median(dim=1).values / _MAD_TO_STD
