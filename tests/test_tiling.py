"""Tiled restoration (jfb.restore): tiles whose borders assume nothing about the outside agree
with the whole-image solve; the plan, the windows, the operator's reach and the memory budget."""

from __future__ import annotations

import pytest
import torch

from jfb.deblur import memory_per_pixel, restore_tensor, shipped_checkpoint
from jfb.metrics import psnr
from jfb.physics import Blur, Downsample, GaussianNoise, Identity, Mask, kernels
from jfb.physics.compose import Composed
from jfb.pipeline import load_model
from jfb.restore import (
    operator_reach,
    plan_tiles,
    restore_tiled,
    tile_for_budget,
    window_for,
)


def _pixelwise(t, window, aux):
    return 2 * t + 1


def test_plan_partitions_the_image_and_contexts_stop_at_its_borders():
    boxes = plan_tiles(70, 90, 32, 8)
    covered = torch.zeros(70, 90, dtype=torch.int64)
    for b in boxes:
        covered[b.r0 : b.r1, b.c0 : b.c1] += 1
        assert b.r1 - b.r0 <= 32 and b.c1 - b.c0 <= 32
        assert b.R0 == max(0, b.r0 - 8) and b.R1 == min(70, b.r1 + 8)
        assert b.C0 == max(0, b.c0 - 8) and b.C1 == min(90, b.c1 + 8)
    assert bool((covered == 1).all())  # cores partition the image
    assert len(plan_tiles(30, 30, 32, 8)) == 1


def test_periodic_contexts_wrap_around_the_image_or_take_a_whole_dimension():
    boxes = plan_tiles(70, 40, 32, 8, periodic=True)
    assert len(boxes) == 3 * 2
    first = boxes[0]
    assert (first.R0, first.R1, first.C0, first.C1) == (-8, 31, -8, 28)
    # it holds rows 0..30 and 62..69, in the image's order: open in the middle, not at its ends
    rows, cols = first.layout(70, 40)
    assert list(rows) == [*range(31), *range(62, 70)] and list(cols) == [*range(28), *range(32, 40)]
    assert first.open_cuts(70, 40) == ((31,), (28,))
    assert boxes[2].open_cuts(70, 40) == ((0, 40), (28,))  # rows 15..54: open at both ends
    covered = torch.zeros(70, 40, dtype=torch.int64)
    for b in boxes:
        covered[b.r0 : b.r1, b.c0 : b.c1] += 1
    assert bool((covered == 1).all())
    # 2 columns of 20 with 2 x 12 of margin would cover all 40: that dimension is not cut
    narrow = plan_tiles(70, 40, 32, 12, periodic=True)
    assert len(narrow) == 3 and all((b.c0, b.c1, b.C0, b.C1) == (0, 40, 0, 40) for b in narrow)
    assert narrow[0].open_cuts(70, 40) == ((35,), ())
    assert len(plan_tiles(30, 30, 32, 8, periodic=True)) == 1


def test_window_is_unobserved_only_on_sides_inside_the_image():
    boxes = plan_tiles(64, 64, 32, 8)
    first = boxes[0]  # top-left: open at the bottom and on the right
    w = window_for(first, 64, 64, 3)[0, 0]
    assert first.open_cuts(64, 64) == ((40,), (40,))
    assert bool((w[-3:, :] == 0).all()) and bool((w[:, -3:] == 0).all())
    assert bool((w[:-3, :-3] == 1).all())
    assert bool((window_for(first, 64, 64, 0) == 1).all())


@pytest.mark.parametrize(("guard", "periodic"), [(0, False), (3, False), (3, True)])
def test_pixelwise_methods_are_exact_and_upscaling_places_tiles(guard, periodic):
    torch.manual_seed(0)
    y = torch.rand(3, 70, 90)
    out = restore_tiled(_pixelwise, y, tile=32, margin=8, guard=guard, periodic=periodic)
    assert torch.allclose(out, 2 * y + 1, atol=1e-6)

    def up4(t, window, aux):
        return t.repeat_interleave(4, -2).repeat_interleave(4, -1)

    up = restore_tiled(up4, y, tile=32, margin=8, guard=guard, periodic=periodic)
    assert torch.allclose(up, y.repeat_interleave(4, -2).repeat_interleave(4, -1), atol=1e-6)


