"""Super-resolution forward model: anti-aliased downsampling y = S_s (h * x) with exact adjoint.

``filter="box"``: y[i, j] = mean of the s x s block x[s i : s i + s, s j : s j + s] (average
pooling); A^T y spreads each y[i, j] / s^2 back over its block.
``filter="gaussian"``: a Gaussian blur h (sigma = s / 2, size 2 ceil(2 sigma) + 1, boundary
``padding``), then keeping every s-th pixel from (0, 0): A = S B, A^T = B^T S^T, S^T putting each
sample back in place among zeros. Images must have sides divisible by s, so the image shape
follows from the measurement's: (h, w) -> (s h, s w).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from jfb.errors import check_choice, check_int, check_shape
from jfb.physics import kernels
from jfb.physics.base import LinearOperator
from jfb.physics.blur import PADDINGS, Blur

__all__ = ["FILTERS", "Downsample"]

FILTERS = ("box", "gaussian")


class Downsample(LinearOperator):
    """y = S_s (h * x): anti-aliasing filter h then decimation by ``factor`` s (see module)."""

    SHARED_ACROSS_BATCH = True

    def __init__(self, factor: int, filter: str = "gaussian", padding: str = "reflect") -> None:
        super().__init__()
        check_int("factor", factor, minimum=1)
        check_choice("filter", filter, FILTERS)
        check_choice("padding", padding, tuple(p for p in PADDINGS if p != "valid"))
        self.factor = factor
        self.filter = filter
        self.padding = padding
        self.blur: Blur | None = None
        if filter == "gaussian" and factor > 1:
            sigma = factor / 2
            self.blur = Blur(kernels.gaussian(2 * math.ceil(2 * sigma) + 1, sigma), padding)

    def extra_repr(self) -> str:
        return f"factor={self.factor}, filter={self.filter!r}, padding={self.padding!r}"

    def _check_image(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"expected a batch (N, C, H, W), got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % self.factor or w % self.factor:
            raise ValueError(
                f"downsampling by {self.factor} needs image sides divisible by {self.factor}, "
                f"got {h}x{w}"
            )

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """y = S_s (h * x)."""
        self._check_image(x)
        s = self.factor
        if self.filter == "box":
            return F.avg_pool2d(x, s) if s > 1 else x
        xb = self.blur.A(x) if self.blur is not None else x
        return xb[..., ::s, ::s]

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """x = h^T * (S_s^T y): each sample back at its place (box: spread over its block)."""
        if y.dim() != 4:
            raise ValueError(f"expected a batch (N, C, h, w), got shape {tuple(y.shape)}")
        s = self.factor
        if s == 1:
            return y
        if self.filter == "box":
            return y.repeat_interleave(s, dim=-2).repeat_interleave(s, dim=-1) / (s * s)
        n, c, h, w = y.shape
        up = y.new_zeros(n, c, h, s, w, s)
        up[:, :, :, 0, :, 0] = y
        up = up.reshape(n, c, h * s, w * s)
        return self.blur.A_adjoint(up)

    def out_shape(self, in_shape: Sequence[int]) -> tuple[int, ...]:
        """(N, C, H, W) -> (N, C, H / s, W / s)."""
        shape = check_shape(in_shape)
        if len(shape) != 4 or shape[-2] % self.factor or shape[-1] % self.factor:
            raise ValueError(f"need (N, C, H, W) with sides divisible by {self.factor}, "
                             f"got {shape}")
        return (*shape[:2], shape[2] // self.factor, shape[3] // self.factor)

    def image_shape(self, out_shape: Sequence[int]) -> tuple[int, ...]:
        """(N, C, h, w) -> (N, C, s h, s w)."""
        shape = check_shape(out_shape)
        return (*shape[:-2], shape[-2] * self.factor, shape[-1] * self.factor)
