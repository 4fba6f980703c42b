"""Training across degradations: each image gets a blur and a noise level of its own.

Item i of :class:`RandomDegradations` is ``(x, y, physics)``: a clean image x, its measurement
y = k_i (*) x + n_i with a kernel k_i drawn by :func:`jfb.physics.kernels.sample` (sides up to
``max_kernel``) and n_i ~ N(0, sigma_i^2), sigma_i uniform in [0, ``max_noise``], optionally
rounded to ``bits``-bit levels, and the :class:`~jfb.physics.Physics` (kernel, sigma_i) the model
is told. :func:`jfb.data.collate_images` stacks the physics of a batch into one
:class:`~jfb.physics.BatchBlur` (:meth:`jfb.physics.Physics.stack`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from jfb.errors import DataError, check_int, check_number
from jfb.physics import Blur, Physics, kernels

__all__ = ["RandomDegradations"]


class RandomDegradations(Dataset):
    """``(x, y, physics)`` triples with a random blur and noise level per image (module
    docstring).

    Args:
        clean: dataset of clean (C, H, W) images in [0, 1].
        max_kernel: largest kernel side (odd, >= 3).
        max_noise: sigma_i ~ U[0, max_noise].
        padding: the blur's boundary ("circular" is the literature's protocol).
        bits: round y to 2^bits - 1 levels in [0, 1] (None: float measurements). The physics
            then says sigma_i^2 + step^2 / 12, the rounding's variance added.
        seed: None: fresh draws on every read (torch's global generator: training); an int: item
            i draws from ``seed + i`` (evaluation: the same kernel and noise on every read).
    """

    def __init__(self, clean: Dataset, *, max_kernel: int = 31, max_noise: float = 0.05,
                 padding: str = "circular", bits: int | None = None,
                 seed: int | None = None) -> None:
        self.clean = clean
        self.max_kernel = check_int("max_kernel", max_kernel, minimum=3)
        self.max_noise = check_number("max_noise", max_noise, low=0)
        self.padding = padding
        self.bits = None if bits is None else check_int("bits", bits, minimum=1)
        self.seed = None if seed is None else check_int("seed", seed, minimum=0)

    def __len__(self) -> int:
        return len(self.clean)  # type: ignore[arg-type]

    def _generator(self, index: int) -> torch.Generator | None:
        return None if self.seed is None else torch.Generator().manual_seed(self.seed + index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, Physics]:
        x = self.clean[index]
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            raise DataError(f"clean dataset item {index} must be a (C, H, W) tensor")
        g = self._generator(index)
        rng = np.random.default_rng(int(torch.randint(2**62, (), generator=g)))
        kernel = kernels.sample(rng, self.max_kernel)
        sigma = float(torch.rand((), generator=g)) * self.max_noise
        physics = Physics(Blur(kernel, padding=self.padding), torch.tensor([sigma]))
        y = physics.measure(x[None], generator=g)[0]
        if self.bits is not None:
            levels = 2**self.bits - 1
            y = torch.round(y.clamp(0, 1) * levels) / levels
            step2 = 1.0 / levels**2
            physics = Physics(physics.op, torch.tensor([(sigma**2 + step2 / 12) ** 0.5]))
        return x, y, physics

    def __repr__(self) -> str:
        return (f"RandomDegradations({len(self)} images, max_kernel={self.max_kernel}, "
                f"max_noise={self.max_noise}, padding={self.padding!r}, bits={self.bits}, "
                f"seed={self.seed})")
