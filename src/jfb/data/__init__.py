"""Images and datasets: file loading/saving, image folders, CelebA, built-in natural photos,
and on-the-fly degradation ``y = noise(A x)`` with seeded evaluation noise. Photos as users
have them (``read_photo``/``write_photo``: bit depth, alpha, palettes, orientation) and output
paths checked before any work (``resolve_output``); ``open_dataset`` opens what a data spec
names.

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
from jfb.data.open import open_dataset
from jfb.data.outputs import IMAGE_SUFFIXES, output_suffix, resolve_output
from jfb.data.photo import Photo, output_notes, read_photo, write_photo

__all__ = [
    "ALL_IMAGES",
    "CELEBA_ENV",
    "EVAL_IMAGES",
    "IMAGE_EXTENSIONS",
    "IMAGE_SUFFIXES",
    "TRAIN_IMAGES",
    "DegradedDataset",
    "ImageFiles",
    "ImageFolder",
    "ImageList",
    "NaturalPatches",
    "Photo",
    "celeba128",
    "celeba128_root",
    "celeba_original",
    "celeba_preprocess",
    "center_crop",
    "collate_images",
    "load_image",
    "natural_crops",
    "natural_images",
    "open_dataset",
    "output_notes",
    "output_suffix",
    "read_photo",
    "resize_shorter",
    "resolve_output",
    "save_image",
    "to_mode",
    "write_photo",
]
