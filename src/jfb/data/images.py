"""Reading and writing image files: the samples as stored, and float tensors in ``[0, 1]``.

Two layers. :func:`read_samples` decodes a file to its samples ``(H, W, C)`` as stored (uint8,
uint16, ...; alpha kept as the last channel; palettes expanded; EXIF/TIFF orientation applied)
with what a user should know about it, and :func:`write_samples` encodes such samples by the
file's suffix. :func:`load_image` and :func:`save_image` are the float view used by datasets and
``jfb degrade``: ``load_image`` returns a float32 tensor ``(C, H, W)`` whose integer samples are
divided by their maximum (255 for 8-bit, 65535 for 16-bit), alpha dropped.

Pillow reads PNG, JPEG, BMP, GIF, ...; TIFFs go through ``tifffile`` (a scikit-image dependency)
so 16-bit colour TIFFs keep their precision, and 16-bit colour PNGs go through the small exact
codec in ``jfb.data._png`` (Pillow would cut them to 8 bits). Problems with a file are reported
as :class:`jfb.errors.DataError` naming the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from jfb.atomic import atomic_path
from jfb.data import _png
from jfb.errors import DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "WRITE_FORMATS",
    "Samples",
    "load_image",
    "as_image",
    "jpeg_quality",
    "read_samples",
    "samples_to_float",
    "save_image",
    "to_mode",
    "to_samples",
    "write_samples",
]

#: File name endings read by default by image folders (compared case-insensitively).
IMAGE_EXTENSIONS: tuple[str, ...] = ("png", "jpg", "jpeg", "bmp", "tif", "tiff")

#: The suffixes written (lower case) and the format each one means.
WRITE_FORMATS: dict[str, str] = {".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF",
                                 ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP"}
#: Formats that store 16-bit samples and an alpha channel (JPEG and BMP hold neither).
DEEP_FORMATS: tuple[str, ...] = ("PNG", "TIFF")
JPEG_QUALITY = 95

_MODES = ("rgb", "grey", "keep")
# ITU-R BT.601 luma weights, the ones Pillow uses for RGB -> L.
_LUMA = (0.299, 0.587, 0.114)
_FLOAT_TOLERANCE = 1e-3
_ORIENTATION_TAG = 0x0112  # EXIF and TIFF tag 274
#: The IJG's luminance quantisation table at quality 50 (ITU-T T.81, Annex K, Table K.1), in
#: natural (row-major) order, as Pillow gives a file's tables.
_IJG_LUMA = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
             14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
             18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
             49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)


@dataclass(frozen=True, eq=False)
class Samples:
    """A decoded image file.

    ``array`` is ``(H, W, C)`` as stored (bool, uint8, uint16, other integers or float), upright,
    with C = 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA); ``alpha`` says the last channel is
    alpha. ``mode`` names the stored layout ("L", "LA", "RGB", "RGBA", with ";16" for 16-bit and
    ";F"/";I" for float/32-bit integer samples, or the mode converted from: "P", "PA", "1",
    "CMYK", "YCbCr", ...). ``bits`` (8 or 16) is the depth to write the image back at.
    ``notes`` are one-line facts worth telling the user; ``icc_profile`` the colour profile's
    bytes when it describes ``array``'s colours. ``jpeg_quality`` is the quality (IJG scale,
    1-100) of a JPEG's luminance table (:func:`jpeg_quality`), None for other files.
    """

    array: np.ndarray
    mode: str
    alpha: bool
    bits: int
    notes: tuple[str, ...] = ()
    icc_profile: bytes | None = None
    jpeg_quality: float | None = None


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


def samples_to_float(arr: np.ndarray, path: Path) -> np.ndarray:
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


def _layout(arr: np.ndarray) -> str:
    """Pillow-style name of an (H, W, C) array's layout: L, LA, RGB, RGBA (+ ;16, ;F or ;I)."""
    base = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[arr.shape[2]]
    if arr.dtype in (np.uint8, np.bool_):
        return base
    if arr.dtype == np.uint16:
        return f"{base};16"
    return f"{base};F" if np.issubdtype(arr.dtype, np.floating) else f"{base};I"


def _depth(arr: np.ndarray, notes: list[str]) -> int:
    """The bit depth to write ``arr`` back at (8 or 16); notes what 16 bits cannot hold."""
    if arr.dtype in (np.uint8, np.bool_):
        return 8
    if arr.dtype != np.uint16:
        kind = "floating-point" if np.issubdtype(arr.dtype, np.floating) else "integer"
        notes.append(f"{arr.dtype.itemsize * 8}-bit {kind} samples: results are written as "
                     "16-bit integers")
    return 16


