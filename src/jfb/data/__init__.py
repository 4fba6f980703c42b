"""Images and datasets: file loading/saving, image folders, CelebA, built-in natural photos,
and on-the-fly degradation ``y = noise(A x)`` with seeded evaluation noise.

Every dataset item is a float32 tensor ``(C, H, W)`` in ``[0, 1]`` (or a pair of them).
"""

from jfb.data.builtin import (
    ALL_IMAGES,
    EVAL_IMAGES,
    TRAIN_IMAGES,
    ImageList,
    NaturalPatches,
    natural_crops,
    natural_images,
)
from jfb.data.datasets import (
    CELEBA_ENV,
    DegradedDataset,
    ImageFiles,
    ImageFolder,
    celeba128,
    celeba128_root,
    celeba_original,
    celeba_preprocess,
    center_crop,
    collate_images,
    resize_shorter,
)
from jfb.data.images import IMAGE_EXTENSIONS, load_image, save_image, to_mode

__all__ = [
    "ALL_IMAGES",
    "CELEBA_ENV",
    "EVAL_IMAGES",
    "IMAGE_EXTENSIONS",
    "TRAIN_IMAGES",
    "DegradedDataset",
    "ImageFiles",
    "ImageFolder",
    "ImageList",
    "NaturalPatches",
    "celeba128",
    "celeba128_root",
    "celeba_original",
    "celeba_preprocess",
    "center_crop",
    "collate_images",
    "load_image",
    "natural_crops",
    "natural_images",
    "resize_shorter",
    "save_image",
    "to_mode",
]
