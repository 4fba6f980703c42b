"""The fuzzer of scripts/fuzz.py, short (100 cases per target), and regression tests for the
loader bugs it found (docs/RELIABILITY.md has the long run and its counts)."""

from __future__ import annotations

import importlib.util
import io
import logging
import struct
import sys
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from jfb.data import _png, load_image, save_image
from jfb.errors import DataError

ROOT = Path(__file__).resolve().parents[1]


def _load_fuzz():
    spec = importlib.util.spec_from_file_location("jfb_fuzz", ROOT / "scripts" / "fuzz.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["jfb_fuzz"] = module
    spec.loader.exec_module(module)
    return module


fuzz = _load_fuzz()


@pytest.mark.parametrize("target", list(fuzz.TARGETS))
def test_every_input_is_accepted_sanely_or_rejected_with_a_jfb_error(target):
    counts = fuzz.run_target(target, cases=100, seed=0)
    assert counts.crashed == 0, "\n".join(counts.crashes)
    assert counts.tried == 100 == counts.accepted + counts.rejected + counts.known
    assert counts.accepted > 0 and counts.rejected > 0  # both outcomes are exercised


def test_a_crash_a_broken_result_and_a_hang_are_counted_as_crashes():
    counts = fuzz.Counts("t")
    fuzz.run_case(counts, "raises", lambda: 1 / 0, lambda r: None, timeout=5)
    fuzz.run_case(counts, "bad result", lambda: -1, lambda r: fuzz._require(r > 0, "> 0"), 5)
    fuzz.run_case(counts, "hangs", lambda: sum(1 for _ in iter(int, 1)), lambda r: None, 0.2)
    fuzz.run_case(counts, "rejects", lambda: load_image("/nonexistent.png"), lambda r: None, 5)
    fuzz.run_case(counts, "fine", lambda: 1, lambda r: None, 5)
    fuzz.run_case(counts, "slow", lambda: time.sleep(fuzz.SLOW_S + 0.05), lambda r: None, 5,
                  slow_issue="known to be slow")
    assert (counts.tried, counts.crashed, counts.rejected, counts.accepted) == (6, 3, 1, 1)
    assert counts.known_issues == {"known to be slow": 1}
    assert "Hang" in counts.crashes[2] and "ZeroDivisionError" in counts.crashes[0]
    assert fuzz.main(["--cases", "3", "--targets", "override"]) == 0


# ---------------------------------------------------------------------- regressions
def _tiff_with_zero_bits_per_sample() -> bytes:
    """An RGB TIFF whose BitsPerSample say 0: tifffile then returns 0 samples (the fuzzer's
    case image/260; load_image used to fail with numpy's AxisError)."""
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, np.full((3, 1, 3), 7, np.uint8), photometric="rgb")
    data = bytearray(buf.getvalue())
    ifd = struct.unpack("<I", data[4:8])[0]
    for i in range(struct.unpack("<H", data[ifd : ifd + 2])[0]):
        pos = ifd + 2 + 12 * i
        code, _, count = struct.unpack("<HHI", data[pos : pos + 8])
        if code == 258 and count == 3:  # BitsPerSample, stored at an offset
            off = struct.unpack("<I", data[pos + 8 : pos + 12])[0]
            data[off : off + 6] = bytes(6)
    return bytes(data)


def test_tiff_without_samples_is_a_data_error(tmp_path):
    path = tmp_path / "zero-bits.tif"
    path.write_bytes(_tiff_with_zero_bits_per_sample())
    with pytest.raises(DataError, match=r"corrupt or truncated TIFF .*\(0,\) samples"):
        load_image(path)


