"""`jfb deblur` on files as users have them: the output keeps the input's bit depth, channels
and alpha, and output paths are checked before any work."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import jfb.deblur
from jfb.cli import main
from jfb.data import read_photo
from jfb.data.builtin import natural_images
from jfb.physics import Blur, GaussianNoise, kernels


@pytest.fixture(scope="module")
def blurred():
    """A 48x64 crop of a built-in photo, blurred as the default model's task says, as floats."""
    x = natural_images(["coffee"])[0][1][:, 100:148, 200:264]
    y = GaussianNoise(0.005)(Blur(kernels.gaussian(5, 5.0)).A(x[None]),
                             generator=torch.Generator().manual_seed(0))[0]
    return y.clamp(0, 1)


def _run(argv, capsys):
    """``jfb deblur ARGV`` with the face model, whose own blur made ``blurred``."""
    code = main([*argv, "--checkpoint", "faces"])
    out, err = capsys.readouterr()
    return code, out, err


def test_16_bit_grey_in_is_16_bit_grey_out(blurred, tmp_path, capsys):
    grey = (blurred.mean(0).numpy() * 65535).round().astype(np.uint16)
    src = tmp_path / "grey16.png"
    Image.fromarray(grey).save(src)
    code, out, err = _run(["deblur", str(src), "-o", str(tmp_path / "out.png"), "--quiet"], capsys)
    assert code == 0, err
    photo = read_photo(tmp_path / "out.png")
    assert photo.bits == 16 and photo.pixels.shape == (1, 48, 64)
    assert len(np.unique(np.asarray(Image.open(tmp_path / "out.png")))) > 256  # not 8-bit


def test_alpha_is_passed_through_untouched(blurred, tmp_path, capsys):
    rgb = (blurred.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    alpha = np.random.default_rng(0).integers(0, 256, (48, 64), dtype=np.uint8)
    src = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA").save(src)
    code, out, err = _run(["deblur", str(src), "-o", str(tmp_path / "out.png")], capsys)
    assert code == 0, err
    written = np.asarray(Image.open(tmp_path / "out.png"))
    assert written.shape == (48, 64, 4)
    assert np.array_equal(written[..., 3], alpha)
    assert not np.array_equal(written[..., :3], rgb)  # the colours were restored


def test_a_name_without_suffix_never_overwrites_the_input(blurred, tmp_path, capsys,
                                                          monkeypatch):
    src = tmp_path / "photo.png"
    Image.fromarray((blurred.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(src)
    before = src.read_bytes()
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(["deblur", "photo.png", "-o", "photo"], capsys)
    assert code == 2 and "input" in err and src.read_bytes() == before
    code, out, err = _run(["deblur", "photo.png", "-o", "photo", "--force"], capsys)
    assert code == 2 and src.read_bytes() == before
    code, out, err = _run(["deblur", "photo.png", "-o", "sharp", "--quiet"], capsys)
    assert code == 0, err
    assert "written: sharp.png" in out and (tmp_path / "sharp.png").is_file()


@pytest.mark.parametrize(
    ("output", "needle"),
    [("{tmp}/folder", "is a folder"), ("{tmp}/x.xyz", "cannot write .xyz"),
     ("{tmp}/missing/x.png", "folder")],
)
def test_bad_outputs_are_refused_before_any_work(output, needle, blurred, tmp_path, capsys,
                                                 monkeypatch):
    (tmp_path / "folder").mkdir()
    src = tmp_path / "in.png"
    Image.fromarray((blurred.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(src)

    def no_work(*args, **kwargs):
        raise AssertionError("a model was loaded before the output was checked")

    monkeypatch.setattr(jfb.deblur, "load_model", no_work)
    code, out, err = _run(["deblur", str(src), "-o", output.format(tmp=tmp_path), "--force"],
                          capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and needle in lines[0], err


def test_a_photo_far_from_the_model_is_flagged_on_stderr(blurred, tmp_path, capsys):
    noisy = (blurred + 0.04 * torch.randn(blurred.shape, generator=torch.Generator()
                                          .manual_seed(1))).clamp(0, 1)
    src = tmp_path / "noisy.png"
    Image.fromarray((noisy.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(src)
    code, out, err = _run(["deblur", str(src), "-o", str(tmp_path / "o.png")], capsys)
    assert code == 0
    assert "jfb deblur: warning: the input's noise std looks like" in err
    assert "--noise auto" in err
