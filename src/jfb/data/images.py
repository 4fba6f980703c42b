"""Reading and writing image files as float tensors in ``[0, 1]``.

``load_image`` returns a float32 tensor ``(C, H, W)``; integer samples are divided by their
maximum (255 for 8-bit, 65535 for 16-bit). Pillow reads PNG, JPEG, BMP, GIF, ...; TIFFs go through
``tifffile`` (a scikit-image dependency) so 16-bit colour TIFFs keep their precision, and 16-bit
colour PNGs go through the small exact codec in ``jfb.data._png`` (Pillow would cut them to 8 bits).
Problems with a file are reported as :class:`jfb.errors.DataError` naming the file.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from jfb.atomic import atomic_path
from jfb.data import _png
from jfb.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "load_image", "save_image", "to_mode"]

#: File name endings read by default by image folders (compared case-insensitively).
IMAGE_EXTENSIONS: tuple[str, ...] = ("png", "jpg", "jpeg", "bmp", "tif", "tiff")

_MODES = ("rgb", "grey", "keep")
# ITU-R BT.601 luma weights, the ones Pillow uses for RGB -> L.
_LUMA = (0.299, 0.587, 0.114)
_FLOAT_TOLERANCE = 1e-3


def _check_file(path: Path) -> bytes:
    if not path.exists():
        raise DataError(f"image file not found: {path}")
    if not path.is_file():
        raise DataError(f"not a file: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read image file {path}: {exc}") from exc
    if len(data) == 0:
        raise DataError(f"image file is empty (0 bytes): {path}")
    return data


def _samples_to_float(arr: np.ndarray, path: Path) -> np.ndarray:
    """Scale integer samples by their type's maximum; check float samples lie in [0, 1]."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return (arr.astype(np.float64) / 65535.0).astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 65535:
            raise DataError(f"{path}: integer samples in [{lo}, {hi}] do not fit 8 or 16 bits")
        return (arr.astype(np.float64) / 65535.0).astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        a = arr.astype(np.float32)
        if not np.isfinite(a).all():
            raise DataError(f"{path}: floating-point image contains NaN or Inf")
        lo, hi = float(a.min()), float(a.max())
        if lo < -_FLOAT_TOLERANCE or hi > 1 + _FLOAT_TOLERANCE:
            raise DataError(f"{path}: floating-point samples lie in [{lo:g}, {hi:g}]; "
                            "expected [0, 1]")
        return np.clip(a, 0.0, 1.0)
    raise DataError(f"{path}: unsupported sample type {arr.dtype}")


def _drop_alpha(arr: np.ndarray) -> np.ndarray:
    """(H, W, C) with C in 1..4 -> (H, W, 1 or 3): grey+alpha -> grey, RGBA -> RGB."""
    c = arr.shape[2]
    if c == 2:
        return arr[:, :, :1]
    if c == 4:
        return arr[:, :, :3]
    if c in (1, 3):
        return arr
    raise DataError(f"unsupported number of channels: {c}")


def _read_png16(data: bytes, path: Path) -> np.ndarray | None:
    """Exact decode of 16-bit colour PNGs; None when Pillow handles the file without loss."""
    try:
        width, height, depth, ctype, interlace = _png.read_header(data)
    except _png.PNGFormatError:
        return None
    if depth != 16 or ctype not in (2, 4, 6):
        return None
    limit = Image.MAX_IMAGE_PIXELS  # Pillow's decompression-bomb limit applies here too
    if limit is not None and width * height > 2 * limit:
        raise DataError(f"image is too large to open safely: {path}: {width}x{height} pixels "
                        f"(more than {2 * limit})")
    if interlace:
        warnings.warn(f"{path}: interlaced 16-bit colour PNG is read at 8-bit precision",
                      stacklevel=3)
        return None
    try:
        return _png.decode(data)
    except _png.PNGFormatError as exc:
        raise DataError(f"corrupt or truncated PNG {path}: {exc}") from exc