def test_periodic_tiles_see_the_opposite_border_as_a_circular_blur_does():
    torch.manual_seed(0)
    y = torch.rand(3, 70, 90)
    blur = Blur(kernels.gaussian(5, 1.0), padding="circular")  # reach 2 < margin - feather

    def blurred(periodic):
        return restore_tiled(lambda t, w, a: blur.A(t), y, tile=32, margin=8, periodic=periodic)

    assert torch.allclose(blurred(True), blur.A(y[None])[0], atol=1e-5)
    assert not torch.allclose(blurred(False), blur.A(y[None])[0], atol=1e-2)


def test_aux_tiles_follow_their_contexts_and_bad_arguments_are_refused():
    torch.manual_seed(0)
    y = torch.rand(3, 70, 90)
    mask = (torch.rand(1, 1, 70, 90) > 0.5).float()
    for periodic in (False, True):
        out = restore_tiled(lambda t, w, m: t * m, y, tile=32, margin=8, aux=mask,
                            periodic=periodic)
        assert torch.allclose(out, y * mask[0], atol=1e-6)  # each tile saw its part of the mask
    with pytest.raises(ValueError, match="aux must be"):
        restore_tiled(lambda t, w, m: t, y, tile=32, margin=8, aux=mask[..., :-1])
    with pytest.raises(ValueError, match="guard"):
        restore_tiled(_pixelwise, y, tile=32, margin=4, guard=5)
    with pytest.raises(ValueError, match="one integer factor"):
        restore_tiled(lambda t, w, m: t[..., 1:], y, tile=32, margin=8)


def test_every_tile_gets_the_window_of_its_context():
    y = torch.ones(1, 40, 40)
    seen = []

    def record(t, window, aux):
        seen.append((t.shape[0], tuple(window.shape), float(window.sum())))
        assert bool((t == t * window).all())  # y is zero where unobserved
        return t

    restore_tiled(record, y, tile=20, margin=10, guard=2)
    assert sum(n for n, _, _ in seen) == 4
    # every context is 30x30 and open on two sides: 30*30 - 2*2*30 + 2*2 pixels observed
    assert all(shape == (1, 1, 30, 30) and total == 30 * 30 - 4 * 30 + 4
               for _, shape, total in seen)


@pytest.mark.parametrize(
    ("op", "scale", "reach"),
    [
        (Blur(kernels.gaussian(5, 5.0)), 1, 2),
        (Blur(kernels.gaussian(5, 5.0), padding="circular"), 1, 2),
        (Blur(torch.ones(3, 9) / 27), 1, 4),
        (Identity(), 1, 0),
        (Mask(torch.ones(1, 1, 64, 64)), 1, 0),
        (Downsample(2, "box"), 2, 0),
    ],
)
def test_operator_reach(op, scale, reach):
    if isinstance(op, Mask):  # a mask has a fixed size: probe it through its own A on crops
        assert operator_reach(lambda x: x * 1.0, scale=scale) == reach
        return
    assert operator_reach(op.A, scale=scale) == reach


def test_operator_reach_of_a_gaussian_downsampling_covers_its_filter():
    # x2 keeps fine pixel 2i of a 5-tap filter: y_i reads x_{2i-2..2i+2}, so only the first
    # and the last coarse pixels read beyond the image
    assert operator_reach(Downsample(2, "gaussian").A, scale=2) == 1
    assert operator_reach(Downsample(4, "gaussian").A, scale=4) == 1  # 9 taps, x_{4i-4..4i+4}
    assert operator_reach(Downsample(2, "gaussian").blur.A) == 2  # the filter alone: 5 taps


def test_non_local_operators_are_refused():
    with pytest.raises(ValueError, match="reach exceeds"):
        operator_reach(lambda x: x + x.mean(), limit=32)


