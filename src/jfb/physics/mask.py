"""Inpainting forward model: y = m . x, a pixel mask m in {0, 1} (self-adjoint, A^T = A).

:class:`Mask` holds a given mask, broadcast over the batch and channels ((H, W), (1, 1, H, W) or
one per sample (N, 1, H, W)). :class:`RandomMask` and :class:`BoxMask` make their mask from the
image size, deterministically (a seed; a centred square), so one operator serves images of every
size -- training crops and full evaluation images alike -- and measures the same pixels of every
image of a given size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from jfb.errors import check_int, check_number, check_shape
from jfb.physics.base import LinearOperator

__all__ = ["BoxMask", "Mask", "MaskOperator", "RandomMask"]


class MaskOperator(LinearOperator):
    """A pixel mask: y = m . x with m from :meth:`mask_for` (per image size); A^T = A,
    A^T A = A. The base of :class:`Mask`, :class:`RandomMask` and :class:`BoxMask`."""

    def mask_for(self, x: torch.Tensor) -> torch.Tensor:
        """The 0/1 mask, broadcastable to x (N, C, H, W), with x's device and dtype."""
        raise NotImplementedError

    def _masked(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"expected a batch (N, C, H, W), got shape {tuple(x.shape)}")
        return x * self.mask_for(x)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """y = m . x."""
        return self._masked(x)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """x = m . y (a 0/1 mask is self-adjoint)."""
        return self._masked(y)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """A^T A x = m . x (m^2 = m)."""
        return self._masked(x)

    def ridge_preconditioner(
        self, rho: float | torch.Tensor
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """The exact (A^T A + rho I)^{-1} = diag(1 / (m + rho)) (rho > 0)."""
        return lambda v: v / (self.mask_for(v) + rho)

    def out_shape(self, in_shape: Sequence[int]) -> tuple[int, ...]:
        """The input shape."""
        return check_shape(in_shape)

    def image_shape(self, out_shape: Sequence[int]) -> tuple[int, ...]:
        """The measurement's shape."""
        return check_shape(out_shape)


class Mask(MaskOperator):
    """y = m . x with a given mask m: (H, W), (1, 1, H, W) or (N, 1, H, W); nonzero = observed."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"mask must be a tensor, got {type(mask).__name__}")
        if mask.dim() == 2:
            mask = mask[None, None]
        if mask.dim() != 4 or mask.shape[1] != 1:
            raise ValueError(f"mask must be (H, W) or (N, 1, H, W), got {tuple(mask.shape)}")
        if not torch.isfinite(mask.float()).all():
            raise ValueError("mask has non-finite entries")
        self.register_buffer("mask", (mask != 0).to(torch.get_default_dtype()))

    def shared_across_batch(self) -> bool:
        """True for one mask (1, 1, H, W), False for one mask per sample."""
        return self.mask.shape[0] == 1

    def mask_for(self, x: torch.Tensor) -> torch.Tensor:
        m = self.mask
        if m.shape[-2:] != x.shape[-2:] or m.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"mask {tuple(m.shape)} does not fit images {tuple(x.shape)}")
        return m.to(device=x.device, dtype=x.dtype)


class RandomMask(MaskOperator):
    """Each pixel missing with probability ``missing`` (all channels), drawn from ``seed`` and the
    image size: the same (H, W) always gives the same mask, on every device."""

    SHARED_ACROSS_BATCH = True

    def __init__(self, missing: float, seed: int = 0) -> None:
        super().__init__()
        check_number("missing", missing, low=0, high=1, high_open=True)
        check_int("seed", seed, minimum=0)
        self.missing = float(missing)
        self.seed = seed
        self._cache: dict[tuple[int, int], torch.Tensor] = {}

    def extra_repr(self) -> str:
        return f"missing={self.missing}, seed={self.seed}"

    def mask_for(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self._cache.get((h, w))
        if m is None:
            gen = torch.Generator().manual_seed(self.seed)
            m = (torch.rand(h, w, generator=gen, dtype=torch.float64) >= self.missing)
            self._cache[(h, w)] = m = m[None, None]
        return m.to(device=x.device, dtype=x.dtype)


class BoxMask(MaskOperator):
    """A centred square hole of side round(``size`` * min(H, W)) pixels, 0 < size < 1."""

    SHARED_ACROSS_BATCH = True

    def __init__(self, size: float) -> None:
        super().__init__()
        check_number("size", size, low=0, high=1, low_open=True, high_open=True)
        self.size = float(size)

    def extra_repr(self) -> str:
        return f"size={self.size}"

    def mask_for(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        side = round(self.size * min(h, w))
        m = torch.ones(1, 1, h, w, device=x.device, dtype=x.dtype)
        top, left = (h - side) // 2, (w - side) // 2
        m[..., top : top + side, left : left + side] = 0
        return m
