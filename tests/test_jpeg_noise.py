"""A JPEG's compression error counted as noise: its quality read from the file, the rule that
turns the stop-band estimate and the quality into the noise a model is told, and a JPEG restored
with it (``noise="auto"``) better than with the estimate alone, without a noise warning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from jfb.data import load_image, read_photo
from jfb.data.builtin import natural_images
from jfb.data.images import jpeg_quality
from jfb.deblur import restore_file
from jfb.diagnose import input_noise
from jfb.metrics import psnr
from jfb.physics import Blur, Physics, kernels
from jfb.physics.noise import JPEG_NOISE, jpeg_noise_std


def _save(x: torch.Tensor, path, **options):
    Image.fromarray((x.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round()
                    .astype(np.uint8)).save(path, **options)
    return path


@pytest.mark.parametrize("quality", [30, 50, 75, 90, 95])
def test_the_quality_of_a_jpeg_is_read_from_its_luminance_table(tmp_path, quality):
    x = torch.rand(3, 32, 40, generator=torch.Generator().manual_seed(0))
    photo = read_photo(_save(x, tmp_path / "a.jpg", quality=quality))
    assert photo.jpeg_quality == pytest.approx(quality, abs=0.5)
    assert read_photo(_save(x, tmp_path / "a.png")).jpeg_quality is None
    with pytest.raises(ValueError, match="64 entries"):
        jpeg_quality([1] * 63)


def test_the_told_noise_grows_with_the_estimate_and_falls_with_the_quality():
    c, a, b = JPEG_NOISE
    assert jpeg_noise_std(0.0, 100) == 0.0
    assert jpeg_noise_std(0.01, 100) == pytest.approx(c * 0.01)
    assert jpeg_noise_std(0.0, 75) == pytest.approx(a * 25**b)
    told = [jpeg_noise_std(0.003, q) for q in (50, 75, 90, 95, 99)]
    assert all(t1 > t2 for t1, t2 in zip(told, told[1:], strict=False))
    assert jpeg_noise_std(0.02, 90) > jpeg_noise_std(0.005, 90)
    for bad in (0, 101, float("nan")):
        with pytest.raises(ValueError):
            jpeg_noise_std(0.01, bad)


def test_input_noise_of_a_jpeg_is_the_rule_applied_to_the_estimate():
    y = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    op = Blur(kernels.gaussian(5, 5.0), padding="circular")
    seen = input_noise(op, y, 1 / 255)
    assert input_noise(op, y, 1 / 255, jpeg_quality=80) == pytest.approx(
        jpeg_noise_std(seen, 80))


def test_a_jpeg_is_restored_better_told_its_compression_error(tmp_path):
    """Quality 75 hides the noise from the stop-band estimate (it reads less than half the
    truth); told the estimate alone the natural model restores the JPEG's blocks as detail."""
    x = natural_images(["astronaut"])[0][1][:, 80:176, 150:246]
    op = Blur(kernels.gaussian(5, 5.0), padding="circular")
    y = Physics(op, 0.01).measure(x[None], generator=torch.Generator().manual_seed(0))[0]
    src = _save(y, tmp_path / "blurred.jpg", quality=75)
    said, warned = [], []
    out = restore_file(src, tmp_path / "auto.png", kernel="gaussian:5:5", padding="circular",
                       device="cpu", report=said.append, warn=warned.append)
    assert any("JPEG of quality 75" in s for s in said), said
    assert not any("noise std looks like" in w for w in warned), warned
    seen = input_noise(op, load_image(src)[None], 1 / 255)
    assert seen < 0.005  # what the estimate alone would tell the model
    alone = restore_file(src, tmp_path / "alone.png", kernel="gaussian:5:5",
                         padding="circular", device="cpu", noise=seen, warn=lambda s: None)
    ruled, plain = (float(psnr(load_image(p)[None], x[None])) for p in (out, alone))
    assert ruled > plain + 1.0, (ruled, plain)
