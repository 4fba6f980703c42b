"""The margin of a tile, from the kernel and the model (jfb.restore.tile_margin,
jfb.restore.deconvolution_reach, jfb.margins): the rule, and forced tiles that equal
the whole image with the natural model on a 25x25 blur where the old fixed margin of 48 did not."""

from __future__ import annotations

import pytest
import torch

from jfb.deblur import call_physics, restore_tensor, shipped_checkpoint
from jfb.margins import margin_for, prior_reach
from jfb.metrics import psnr
from jfb.physics import Blur, GaussianNoise, Identity, kernels
from jfb.pipeline import load_model
from jfb.restore import MIN_MARGIN, deconvolution_reach, operator_reach, tile_margin


def test_tile_margin_is_four_thirds_of_guard_plus_twice_the_reach_plus_the_prior():
    assert tile_margin(12, 25, 7) == 92  # ceil(4/3 * 69)
    assert tile_margin(15, 88) == 255  # 4/3 * 191 = 254.7
    assert tile_margin(0, 0) == tile_margin(2, 4, 7) == MIN_MARGIN == 48  # at least 48
    with pytest.raises(ValueError, match=">= 0"):
        tile_margin(-1, 3)


def test_the_reach_of_a_ridge_inverse_grows_with_the_blur_and_shrinks_with_rho():
    delta = torch.ones(1, 1)
    assert deconvolution_reach(delta, 0.1) == 0  # the inverse of no blur is pointwise
    gauss = [deconvolution_reach(kernels.gaussian(s, (s - 1) / 6), 0.076) for s in (5, 11, 25)]
    assert gauss[0] < gauss[1] < gauss[2]
    assert 20 <= gauss[2] <= 30  # 25 at the time of writing: about the kernel's width
    shake = kernels.motion(25, seed=0, intensity=0.5)
    assert deconvolution_reach(shake, 0.076) > 2 * gauss[2]  # a motion blur is ill-posed
    assert deconvolution_reach(shake, 0.01) > deconvolution_reach(shake, 0.076)
    small = kernels.centre_pad(kernels.gaussian(5, 0.67), 25)
    per_channel = torch.stack([small, shake, small])
    assert deconvolution_reach(per_channel, 0.076) == deconvolution_reach(shake, 0.076)
    with pytest.raises(ValueError, match="rho must be positive"):
        deconvolution_reach(delta, 0.0)


@pytest.fixture(scope="module")
def natural_model():
    model, cfg, _ = load_model(shipped_checkpoint("natural"))
    return model, cfg


def test_margin_for_follows_the_kernel_the_net_and_the_noise_of_the_call(natural_model):
    model, _ = natural_model
    assert prior_reach(model) == 7  # a DnCNN of 7 3x3 layers
    small, large = (Blur(kernels.gaussian(s, (s - 1) / 6), padding="reflect") for s in (5, 25))

    def margin(op, sigma):
        return margin_for(model, call_physics(model, op, sigma), operator_reach(op.A))

    assert margin(small, 0.01) == MIN_MARGIN
    at_one_percent = margin(large, 0.01)
    assert 80 <= at_one_percent <= 105  # 92: (guard 12 + 2 x 25 + 7) x 4/3
    # less noise: a smaller rho by the model's noise rule, a wider inverse, a wider margin
    assert margin(large, 0.0025) > at_one_percent
    assert margin(Identity(), 0.01) == MIN_MARGIN


def test_forced_tiles_equal_the_whole_image_on_a_25x25_blur(natural_model):
    """The natural model, a 25x25 camera-shake blur with circular padding (the whole-image solve
    converges in about 20 iterations), 64x256 pixels of a built-in photo, forced 128-pixel
    tiles: with the margin of the rule (218 pixels: the strip is too narrow to be cut along
    its length, its two sides joined as the whole image's) the result is the whole image's to
    0.1 dB; with the fixed margin of 48 it was 0.4 dB below (0.27 on a CBSD68 crop;
    docs/BENCHMARKS.md, "Tiles")."""
    from jfb.data.builtin import natural_images

    model, cfg = natural_model
    x = natural_images(["astronaut"])[0][1][:, 224:288, 128:384]
    op = Blur(kernels.motion(25, seed=0, intensity=0.5), padding="circular")
    y = GaussianNoise(0.01)(op.A(x[None]), generator=torch.Generator().manual_seed(0))[0]

    def loss(tile: int, margin: int | None) -> float:  # dB below the whole image
        tiled = restore_tensor(model, cfg, y, op=op, noise=0.01, tile=tile, margin=margin,
                               warn=lambda _line: None)
        return float(psnr(whole[None], x[None]) - psnr(tiled[None], x[None]))

    whole = restore_tensor(model, cfg, y, op=op, noise=0.01, tile=100_000,
                           warn=lambda _line: None)
    assert abs(loss(128, None)) < 0.1
    assert loss(128, 48) > 0.2