def _icc_matching(icc: bytes | None, channels: int) -> bytes | None:
    """``icc`` when its colour space (header bytes 16..20) is the one of ``channels`` colour
    channels (GRAY for 1, RGB for 3), else None: a CMYK profile must not travel with RGB."""
    if not icc or len(icc) < 20:
        return None
    want = b"GRAY" if channels == 1 else b"RGB "
    return icc if icc[16:20] == want else None


def orient(arr: np.ndarray, orientation: int | None) -> np.ndarray:
    """Apply an EXIF/TIFF orientation (1..8) to ``(H, W, C)`` samples: the array a viewer shows
    (the same transforms as ``PIL.ImageOps.exif_transpose``); other values leave it as is."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(orientation) if isinstance(orientation, int) else None
    return np.ascontiguousarray(op(arr)) if op is not None else arr


def _exif_orientation(exif: bytes | None) -> int | None:
    if not exif:
        return None
    try:
        value = Image.Exif()
        value.load(exif)
        return value.get(_ORIENTATION_TAG)
    except Exception:  # a damaged EXIF block only loses its orientation
        return None


def _read_png16(data: bytes, path: Path) -> Samples | None:
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
                      stacklevel=4)
        return None
    try:
        arr = _png.decode(data)
    except _png.PNGFormatError as exc:
        raise DataError(f"corrupt or truncated PNG {path}: {exc}") from exc
    arr = orient(arr, _exif_orientation(_png.find_chunk(data, b"eXIf")))
    alpha = ctype in (4, 6)
    return Samples(arr, _layout(arr), alpha, bits=16,
                   icc_profile=_icc_matching(_png.read_icc_profile(data), 3 if ctype != 4 else 1))


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


def _read_tiff(path: Path) -> Samples | None:
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
            tag = page.tags.get(_ORIENTATION_TAG)
            orientation = tag.value if tag is not None else None
            premultiplied = 1 in tuple(page.extrasamples or ())
            icc, pages = page.iccprofile, len(tif.pages)
    except Exception as exc:  # tifffile raises many types for bad files
        raise DataError(f"corrupt or truncated TIFF {path}: {exc}") from exc
    if arr.ndim != len(axes) or tuple(arr.shape) != shape:  # e.g. missing strip byte counts
        raise DataError(f"corrupt or truncated TIFF {path}: {arr.shape} samples for an image "
                        f"of shape {shape} (axes {axes})")
    notes = []
    # Keep the first plane of anything beyond Y, X and samples (S).
    for ax in [a for a in axes if a not in "YXS"]:
        arr = np.take(arr, 0, axis=axes.index(ax))
        axes = axes.replace(ax, "")
        notes.append(f"only the first plane of the TIFF's '{ax}' axis is read")
    if pages > 1:
        notes.append(f"only the first of the TIFF's {pages} pages is read")
    if "S" in axes:
        arr = np.moveaxis(arr, axes.index("S"), -1)
    else:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise DataError(f"{path}: unsupported TIFF layout (axes {page.axes}, shape {shape})")
    alpha = arr.shape[2] in (2, 4)
    if alpha and premultiplied:
        notes.append("the TIFF's colours are premultiplied by its alpha (associated alpha); "
                     "they are restored as stored")
    arr = orient(arr, orientation)
    bits = _depth(arr, notes)
    return Samples(arr, _layout(arr), alpha, bits, tuple(notes),
                   _icc_matching(icc, arr.shape[2] - alpha))


def _palette_samples(im: Image.Image) -> tuple[np.ndarray, bool, str]:
    """A palette image's colours: RGB(A), or grey(+alpha) when every colour used is grey;
    alpha from the tRNS chunk or a PA image. Returns the samples, alpha, and a note."""
    colours = len(im.getcolors(1 << 16) or ())
    alpha = im.mode == "PA" or "transparency" in im.info
    arr = np.asarray(im.convert("RGBA" if alpha else "RGB"))
    if np.array_equal(arr[:, :, 0], arr[:, :, 1]) and np.array_equal(arr[:, :, 1], arr[:, :, 2]):
        arr = arr[:, :, [0, 3]] if alpha else arr[:, :, :1]
    note = (f"palette image ({colours} colours): its colours are quantised, and dithering "
            "adds noise")
    return arr, alpha, note


def _pil_samples(im: Image.Image, path: Path, *, icc: bytes | None, frames: int) -> Samples:
    """A loaded, upright Pillow image -> its samples (alpha kept as the last channel); ``icc``
    and ``frames`` are the file's colour profile and number of frames."""
    mode, notes = im.mode, []
    if mode in ("L", "RGB") and "transparency" in im.info:
        arr, alpha = np.asarray(im.convert(mode[0] + "A" if mode == "L" else "RGBA")), True
        notes.append("colour-key transparency (tRNS) is read as an alpha channel")
    elif mode in ("1", "L", "LA", "RGB", "RGBA"):
        arr, alpha = np.asarray(im), mode.endswith("A")
        if mode == "1":
            notes.append("black-and-white (1-bit) image: results are written as 8-bit grey")
    elif mode.startswith("I;16"):
        arr, alpha = np.asarray(im).astype(np.uint16), False
    elif mode in ("I", "F"):
        arr, alpha = np.asarray(im), False
    elif mode in ("P", "PA"):
        arr, alpha, note = _palette_samples(im)
        notes.append(note)
    elif mode in ("La", "RGBa"):  # premultiplied alpha: Pillow undoes it
        arr, alpha = np.asarray(im.convert(mode[:-1] + "A")), True
    else:  # CMYK, YCbCr, LAB, HSV, RGBX, ...
        try:
            arr, alpha = np.asarray(im.convert("RGB")), False
        except (ValueError, OSError) as exc:
            raise DataError(f"{path}: cannot convert image mode {mode} to RGB") from exc
        notes.append(f"{mode} image converted to RGB without colour management: colours are "
                     "approximate" if mode == "CMYK" else f"{mode} image converted to RGB")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if mode in ("1", "L", "LA", "RGB", "RGBA", "La", "RGBa") or mode.startswith("I;16"):
        name = _layout(arr) if mode != "1" else "1"
    else:
        name = mode
    if frames > 1:
        notes.append(f"only the first of its {frames} frames is read")
    bits = _depth(arr, notes)
    return Samples(arr, name, alpha, bits, tuple(notes),
                   _icc_matching(icc, arr.shape[2] - alpha))