def _cmyk_tiff_with_samples_per_pixel(n: int) -> bytes:
    """A CMYK TIFF (tifffile hands CMYK to Pillow) claiming ``n`` samples per pixel."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("CMYK", (4, 3)).save(buf, "TIFF")
    data = bytearray(buf.getvalue())
    ifd = struct.unpack("<I", data[4:8])[0]
    for i in range(struct.unpack("<H", data[ifd : ifd + 2])[0]):
        pos = ifd + 2 + 12 * i
        if struct.unpack("<H", data[pos : pos + 2])[0] == 277:  # SamplesPerPixel, inline SHORT
            data[pos + 8 : pos + 10] = struct.pack("<H", n)
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "logger"),
    [
        (b"II*\x00" + struct.pack("<I", 123456789) + bytes(32), "tifffile"),
        (_cmyk_tiff_with_samples_per_pixel(173), "PIL"),
    ],
    ids=["tifffile", "pillow"],
)
def test_a_corrupt_file_logs_nothing_besides_the_error(tmp_path, caplog, data, logger):
    """tifffile ("invalid offset to first page ...") and Pillow ("More samples per pixel than
    can be decoded") log a bad file's problems, on stderr outside pytest; the command line
    promises one line there, the DataError's."""
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "bad.tif"
    path.write_bytes(data)
    with pytest.raises(DataError, match="corrupt or truncated|not an image"):
        load_image(path)
    assert [r.name for r in caplog.records if r.name.startswith(logger)] == []


def _png16(width: int, height: int, raw: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (_png.PNG_SIGNATURE + _png._chunk(b"IHDR", ihdr)
            + _png._chunk(b"IDAT", raw) + _png._chunk(b"IEND", b""))


def test_a_huge_16_bit_png_is_refused_before_decoding(tmp_path):
    """Pillow's decompression-bomb limit holds for the exact 16-bit codec too."""
    path = tmp_path / "huge.png"
    path.write_bytes(_png16(30000, 30000, zlib.compress(bytes(1000))))
    with pytest.raises(DataError, match="too large to open safely"):
        load_image(path)


def test_a_16_bit_png_zlib_bomb_is_not_inflated(tmp_path):
    """A 1x1 image whose data stream inflates to 64 MB: only the 7 bytes needed are inflated."""
    row = b"\x00" + struct.pack(">HHH", 0, 32768, 65535)
    stream = zlib.compressobj(9)
    bomb = stream.compress(row) + stream.compress(bytes(64 << 20)) + stream.flush()
    assert len(bomb) < 100_000
    path = tmp_path / "bomb.png"
    path.write_bytes(_png16(1, 1, bomb))
    tracemalloc.start()
    try:
        x = load_image(path, mode="keep")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert x.flatten().tolist() == pytest.approx([0.0, 32768 / 65535, 1.0])
    assert peak < 8 << 20


def test_a_16_bit_png_with_a_cut_data_stream_is_a_data_error(tmp_path):
    raw = zlib.compress(b"\x00" + bytes(6 * 4) + b"\x00" + bytes(6 * 4))
    path = tmp_path / "cut.png"
    path.write_bytes(_png16(4, 2, raw[:-4]))  # chunk CRC valid; the pixels are all there, the
    # stream's checksum is not
    with pytest.raises(DataError, match="truncated"):
        load_image(path)


def test_a_16_bit_png_with_no_pixels_is_a_data_error(tmp_path):
    """Width or height 0 in the header (the fuzzer's "dims" corruption): numpy's reshape used to
    raise a ValueError from the exact 16-bit codec."""
    path = tmp_path / "empty.png"
    for width, height in ((0, 5), (5, 0)):
        path.write_bytes(_png16(width, height, zlib.compress(b"")))
        with pytest.raises(DataError, match="no pixels"):
            load_image(path)


@settings(max_examples=80, deadline=None)
@given(
    channels=st.sampled_from([1, 3]),
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    kind=st.sampled_from(["png8", "png16", "tif8", "tif16", "bmp8"]),
    pixels=st.sampled_from(["random", "zeros", "max"]),
    seed=st.integers(0, 2**16),
)
def test_saved_images_load_back_exactly(channels, height, width, kind, pixels, seed):
    """Property: every lossless format and bit depth, any size from 1x1, grey or RGB: load_image
    returns the saved samples exactly (q / (2^bits - 1)), in [0, 1], as float32."""
    import tempfile

    bits = 16 if kind.endswith("16") else 8
    peak = 2**bits - 1
    rng = np.random.default_rng(seed)
    q = {"random": rng.integers(0, peak + 1, (channels, height, width)),
         "zeros": np.zeros((channels, height, width), np.int64),
         "max": np.full((channels, height, width), peak)}[pixels]
    x = torch.from_numpy(q / peak)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_image(x, f"{tmp}/img.{kind[:3]}", bits=bits)
        y = load_image(path, mode="rgb")
    assert y.dtype == torch.float32 and y.shape == (3, height, width)
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    expected = torch.from_numpy(q).expand(3, -1, -1)
    assert torch.equal(torch.round(y.double() * peak).long(), expected)
