"""Additive Gaussian noise: level, reproducibility, validation."""

from __future__ import annotations

import pytest
import torch

from jfb.physics import GaussianNoise


def test_std_and_mean():
    y = torch.full((4, 3, 64, 64), 0.5)
    out = GaussianNoise(0.05)(y, generator=torch.Generator().manual_seed(0))
    n = out - y
    assert out.shape == y.shape and out.dtype == y.dtype
    assert float(n.std()) == pytest.approx(0.05, rel=0.02)
    assert abs(float(n.mean())) < 0.05 * 5 / n.numel() ** 0.5
    big = GaussianNoise(0.2)(y, generator=torch.Generator().manual_seed(0)) - y
    torch.testing.assert_close(big, 4 * n)  # same draw, scaled: sigma is honoured


def test_generator_reproducible():
    y = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    noise = GaussianNoise(0.01)
    a = noise(y, generator=torch.Generator().manual_seed(7))
    b = noise(y, generator=torch.Generator().manual_seed(7))
    c = noise(y, generator=torch.Generator().manual_seed(8))
    assert a.dtype == torch.float64
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(3)
    d = noise(y)
    torch.manual_seed(3)
    assert torch.equal(d, noise(y))  # without a generator: the global RNG
    assert not torch.equal(d, noise(y))


def test_input_untouched_and_sigma_zero():
    y = torch.rand(1, 1, 4, 4)
    y0 = y.clone()
    GaussianNoise(0.1)(y)
    assert torch.equal(y, y0)  # not in-place
    out = GaussianNoise(0)(y)
    assert torch.equal(out, y) and out is not y
    out += 1
    assert torch.equal(y, y0)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_invalid_sigma(bad):
    with pytest.raises(ValueError, match="sigma"):
        GaussianNoise(bad)


def test_invalid_types():
    with pytest.raises(TypeError, match="sigma"):
        GaussianNoise("0.1")
    with pytest.raises(TypeError, match="sigma"):
        GaussianNoise(True)
    with pytest.raises(TypeError, match="floating"):
        GaussianNoise(0.1)(torch.ones(2, 2, dtype=torch.long))
    assert "0.1" in repr(GaussianNoise(0.1))
