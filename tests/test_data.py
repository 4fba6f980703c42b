"""Image files, datasets, built-in photos and degraded pairs."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image, ImageFile
from skimage import data as skdata

from jfb.data import (
    EVAL_IMAGES,
    TRAIN_IMAGES,
    DegradedDataset,
    ImageFolder,
    NaturalPatches,
    _png,
    celeba128,
    celeba128_root,
    celeba_original,
    collate_images,
    load_image,
    natural_crops,
    natural_images,
    resize_shorter,
    save_image,
)
from jfb.errors import DataError
from jfb.physics import Blur, GaussianNoise, kernels

RNG = np.random.default_rng(1234)


def _rgb(h: int = 20, w: int = 30) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _chw(a: np.ndarray, peak: float = 255.0) -> torch.Tensor:
    if a.ndim == 2:
        a = a[:, :, None]
    return torch.from_numpy(a.astype(np.float64) / peak).permute(2, 0, 1).float()


# --------------------------------------------------------------------------------- load_image


def test_load_8bit_rgb_grey_and_modes(tmp_path: Path) -> None:
    a = _rgb()
    Image.fromarray(a).save(tmp_path / "c.png")
    x = load_image(tmp_path / "c.png")
    assert x.dtype == torch.float32 and x.shape == (3, 20, 30)
    assert torch.equal(x, _chw(a))
    g = load_image(tmp_path / "c.png", mode="grey")
    expect = (0.299 * _chw(a)[0] + 0.587 * _chw(a)[1] + 0.114 * _chw(a)[2])[None]
    assert g.shape == (1, 20, 30) and torch.allclose(g, expect, atol=1e-6)
    assert torch.equal(load_image(tmp_path / "c.png", mode="keep"), x)

    grey = a[:, :, 0]
    Image.fromarray(grey).save(tmp_path / "g.bmp")
    assert torch.equal(load_image(tmp_path / "g.bmp", mode="keep"), _chw(grey))
    rgb = load_image(tmp_path / "g.bmp")  # default: replicated to 3 channels
    assert rgb.shape == (3, 20, 30) and torch.equal(rgb[0], rgb[2])
    assert torch.equal(load_image(tmp_path / "g.bmp", mode="grey"), _chw(grey))
    with pytest.raises(ValueError, match="mode"):
        load_image(tmp_path / "g.bmp", mode="RGB")


def test_alpha_palette_la_bilevel_jpeg(tmp_path: Path) -> None:
    a = RNG.integers(0, 256, (12, 14, 4), dtype=np.uint8)
    Image.fromarray(a, "RGBA").save(tmp_path / "rgba.png")
    assert torch.equal(load_image(tmp_path / "rgba.png"), _chw(a[:, :, :3]))

    la = a[:, :, :2]
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert torch.equal(load_image(tmp_path / "la.png", mode="keep"), _chw(la[:, :, 0]))

    pal = Image.fromarray(a[:, :, :3]).quantize(16)
    pal.save(tmp_path / "p.png")
    expect = _chw(np.asarray(pal.convert("RGB")))
    assert torch.equal(load_image(tmp_path / "p.png"), expect)
    pal.save(tmp_path / "pt.png", transparency=0)
    assert torch.equal(load_image(tmp_path / "pt.png"), expect)

    bw = Image.fromarray(a[:, :, 0] > 128)
    bw.save(tmp_path / "bw.png")
    assert torch.equal(load_image(tmp_path / "bw.png", mode="keep")[0],
                       torch.from_numpy((a[:, :, 0] > 128).astype(np.float32)))

    Image.fromarray(a[:, :, :3]).save(tmp_path / "c.jpg", quality=90)
    with Image.open(tmp_path / "c.jpg") as im:
        assert torch.equal(load_image(tmp_path / "c.jpg"), _chw(np.asarray(im.convert("RGB"))))


def test_16bit_png_and_tiff_keep_precision(tmp_path: Path) -> None:
    g16 = RNG.integers(0, 65536, (10, 12), dtype=np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")  # written by Pillow (mode I;16)
    x = load_image(tmp_path / "g16.png", mode="keep")
    assert x.shape == (1, 10, 12)
    assert torch.equal(torch.round(x.double() * 65535).long()[0],
                       torch.from_numpy(g16.astype(np.int64)))

    rgb16 = RNG.integers(0, 65536, (10, 12, 3), dtype=np.uint16)
    with open(tmp_path / "rgb16.png", "wb") as f:
        _png.encode(rgb16, f, filter_type=4)
    y = load_image(tmp_path / "rgb16.png")  # Pillow alone would cut this to 8 bits
    assert torch.equal(torch.round(y.double() * 65535).long(),
                       torch.from_numpy(rgb16.astype(np.int64)).permute(2, 0, 1))
    # 16-bit RGBA: alpha dropped, colour kept at 16 bits
    rgba16 = RNG.integers(0, 65536, (6, 7, 4), dtype=np.uint16)
    with open(tmp_path / "rgba16.png", "wb") as f:
        _png.encode(rgba16, f)
    z = load_image(tmp_path / "rgba16.png")
    assert torch.equal(torch.round(z.double() * 65535).long(),
                       torch.from_numpy(rgba16[:, :, :3].astype(np.int64)).permute(2, 0, 1))

    tifffile.imwrite(tmp_path / "rgb16.tif", rgb16)
    tifffile.imwrite(tmp_path / "planar.tiff", np.moveaxis(rgb16, -1, 0), photometric="rgb",
                     planarconfig="separate")
    for name in ("rgb16.tif", "planar.tiff"):
        y = load_image(tmp_path / name)
        assert torch.equal(torch.round(y.double() * 65535).long(),
                           torch.from_numpy(rgb16.astype(np.int64)).permute(2, 0, 1)), name
    f32 = RNG.random((8, 9)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", f32)
    assert torch.equal(load_image(tmp_path / "f.tif", mode="keep")[0], torch.from_numpy(f32))
    tifffile.imwrite(tmp_path / "big.tif", f32 * 3)
    with pytest.raises(DataError, match=r"expected \[0, 1\]"):
        load_image(tmp_path / "big.tif")


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    a = _rgb(10, 16)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(a).save(tmp_path / "o.jpg", exif=exif, quality=95)
    assert load_image(tmp_path / "o.jpg").shape == (3, 16, 10)


def test_png_decoder_matches_pillow_for_every_filter(tmp_path: Path) -> None:
    # Pillow-written files (it uses Sub/Up/Paeth) decoded by our codec agree with Pillow.
    photo = skdata.astronaut()[100:164, 200:260]
    for arr, mode in ((photo, "RGB"), (photo[:, :, 0], "L"),
                      (skdata.camera()[:40, :50].astype(np.uint16) * 257, None)):
        buf = io.BytesIO()
        (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(buf, format="PNG")
        ours = _png.decode(buf.getvalue())
        assert np.array_equal(ours.reshape(arr.shape), arr)
    # our encoder, each filter type, read back by Pillow (8-bit) and by our decoder (16-bit)
    for ftype in range(5):
        buf = io.BytesIO()
        _png.encode(photo, buf, filter_type=ftype)
        with Image.open(io.BytesIO(buf.getvalue())) as im:
            assert np.array_equal(np.asarray(im), photo), ftype
        wide = photo.astype(np.uint16) * 251
        buf = io.BytesIO()
        _png.encode(wide, buf, filter_type=ftype)
        assert np.array_equal(_png.decode(buf.getvalue()), wide), ftype


@pytest.mark.parametrize("global_flag", [False, True])
def test_broken_files_raise_data_error(tmp_path: Path, global_flag: bool) -> None:
    a = _rgb(64, 64)
    Image.fromarray(a).save(tmp_path / "ok.jpg", quality=90)
    Image.fromarray(a).save(tmp_path / "ok.png")
    jpg = (tmp_path / "ok.jpg").read_bytes()
    png = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(jpg[: len(jpg) // 2])
    (tmp_path / "noeoi.jpg").write_bytes(jpg[:-2])
    (tmp_path / "trunc.png").write_bytes(png[: len(png) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image at all")
    (tmp_path / "folder.png").mkdir()
    with open(tmp_path / "rgb16.png", "wb") as f:
        _png.encode(RNG.integers(0, 65536, (8, 8, 3), dtype=np.uint16), f)
    data = bytearray((tmp_path / "rgb16.png").read_bytes())
    data[60] ^= 0xFF  # inside IDAT: the CRC no longer matches
    (tmp_path / "crc16.png").write_bytes(bytes(data))

    old = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = global_flag  # someone else set it: we still refuse
    try:
        cases = {"trunc.jpg": "truncated", "noeoi.jpg": "truncated", "trunc.png": "truncated",
                 "empty.png": "empty", "text.png": "not an image", "folder.png": "not a file",
                 "missing.png": "not found", "crc16.png": "corrupt"}
        for name, msg in cases.items():
            with pytest.raises(DataError, match=msg) as info:
                load_image(tmp_path / name)
            assert name in str(info.value)
        assert ImageFile.LOAD_TRUNCATED_IMAGES is global_flag  # restored
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old


# --------------------------------------------------------------------------------- save_image


def test_save_image_roundtrip_clamp_and_formats(tmp_path: Path) -> None:
    x = torch.rand(3, 9, 11, dtype=torch.float64) * 1.4 - 0.2  # some values out of [0, 1]
    q8 = torch.round(x.clamp(0, 1) * 255) / 255
    out = save_image(x, tmp_path / "a.png")
    assert out == tmp_path / "a.png"
    assert torch.equal(load_image(out).double(), q8.float().double())
    # 16-bit keeps ~1/65535 precision, 8-bit does not
    save_image(x, tmp_path / "b.png", bits=16)
    y16 = load_image(tmp_path / "b.png").double()
    assert (y16 - x.clamp(0, 1)).abs().max() < 1e-4
    assert (q8 - x.clamp(0, 1)).abs().max() > 1e-4
    save_image(x, tmp_path / "b.tif", bits=16)
    assert (load_image(tmp_path / "b.tif").double() - x.clamp(0, 1)).abs().max() < 1e-4
    # grey, (H, W), batch of one, other formats, missing suffix -> .png, nested folder
    save_image(x[0], tmp_path / "sub" / "dir" / "g.bmp")
    assert load_image(tmp_path / "sub" / "dir" / "g.bmp", mode="keep").shape == (1, 9, 11)
    save_image(x[None].float(), tmp_path / "c.tiff")
    assert torch.equal(load_image(tmp_path / "c.tiff"), q8.float())
    assert save_image(x, tmp_path / "noext").name == "noext.png"
    smooth = torch.linspace(0, 1, 32)[None, :, None] * torch.linspace(0.2, 1, 32)[None, None, :]
    smooth = smooth.expand(3, 32, 32)
    save_image(smooth, tmp_path / "j.jpg")
    assert (tmp_path / "j.jpg").read_bytes()[:2] == b"\xff\xd8"  # a JPEG, as the suffix says
    assert (load_image(tmp_path / "j.jpg") - smooth).abs().mean() < 0.01
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_save_image_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported file type"):
        save_image(torch.rand(3, 4, 4), tmp_path / "a.gif")
    with pytest.raises(ValueError, match="16-bit"):
        save_image(torch.rand(3, 4, 4), tmp_path / "a.jpg", bits=16)
    with pytest.raises(ValueError, match="NaN"):
        save_image(torch.full((3, 4, 4), float("nan")), tmp_path / "a.png")
    with pytest.raises(ValueError, match="C in"):
        save_image(torch.rand(2, 4, 4), tmp_path / "a.png")
    with pytest.raises(TypeError):
        save_image(np.zeros((4, 4)), tmp_path / "a.png")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_save_image_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "img.png"
    save_image(torch.zeros(3, 5, 5), target)
    before = target.read_bytes()
    mask = os.umask(0o022)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(_png, "encode", boom)
    with pytest.raises(OSError, match="disk full"):
        save_image(torch.ones(3, 5, 5), target, bits=16)
    assert target.read_bytes() == before  # old file intact
    assert [p.name for p in tmp_path.iterdir()] == ["img.png"]  # no temp file left
    monkeypatch.undo()
    save_image(torch.ones(3, 5, 5), target)
    assert load_image(target).min().item() == 1.0  # replaced


# -------------------------------------------------------------------------------- ImageFolder


def _folder(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    (root / ".hidden").mkdir()
    Image.fromarray(_rgb(40, 50)).save(root / "b.png")
    Image.fromarray(_rgb(30, 36)).save(root / "A.PNG")
    Image.fromarray(_rgb(32, 32)).save(root / "sub" / "c.jpg")
    Image.fromarray(_rgb(32, 32)).save(root / ".hidden" / "h.png")
    Image.fromarray(_rgb(32, 32)).save(root / ".skip.png")
    (root / "notes.txt").write_text("hello")
    return root


def test_image_folder_listing(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    ds = ImageFolder(root)
    assert [p.relative_to(root).as_posix() for p in ds.files] == ["A.PNG", "b.png", "sub/c.jpg"]
    assert len(ImageFolder(root, recursive=False)) == 2
    assert [p.name for p in ImageFolder(root, extensions=("jpg",)).files] == ["c.jpg"]
    assert [p.name for p in ImageFolder(root, extensions=".png").files] == ["A.PNG", "b.png"]
    assert ds[1].shape == (3, 40, 50) and ds[-1].shape == (3, 32, 32)
    assert ImageFolder(root, mode="grey")[0].shape == (1, 30, 36)
    with pytest.raises(IndexError):
        ds[3]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        ImageFolder(tmp_path / "empty")
    with pytest.raises(DataError, match="not found"):
        ImageFolder(tmp_path / "nope")
    with pytest.raises(DataError, match="no images"):
        ImageFolder(root, extensions=("gif",))


def test_image_folder_crops_and_resize(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    full = ImageFolder(root)
    ds = ImageFolder(root, crop=24)
    for i in range(3):
        x, f = ds[i], full[i]
        H, W = f.shape[-2:]
        t, l = (H - 24) // 2, (W - 24) // 2
        assert torch.equal(x, f[:, t : t + 24, l : l + 24])
    assert ImageFolder(root, crop=(20, 28))[1].shape == (3, 20, 28)
    with pytest.raises(DataError, match="smaller than the crop"):
        ImageFolder(root, crop=33)[2]
    # resize the shorter side, then crop: every image reaches 36x36
    rs = ImageFolder(root, resize=36, crop=36)
    assert all(rs[i].shape == (3, 36, 36) for i in range(3))
    assert ImageFolder(root, resize=20)[1].shape == (3, 20, 25)
    with pytest.raises(ValueError, match="random_crop"):
        ImageFolder(root, random_crop=True)


def test_random_crops_global_rng_and_seeded(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    ds = ImageFolder(root, crop=16, random_crop=True)
    torch.manual_seed(0)
    a = [ds[1] for _ in range(4)]
    torch.manual_seed(0)
    b = [ds[1] for _ in range(4)]
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not all(torch.equal(a[0], u) for u in a[1:])  # fresh crops on each read
    full = ImageFolder(root)[1]
    windows = full.unfold(1, 16, 1).unfold(2, 16, 1)  # every 16x16 window of the image
    assert any(torch.equal(windows[:, i, j], a[0]) for i in range(windows.shape[1])
               for j in range(windows.shape[2]))

    s1 = ImageFolder(root, crop=16, random_crop=True, seed=7)
    s2 = ImageFolder(root, crop=16, random_crop=True, seed=7)
    torch.manual_seed(1)
    first = s1[1]
    torch.manual_seed(2)
    assert torch.equal(first, s2[1]) and torch.equal(first, s1[1])  # independent of torch RNG
    s1.set_epoch(1)
    assert not torch.equal(first, s1[1])
    s3 = ImageFolder(root, crop=16, random_crop=True, seed=8)
    assert not all(torch.equal(s3[i], s2[i]) for i in range(3))


def test_on_error_raise_and_skip(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = ImageFolder(root)
    assert len(ds) == 4 and ds.skipped == 0
    with pytest.raises(DataError, match="broken.png"):
        ds[2]
    with pytest.warns(UserWarning, match="skipped 1"):
        sk = ImageFolder(root, on_error="skip")
    assert len(sk) == 3 and sk.skipped == 1
    assert sk.skipped_files[0][0].name == "broken.png"
    with pytest.raises(ValueError, match="on_error"):
        ImageFolder(root, on_error="ignore")
    bad = tmp_path / "allbad"
    bad.mkdir()
    (bad / "x.jpg").write_bytes(b"nope")
    with pytest.warns(UserWarning), pytest.raises(DataError, match="could be read"):
        ImageFolder(bad, on_error="skip")


def test_collate_images_explains_mixed_sizes(tmp_path: Path) -> None:
    ds = ImageFolder(_folder(tmp_path))
    with pytest.raises(DataError, match="crop="):
        collate_images([ds[0], ds[1]])
    batch = collate_images([(ds[2], ds[2] * 0.5), (ds[2], ds[2])])
    assert isinstance(batch, tuple) and batch[0].shape == (2, 3, 32, 32)
    assert torch.equal(batch[1][0], ds[2] * 0.5)


def test_resize_shorter() -> None:
    x = torch.rand(3, 40, 60)
    y = resize_shorter(x, 20)
    assert y.shape == (3, 20, 30) and y.min() >= 0 and y.max() <= 1
    const = torch.full((1, 40, 60), 0.3)
    assert torch.allclose(resize_shorter(const, 10), torch.full((1, 10, 15), 0.3), atol=1e-6)
    assert resize_shorter(x, 40) is x


# ------------------------------------------------------------------------------------- CelebA


def _shared_celeba() -> Path:
    try:
        return celeba128_root()
    except DataError as exc:
        pytest.skip(f"CelebA-128 not available beside the repository: {exc}")


def test_celeba128_finds_shared_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JFB_CELEBA_ROOT", raising=False)
    root = _shared_celeba()
    train, val = celeba128("train"), celeba128("val")
    assert len(train) == 8000 and len(val) == 1000
    assert train.files[0].name == "000001.jpg" and val.files[0].name == "008001.jpg"
    assert val.files[-1].name == "009000.jpg"
    x = val[0]
    assert x.shape == (3, 128, 128) and x.dtype == torch.float32
    assert torch.equal(x, load_image(root / "val" / "008001.jpg"))
    assert celeba128("train", crop=64)[0].shape == (3, 64, 64)
    with pytest.raises(ValueError, match="split"):
        celeba128("test")


def test_celeba128_root_env_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "c128"
    (fake / "val").mkdir(parents=True)
    Image.fromarray(_rgb(128, 128)).save(fake / "val" / "008001.jpg")
    monkeypatch.setenv("JFB_CELEBA_ROOT", str(fake))
    assert celeba128_root() == fake
    assert len(celeba128("val")) == 1
    with pytest.raises(DataError, match="split folder not found"):
        celeba128("train")
    monkeypatch.setenv("JFB_CELEBA_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="JFB_CELEBA_ROOT"):
        celeba128_root()
    monkeypatch.delenv("JFB_CELEBA_ROOT")
    with pytest.raises(DataError, match="JFB_CELEBA_ROOT"):
        celeba128_root(tmp_path / "nowhere")
    assert len(celeba128("val", root=fake)) == 1


def test_celeba_original_layout(tmp_path: Path) -> None:
    root = tmp_path / "celeba"
    (root / "img_align_celeba").mkdir(parents=True)
    originals = {}
    parts = {"000001.jpg": 0, "000002.jpg": 0, "000003.jpg": 1, "000004.jpg": 2, "000005.jpg": 0}
    for name in parts:
        a = _rgb(218, 178)
        Image.fromarray(a).save(root / "img_align_celeba" / name, quality=95)
        originals[name] = root / "img_align_celeba" / name
    lines = [f"{n} {p}" for n, p in reversed(list(parts.items()))]  # unsorted on purpose
    (root / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")

    train = celeba_original(root, "train")
    assert [p.name for p in train.files] == ["000001.jpg", "000002.jpg", "000005.jpg"]
    assert [p.name for p in celeba_original(root, "val").files] == ["000003.jpg"]
    assert [p.name for p in celeba_original(root, "test").files] == ["000004.jpg"]
    with Image.open(originals["000002.jpg"]) as im:
        ref = im.convert("RGB").crop((0, 20, 178, 198)).resize((128, 128), Image.BICUBIC)
    x = train[1]
    assert x.shape == (3, 128, 128)
    assert torch.equal(x, _chw(np.asarray(ref)))
    assert celeba_original(root, "train", size=64)[0].shape == (3, 64, 64)
    assert torch.equal(pickle.loads(pickle.dumps(train))[1], x)  # DataLoader workers can get it
    assert celeba_original(root, "train", crop=100)[0].shape == (3, 100, 100)

    with pytest.raises(ValueError, match="split"):
        celeba_original(root, "validation")
    (root / "list_eval_partition.txt").write_text("000001.jpg 0\n000009.jpg 0\n")
    with pytest.raises(DataError, match="missing"):
        celeba_original(root, "train")
    (root / "list_eval_partition.txt").write_text("000001.jpg zero\n")
    with pytest.raises(DataError, match=":1:"):
        celeba_original(root, "train")
    (root / "list_eval_partition.txt").unlink()
    with pytest.raises(DataError, match="partition file not found"):
        celeba_original(root, "train")


# ---------------------------------------------------------------------------- built-in photos


def test_natural_images_are_the_skimage_photos() -> None:
    imgs = dict(natural_images(["astronaut", "camera", "rocket"]))
    assert torch.equal(imgs["astronaut"], _chw(skdata.astronaut()))
    assert torch.equal(imgs["rocket"], _chw(skdata.rocket()))
    cam = imgs["camera"]
    assert cam.shape == (3, 512, 512) and torch.equal(cam[0], cam[1])
    assert torch.equal(cam[:1], _chw(skdata.camera()))
    assert natural_images(["camera"], mode="keep")[0][1].shape == (1, 512, 512)
    assert natural_images(["coffee"], mode="grey")[0][1].shape == (1, 400, 600)
    # the cache is never handed out: editing a result does not change the next one
    imgs["astronaut"].zero_()
    assert natural_images(["astronaut"])[0][1].max() > 0
    with pytest.raises(ValueError, match="unknown built-in"):
        natural_images(["lena"])
    assert set(EVAL_IMAGES).isdisjoint(TRAIN_IMAGES)
    assert [n for n, _ in natural_images()] == list(EVAL_IMAGES + TRAIN_IMAGES)


def test_natural_crops() -> None:
    crops = natural_crops(256)
    assert len(crops) == len(EVAL_IMAGES) and crops.names == list(EVAL_IMAGES)
    assert all(crops[i].shape == (3, 256, 256) for i in range(len(crops)))
    chelsea = _chw(skdata.chelsea())  # 300 x 451
    t, l = (300 - 256) // 2, (451 - 256) // 2
    assert torch.equal(crops[EVAL_IMAGES.index("chelsea")], chelsea[:, t : t + 256, l : l + 256])
    small = natural_crops(64, names=["coffee", "brick"])
    assert small.names == ["coffee", "brick"] and small[1].shape == (3, 64, 64)
    grey = natural_crops(64, names=["coffee"], mode="grey")
    assert grey[0].shape == (1, 64, 64)
    assert torch.allclose(grey[0], (small[0] * torch.tensor([0.299, 0.587, 0.114])[:, None, None])
                          .sum(0, keepdim=True), atol=1e-6)
    with pytest.raises(DataError, match="smaller than the crop"):
        natural_crops(320)


def test_natural_patches_fixed_by_seed() -> None:
    a = NaturalPatches(size=32, n=20, seed=3)
    b = NaturalPatches(size=32, n=20, seed=3)
    c = NaturalPatches(size=32, n=20, seed=4)
    assert len(a) == 20 and a[0].shape == (3, 32, 32)
    assert all(torch.equal(a[i], b[i]) for i in range(20))
    assert not all(torch.equal(a[i], c[i]) for i in range(20))
    assert {s[0] for s in a.specs} <= set(TRAIN_IMAGES) and all(s[3] == 0 for s in a.specs)
    full = dict(natural_images(TRAIN_IMAGES))
    name, top, left, _ = a.specs[5]
    assert torch.equal(a[5], full[name][:, top : top + 32, left : left + 32])
    only = NaturalPatches(size=16, n=10, names=["moon"])
    assert {s[0] for s in only.specs} == {"moon"}

    aug = NaturalPatches(size=32, n=40, seed=3, augment=True)
    ks = [s[3] for s in aug.specs]
    assert len(set(ks)) > 3
    i = next(j for j, k in enumerate(ks) if k == 5)  # rot90 once, then flip
    name, top, left, _ = aug.specs[i]
    plain = full[name][:, top : top + 32, left : left + 32]
    assert torch.equal(aug[i], torch.flip(torch.rot90(plain, 1, dims=(-2, -1)), dims=(-1,)))
    keep = NaturalPatches(size=8, n=30, seed=0, mode="keep")
    assert {keep[i].shape[0] for i in range(30)} == {1, 3}  # grey photos stay grey
    assert all(x.shape[0] == 1 for x in NaturalPatches(size=8, n=5, mode="grey"))
    with pytest.raises(ValueError, match="size"):
        NaturalPatches(size=0)


# ------------------------------------------------------------------------------ degraded pairs


def test_degraded_dataset_seeded_and_fresh_noise() -> None:
    clean = natural_crops(48, names=["astronaut", "coffee", "brick"])
    op = Blur(kernels.gaussian(5, 2.0))
    noise = GaussianNoise(0.05)
    ev1 = DegradedDataset(clean, op, noise, seed=0)
    ev2 = DegradedDataset(clean, op, noise, seed=0)
    x, y = ev1[1]
    assert torch.equal(x, clean[1])
    assert torch.equal(y, ev1[1][1]) and torch.equal(y, ev2[1][1])  # identical every call
    n = y - op.A(x[None])[0]
    assert abs(n.std().item() - 0.05) < 0.005
    # item i uses torch.Generator().manual_seed(seed + i)
    expect = 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(n, expect, atol=1e-6)
    shifted = DegradedDataset(clean, op, noise, seed=1)
    n0 = shifted[0][1] - op.A(clean[0][None])[0]
    assert torch.allclose(n0, expect, atol=1e-6)
    assert torch.equal(ev1[-1][1], ev1[2][1])

    train = DegradedDataset(clean, op, noise)  # seed None: fresh noise each call
    assert not torch.equal(train[0][1], train[0][1])
    noiseless = DegradedDataset(clean, op, GaussianNoise(0.0))
    assert torch.allclose(noiseless[0][1], op.A(clean[0][None])[0])
    with pytest.raises(TypeError, match="A"):
        DegradedDataset(clean, lambda t: t, noise)
    with pytest.raises(ValueError, match="seed"):
        DegradedDataset(clean, op, noise, seed=-1)
    with pytest.raises(IndexError):
        ev1[3]


def test_degraded_dataset_in_a_dataloader() -> None:
    clean = NaturalPatches(size=24, n=6, seed=0)
    ds = DegradedDataset(clean, Blur(kernels.gaussian(3, 1.0)), GaussianNoise(0.01), seed=5)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate_images)
    xs, ys = next(iter(loader))
    assert xs.shape == ys.shape == (4, 3, 24, 24)
    assert torch.equal(ys[2], ds[2][1])
    assert torch.equal(pickle.loads(pickle.dumps(ds))[3][1], ds[3][1])
