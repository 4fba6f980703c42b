"""Open the clean dataset a data spec (:mod:`jfb.specs`) names."""

from __future__ import annotations

from torch.utils.data import Dataset

from jfb.data.builtin import NaturalPatches, natural_crops
from jfb.data.datasets import ImageFolder, celeba128, shared_data
from jfb.errors import ConfigError
from jfb.specs import DataSpec, parse_data

__all__ = ["open_dataset"]


def open_dataset(spec: DataSpec | str, *, train: bool, crop: int | None = None,
                 seed: int | None = None, mode: str = "rgb", root: str | None = None) -> Dataset:
    """The clean dataset named by a data spec (parsed, or its text).

    ``root`` (the config's ``data.root``) is where CelebA-128 lives when the spec is
    ``celeba128:...``; other specs name their images themselves, and a root there is an error.

    Folders and CelebA give whole images, or ``crop x crop`` crops (random when ``train``, centre
    otherwise; ``seed`` fixes the random crops, see :class:`jfb.data.ImageFiles`).
    ``natural:patches:S`` gives :class:`jfb.data.NaturalPatches` of size ``crop or S`` drawn with
    ``seed`` (0 when None); ``natural:crops:S`` the centre crops of size ``crop or S``.
    """
    if not isinstance(spec, DataSpec):
        spec = parse_data(spec)
    random_crop = bool(train and crop is not None)
    if root is not None and spec.kind != "celeba128":
        raise ConfigError(f"data.root={root!r} applies to CelebA-128 data only; {spec.text!r} "
                          "names its images itself (use a task spec with data=PATH instead)")
    if spec.kind == "celeba128":
        return celeba128(spec.args[0], root=root, crop=crop, random_crop=random_crop,
                         seed=seed if random_crop else None, mode=mode)
    if spec.kind in ("folder", "shared"):
        folder = spec.args[0] if spec.kind == "folder" else shared_data(spec.args[0])
        return ImageFolder(folder, crop=crop, random_crop=random_crop,
                           seed=seed if random_crop else None, mode=mode)
    which, size = spec.args
    if which == "patches":
        return NaturalPatches(size=crop or size, seed=0 if seed is None else seed, mode=mode)
    return natural_crops(size=crop or size, mode=mode)
