"""A small, exact PNG codec for the cases Pillow cannot keep at full precision.

Pillow decodes 16-bit colour PNGs (RGB, RGBA, grey+alpha) to 8 bits and cannot write them. This
module reads and writes non-interlaced PNGs of bit depth 8 or 16 and colour type grey (0),
RGB (2), grey+alpha (4) or RGBA (6), undoing the five PNG row filters (None, Sub, Up, Average,
Paeth) of the PNG specification, section 9. It also reads the two ancillary chunks a photo
needs to look right, eXIf (orientation) and iCCP (colour profile), and writes iCCP.
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


class PNGFormatError(ValueError):
    """The bytes are not a PNG this codec can read."""


def read_header(data: bytes) -> tuple[int, int, int, int, int]:
    """Return ``(width, height, bit_depth, colour_type, interlace)`` from a PNG's IHDR chunk."""
    if data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR" or len(data) < 33:
        raise PNGFormatError("not a PNG file")
    width, height, depth, ctype, _comp, _filt, interlace = struct.unpack(">IIBBBBB", data[16:29])
    return width, height, depth, ctype, interlace


def find_chunk(data: bytes, tag: bytes) -> bytes | None:
    """The body of the first chunk ``tag`` (e.g. ``b"eXIf"``), or None; stops at IEND or at a
    damaged chunk (the image decoder reports those)."""
    pos = 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        name = data[pos + 4 : pos + 8]
        if pos + 12 + length > len(data) or name == b"IEND":
            return None
        if name == tag:
            return data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return None


def read_icc_profile(data: bytes) -> bytes | None:
    """The ICC profile of an iCCP chunk (name, NUL, method 0, zlib stream), or None."""
    body = find_chunk(data, b"iCCP")
    if body is None or b"\x00" not in body[:80]:
        return None
    start = body.index(b"\x00") + 2  # skip the NUL and the compression-method byte
    try:
        return zlib.decompress(body[start:])
    except zlib.error:
        return None


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _unfilter(raw: bytes, height: int, stride: int, bpp: int) -> np.ndarray:
    """Reverse the per-row PNG filters; returns the ``(height, stride)`` uint8 scanlines."""
    if len(raw) < height * (stride + 1):
        raise PNGFormatError("image data is truncated")
    rows = np.frombuffer(raw, dtype=np.uint8, count=height * (stride + 1)).reshape(height, -1)
    out = np.zeros((height, stride), dtype=np.uint8)
    prior = np.zeros(stride, dtype=np.uint8)
    for r in range(height):
        ftype = int(rows[r, 0])
        line = rows[r, 1:]
        if ftype == 0:
            cur = line.copy()
        elif ftype == 1:  # Sub: Recon(x) = Filt(x) + Recon(x - bpp), a running sum per byte lane
            pad = (-stride) % bpp
            lanes = np.concatenate([line, np.zeros(pad, np.uint8)]).reshape(-1, bpp)
            cur = (np.cumsum(lanes.astype(np.int64), axis=0) % 256).astype(np.uint8)
            cur = cur.reshape(-1)[:stride]
        elif ftype == 2:  # Up: Recon(x) = Filt(x) + Recon(b)
            cur = line + prior
        elif ftype in (3, 4):  # Average / Paeth: sequential along the row
            buf = bytearray(line.tobytes())
            up = prior.tobytes()
            for i in range(stride):
                a = buf[i - bpp] if i >= bpp else 0
                b = up[i]
                if ftype == 3:
                    pred = (a + b) >> 1
                else:
                    pred = _paeth(a, b, up[i - bpp] if i >= bpp else 0)
                buf[i] = (buf[i] + pred) & 0xFF
            cur = np.frombuffer(bytes(buf), dtype=np.uint8)
        else:
            raise PNGFormatError(f"unknown PNG filter type {ftype} in row {r}")
        out[r] = cur
        prior = cur
    return out


