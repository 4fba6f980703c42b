"""Saying when a result cannot be trusted (jfb.diagnose), the noise estimate through the blur
with the files' rounding taken out, and palette images restored with their estimated noise."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from jfb.data import load_image
from jfb.data.builtin import natural_images
from jfb.deblur import restore_file, restore_tensor, shipped_checkpoint
from jfb.diagnose import data_misfit, trust_warnings
from jfb.errors import TrustWarning
from jfb.metrics import psnr
from jfb.physics import (
    Blur,
    GaussianNoise,
    Identity,
    estimate_noise_std,
    kernels,
    quantisation_step,
)
from jfb.pipeline import load_model

GAUSS5 = kernels.gaussian(5, 5.0)


def _eight_bit(y: torch.Tensor) -> torch.Tensor:
    return (y.clamp(0, 1) * 255).round() / 255


def test_quantisation_step_is_read_from_the_values():
    g = torch.Generator().manual_seed(0)
    assert quantisation_step(torch.randint(0, 256, (3, 8, 8), generator=g) / 255) == 1 / 255
    assert quantisation_step(torch.randint(0, 65536, (3, 8, 8), generator=g) / 65535) == 1 / 65535
    assert quantisation_step(torch.rand(3, 8, 8, generator=g)) == 0.0


def test_rounding_is_taken_out_of_the_estimate():
    g = torch.Generator().manual_seed(0)
    y = _eight_bit(0.5 + 0.005 * torch.randn(1, 3, 256, 256, generator=g))
    # the Haar estimate: the median of coefficients on a lattice, interpolated
    assert abs(float(estimate_noise_std(y, step=1 / 255)[0]) / 0.005 - 1) < 0.03
    assert abs(float(estimate_noise_std(y)[0]) / 0.005 - 1) > 0.10  # the lattice's median
    # through a blur's stop band: the rounding's variance step^2 / 12 comes out
    y = _eight_bit(0.5 + 0.002 * torch.randn(1, 3, 256, 256, generator=g))
    box = torch.ones(5, 5) / 25
    assert abs(float(estimate_noise_std(y, box, 1 / 255)[0]) / 0.002 - 1) < 0.03
    assert float(estimate_noise_std(y, box)[0]) > 1.1 * 0.002


@pytest.mark.parametrize("sigma", [0.005, 0.01])
def test_the_estimate_through_the_blur_is_within_10_percent_on_every_built_in_photo(sigma):
    op = Blur(GAUSS5)
    g = torch.Generator().manual_seed(1)
    for name, x in natural_images():
        x = x[:, :256, :256]
        y = _eight_bit(GaussianNoise(sigma)(op.A(x[None]), generator=g))
        est = float(estimate_noise_std(y, GAUSS5, quantisation_step(y))[0])
        assert abs(est / sigma - 1) < 0.10, (name, est)
        if name == "grass" and sigma == 0.005:  # texture survives the blur: the Haar
            assert float(estimate_noise_std(y, step=1 / 255)[0]) > 1.2 * sigma  # estimate sees it


def test_a_kernel_without_a_stop_band_falls_back_to_the_haar_estimate():
    y = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    identity = torch.ones(1, 1)
    torch.testing.assert_close(estimate_noise_std(y, identity), estimate_noise_std(y))


@pytest.fixture(scope="module")
def default_model():
    model, cfg, _ = load_model(shipped_checkpoint("faces"))
    return model, cfg


@pytest.fixture(scope="module")
def photo():
    return natural_images(["coffee"])[0][1][:, 100:196, 200:296]


def _measure(x, kernel, sigma, seed=0):
    y = GaussianNoise(sigma)(Blur(kernel).A(x[None]), generator=torch.Generator().manual_seed(seed))
    return _eight_bit(y)[0]


def test_the_right_model_gives_no_warning(default_model, photo):
    model, cfg = default_model
    y = _measure(photo, GAUSS5, 0.005)
    said = []
    restore_tensor(model, cfg, y, warn=said.append)
    assert said == []


def test_a_solve_stopped_by_its_iteration_cap_is_said_whole_and_in_tiles(photo):
    """The result of a solve that hit its cap short of the tolerance is not the model's fixed
    point: one line says so (the right model, blur and noise otherwise give none, above)."""
    model, cfg, _ = load_model(shipped_checkpoint("faces"), eval_max_iter=2)
    y = _measure(photo, GAUSS5, 0.005)
    whole, tiled = [], []
    restore_tensor(model, cfg, y, warn=whole.append)
    restore_tensor(model, cfg, y, warn=tiled.append, tile=48, margin=16)
    assert [s for s in whole if "iteration cap (2)" in s and "tiles" not in s], whole
    assert [s for s in tiled if re.search(r"iteration cap \(2\) in \d+ of \d+ tiles", s)], tiled
    assert all("not the model's fixed point" in s for s in whole + tiled if "cap" in s)


def test_a_much_noisier_input_is_flagged_with_the_noise_to_give(default_model, photo):
    model, cfg = default_model
    y = _measure(photo, GAUSS5, 0.03)
    said = []
    restore_tensor(model, cfg, y, warn=said.append)
    noise = [s for s in said if "noise std looks like" in s]
    assert len(noise) == 1 and "--noise auto" in noise[0], said
    assert "looks like 0.03" in noise[0] or "looks like 0.02" in noise[0], noise
    told = []
    restore_tensor(model, cfg, y, noise="auto", warn=told.append)
    assert not any("noise std looks like" in s for s in told), told


def test_the_noise_is_read_once_when_estimated(default_model, photo, monkeypatch):
    """--noise auto reads the input's noise once: the trust check reuses it (an FFT of the whole
    image), and without auto the check still reads it."""
    import jfb.diagnose

    model, cfg = default_model
    y = _measure(photo, GAUSS5, 0.03)
    calls = []
    real = jfb.diagnose.estimate_noise_std
    monkeypatch.setattr(jfb.diagnose, "estimate_noise_std",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    told = []
    restore_tensor(model, cfg, y, noise="auto", warn=told.append)
    assert len(calls) == 1 and told == []
    restore_tensor(model, cfg, y, warn=told.append)
    assert len(calls) == 2 and any("noise std looks like" in s for s in told), told


def test_a_wrong_kernel_shows_in_the_data_misfit(default_model, photo):
    model, cfg = default_model
    sharp = _eight_bit(GaussianNoise(0.005)(photo[None], generator=torch.Generator()
                                                     .manual_seed(0)))[0]
    said = []
    restore_tensor(model, cfg, sharp, warn=said.append)
    assert any("does not explain the input" in s and "--kernel" in s for s in said), said
    with pytest.warns(TrustWarning, match="does not explain"):
        restore_tensor(model, cfg, sharp)  # Python warnings when no `warn` is given


def test_the_misfit_ignores_clipped_pixels_and_the_border():
    op = Identity()
    y = torch.full((1, 1, 20, 20), 0.5)
    x = y.clone()
    x[..., :2, :] += 0.3  # off only at the border
    assert data_misfit(op, x, y, border=2) == 0.0
    assert data_misfit(op, x, y) > 0.05  # 0.3 on 2 of 20 rows
    y2 = y.clone()
    y2[..., 10, 10] = 1.0  # clipped: y = A x + n does not hold there
    assert data_misfit(op, y.clone(), y2) == 0.0
    said = trust_warnings(op, x, y, sigma=0.01)
    assert len(said) == 2 and "does not explain" in said[0]
    assert "noise std looks like 0," in said[1]  # a constant y has no noise


def test_a_noise_level_given_for_one_image_does_not_stick(default_model, photo):
    model, cfg = default_model
    y = _measure(photo, GAUSS5, 0.02)
    before = model.rho_factor
    restore_tensor(model, cfg, y, noise=0.02, warn=lambda s: None)
    assert model.rho_factor == before


def test_a_palette_photo_is_restored_with_its_estimated_noise(tmp_path):
    photo = natural_images(["astronaut"])[0][1][:, 96:256, 160:320]
    y = _measure(photo, GAUSS5, 0.005)
    rgb = (y.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    src = tmp_path / "pal.png"
    Image.fromarray(rgb).quantize(256, dither=Image.Dither.FLOYDSTEINBERG).save(src)
    said = []
    dst = restore_file(src, tmp_path / "out", report=said.append, device="cpu",
                       checkpoint="faces")
    assert dst == tmp_path / "out.png"
    assert any("palette image" in s for s in said) and any("estimated noise std" in s
                                                            for s in said), said
    given = restore_file(src, tmp_path / "plain.png", noise=0.005, device="cpu",
                         warn=lambda s: None, checkpoint="faces")
    out, plain = load_image(dst)[None], load_image(given)[None]
    palette_in = load_image(src)[None]
    assert float(psnr(out, photo[None])) > float(psnr(palette_in, photo[None])) + 1
    assert float(psnr(out, photo[None])) > float(psnr(plain, photo[None])) + 0.5


def test_a_model_told_the_noise_when_loaded_assumes_that_noise(photo):
    model, cfg, _ = load_model(shipped_checkpoint("faces"), noise=0.02)
    y = _measure(photo, GAUSS5, 0.02)
    said = []
    restore_tensor(model, cfg, y, warn=said.append)
    assert not any("noise std looks like" in s for s in said), said
