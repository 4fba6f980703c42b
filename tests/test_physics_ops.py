"""Super-resolution and inpainting operators: adjoints, independent references, shapes, errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from jfb.physics import Blur, BoxMask, Downsample, Identity, Mask, RandomMask, kernels


def _adjoint_gap(op, shape, gen) -> float:
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    ax = op.A(x)
    assert tuple(ax.shape) == op.out_shape(shape)
    y = torch.randn(ax.shape, generator=gen, dtype=torch.float64)
    aty = op.A_adjoint(y)
    assert tuple(aty.shape) == tuple(shape) == op.image_shape(y.shape)
    lhs, rhs = torch.sum(ax * y), torch.sum(x * aty)
    # the scale of the rounding in a float64 inner product is ||a|| ||b|| (Cauchy-Schwarz), not
    # |<a, b>|, which cancellation can make tiny for random vectors
    scale = ax.norm() * y.norm() + x.norm() * aty.norm()
    return float(abs(lhs - rhs) / (scale + 1e-30))


@st.composite
def op_cases(draw):
    kind = draw(st.sampled_from(["box", "gaussian", "random", "boxmask", "mask"]))
    s = draw(st.integers(1, 4))
    h, w = s * draw(st.integers(1, 5)), s * draw(st.integers(1, 5))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w)
    seed = draw(st.integers(0, 2**31 - 1))
    if kind in ("box", "gaussian"):
        op = Downsample(s, kind, draw(st.sampled_from(["zeros", "circular", "reflect"])))
    elif kind == "random":
        op = RandomMask(draw(st.floats(0.0, 0.95)), seed=draw(st.integers(0, 99)))
    elif kind == "boxmask":
        op = BoxMask(draw(st.floats(0.05, 0.95)))
    else:
        g = torch.Generator().manual_seed(seed)
        op = Mask(torch.rand(shape[0], 1, h, w, generator=g) > 0.5)
    return op, shape, seed


@settings(max_examples=150, deadline=None)
@given(op_cases())
def test_adjoint_identity(case):
    op, shape, seed = case
    assert _adjoint_gap(op, shape, torch.Generator().manual_seed(seed)) < 1e-12


def test_box_downsample_is_block_mean_and_adjoint_spreads():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 12, 8))
    y = Downsample(4, "box").A(torch.from_numpy(x)).numpy()
    ref = x.reshape(1, 2, 3, 4, 2, 4).mean(axis=(3, 5))
    np.testing.assert_allclose(y, ref, atol=1e-12)
    up = Downsample(4, "box").A_adjoint(torch.from_numpy(ref)).numpy()
    np.testing.assert_allclose(up, np.kron(ref, np.ones((4, 4))) / 16, atol=1e-12)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_gaussian_downsample_matches_scipy_filter_then_decimate(factor):
    rng = np.random.default_rng(factor)
    x = rng.standard_normal((24, 24))
    op = Downsample(factor, "gaussian", "reflect")
    k = op.blur.kernel.double().numpy()
    sigma = factor / 2
    assert k.shape == (2 * int(np.ceil(2 * sigma)) + 1,) * 2
    np.testing.assert_allclose(k, kernels.gaussian(k.shape[0], sigma).double().numpy())
    ref = scipy.ndimage.convolve(x, k, mode="reflect")[::factor, ::factor]
    y = op.A(torch.from_numpy(x)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(y, ref, atol=1e-6)


def test_factor_one_and_identity_shapes():
    x = torch.randn(1, 3, 6, 6)
    assert torch.equal(Downsample(1, "box").A(x), x)
    assert torch.equal(Downsample(1, "gaussian").A_adjoint(x), x)
    assert Identity().image_shape((2, 3, 5, 7)) == (2, 3, 5, 7)
    assert Blur(kernels.gaussian(5, 1.0), "valid").image_shape((1, 3, 8, 8)) == (1, 3, 12, 12)
    assert Downsample(4).image_shape((1, 3, 8, 16)) == (1, 3, 32, 64)


def test_random_mask_is_fixed_per_size_and_seed():
    op = RandomMask(0.7, seed=5)
    ones = torch.ones(1, 3, 64, 64)
    m1, m2 = op.A(ones), RandomMask(0.7, seed=5).A(ones)
    assert torch.equal(m1, m2)
    assert not torch.equal(m1, RandomMask(0.7, seed=6).A(ones))
    assert torch.equal(m1[:, 0], m1[:, 2])  # pixel mask: all channels alike
    assert abs(float(1 - m1.mean()) - 0.7) < 0.03
    assert op.A(torch.ones(2, 1, 32, 48)).shape == (2, 1, 32, 48)
    assert torch.equal(op.A(op.A(ones)), op.A(ones)) and torch.equal(op.normal(ones), m1)


def test_box_mask_hole_is_centred():
    m = BoxMask(0.5).A(torch.ones(1, 1, 8, 12))[0, 0]
    assert m.sum() == 8 * 12 - 16
    assert torch.all(m[2:6, 4:8] == 0) and m[1, 5] == 1 and m[2, 3] == 1


def test_mask_per_sample_and_errors():
    mask = torch.zeros(2, 1, 4, 4)
    mask[0, 0, 0, 0] = 1
    mask[1, 0, 3, 3] = 1
    y = Mask(mask).A(torch.ones(2, 3, 4, 4))
    assert y[0].sum() == 3 and y[1, :, 3, 3].sum() == 3
    with pytest.raises(ValueError, match="does not fit"):
        Mask(mask).A(torch.ones(3, 3, 4, 4))
    with pytest.raises(ValueError, match="does not fit"):
        Mask(mask).A(torch.ones(2, 3, 5, 4))
    with pytest.raises(ValueError):
        Mask(torch.ones(2, 3, 4, 4))
    with pytest.raises(TypeError):
        Mask(np.ones((4, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        Mask(torch.tensor([[1.0, float("nan")]]))
    for bad in (1.0, -0.1, "0.5"):
        with pytest.raises(ValueError):
            RandomMask(bad)
    with pytest.raises(ValueError):
        RandomMask(0.5, seed=-1)
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError):
            BoxMask(bad)


def test_downsample_errors():
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="factor"):
            Downsample(bad)
    with pytest.raises(ValueError, match="filter"):
        Downsample(2, "bicubic")
    with pytest.raises(ValueError, match="padding"):
        Downsample(2, "gaussian", "valid")
    with pytest.raises(ValueError, match="divisible"):
        Downsample(2).A(torch.ones(1, 1, 5, 4))
    with pytest.raises(ValueError, match="divisible"):
        Downsample(2).out_shape((1, 1, 5, 4))
    with pytest.raises(ValueError, match="batch"):
        Downsample(2).A(torch.ones(4, 4))


def test_gradients_flow_through_adjoint():
    op = Downsample(2)
    y = torch.randn(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(op.A_adjoint, (y,))
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(RandomMask(0.5).A, (x,))
