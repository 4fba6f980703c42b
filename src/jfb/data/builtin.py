"""Natural photos that ship inside the scikit-image wheel (no download, no network).

The files are read straight from ``skimage.data.data_dir`` with :func:`jfb.data.load_image`
(scikit-image's own loaders are bypassed so nothing can trigger a ``pooch`` download).

The images are split once, explicitly, so that evaluation never sees a training pixel:

- ``EVAL_IMAGES`` (task ``natural-gauss5``; fixed centre crops): astronaut, camera, coffee,
  chelsea, rocket, brick, grass, gravel.
- ``TRAIN_IMAGES`` (random training patches): motorcycle_left, motorcycle_right (one stereo
  scene), hubble_deep_field, immunohistochemistry, coins, moon, cell.

Grey photos (camera, brick, grass, gravel, coins, moon, cell) are replicated to 3 channels in
the default ``mode="rgb"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from jfb.data.datasets import center_crop
from jfb.data.images import load_image, to_mode
from jfb.errors import DataError

__all__ = [
    "ALL_IMAGES",
    "EVAL_IMAGES",
    "TRAIN_IMAGES",
    "ImageList",
    "NaturalPatches",
    "natural_crops",
    "natural_images",
]

#: name -> file in ``skimage.data.data_dir``
_FILES = {
    "astronaut": "astronaut.png",
    "camera": "camera.png",
    "coffee": "coffee.png",
    "chelsea": "chelsea.png",
    "rocket": "rocket.jpg",
    "brick": "brick.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
    "motorcycle_left": "motorcycle_left.png",
    "motorcycle_right": "motorcycle_right.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "immunohistochemistry": "ihc.png",
    "coins": "coins.png",
    "moon": "moon.png",
    "cell": "cell.png",
}
EVAL_IMAGES: tuple[str, ...] = ("astronaut", "camera", "coffee", "chelsea", "rocket", "brick",
                                "grass", "gravel")
TRAIN_IMAGES: tuple[str, ...] = ("motorcycle_left", "motorcycle_right", "hubble_deep_field",
                                 "immunohistochemistry", "coins", "moon", "cell")
ALL_IMAGES: tuple[str, ...] = EVAL_IMAGES + TRAIN_IMAGES


def _data_dir() -> Path:
    try:
        import skimage.data
    except ImportError as exc:  # pragma: no cover - scikit-image is a dependency
        raise DataError("the built-in natural images need scikit-image installed") from exc
    return Path(skimage.data.data_dir)


@lru_cache(maxsize=len(_FILES))
def _load_cached(name: str) -> torch.Tensor:
    path = _data_dir() / _FILES[name]
    if not path.is_file():
        raise DataError(f"built-in image {name!r} is missing from the scikit-image installation "
                        f"({path}); reinstall scikit-image")
    return load_image(path, mode="keep")


def _check_names(names: Sequence[str] | None, default: Sequence[str]) -> tuple[str, ...]:
    if names is None:
        return tuple(default)
    if isinstance(names, str):
        names = (names,)
    unknown = [n for n in names if n not in _FILES]
    if unknown:
        raise ValueError(f"unknown built-in image(s) {unknown}; available: {list(_FILES)}")
    if not names:
        raise ValueError("names must list at least one image")
    return tuple(names)


def _view(name: str, mode: str) -> torch.Tensor:
    """The cached photo in ``mode`` without copying (grey -> RGB is an expanded view)."""
    cached = _load_cached(name)
    if mode == "rgb" and cached.shape[0] == 1:
        return cached.expand(3, *cached.shape[1:])
    return to_mode(cached, mode)


def natural_images(names: Sequence[str] | None = None, *,
                   mode: str = "rgb") -> list[tuple[str, torch.Tensor]]:
    """The built-in photos as ``(name, float32 (C, H, W) in [0, 1])``, in the order asked.

    ``names`` defaults to :data:`ALL_IMAGES` (evaluation images first). ``mode``: ``"rgb"``
    (grey photos replicated to 3 channels), ``"grey"`` (luma) or ``"keep"`` (as stored).
    Each call returns fresh tensors (the decoded files are cached).
    """
    chosen = _check_names(names, ALL_IMAGES)
    return [(n, _view(n, mode).clone()) for n in chosen]


class ImageList(Dataset):
    """A dataset over a fixed list of named images; item ``i`` is the ``i``-th tensor."""

    def __init__(self, items: Sequence[tuple[str, torch.Tensor]]) -> None:
        if not items:
            raise DataError("ImageList needs at least one image")
        self.names = [n for n, _ in items]
        self.images = [t for _, t in items]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


def natural_crops(size: int = 256, names: Sequence[str] | None = None, *,
                  mode: str = "rgb") -> ImageList:
    """Fixed ``size x size`` centre crops of the evaluation photos (task ``natural-gauss5``).

    ``names`` defaults to :data:`EVAL_IMAGES`; item order follows ``names``.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    chosen = _check_names(names, EVAL_IMAGES)
    items = []
    for name in chosen:
        img = _view(name, mode)
        h, w = img.shape[-2:]
        if size > min(h, w):
            raise DataError(f"built-in image {name!r} is {h}x{w}, smaller than the crop {size}")
        items.append((name, center_crop(img, size).clone(memory_format=torch.contiguous_format)))
    return ImageList(items)


