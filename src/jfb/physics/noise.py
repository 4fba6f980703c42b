"""Additive measurement noise models."""

from __future__ import annotations

import math

import torch

__all__ = ["GaussianNoise"]


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