def test_tile_for_budget():
    assert tile_for_budget(100, 100, bytes_per_pixel=10, budget=1e5, margin=8) is None
    side = tile_for_budget(1000, 1000, bytes_per_pixel=10, budget=1e6, margin=8)
    assert side == int(1e5**0.5) - 16
    assert tile_for_budget(500, 500, bytes_per_pixel=10, budget=4e6, margin=8, scale=4) == 158 - 16
    with pytest.raises(ValueError, match="too small"):
        tile_for_budget(1000, 1000, bytes_per_pixel=10, budget=1e4, margin=8)


@pytest.fixture(scope="module")
def default_model():
    model, cfg, _ = load_model(shipped_checkpoint("faces"))
    return model, cfg


@pytest.fixture(scope="module")
def blurred_photo(default_model):
    from jfb.data.builtin import natural_images

    x = natural_images(["astronaut"])[0][1][:, 160:224, 160:288]
    op = default_model[0].op
    g = torch.Generator().manual_seed(0)
    return x, GaussianNoise(0.005)(op.A(x[None]), generator=g)[0]


def test_tiles_match_the_whole_image_solve(default_model, blurred_photo):
    """The trained default model (DE-ADMM), 64x128 pixels in 2 tiles of 64 with 32 of context:
    a tile solved as if the image ended at its border (zero padding there) is off by far more;
    tiles with an unobserved frame as wide as the blur's reach agree with the whole image."""
    model, cfg = default_model
    x, y = blurred_photo
    whole = restore_tensor(model, cfg, y)
    tiled = restore_tensor(model, cfg, y, tile=64, margin=32)
    assert float(psnr(tiled[None], whole[None])) > 40
    assert float(psnr(whole[None], x[None])) > float(psnr(y.clamp(0, 1)[None], x[None])) + 3

    def as_if_the_image_ended(tiles, window, aux):  # the old tiling: no unobserved frame
        return model(tiles)

    with torch.no_grad():
        naive = restore_tiled(as_if_the_image_ended, y, tile=64, margin=32).clamp(0, 1)
    assert float(psnr(naive[None], whole[None])) < 35


def test_the_memory_budget_decides_between_whole_and_tiles(default_model, blurred_photo):
    model, cfg = default_model
    _, y = blurred_photo
    said = []
    restore_tensor(model, cfg, y, max_memory=1e12, report=said.append)
    assert not any("tiles" in s for s in said)
    per_pixel = memory_per_pixel(model)
    budget = per_pixel * (64 + 2 * 8) ** 2  # room for a 64-pixel core and its margins only
    tiled = restore_tensor(model, cfg, y, max_memory=budget, margin=8, report=said.append)
    assert any("2 tiles of up to 64x64" in s for s in said), said
    assert tiled.shape == y.shape
    assert 500 < per_pixel < 5000  # DE-ADMM, Anderson m=5, 32 channels: about 1.2 kB measured


def test_a_grey_input_gives_a_grey_result(default_model, blurred_photo):
    model, cfg = default_model
    _, y = blurred_photo
    grey = restore_tensor(model, cfg, y.mean(0, keepdim=True), tile=64, margin=16)
    assert grey.shape == (1, *y.shape[-2:])


def test_composed_operator_is_adjoint():
    g = torch.Generator().manual_seed(0)
    w = (torch.rand(1, 1, 20, 24, generator=g) > 0.3).float()
    op = Composed(Mask(w), Blur(kernels.gaussian(5, 2.0)))
    x = torch.randn(2, 3, 20, 24, generator=g, dtype=torch.float64)
    yy = torch.randn(2, 3, 20, 24, generator=g, dtype=torch.float64)
    op = op.double()
    lhs = (op.A(x) * yy).sum()
    rhs = (x * op.A_adjoint(yy)).sum()
    assert abs(float(lhs - rhs)) < 1e-9 * float(lhs.abs() + 1)
    assert op.shared_across_batch()
    assert not Composed(Mask(w.expand(2, 1, 20, 24)), Identity()).shared_across_batch()
