"""Grid search of a baseline's weight on (x, y) pairs."""

from __future__ import annotations

import math

import pytest
import torch

from jfb.baselines.tuning import TuneRow, log_grid, tune
from jfb.baselines.wiener import wiener
from jfb.metrics import psnr, ssim
from jfb.physics import Blur, GaussianNoise, kernels


def _pairs(n=5, size=16, noise=0.03):
    gen = torch.Generator().manual_seed(0)
    op = Blur(kernels.gaussian(5, 1.5), padding="circular")
    i = torch.arange(size, dtype=torch.float32)
    out = []
    for k in range(n):
        x = (0.5 + 0.3 * torch.sin(i[:, None] * (0.3 + 0.1 * k)) * torch.cos(i[None, :] * 0.4))
        x = x.expand(1, size, size).clone()
        y = GaussianNoise(noise)(op.A(x[None]), generator=gen)[0]
        out.append((x, y))
    return op, out


def test_picks_the_grid_point_with_the_best_mean_psnr():
    op, pairs = _pairs()
    grid = log_grid(1e-4, 10.0, 6)
    best, table = tune(lambda lam: (lambda y: wiener(op, y, lam)), grid, pairs, batch_size=2)
    x = torch.stack([p[0] for p in pairs])
    y = torch.stack([p[1] for p in pairs])
    means = [float(psnr(wiener(op, y, lam).clamp(0, 1), x).mean()) for lam in grid]
    ssims = [float(ssim(wiener(op, y, lam).clamp(0, 1), x).mean()) for lam in grid]
    k = max(range(len(grid)), key=means.__getitem__)
    assert 0 < k < len(grid) - 1  # an interior optimum: the choice is not trivial
    assert best == grid[k]
    assert [r.value for r in table] == grid
    assert all(isinstance(r, TuneRow) for r in table)
    for row, m, s in zip(table, means, ssims, strict=True):
        assert row.psnr == pytest.approx(m, abs=1e-4)
        assert row.ssim == pytest.approx(s, abs=1e-5)


def _offset_or_noise(kind):
    """'offset': x + 0.05 (PSNR 26 dB, SSIM near 1); 'noise': x + 0.03 n (PSNR 30.5 dB, low SSIM).
    The 'method' cheats by reading the clean image off y (the pairs below have y = x)."""
    def method(y):
        if kind == "offset":
            return y + 0.05
        gen = torch.Generator().manual_seed(1)
        return y + 0.03 * torch.randn(y.shape, generator=gen)
    return method


def test_metric_selects_the_criterion_and_bad_names_raise():
    x = 0.3 + 0.4 * torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    x = torch.nn.functional.avg_pool2d(x, 3, 1, 1)  # smooth: low variance, noise hurts SSIM
    pairs = [(xi, xi) for xi in x]
    best_p, table = tune(_offset_or_noise, ["offset", "noise"], pairs)
    best_s, _ = tune(_offset_or_noise, ["offset", "noise"], pairs, metric="ssim")
    assert best_p == "noise" and best_s == "offset"
    assert table[1].psnr > table[0].psnr and table[0].ssim > table[1].ssim
    with pytest.raises(ValueError, match="metric"):
        tune(_offset_or_noise, ["offset"], pairs, metric="mse")


def test_batch_size_and_max_images_take_effect():
    _, pairs = _pairs(n=5)
    seen: list[int] = []

    def make(v):
        def method(y):
            seen.append(y.shape[0])
            return y
        return method

    tune(make, [1, 2], pairs, batch_size=2)
    assert seen == [2, 2, 1, 2, 2, 1]
    seen.clear()
    tune(make, [1], pairs, batch_size=2, max_images=3)
    assert seen == [2, 1]
    with pytest.raises(ValueError, match="max_images"):
        tune(make, [1], pairs, max_images=0)


def test_device_is_passed_to_evaluate():
    _, pairs = _pairs(n=1)

    class Seen(Exception):
        pass

    def make(v):
        def method(y):
            raise Seen(y.device.type)
        return method

    with pytest.raises(Seen, match="meta"):
        tune(make, [1], pairs, device="meta")


def test_nan_scores_count_as_worst_and_ties_keep_the_first():
    _, pairs = _pairs(n=2)

    def make(v):
        return lambda y: y * float("nan") if v == "nan" else y

    best, table = tune(make, ["nan", "a", "b"], pairs)
    assert math.isnan(table[0].psnr)
    assert best == "a"  # "a" and "b" tie: the first wins
    with pytest.raises(ValueError, match="empty"):
        tune(make, [], pairs)


def test_log_grid():
    g = log_grid(1e-3, 1.0, 4)
    assert g == pytest.approx([1e-3, 1e-2, 1e-1, 1.0], rel=1e-12)
    assert g[0] == 1e-3 and g[-1] == 1.0
    assert log_grid(0.5, 0.5, 1) == [0.5]
    assert log_grid(2.0, 8.0, 3) == pytest.approx([2.0, 4.0, 8.0])
    for bad in ((0.0, 1.0, 3), (1.0, 0.5, 3), (1e-3, 1.0, 0), (1e-3, math.inf, 3)):
        with pytest.raises(ValueError):
            log_grid(*bad)