def jpeg_quality(table: Sequence[int]) -> float:
    """The IJG quality (1-100, fractional) whose scaling of the standard luminance table is
    closest to the 64-entry luminance quantisation ``table`` (natural order) of a JPEG: with s
    = sum(table) / sum(standard), the IJG scale 100 s is 200 - 2 Q for Q >= 50 and 5000 / Q
    below. Tables of other encoders (cameras, phones) get the quality of their mean step."""
    if len(table) != 64:
        raise ValueError(f"a JPEG quantisation table has 64 entries, got {len(table)}")
    scale = 100.0 * sum(table) / sum(_IJG_LUMA)
    quality = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return min(max(quality, 1.0), 100.0)


def _read_pil(data: bytes, path: Path) -> Samples:
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file must raise, not load grey
    try:
        with _quiet_decoders(), Image.open(io.BytesIO(data)) as im:
            im.load()
            samples = _pil_samples(ImageOps.exif_transpose(im), path,
                                   icc=im.info.get("icc_profile"),
                                   frames=getattr(im, "n_frames", 1))
            tables = getattr(im, "quantization", None) if im.format == "JPEG" else None
            if tables:
                samples = dataclasses.replace(samples, jpeg_quality=jpeg_quality(tables[0]))
            return samples
    except UnidentifiedImageError as exc:
        raise DataError(f"not an image (or an unsupported format): {path}") from exc
    except Image.DecompressionBombError as exc:
        raise DataError(f"image is too large to open safely: {path}: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"corrupt or truncated image file {path}: {exc}") from exc
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def read_samples(path: str | os.PathLike[str]) -> Samples:
    """Decode an image file to its samples as stored, upright (see :class:`Samples`).

    Raises:
        DataError: missing, empty, unreadable, truncated or corrupt file.
    """
    p = Path(path)
    data = _check_file(p)
    samples = None
    if data[:8] == _png.PNG_SIGNATURE:
        samples = _read_png16(data, p)
    elif data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        samples = _read_tiff(p)
    if samples is None:
        samples = _read_pil(data, p)
    arr = samples.array
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{p}: image has no pixels (shape {arr.shape})")
    return samples


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


def colour_to_tensor(samples: Samples, path: str | os.PathLike[str]) -> torch.Tensor:
    """The colour channels of ``samples`` (alpha left out) as float32 ``(C, H, W)`` in [0, 1]."""
    arr = samples.array[:, :, :-1] if samples.alpha else samples.array
    arr = samples_to_float(arr, Path(path))
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


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
    return to_mode(colour_to_tensor(read_samples(path), path), mode)


def as_image(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a float ``(C, H, W)`` tensor with C in {1, 3}, detached; accepts ``(C, H, W)``,
    ``(H, W)`` and a batch of one ``(1, C, H, W)``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch tensor, got {type(x).__name__}")
    t = x.detach()
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"expected an image (C, H, W) with C in {{1, 3}}, (H, W) or "
                         f"(1, C, H, W); got shape {tuple(x.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"expected a floating tensor in [0, 1], got {t.dtype}")
    if torch.isnan(t).any():
        raise ValueError("the image contains NaN")
    return t


def to_samples(x: torch.Tensor, bits: int = 8) -> np.ndarray:
    """A float image in [0, 1] -> ``(H, W, C)`` samples ``round(clamp(x, 0, 1) * (2^bits - 1))``
    (uint8 or uint16); ``x`` as :func:`as_image` takes it."""
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    t = as_image(x)
    peak = 255 if bits == 8 else 65535
    q = torch.round(t.to(device="cpu", dtype=torch.float64).clamp(0, 1) * peak)
    return q.permute(1, 2, 0).numpy().astype(np.uint8 if bits == 8 else np.uint16)


def write_format(path: Path) -> str:
    """The format written for ``path``'s suffix (see :data:`WRITE_FORMATS`)."""
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: cannot write {path.suffix or 'files without a suffix'}; "
                        f"use one of {', '.join(WRITE_FORMATS)}")
    return fmt


def write_samples(arr: np.ndarray, path: str | os.PathLike[str], *,
                  icc_profile: bytes | None = None) -> Path:
    """Write ``(H, W, C)`` uint8/uint16 samples atomically, in the format of the suffix.

    C = 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA. PNG and TIFF hold 8 or 16 bits and alpha; JPEG
    (quality 95, no chroma subsampling) and BMP hold 8 bits without alpha. ``icc_profile`` is
    embedded in PNG, TIFF and JPEG. The file is written to a temporary name in the same folder
    and moved into place with ``os.replace``, so a reader never sees a half-written file.
    Missing parent folders are created. Returns the path written.
    """
    p = Path(path)
    fmt = write_format(p)
    channels = arr.shape[2]
    if arr.dtype == np.uint16 and fmt not in DEEP_FORMATS:
        raise DataError(f"{p}: 16-bit samples need .png or .tif, not {p.suffix}")
    if channels in (2, 4) and fmt not in DEEP_FORMATS:
        raise DataError(f"{p}: {p.suffix} files have no alpha channel; use .png or .tif")
    with atomic_path(p) as tmp, open(tmp, "wb") as f:
        if fmt == "PNG" and arr.dtype == np.uint16:
            _png.encode(arr, f, icc_profile=icc_profile)
        elif fmt == "TIFF":
            import tifffile

            buf = io.BytesIO()
            tifffile.imwrite(buf, arr if channels > 1 else arr[:, :, 0],
                             photometric="rgb" if channels >= 3 else "minisblack",
                             planarconfig="contig" if channels > 1 else None,
                             extrasamples=["unassalpha"] if channels in (2, 4) else None,
                             iccprofile=icc_profile, compression="zlib")
            f.write(buf.getvalue())
        else:
            im = Image.fromarray(arr[:, :, 0] if channels == 1 else arr)
            options: dict[str, object] = {}
            if fmt == "JPEG":
                options = {"quality": JPEG_QUALITY, "subsampling": 0}
            if icc_profile is not None and fmt != "BMP":
                options["icc_profile"] = icc_profile
            im.save(f, format=fmt, **options)
    return p


def save_image(x: torch.Tensor, path: str | os.PathLike[str], *, bits: int = 8) -> Path:
    """Write an image tensor to ``path`` atomically, clamped to ``[0, 1]`` and rounded.

    ``x`` is ``(C, H, W)`` with C in {1, 3}, ``(H, W)``, or a batch of one ``(1, C, H, W)``.
    Samples are stored as ``round(clamp(x, 0, 1) * (2^bits - 1))``. The format follows the suffix:
    ``.png`` (default when there is none: ``.png`` is appended), ``.tif``/``.tiff`` (8 or 16 bit),
    ``.jpg``/``.jpeg`` (quality 95) and ``.bmp`` (8 bit only); see :func:`write_samples`.
    Returns the path written.
    """
    p = Path(path)
    if p.suffix == "":
        p = p.with_suffix(".png")
    if p.suffix.lower() not in WRITE_FORMATS:
        raise ValueError(f"save_image: unsupported file type {p.suffix!r}; "
                         f"use one of {sorted(WRITE_FORMATS)}")
    if bits == 16 and write_format(p) not in DEEP_FORMATS:
        raise ValueError(f"save_image: 16-bit samples need .png or .tif, not {p.suffix}")
    return write_samples(to_samples(x, bits), p)
