"""A photo as a user has it: the colour pixels a model restores, and what the result file must
keep of the input (bit depth, grey or colour, alpha, colour profile).

``read_photo(path)`` -> :class:`Photo`; ``write_photo(x, path, like=photo)`` writes a result
``x`` back like the input: 16-bit in, 16-bit out (PNG, TIFF); grey stays grey; the alpha plane
is copied bit for bit (PNG, TIFF) and the colour profile is embedded again. What a format cannot
keep (alpha or 16 bits in JPEG/BMP) is not an error: :func:`output_notes` says it before any
work, and ``write_photo`` returns the same notes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from jfb.data.images import (
    DEEP_FORMATS,
    as_image,
    colour_to_tensor,
    read_samples,
    samples_to_float,
    to_mode,
    to_samples,
    write_format,
    write_samples,
)

__all__ = ["Photo", "output_notes", "read_photo", "write_photo"]


@dataclass(frozen=True, eq=False)
class Photo:
    """An image file's contents, upright (EXIF/TIFF orientation applied).

    Attributes:
        pixels: float32 ``(C, H, W)`` in [0, 1]; C = 1 (grey) or 3 (colour), never alpha.
            Palette images are expanded (to grey when every colour used is grey), CMYK and
            other colour spaces converted to RGB.
        alpha: the alpha plane ``(H, W)`` in the file's own sample type (read-only), or None.
            A palette's or a colour key's transparency (PNG tRNS) becomes an alpha plane.
        bits: 8 or 16, the depth results are written back at (16 for 16-bit, 32-bit integer
            and float files).
        source_mode: the file's layout: "L", "LA", "RGB", "RGBA" (";16" for 16-bit, ";F" float,
            ";I" 32-bit integer samples), or the mode converted from: "P", "PA", "1", "CMYK", ...
        notes: one-line facts worth telling the user (palette quantisation, CMYK conversion,
            extra frames or pages ignored, ...).
        icc_profile: the embedded colour profile when it describes ``pixels``, else None.
        jpeg_quality: a JPEG's quality (IJG scale 1-100, from its luminance table), else None.
    """

    pixels: torch.Tensor
    alpha: np.ndarray | None
    bits: int
    source_mode: str
    notes: tuple[str, ...] = ()
    icc_profile: bytes | None = None
    jpeg_quality: float | None = None


def read_photo(path: str | os.PathLike[str]) -> Photo:
    """Read an image file (PNG, JPEG, TIFF, BMP, GIF, ...) as a :class:`Photo`.

    Raises:
        DataError: missing, empty, unreadable, truncated or corrupt file.
    """
    samples = read_samples(path)
    alpha = None
    if samples.alpha:
        alpha = samples.array[:, :, -1].copy()
        alpha.setflags(write=False)
        if alpha.dtype not in (np.uint8, np.uint16):  # checked now, not after the work
            samples_to_float(alpha[:, :, None], Path(path))
    return Photo(pixels=colour_to_tensor(samples, path), alpha=alpha, bits=samples.bits,
                 source_mode=samples.mode, notes=samples.notes,
                 icc_profile=samples.icc_profile, jpeg_quality=samples.jpeg_quality)


def output_notes(like: Photo | None, path: str | os.PathLike[str]) -> tuple[str, ...]:
    """What writing a result like ``like`` to ``path`` cannot keep (its format by suffix): the
    alpha channel and 16-bit depth in JPEG and BMP. Empty without ``like``.

    Raises:
        DataError: ``path``'s suffix is not a format written (see ``WRITE_FORMATS``).
    """
    p = Path(path)
    fmt = write_format(p)
    if like is None or fmt in DEEP_FORMATS:
        return ()
    notes = []
    if like.alpha is not None:
        notes.append(f"the input's alpha channel is not written: {p.suffix} files have none "
                     "(write .png or .tif to keep it)")
    if like.bits == 16:
        notes.append(f"the 16-bit input is written at 8 bits: {p.suffix} files hold no more "
                     "(write .png or .tif to keep 16)")
    return tuple(notes)


def _alpha_for(alpha: np.ndarray, shape: tuple[int, int], dtype: np.dtype,
               notes: list[str]) -> np.ndarray:
    """``alpha`` as an ``(H, W)`` plane of ``shape`` and ``dtype``: itself when both match (bit
    exact); otherwise nearest-neighbour resized (a factor-k upscaling repeats each value k x k
    times) and rescaled to the type's range, each change noted."""
    h, w = shape
    if alpha.shape != shape:
        rows = np.arange(h) * alpha.shape[0] // h
        cols = np.arange(w) * alpha.shape[1] // w
        notes.append(f"the alpha channel is resized from {alpha.shape[1]}x{alpha.shape[0]} to "
                     f"{w}x{h} (nearest neighbour)")
        alpha = alpha[rows[:, None], cols[None, :]]
    if alpha.dtype != dtype:
        notes.append(f"the alpha channel is converted from {alpha.dtype} to {np.dtype(dtype)}")
        unit = samples_to_float(alpha[:, :, None], Path("alpha"))[:, :, 0].astype(np.float64)
        alpha = np.round(unit * np.iinfo(dtype).max).astype(dtype)
    return alpha


def write_photo(x: torch.Tensor, path: str | os.PathLike[str],
                like: Photo | None = None) -> tuple[str, ...]:
    """Write the float image ``x`` (``(C, H, W)``, C in {1, 3}, values clamped to [0, 1])
    atomically to ``path``, in the format of its suffix (.png, .tif/.tiff, .jpg/.jpeg, .bmp).

    Without ``like``: 8-bit samples, as many channels as ``x``. With ``like`` (the input read by
    :func:`read_photo`), the file matches the input: ``like.bits`` for PNG and TIFF (JPEG and
    BMP are 8-bit), ``like``'s channel count (RGB -> grey by BT.601 luma, grey -> RGB by
    copying), ``like.alpha`` as the alpha channel (PNG and TIFF; bit-exact when ``x`` has the
    input's size) and ``like.icc_profile`` embedded (PNG, TIFF, JPEG). JPEG is written at
    quality 95 without chroma subsampling.

    Returns:
        One-line notes on what the file could not keep of ``like`` (:func:`output_notes`) or
        had to adapt (alpha resized to ``x``'s size, or converted to the written depth).

    Raises:
        DataError: ``path``'s suffix is not a format written.
    """
    p = Path(path)
    fmt = write_format(p)
    t = as_image(x)
    if like is None:
        write_samples(to_samples(t, 8), p)
        return ()
    notes = list(output_notes(like, p))
    t = to_mode(t, "grey" if like.pixels.shape[0] == 1 else "rgb")
    arr = to_samples(t, like.bits if fmt in DEEP_FORMATS else 8)
    if like.alpha is not None and fmt in DEEP_FORMATS:
        alpha = _alpha_for(like.alpha, arr.shape[:2], arr.dtype, notes)
        arr = np.concatenate([arr, alpha[:, :, None]], axis=2)
    write_samples(arr, p, icc_profile=like.icc_profile)
    return tuple(notes)