class NaturalPatches(Dataset):
    """``n`` random ``size x size`` training patches of the training photos, fixed by ``seed``.

    The list of patches (image, top, left and, with ``augment``, one of the 8 flips/rotations)
    is drawn once from ``numpy.random.default_rng(seed)`` at construction: item ``i`` is the same
    patch on every call and every run. Each patch picks its image uniformly among ``names``
    (default :data:`TRAIN_IMAGES`), then a uniform position inside it. ``specs[i]`` holds
    ``(name, top, left, transform)`` (``transform`` = k in 0..7: ``rot90`` by ``k % 4``, then a
    horizontal flip if ``k >= 4``; always 0 without ``augment``).
    """

    def __init__(self, size: int = 64, n: int = 4096, seed: int = 0,
                 names: Sequence[str] | None = None, *, mode: str = "rgb",
                 augment: bool = False) -> None:
        for label, v, lo in (("size", size, 1), ("n", n, 1), ("seed", seed, 0)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"{label} must be an int >= {lo}, got {v!r}")
        chosen = _check_names(names, TRAIN_IMAGES)
        self.size, self.n, self.seed, self.augment = int(size), int(n), int(seed), bool(augment)
        # read-only views of the cached photos: items are sliced and copied in __getitem__
        self.images = {name: _view(name, mode) for name in chosen}
        for name, img in self.images.items():
            if min(img.shape[-2:]) < self.size:
                raise DataError(f"built-in image {name!r} of size {tuple(img.shape[-2:])} is "
                                f"smaller than the patch size {self.size}")
        rng = np.random.default_rng(self.seed)
        which = rng.integers(0, len(chosen), size=self.n)
        specs = []
        for i in range(self.n):
            name = chosen[which[i]]
            h, w = self.images[name].shape[-2:]
            top = int(rng.integers(0, h - self.size + 1))
            left = int(rng.integers(0, w - self.size + 1))
            k = int(rng.integers(0, 8)) if self.augment else 0
            specs.append((name, top, left, k))
        self.specs: list[tuple[str, int, int, int]] = specs

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> torch.Tensor:
        name, top, left, k = self.specs[index]
        s = self.size
        patch = self.images[name][:, top : top + s, left : left + s]
        if k % 4:
            patch = torch.rot90(patch, k % 4, dims=(-2, -1))
        if k >= 4:
            patch = torch.flip(patch, dims=(-1,))
        return patch.clone(memory_format=torch.contiguous_format)
