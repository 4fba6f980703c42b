"""Image files as users have them (read_photo / write_photo) and output paths checked before any
work (resolve_output). Every file is made here with Pillow, numpy, tifffile or our PNG codec."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image, ImageCms, ImageOps, JpegImagePlugin

from jfb.data import (
    IMAGE_SUFFIXES,
    _png,
    load_image,
    output_notes,
    read_photo,
    resolve_output,
    write_photo,
)
from jfb.data.images import orient
from jfb.errors import DataError

RNG = np.random.default_rng(2024)
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _u8(*shape: int) -> np.ndarray:
    return RNG.integers(0, 256, shape, dtype=np.uint8)


def _u16(*shape: int) -> np.ndarray:
    return RNG.integers(0, 65536, shape, dtype=np.uint16)


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(1, 2, 0).numpy().astype(np.float64)


def _stored(path: Path) -> np.ndarray:
    """The samples of a file as stored, (H, W, C), read by tifffile, our PNG codec or Pillow."""
    if path.suffix.lower() in (".tif", ".tiff"):
        arr = tifffile.imread(path)
    else:
        data = path.read_bytes()
        _, _, depth, _, _ = _png.read_header(data) if data[:8] == _png.PNG_SIGNATURE else (
            0, 0, 8, 0, 0)
        if depth == 16:
            arr = _png.decode(data)
        else:
            with Image.open(path) as im:
                arr = np.asarray(im)
    return arr if arr.ndim == 3 else arr[:, :, None]


def _within_one_lsb(stored: np.ndarray, x: torch.Tensor, peak: int) -> bool:
    return bool(np.abs(stored.astype(np.float64) - _hwc(x) * peak).max() <= 1.0)


# ------------------------------------------------------------------------- bit depth, channels


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_grey_in_16_bit_grey_out(tmp_path: Path, suffix: str) -> None:
    g16 = _u16(9, 11)
    src = tmp_path / f"g16{suffix}"
    if suffix == ".png":
        Image.fromarray(g16).save(src)  # Pillow's I;16
    else:
        tifffile.imwrite(src, g16)
    photo = read_photo(src)
    assert (photo.bits, photo.source_mode, photo.alpha) == (16, "L;16", None)
    assert photo.pixels.dtype == torch.float32 and photo.pixels.shape == (1, 9, 11)
    assert np.array_equal(np.round(_hwc(photo.pixels)[:, :, 0] * 65535), g16)

    x = photo.pixels * 0.7 + 0.1  # a result between the 8-bit levels
    out = tmp_path / f"out{suffix}"
    assert write_photo(x, out, like=photo) == ()
    stored = _stored(out)
    assert stored.dtype == np.uint16 and stored.shape == (9, 11, 1)
    assert _within_one_lsb(stored, x, 65535)


def test_16_bit_rgb_tiff_and_png_round_trip(tmp_path: Path) -> None:
    rgb16 = _u16(7, 8, 3)
    tifffile.imwrite(tmp_path / "c.tif", rgb16, photometric="rgb")
    with open(tmp_path / "c.png", "wb") as f:
        _png.encode(rgb16, f)
    for name in ("c.tif", "c.png"):
        photo = read_photo(tmp_path / name)
        assert (photo.bits, photo.source_mode, photo.pixels.shape) == (16, "RGB;16", (3, 7, 8))
        x = 1 - photo.pixels
        out = tmp_path / f"out-{name}"
        write_photo(x, out, like=photo)
        stored = _stored(out)
        assert stored.dtype == np.uint16 and stored.shape == (7, 8, 3), name
        assert _within_one_lsb(stored, x, 65535), name


def test_8_bit_stays_8_bit_and_without_like_too(tmp_path: Path) -> None:
    a = _u8(6, 5, 3)
    tifffile.imwrite(tmp_path / "c.tif", a, photometric="rgb")
    photo = read_photo(tmp_path / "c.tif")
    assert (photo.bits, photo.source_mode) == (8, "RGB")
    write_photo(photo.pixels, tmp_path / "o.tif", like=photo)
    assert np.array_equal(_stored(tmp_path / "o.tif"), a)
    write_photo(torch.rand(1, 4, 4), tmp_path / "plain.png")  # no like: 8-bit, x's channels
    assert _stored(tmp_path / "plain.png").dtype == np.uint8
    assert _stored(tmp_path / "plain.png").shape == (4, 4, 1)


def test_grey_stays_grey_and_colour_stays_colour(tmp_path: Path) -> None:
    Image.fromarray(_u8(6, 7)).save(tmp_path / "g.png")
    grey = read_photo(tmp_path / "g.png")
    assert grey.pixels.shape == (1, 6, 7) and grey.source_mode == "L"
    rgb = torch.rand(3, 6, 7)  # a model's 3-channel output for a grey input
    write_photo(rgb, tmp_path / "o.png", like=grey)
    stored = _stored(tmp_path / "o.png")
    assert stored.shape == (6, 7, 1)
    luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    assert _within_one_lsb(stored, luma[None], 255)

    Image.fromarray(_u8(6, 7, 3)).save(tmp_path / "c.png")
    colour = read_photo(tmp_path / "c.png")
    write_photo(torch.rand(1, 6, 7), tmp_path / "oc.png", like=colour)
    stored = _stored(tmp_path / "oc.png")
    assert stored.shape == (6, 7, 3) and np.array_equal(stored[:, :, 0], stored[:, :, 2])


def test_bmp_grey_and_colour(tmp_path: Path) -> None:
    for arr in (_u8(5, 6), _u8(5, 6, 3)):
        Image.fromarray(arr).save(tmp_path / "in.bmp")
        photo = read_photo(tmp_path / "in.bmp")
        assert photo.bits == 8 and photo.pixels.shape[0] == (1 if arr.ndim == 2 else 3)
        write_photo(photo.pixels, tmp_path / "out.bmp", like=photo)
        stored = _stored(tmp_path / "out.bmp")
        assert np.array_equal(stored, arr if arr.ndim == 3 else arr[:, :, None])


def test_float_tiff_is_written_back_at_16_bits(tmp_path: Path) -> None:
    f32 = RNG.random((5, 6)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", f32)
    photo = read_photo(tmp_path / "f.tif")
    assert (photo.bits, photo.source_mode) == (16, "L;F")
    assert any("32-bit floating-point" in n for n in photo.notes)
    write_photo(photo.pixels, tmp_path / "o.tif", like=photo)
    assert _stored(tmp_path / "o.tif").dtype == np.uint16
    # a float alpha plane is written at the result's depth, and the change is said
    la = RNG.random((5, 6, 2)).astype(np.float32)
    tifffile.imwrite(tmp_path / "fa.tif", la, photometric="minisblack", planarconfig="contig",
                     extrasamples=["unassalpha"])
    photo = read_photo(tmp_path / "fa.tif")
    assert photo.alpha is not None and photo.alpha.dtype == np.float32
    notes = write_photo(photo.pixels, tmp_path / "fa-out.png", like=photo)
    assert notes == ("the alpha channel is converted from float32 to uint16",)
    stored = _stored(tmp_path / "fa-out.png")
    assert stored.dtype == np.uint16
    assert np.abs(stored[:, :, 1] - la[:, :, 1].astype(np.float64) * 65535).max() <= 0.5 + 1e-6


# ------------------------------------------------------------------------------------- alpha


def _write_png(path: Path, arr: np.ndarray) -> None:
    if arr.dtype == np.uint16:
        with open(path, "wb") as f:
            _png.encode(arr, f)
    else:
        Image.fromarray(arr).save(path)


@pytest.mark.parametrize(
    ("name", "arr"),
    [("rgba8.png", _u8(6, 7, 4)), ("rgba16.png", _u16(6, 7, 4)), ("la8.png", _u8(6, 7, 2)),
     ("la16.png", _u16(6, 7, 2)), ("rgba16.tif", _u16(6, 7, 4)), ("la8.tif", _u8(6, 7, 2))],
)
def test_alpha_passes_through_bit_exact(tmp_path: Path, name: str, arr: np.ndarray) -> None:
    src = tmp_path / name
    if name.endswith(".png"):
        _write_png(src, arr)
    else:
        tifffile.imwrite(src, arr, photometric="rgb" if arr.shape[2] == 4 else "minisblack",
                         planarconfig="contig", extrasamples=["unassalpha"])
    photo = read_photo(src)
    colours = arr.shape[2] - 1
    assert photo.pixels.shape == (colours, 6, 7)  # never alpha in the pixels
    assert photo.alpha is not None and photo.alpha.dtype == arr.dtype
    assert np.array_equal(photo.alpha, arr[:, :, -1])
    assert photo.source_mode.startswith("RGBA" if colours == 3 else "LA")

    x = 1 - photo.pixels
    for suffix in (".png", ".tif"):
        out = tmp_path / f"out{suffix}"
        assert write_photo(x, out, like=photo) == ()
        stored = _stored(out)
        assert stored.dtype == arr.dtype and stored.shape == arr.shape, suffix
        assert np.array_equal(stored[:, :, -1], arr[:, :, -1]), suffix  # bit-exact alpha
        if suffix == ".tif":  # declared as alpha, for other programs too
            with tifffile.TiffFile(out) as tif:
                assert tuple(tif.pages[0].extrasamples) == (tifffile.EXTRASAMPLE.UNASSALPHA,)
        peak = np.iinfo(arr.dtype).max
        assert _within_one_lsb(stored[:, :, :-1], x, peak), suffix


def test_jpeg_and_bmp_say_what_they_cannot_keep(tmp_path: Path) -> None:
    _write_png(tmp_path / "a.png", _u16(6, 7, 4))
    photo = read_photo(tmp_path / "a.png")
    for suffix in (".jpg", ".bmp"):
        out = tmp_path / f"out{suffix}"
        expected = output_notes(photo, out)  # known before any work
        assert len(expected) == 2
        assert "alpha" in expected[0] and suffix in expected[0]
        assert "8 bits" in expected[1]
        assert write_photo(photo.pixels, out, like=photo) == expected
        stored = _stored(out)
        assert stored.dtype == np.uint8 and stored.shape == (6, 7, 3)
    assert output_notes(photo, tmp_path / "o.png") == output_notes(None, tmp_path / "o.jpg") == ()


def test_alpha_follows_an_upscaled_result(tmp_path: Path) -> None:
    a = _u8(4, 5, 4)
    _write_png(tmp_path / "small.png", a)
    photo = read_photo(tmp_path / "small.png")
    notes = write_photo(torch.rand(3, 8, 10), tmp_path / "big.png", like=photo)
    assert any("resized from 5x4 to 10x8" in n for n in notes)
    big_alpha = np.repeat(np.repeat(a[:, :, 3], 2, axis=0), 2, axis=1)
    assert np.array_equal(_stored(tmp_path / "big.png")[:, :, 3], big_alpha)


# ----------------------------------------------------------------------------------- palette


def test_palette_png_with_and_without_transparency(tmp_path: Path) -> None:
    pal = Image.fromarray(_u8(8, 9, 3)).quantize(16, dither=Image.Dither.FLOYDSTEINBERG)
    used = len(pal.getcolors())
    pal.save(tmp_path / "p.png")
    photo = read_photo(tmp_path / "p.png")
    assert (photo.source_mode, photo.bits, photo.alpha) == ("P", 8, None)
    assert photo.pixels.shape == (3, 8, 9)
    assert np.array_equal(np.round(_hwc(photo.pixels) * 255), np.asarray(pal.convert("RGB")))
    assert any(f"palette image ({used} colours)" in n and "dithering" in n
               for n in photo.notes)

    trns = bytes([0, 128] + [255] * 14)
    pal.save(tmp_path / "pt.png", transparency=trns)
    photo = read_photo(tmp_path / "pt.png")
    expected_alpha = np.frombuffer(trns, np.uint8)[np.asarray(pal)]  # tRNS by palette index
    assert set(np.unique(expected_alpha)) > {255}  # the test image uses the see-through entries
    assert photo.alpha is not None and photo.alpha.dtype == np.uint8
    assert np.array_equal(photo.alpha, expected_alpha)
    write_photo(photo.pixels, tmp_path / "o.png", like=photo)
    stored = _stored(tmp_path / "o.png")
    assert stored.shape == (8, 9, 4) and np.array_equal(stored[:, :, 3], expected_alpha)


def test_grey_palette_reads_as_grey(tmp_path: Path) -> None:
    grey = Image.fromarray(_u8(6, 6)).convert("P")  # Pillow's default palette: greys first
    grey.save(tmp_path / "gp.png")
    photo = read_photo(tmp_path / "gp.png")
    assert photo.source_mode == "P" and photo.pixels.shape == (1, 6, 6)


def test_colour_key_transparency_becomes_alpha(tmp_path: Path) -> None:
    a = _u8(5, 6)
    a[0, 0] = 7
    Image.fromarray(a).save(tmp_path / "k.png", transparency=7)
    photo = read_photo(tmp_path / "k.png")
    assert photo.alpha is not None and photo.alpha[0, 0] == 0
    assert np.array_equal(photo.alpha == 0, a == 7)
    assert np.array_equal(np.round(_hwc(photo.pixels)[:, :, 0] * 255), a)  # colours untouched


def test_only_the_first_frame_of_an_animation(tmp_path: Path) -> None:
    frames = [Image.fromarray(_u8(5, 6, 3)).quantize(8) for _ in range(3)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    photo = read_photo(tmp_path / "a.gif")
    assert any("first of its 3 frames" in n for n in photo.notes)


# ----------------------------------------------------------------------- orientation, colour


def _eXIf(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow(orientation: int) -> None:
    a = _u8(3, 5, 3)
    im = Image.fromarray(a)
    im.getexif()[0x0112] = orientation
    assert np.array_equal(orient(a, orientation), np.asarray(ImageOps.exif_transpose(im)))


def test_exif_rotated_files_read_upright(tmp_path: Path) -> None:
    a = _u8(10, 16, 3)
    upright = np.rot90(a, -1)  # orientation 6: turn 90 degrees clockwise to display
    Image.fromarray(a).save(tmp_path / "o.jpg", exif=_eXIf(6), quality=95)
    assert read_photo(tmp_path / "o.jpg").pixels.shape == (3, 16, 10)
    Image.fromarray(a).save(tmp_path / "o.png", exif=_eXIf(6))
    tifffile.imwrite(tmp_path / "o.tif", a, photometric="rgb",
                     extratags=[(274, "H", 1, 6, True)])
    tifffile.imwrite(tmp_path / "o16.tif", a.astype(np.uint16) * 257, photometric="rgb",
                     extratags=[(274, "H", 1, 6, True)])
    buf = io.BytesIO()
    _png.encode(a.astype(np.uint16) * 257, buf)
    data = buf.getvalue()
    body = _eXIf(6)
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body + struct.pack(
        ">I", zlib.crc32(b"eXIf" + body) & 0xFFFFFFFF)
    (tmp_path / "o16.png").write_bytes(data[:-12] + chunk + data[-12:])  # before IEND
    for name in ("o.png", "o.tif", "o16.tif", "o16.png"):
        photo = read_photo(tmp_path / name)
        peak = 65535 if "16" in name else 255
        assert np.array_equal(np.round(_hwc(photo.pixels) * peak) / peak * 255, upright), name
        assert load_image(tmp_path / name).shape == (3, 16, 10), name  # the float view too


def test_cmyk_jpeg_reads_as_rgb(tmp_path: Path) -> None:
    cmyk = Image.fromarray(_u8(6, 8, 4), "CMYK")
    fake_cmyk_profile = SRGB[:16] + b"CMYK" + SRGB[20:]
    cmyk.save(tmp_path / "c.jpg", quality=95, icc_profile=fake_cmyk_profile)
    photo = read_photo(tmp_path / "c.jpg")
    assert photo.source_mode == "CMYK" and photo.pixels.shape == (3, 6, 8)
    assert photo.icc_profile is None  # a CMYK profile does not describe the RGB pixels
    assert any("CMYK" in n and "colour management" in n for n in photo.notes)
    with Image.open(tmp_path / "c.jpg") as im:
        assert np.array_equal(np.round(_hwc(photo.pixels) * 255), np.asarray(im.convert("RGB")))


def test_colour_profile_is_kept(tmp_path: Path) -> None:
    Image.fromarray(_u8(5, 6, 3)).save(tmp_path / "p.png", icc_profile=SRGB)
    with open(tmp_path / "p16.png", "wb") as f:
        _png.encode(_u16(5, 6, 3), f, icc_profile=SRGB)
    for name in ("p.png", "p16.png"):
        photo = read_photo(tmp_path / name)
        assert photo.icc_profile == SRGB, name
        for suffix in (".png", ".tif", ".jpg"):
            out = tmp_path / f"out{suffix}"
            write_photo(photo.pixels, out, like=photo)
            assert read_photo(out).icc_profile == SRGB, (name, suffix)
    with Image.open(tmp_path / "out.jpg") as im:
        assert im.info["icc_profile"] == SRGB  # seen by other programs, not only by us


def test_jpeg_is_written_at_high_quality(tmp_path: Path) -> None:
    write_photo(torch.rand(3, 16, 16), tmp_path / "q.jpg")
    with Image.open(tmp_path / "q.jpg") as im:
        assert JpegImagePlugin.get_sampling(im) == 0  # 4:4:4, no chroma subsampling
        assert max(im.quantization[0]) <= 12  # quality 95 (Pillow's default 75: 61)


def test_write_photo_refuses_an_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"x\.xyz"):
        write_photo(torch.rand(3, 4, 4), tmp_path / "x.xyz")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- resolve_output


@pytest.fixture
def src(tmp_path: Path) -> Path:
    path = tmp_path / "in.png"
    path.write_bytes(b"input")
    return path


def test_a_name_without_suffix_takes_the_inputs(tmp_path: Path, src: Path) -> None:
    assert resolve_output(src, tmp_path / "out", force=False) == tmp_path / "out.png"
    jpg = tmp_path / "photo.JPG"
    assert resolve_output(jpg, tmp_path / "out", force=False) == tmp_path / "out.JPG"
    webp = tmp_path / "photo.webp"  # read, but not written: .png
    assert resolve_output(webp, tmp_path / "out", force=False) == tmp_path / "out.png"
    assert resolve_output(src, tmp_path / "out", force=False, suffixes=(".npy",)) == (
        tmp_path / "out.npy")


def test_an_unknown_suffix_is_refused_listing_the_known_ones(tmp_path: Path, src: Path) -> None:
    with pytest.raises(DataError, match=r"x\.xyz.*\.png, .*\.bmp") as info:
        resolve_output(src, tmp_path / "x.xyz", force=True)
    assert "\n" not in str(info.value)
    assert resolve_output(src, tmp_path / "X.TIFF", force=False) == tmp_path / "X.TIFF"
    with pytest.raises(DataError, match=r"\.npy"):
        resolve_output(src, tmp_path / "s.npy", force=False)
    npy = resolve_output(src, tmp_path / "s.npy", force=False,
                         suffixes=(*IMAGE_SUFFIXES, ".npy"))
    assert npy == tmp_path / "s.npy"


def test_a_folder_is_refused(tmp_path: Path, src: Path) -> None:
    (tmp_path / "somedir").mkdir()
    with pytest.raises(DataError, match="somedir is a folder: give a file name"):
        resolve_output(src, tmp_path / "somedir", force=True)
    with pytest.raises(DataError, match="is a folder"):
        resolve_output(src, f"{tmp_path}/newdir/", force=True)
    (tmp_path / "made.png").mkdir()
    with pytest.raises(DataError, match=r"made\.png is a folder"):
        resolve_output(src, tmp_path / "made", force=True)


def test_the_folder_must_exist(tmp_path: Path, src: Path) -> None:
    with pytest.raises(DataError, match=r"nope does not exist \(for .*nope/o\.png\)"):
        resolve_output(src, tmp_path / "nope" / "o.png", force=False)
    with pytest.raises(DataError, match="is not a folder"):
        resolve_output(src, src / "o.png", force=False)


def test_the_folder_must_be_writable(tmp_path: Path, src: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):  # root writes anywhere: play the read-only folder
            access = os.access
            monkeypatch.setattr(os, "access",
                                lambda p, mode: Path(p) != locked and access(p, mode))
        with pytest.raises(DataError, match=r"locked is not writable"):
            resolve_output(src, locked / "o.png", force=True)
    finally:
        locked.chmod(0o755)


def test_the_input_is_never_the_output(tmp_path: Path, src: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.png").symlink_to(src)
    os.link(src, tmp_path / "hard.png")
    for dst in (src, tmp_path / "in", tmp_path / "sub" / ".." / "in.png",
                tmp_path / "link.png", tmp_path / "hard.png"):
        with pytest.raises(DataError, match="is the input file"):
            resolve_output(src, dst, force=True)
    assert src.read_bytes() == b"input"


def test_an_existing_file_needs_force(tmp_path: Path, src: Path) -> None:
    (tmp_path / "photo.png").write_bytes(b"old")
    with pytest.raises(DataError, match=r"photo\.png exists: pass --force"):
        resolve_output(src, tmp_path / "photo", force=False)
    assert resolve_output(src, tmp_path / "photo", force=True) == tmp_path / "photo.png"
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(DataError, match="exists"):
        resolve_output(src, tmp_path / "dangling.png", force=False)
    assert resolve_output(src, tmp_path / "new.png", force=False) == tmp_path / "new.png"