_DECODER_LOGGERS = ("tifffile", "PIL")


@contextlib.contextmanager
def _quiet_decoders() -> Iterator[None]:
    """Silence the logs of tifffile and Pillow (and their child loggers) for the block: they
    report a bad file's problems on stderr, where the command line promises one line (the
    DataError raised here)."""
    loggers = [logging.getLogger(name) for name in _DECODER_LOGGERS]
    previous = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level in zip(loggers, previous, strict=True):
            lg.setLevel(level)


def _read_tiff(path: Path) -> np.ndarray | None:
    """Read grey/RGB TIFFs with tifffile (keeps 16-bit colour); None: let Pillow read it."""
    import tifffile

    try:
        with _quiet_decoders(), tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            if page.photometric not in (tifffile.PHOTOMETRIC.MINISBLACK,
                                        tifffile.PHOTOMETRIC.RGB):
                return None  # palette, inverted grey, CMYK, YCbCr, ...: Pillow converts these
            arr = page.asarray()
            axes, shape = page.axes, tuple(page.shape)
    except Exception as exc:  # tifffile raises many types for bad files
        raise DataError(f"corrupt or truncated TIFF {path}: {exc}") from exc
    if arr.ndim != len(axes) or tuple(arr.shape) != shape:  # e.g. missing strip byte counts
        raise DataError(f"corrupt or truncated TIFF {path}: {arr.shape} samples for an image "
                        f"of shape {shape} (axes {axes})")
    # Keep the first plane of anything beyond Y, X and samples (S).
    for ax in [a for a in axes if a not in "YXS"]:
        arr = np.take(arr, 0, axis=axes.index(ax))
        axes = axes.replace(ax, "")
    if "S" in axes:
        arr = np.moveaxis(arr, axes.index("S"), -1)
    else:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise DataError(f"{path}: unsupported TIFF layout (axes {page.axes})")
    return arr


def _pil_to_array(im: Image.Image, path: Path) -> np.ndarray:
    """A loaded Pillow image -> (H, W, C) samples (alpha kept; dropped later)."""
    mode = im.mode
    if mode in ("1", "L", "LA", "RGB", "RGBA"):
        arr = np.asarray(im)
    elif mode.startswith("I;16"):
        arr = np.asarray(im).astype(np.uint16)
    elif mode in ("I", "F"):
        arr = np.asarray(im)
    elif mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        arr = np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
    elif mode in ("La",):
        arr = np.asarray(im.convert("LA"))
    else:  # CMYK, YCbCr, LAB, HSV, RGBa, RGBX, ...
        try:
            arr = np.asarray(im.convert("RGB"))
        except (ValueError, OSError) as exc:
            raise DataError(f"{path}: cannot convert image mode {mode} to RGB") from exc
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr


