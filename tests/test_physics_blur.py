"""Blur operator: adjointness, an independent reference, FFT/direct agreement, norms, errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from jfb.errors import DataError
from jfb.physics import Blur, Identity, LinearOperator, kernels
from jfb.physics import blur as blur_module

PADDINGS = ["zeros", "circular", "reflect", "valid"]
METHODS = ["direct", "fft"]
NP_MODE = {"zeros": "constant", "circular": "wrap", "reflect": "symmetric"}


def _rand_kernel(gen: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.rand(shape, generator=gen, dtype=torch.float64) + 0.01


def _reference(x: np.ndarray, k: np.ndarray, padding: str) -> np.ndarray:
    """y[i, j] = sum k[a, b] x~[i + kh//2 - a, j + kw//2 - b] via numpy padding + scipy."""
    kh, kw = k.shape
    if padding == "valid":
        return scipy.signal.convolve2d(x, k, mode="valid")
    pads = (((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2))
    xp = np.pad(x, pads, mode=NP_MODE[padding])
    return scipy.signal.convolve2d(xp, k, mode="valid")


@st.composite
def blur_cases(draw):
    padding = draw(st.sampled_from(PADDINGS))
    method = draw(st.sampled_from(METHODS))
    kh, kw = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    lo_h, lo_w = (kh, kw) if padding == "valid" else (1, 1)
    h, w = draw(st.integers(lo_h, 12)), draw(st.integers(lo_w, 12))
    c = draw(st.integers(1, 3))
    n = draw(st.integers(1, 2))
    per_channel = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    return padding, method, (kh, kw), (n, c, h, w), per_channel, seed


@settings(max_examples=120, deadline=None)
@given(blur_cases())
def test_adjoint_identity(case):
    padding, method, (kh, kw), shape, per_channel, seed = case
    gen = torch.Generator().manual_seed(seed)
    kshape = (shape[1], kh, kw) if per_channel else (kh, kw)
    op = Blur(_rand_kernel(gen, kshape), padding=padding, method=method)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    ax = op.A(x)
    assert tuple(ax.shape) == op.out_shape(shape)
    y = torch.randn(ax.shape, generator=gen, dtype=torch.float64)
    aty = op.A_adjoint(y)
    assert aty.shape == x.shape
    lhs, rhs = torch.sum(ax * y), torch.sum(x * aty)
    scale = torch.linalg.vector_norm(ax) * torch.linalg.vector_norm(y) + 1e-300
    assert abs(float(lhs - rhs)) / float(scale) < 1e-10


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("ksize", [(3, 5), (4, 3), (2, 2), (5, 5)])
def test_matches_numpy_scipy_reference(padding, method, ksize):
    gen = torch.Generator().manual_seed(1)
    k = _rand_kernel(gen, (2, *ksize))  # per-channel, non-symmetric
    x = torch.randn(1, 2, 9, 8, generator=gen, dtype=torch.float64)
    y = Blur(k, padding=padding, method=method).A(x)
    for c in range(2):
        ref = _reference(x[0, c].numpy(), k[c].numpy(), padding)
        np.testing.assert_allclose(y[0, c].numpy(), ref, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("padding,boundary", [("zeros", "fill"), ("circular", "wrap"),
                                               ("reflect", "symm")])
def test_odd_kernel_matches_scipy_same(padding, boundary, method):
    """For odd kernels the centre is unambiguous: compare with scipy's own boundary handling."""
    gen = torch.Generator().manual_seed(2)
    k = _rand_kernel(gen, (5, 3))
    x = torch.randn(1, 1, 10, 7, generator=gen, dtype=torch.float64)
    y = Blur(k, padding=padding, method=method).A(x)
    ref = scipy.signal.convolve2d(x[0, 0].numpy(), k.numpy(), mode="same", boundary=boundary)
    np.testing.assert_allclose(y[0, 0].numpy(), ref, rtol=1e-11, atol=1e-11)


def test_convolution_not_correlation():
    """A one-hot image gives the kernel itself (not its flip) around the impulse."""
    k = torch.arange(1.0, 10.0, dtype=torch.float64).reshape(3, 3)
    x = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    x[0, 0, 2, 2] = 1.0
    for method in METHODS:
        y = Blur(k, padding="zeros", method=method).A(x)
        torch.testing.assert_close(y[0, 0, 1:4, 1:4], k)


@pytest.mark.parametrize("padding", ["zeros", "circular", "reflect"])
def test_kernel_larger_than_image(padding):
    """Same-size modes accept kernels bigger than the image (wrap / repeated reflection)."""
    gen = torch.Generator().manual_seed(3)
    k = _rand_kernel(gen, (7, 6))
    x = torch.randn(1, 1, 4, 3, generator=gen, dtype=torch.float64)
    ref = _reference(x[0, 0].numpy(), k.numpy(), padding)
    for method in METHODS:
        y = Blur(k, padding=padding, method=method).A(x)
        np.testing.assert_allclose(y[0, 0].numpy(), ref, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("ksize", [(3, 3), (4, 7), (16, 16)])
def test_direct_and_fft_agree(padding, ksize):
    gen = torch.Generator().manual_seed(4)
    k = _rand_kernel(gen, ksize)
    x = torch.randn(2, 3, 20, 18, generator=gen, dtype=torch.float64)
    d, f = Blur(k, padding, "direct"), Blur(k, padding, "fft")
    torch.testing.assert_close(d.A(x), f.A(x), rtol=1e-10, atol=1e-12)
    y = torch.randn(d.out_shape(x.shape), generator=gen, dtype=torch.float64)
    torch.testing.assert_close(d.A_adjoint(y), f.A_adjoint(y), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(d.normal(x), f.normal(x), rtol=1e-10, atol=1e-12)
    # float32 too
    torch.testing.assert_close(d.A(x.float()), f.A(x.float()), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("method", METHODS)
def test_normal_is_adjoint_of_forward(padding, method):
    gen = torch.Generator().manual_seed(5)
    op = Blur(_rand_kernel(gen, (3, 4)), padding, method)
    x = torch.randn(2, 2, 9, 9, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(op.normal(x), op.A_adjoint(op.A(x)), rtol=1e-10, atol=1e-12)


def test_method_selects_the_path(monkeypatch):
    calls: list[str] = []
    for name in ["_direct_valid", "_direct_valid_adjoint", "_fft_valid", "_fft_valid_adjoint",
                 "_fft_circular"]:
        original = getattr(blur_module, name)

        def spy(*args, _orig=original, _name=name, **kw):
            calls.append(_name)
            return _orig(*args, **kw)

        monkeypatch.setattr(blur_module, name, spy)
    x = torch.rand(1, 1, 8, 8)
    k = kernels.gaussian(3, 1.0)
    Blur(k, "zeros", "fft").normal(x)
    assert calls == ["_fft_valid", "_fft_valid_adjoint"]
    calls.clear()
    Blur(k, "zeros", "direct").normal(x)
    assert calls == ["_direct_valid", "_direct_valid_adjoint"]
    calls.clear()
    Blur(k, "circular", "fft").A(x)
    assert calls == ["_fft_circular"]
    calls.clear()
    Blur(kernels.gaussian(31, 5.0), "zeros", "direct").A(x)
    assert calls == ["_direct_valid"]


def test_auto_threshold():
    small, big = kernels.gaussian(5, 1.0), kernels.gaussian(25, 5.0)
    assert Blur(small, "zeros").path == "direct"
    assert Blur(big, "zeros").path == "fft"
    assert Blur(kernels.gaussian(11, 2.0), "circular").path == "fft"
    assert Blur(kernels.gaussian(9, 2.0), "circular").path == "direct"
    assert Blur(big, "zeros", "direct").path == "direct"
    assert Blur(small, "zeros", "fft").path == "fft"
    assert Blur(torch.ones(3, 25), "reflect").path == "fft"  # max(kh, kw) counts


@pytest.mark.parametrize("method", METHODS)
def test_autograd_gradient_is_adjoint(method):
    gen = torch.Generator().manual_seed(6)
    op = Blur(_rand_kernel(gen, (4, 3)), "reflect", method)
    x = torch.randn(1, 2, 7, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    g = torch.randn(1, 2, 7, 6, generator=gen, dtype=torch.float64)
    (grad,) = torch.autograd.grad(torch.sum(op.A(x) * g), x)
    torch.testing.assert_close(grad, op.A_adjoint(g), rtol=1e-10, atol=1e-12)


def _dense(op: LinearOperator, shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape))
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *shape[1:])
    cols = op.A(eye)  # batch of basis images
    return cols.reshape(n, -1).T.numpy()


@pytest.mark.parametrize("padding", PADDINGS)
def test_dense_matrix_adjoint_and_norm(padding):
    gen = torch.Generator().manual_seed(7)
    op = Blur(_rand_kernel(gen, (2, 3, 2)), padding, "direct")
    shape = (1, 2, 5, 6)
    a = _dense(op, shape)
    n_out = int(np.prod(op.out_shape(shape)[1:]))
    eye = torch.eye(n_out, dtype=torch.float64).reshape(n_out, *op.out_shape(shape)[1:])
    at = op.A_adjoint(eye).reshape(n_out, -1).T.numpy()
    np.testing.assert_allclose(at, a.T, atol=1e-12)
    sigma = np.linalg.svd(a, compute_uv=False)[0]
    est = op.norm_estimate(shape, n_iter=20000, tol=1e-15, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(0))
    assert est == pytest.approx(sigma, rel=1e-6)
    assert est <= sigma * (1 + 1e-12)  # power iteration approaches from below


def test_norm_estimate_circular_equals_max_transfer_function():
    k = kernels.motion(7, seed=3).double()
    h, w = 16, 12
    kc = np.zeros((h, w))
    for a in range(7):
        for b in range(7):
            kc[(a - 3) % h, (b - 3) % w] += float(k[a, b])
    sigma = np.abs(np.fft.fft2(kc)).max()
    op = Blur(k, "circular")
    est = op.norm_estimate((1, 1, h, w), n_iter=5000, tol=1e-14, dtype=torch.float64)
    assert est == pytest.approx(sigma, rel=1e-6)
    assert sigma == pytest.approx(1.0)  # a normalised non-negative kernel has DC gain 1


def test_norm_estimate_options():
    op = Blur(kernels.gaussian(5, 1.0), "zeros")
    a = op.norm_estimate((1, 1, 16, 16), n_iter=3, generator=torch.Generator().manual_seed(0))
    b = op.norm_estimate((1, 1, 16, 16), n_iter=3, generator=torch.Generator().manual_seed(0))
    c = op.norm_estimate((1, 1, 16, 16), n_iter=3, generator=torch.Generator().manual_seed(1))
    assert a == b and a != c
    long = op.norm_estimate((1, 1, 16, 16), n_iter=2000, tol=0.0)
    assert a < long  # n_iter is honoured: 3 iterations are not converged
    loose = op.norm_estimate((1, 1, 16, 16), n_iter=2000, tol=1e-1,
                             generator=torch.Generator().manual_seed(0))
    assert loose < long  # tol is honoured: stops early
    assert Identity().norm_estimate((2, 3, 4, 4)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="n_iter"):
        op.norm_estimate((1, 1, 8, 8), n_iter=0)
    with pytest.raises(ValueError, match="in_shape"):
        op.norm_estimate((1, 0, 8, 8))


def test_dtype_device_and_state():
    op = Blur(kernels.gaussian(3, 1.0))
    assert "kernel" in op.state_dict()
    x64 = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    assert op.A(x64).dtype == torch.float64 and op.A_adjoint(x64).dtype == torch.float64
    assert op.to(torch.float64).kernel.dtype == torch.float64
    x = torch.rand(1, 3, 8, 8)
    ref = Blur(kernels.gaussian(3, 1.0), method="fft").A(x)
    out = Blur(kernels.gaussian(3, 1.0), method="fft").A(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)
    assert op.A(torch.empty(2, 3, 8, 8, device="meta")).device.type == "meta"


def test_identity_and_base_out_shape():
    x = torch.rand(2, 3)
    op = Identity()
    assert op.A(x) is x and op.A_adjoint(x) is x and op.normal(x) is x
    assert op.out_shape((2, 3)) == (2, 3)

    class Subsample(LinearOperator):  # no out_shape override: the base infers it
        def A(self, x):
            return x[..., ::2, ::2]

        def A_adjoint(self, y):
            out = y.new_zeros(*y.shape[:-2], 2 * y.shape[-2], 2 * y.shape[-1])
            out[..., ::2, ::2] = y
            return out

    assert Subsample().out_shape((1, 3, 8, 6)) == (1, 3, 4, 3)
    with pytest.raises(TypeError):
        LinearOperator()  # abstract


def test_errors():
    k = kernels.gaussian(3, 1.0)
    with pytest.raises(ValueError, match="unknown padding"):
        Blur(k, padding="same")
    with pytest.raises(ValueError, match="unknown method"):
        Blur(k, method="conv")
    with pytest.raises(DataError, match="negative"):
        Blur(-k)
    op = Blur(k)
    with pytest.raises(ValueError, match="4-D"):
        op.A(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="4-D"):
        op.A_adjoint(torch.rand(8, 8))
    with pytest.raises(TypeError, match="floating"):
        op.A(torch.ones(1, 1, 8, 8, dtype=torch.long))
    per_channel = Blur(torch.rand(3, 3, 3))
    with pytest.raises(ValueError, match="channels"):
        per_channel.A(torch.rand(1, 2, 8, 8))
    with pytest.raises(ValueError, match="channels"):
        per_channel.A_adjoint(torch.rand(1, 1, 8, 8))
    valid = Blur(torch.rand(5, 4), padding="valid")
    for method in METHODS:
        valid.method = method
        with pytest.raises(ValueError, match="smaller than the 5x4 kernel"):
            valid.A(torch.rand(1, 1, 4, 9))
    with pytest.raises(ValueError, match="smaller"):
        valid.out_shape((1, 1, 9, 3))


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("shape", [(3, 4), (3, 5, 2)])
def test_direct_path_in_strips_equals_whole(monkeypatch, padding, shape):
    # large planes (no autograd, CPU) are convolved in channels-last strips of rows: the same
    # A (each output row computed as in the whole) and A^T (a valid convolution of the padded
    # measurement instead of conv_transpose2d) up to rounding
    gen = torch.Generator().manual_seed(11)
    op = Blur(_rand_kernel(gen, shape), padding, "direct")
    x = torch.rand(2, 3, 37, 29, generator=gen)
    y = torch.rand(op.out_shape(x.shape), generator=gen)
    with torch.no_grad():
        whole = op.A(x), op.A_adjoint(y)
        monkeypatch.setattr(blur_module, "_STRIPS_ABOVE", 0)
        monkeypatch.setattr(blur_module, "_STRIP_BYTES", 6 * 40 * 4 * 3)  # strips of 3+ rows
        assert blur_module._in_strips(x)
        strips = op.A(x), op.A_adjoint(y)
    assert torch.equal(strips[0], whole[0])
    torch.testing.assert_close(strips[1], whole[1], rtol=0, atol=1e-6)
    assert not blur_module._in_strips(x)  # autograd on: never


def test_power_spectrum_is_cached_and_follows_the_kernel():
    op = Blur(kernels.gaussian(5, 2.0), "zeros")
    v = torch.rand(1, 3, 12, 10)
    first = op.ridge_preconditioner(0.1)(v)
    assert len(op._spectra) == 1
    torch.testing.assert_close(op.ridge_preconditioner(0.1)(v), first, rtol=0, atol=0)
    assert len(op._spectra) == 1  # a new preconditioner (the next x-update) reuses |K|^2
    with torch.no_grad():
        op.kernel.mul_(2)  # an in-place change of the kernel is seen
    torch.testing.assert_close(
        op.ridge_preconditioner(0.1)(v),
        Blur(op.kernel.clone(), "zeros").ridge_preconditioner(0.1)(v))