def decode(data: bytes) -> np.ndarray:
    """Decode a PNG to an ``(H, W, C)`` array of dtype uint8 or uint16 (C = 1, 2, 3 or 4)."""
    width, height, depth, ctype, interlace = read_header(data)
    if width == 0 or height == 0:
        raise PNGFormatError(f"PNG image has no pixels ({width}x{height})")
    if depth not in (8, 16) or ctype not in _CHANNELS:
        raise PNGFormatError(f"unsupported PNG: bit depth {depth}, colour type {ctype}")
    if interlace:
        raise PNGFormatError("interlaced PNGs are not supported by this decoder")
    pos, idat, ended = 8, [], False
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype_tag = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if len(body) < length or pos + 12 + length > len(data):
            raise PNGFormatError("PNG chunk is truncated")
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(ctype_tag + body) & 0xFFFFFFFF != crc:
            raise PNGFormatError(f"PNG chunk {ctype_tag!r} is corrupt (CRC mismatch)")
        if ctype_tag == b"IDAT":
            idat.append(body)
        elif ctype_tag == b"IEND":
            ended = True
            break
        pos += 12 + length
    if not ended or not idat:
        raise PNGFormatError("PNG file is truncated (no IEND chunk)")
    channels = _CHANNELS[ctype]
    bpp = channels * depth // 8
    inflate = zlib.decompressobj()
    try:  # never inflate more than the image needs: a small file may hold a zlib bomb
        raw = inflate.decompress(b"".join(idat), height * (width * bpp + 1))
    except zlib.error as exc:
        raise PNGFormatError(f"corrupt PNG image data: {exc}") from exc
    if not inflate.eof and not inflate.unconsumed_tail:  # all read, yet the stream goes on
        raise PNGFormatError("corrupt PNG image data: the compressed stream is truncated")
    rows = _unfilter(raw, height, width * bpp, bpp)
    if depth == 16:
        arr = rows.view(">u2").astype(np.uint16)
    else:
        arr = rows
    return arr.reshape(height, width, channels)


def _chunk(tag: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(tag + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", crc)


def encode(arr: np.ndarray, fileobj: BinaryIO, *, filter_type: int = 2,
           icc_profile: bytes | None = None) -> None:
    """Write an ``(H, W, C)`` uint8/uint16 array (C in 1..4) as a PNG with one row filter.

    ``filter_type`` 0..4 selects None, Sub, Up, Average or Paeth for every row (Up by default);
    ``icc_profile`` (the profile's bytes) is stored in an iCCP chunk.
    """
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected an (H, W, C) array with C in 1..4, got {arr.shape}")
    if arr.dtype == np.uint8:
        depth = 8
        data = arr
    elif arr.dtype == np.uint16:
        depth = 16
        data = arr.astype(">u2")
    else:
        raise ValueError(f"expected uint8 or uint16 samples, got {arr.dtype}")
    if filter_type not in range(5):
        raise ValueError(f"filter_type must be 0..4, got {filter_type}")
    height, width, channels = arr.shape
    ctype = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    bpp = channels * depth // 8
    lines = np.ascontiguousarray(data).view(np.uint8).reshape(height, width * bpp).astype(np.int64)
    left = np.zeros_like(lines)
    left[:, bpp:] = lines[:, :-bpp]
    up = np.zeros_like(lines)
    up[1:] = lines[:-1]
    upleft = np.zeros_like(lines)
    upleft[1:, bpp:] = lines[:-1, :-bpp]
    if filter_type == 0:
        pred = np.zeros_like(lines)
    elif filter_type == 1:
        pred = left
    elif filter_type == 2:
        pred = up
    elif filter_type == 3:
        pred = (left + up) >> 1
    else:
        p = left + up - upleft
        pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
        pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
    filtered = ((lines - pred) % 256).astype(np.uint8)
    scan = np.concatenate([np.full((height, 1), filter_type, np.uint8), filtered], axis=1)
    fileobj.write(PNG_SIGNATURE)
    fileobj.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, ctype, 0, 0, 0)))
    if icc_profile is not None:
        fileobj.write(_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc_profile)))
    fileobj.write(_chunk(b"IDAT", zlib.compress(scan.tobytes(), 6)))
    fileobj.write(_chunk(b"IEND", b""))