def _read_pil(data: bytes, path: Path) -> np.ndarray:
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file must raise, not load grey
    try:
        with _quiet_decoders(), Image.open(io.BytesIO(data)) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            return _pil_to_array(im, path)
    except UnidentifiedImageError as exc:
        raise DataError(f"not an image (or an unsupported format): {path}") from exc
    except Image.DecompressionBombError as exc:
        raise DataError(f"image is too large to open safely: {path}: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DataError(f"corrupt or truncated image file {path}: {exc}") from exc
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def to_mode(x: torch.Tensor, mode: str) -> torch.Tensor:
    """Convert a ``(C, H, W)`` image with C in {1, 3} to ``mode``.

    ``"rgb"``: grey replicated to 3 channels; ``"grey"``: RGB to luma
    ``0.299 R + 0.587 G + 0.114 B`` (1 channel); ``"keep"``: unchanged.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    c = x.shape[-3]
    if mode == "rgb" and c == 1:
        return x.expand(*x.shape[:-3], 3, *x.shape[-2:]).clone()
    if mode == "grey" and c == 3:
        w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(3, 1, 1)
        return (x * w).sum(dim=-3, keepdim=True)
    return x


def load_image(path: str | os.PathLike[str], mode: str = "rgb") -> torch.Tensor:
    """Read an image file as a float32 tensor ``(C, H, W)`` with values in ``[0, 1]``.

    Integer samples are divided by 255 (8-bit) or 65535 (16-bit); float samples must already lie
    in ``[0, 1]``. Alpha is dropped, palette images are expanded, EXIF orientation is applied.

    Args:
        path: the file (PNG, JPEG, BMP, TIFF, GIF or anything else Pillow reads).
        mode: ``"rgb"`` (3 channels; grey replicated), ``"grey"`` (1 channel, BT.601 luma) or
            ``"keep"`` (1 or 3 channels, as stored).

    Raises:
        DataError: missing, empty, unreadable, truncated or corrupt file.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    p = Path(path)
    data = _check_file(p)
    arr = None
    if data[:8] == _png.PNG_SIGNATURE:
        arr = _read_png16(data, p)
    elif data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        arr = _read_tiff(p)
    if arr is None:
        arr = _read_pil(data, p)
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{p}: image has no pixels (shape {arr.shape})")
    arr = _samples_to_float(_drop_alpha(arr), p)
    x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
    return to_mode(x, mode)


_SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP",
                 ".tif": "TIFF", ".tiff": "TIFF"}


def save_image(x: torch.Tensor, path: str | os.PathLike[str], *, bits: int = 8) -> Path:
    """Write an image tensor to ``path`` atomically, clamped to ``[0, 1]`` and rounded.

    ``x`` is ``(C, H, W)`` with C in {1, 3}, ``(H, W)``, or a batch of one ``(1, C, H, W)``.
    Samples are stored as ``round(clamp(x, 0, 1) * (2^bits - 1))``. The format follows the suffix:
    ``.png`` (default when there is none: ``.png`` is appended), ``.tif``/``.tiff`` (8 or 16 bit),
    ``.jpg``/``.jpeg`` (quality 95) and ``.bmp`` (8 bit only). The file is written to a temporary
    name in the same folder and moved into place with ``os.replace``, so a reader never sees a
    half-written file. Missing parent folders are created. Returns the path written.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"save_image expects a torch tensor, got {type(x).__name__}")
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    t = x.detach()
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"save_image expects (C, H, W) with C in {{1, 3}}, (H, W) or "
                         f"(1, C, H, W); got shape {tuple(x.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"save_image expects a floating tensor in [0, 1], got {t.dtype}")
    if torch.isnan(t).any():
        raise ValueError("save_image: the image contains NaN")
    p = Path(path)
    if p.suffix == "":
        p = p.with_suffix(".png")
    fmt = _SAVE_FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise ValueError(f"save_image: unsupported file type {p.suffix!r}; "
                         f"use one of {sorted(_SAVE_FORMATS)}")
    if bits == 16 and fmt not in ("PNG", "TIFF"):
        raise ValueError(f"save_image: 16-bit samples need .png or .tif, not {p.suffix}")
    peak = 255 if bits == 8 else 65535
    q = torch.round(t.to(device="cpu", dtype=torch.float64).clamp(0, 1) * peak)
    arr = q.permute(1, 2, 0).numpy().astype(np.uint8 if bits == 8 else np.uint16)
    with atomic_path(p) as tmp, open(tmp, "wb") as f:
        if fmt == "PNG" and bits == 16:
            _png.encode(arr, f)
        elif fmt == "TIFF":
            import tifffile

            buf = io.BytesIO()
            tifffile.imwrite(buf, arr if arr.shape[2] == 3 else arr[:, :, 0],
                             photometric="rgb" if arr.shape[2] == 3 else "minisblack")
            f.write(buf.getvalue())
        else:
            im = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
            im.save(f, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return p
