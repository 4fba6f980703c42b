"""Tikhonov baseline and batched conjugate gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jfb.baselines import conjugate_gradient, gradient, gradient_adjoint, tikhonov
from jfb.physics import Blur, GaussianNoise, Identity, kernels

PENALTIES = ["gradient", "identity"]


def _LtL(x, penalty):
    return gradient_adjoint(gradient(x)) if penalty == "gradient" else x


def _diff_matrix(n: int) -> np.ndarray:
    """Forward differences with a zero last row (Neumann), built independently of the code."""
    d = np.zeros((n, n))
    for i in range(n - 1):
        d[i, i], d[i, i + 1] = -1.0, 1.0
    return d


def test_gradient_matches_independent_matrices_and_adjoint():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 4, generator=gen, dtype=torch.float64)
    g = gradient(x)
    assert g.shape == (2, 3, 2, 5, 4)
    dv, dh = _diff_matrix(5), _diff_matrix(4)
    np.testing.assert_allclose(g[1, 2, 0].numpy(), dv @ x[1, 2].numpy(), atol=1e-12)
    np.testing.assert_allclose(g[1, 2, 1].numpy(), x[1, 2].numpy() @ dh.T, atol=1e-12)
    h = torch.randn(g.shape, generator=gen, dtype=torch.float64)
    assert float(torch.sum(g * h)) == pytest.approx(float(torch.sum(x * gradient_adjoint(h))),
                                                    rel=1e-12)


@pytest.mark.parametrize("penalty", PENALTIES)
def test_normal_equations_hold(penalty):
    gen = torch.Generator().manual_seed(1)
    op = Blur(kernels.motion(5, seed=0).double(), padding="zeros")
    y = torch.rand(2, 3, 12, 10, generator=gen, dtype=torch.float64)
    lam = 0.05
    x = tikhonov(op, y, lam, penalty=penalty, tol=1e-10, max_iter=500)
    b = op.A_adjoint(y)
    res = op.normal(x) + lam * _LtL(x, penalty) - b
    assert float(res.norm() / b.norm()) < 1e-8
    # a loose tolerance stops earlier (tol is honoured)
    x_loose = tikhonov(op, y, lam, penalty=penalty, tol=1e-2)
    res_loose = op.normal(x_loose) + lam * _LtL(x_loose, penalty) - b
    assert 1e-8 < float(res_loose.norm() / b.norm()) <= 1e-2 * 1.01


def test_identity_operator_closed_forms():
    gen = torch.Generator().manual_seed(2)
    y = torch.rand(2, 1, 6, 5, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(tikhonov(Identity(), y, 0.5, penalty="identity", tol=1e-12),
                               y / 1.5)
    const = torch.full((1, 2, 6, 5), 0.3, dtype=torch.float64)
    torch.testing.assert_close(tikhonov(Identity(), const, 4.0, tol=1e-12), const)
    # gradient penalty against a dense solve of (I + lam (Dv'Dv (x) I + I (x) Dh'Dh)) x = y
    lam = 0.7
    dv, dh = _diff_matrix(6), _diff_matrix(5)
    m = np.eye(30) + lam * (np.kron(dv.T @ dv, np.eye(5)) + np.kron(np.eye(6), dh.T @ dh))
    ref = np.linalg.solve(m, y[1, 0].numpy().reshape(-1)).reshape(6, 5)
    x = tikhonov(Identity(), y, lam, penalty="gradient", tol=1e-12)
    np.testing.assert_allclose(x[1, 0].numpy(), ref, atol=1e-10)


@pytest.mark.parametrize("penalty", PENALTIES)
def test_larger_lambda_is_smoother(penalty):
    gen = torch.Generator().manual_seed(3)
    op = Blur(kernels.gaussian(5, 1.0).double())
    y = GaussianNoise(0.05)(op(torch.rand(1, 1, 16, 16, generator=gen, dtype=torch.float64)),
                            generator=gen)
    energies = [float(gradient(tikhonov(op, y, lam, penalty=penalty)).norm())
                for lam in (1e-3, 1e-2, 1e-1, 1.0)]
    assert all(a > b for a, b in zip(energies, energies[1:], strict=False))


def test_batch_independence_and_per_sample_lambda():
    gen = torch.Generator().manual_seed(4)
    op = Blur(kernels.motion(7, seed=1).double(), padding="reflect")
    y = torch.rand(2, 2, 14, 12, generator=gen, dtype=torch.float64)
    y[1] *= 10  # very different scales / convergence
    both = tikhonov(op, y, 0.02, tol=1e-8)
    for i in range(2):
        alone = tikhonov(op, y[i : i + 1], 0.02, tol=1e-8)
        torch.testing.assert_close(both[i : i + 1], alone, rtol=1e-10, atol=1e-12)
    lams = torch.tensor([0.01, 0.5])
    per_sample = tikhonov(op, y, lams, tol=1e-8)
    for i in range(2):
        alone = tikhonov(op, y[i : i + 1], float(lams[i]), tol=1e-8)
        torch.testing.assert_close(per_sample[i : i + 1], alone, rtol=1e-10, atol=1e-12)


def test_valid_padding_recovers_input_shape():
    op = Blur(kernels.gaussian(5, 1.0), padding="valid")
    y = torch.rand(1, 3, 12, 12)
    x = tikhonov(op, y, 0.01)
    assert x.shape == (1, 3, 16, 16) and x.dtype == torch.float32


def test_improves_psnr_on_blurred_image():
    skimage_data = pytest.importorskip("skimage.data")
    img = torch.from_numpy(skimage_data.camera().astype(np.float64) / 255.0)
    x = torch.nn.functional.avg_pool2d(img[None, None], 8)  # 64 x 64
    op = Blur(kernels.gaussian(5, 5.0), padding="zeros")
    y = GaussianNoise(0.005)(op(x), generator=torch.Generator().manual_seed(0))

    def psnr(a):
        return float(-10 * torch.log10(torch.mean((a.clamp(0, 1) - x) ** 2)))

    gain = psnr(tikhonov(op, y, 3e-3)) - psnr(y)
    assert gain > 4.0  # measured: 20.0 dB -> 26.9 dB


def test_conjugate_gradient_dense_spd():
    gen = torch.Generator().manual_seed(5)
    n, d = 3, 12
    q = torch.randn(n, d, d, generator=gen, dtype=torch.float64)
    m = q @ q.transpose(1, 2) + 0.1 * torch.eye(d, dtype=torch.float64)
    m[0] = torch.diag(torch.full((d,), 2.0, dtype=torch.float64))  # converges in 1 step
    b = torch.randn(n, d, generator=gen, dtype=torch.float64)
    b[2] = 0.0  # already solved by x = 0

    def apply(x):
        return torch.einsum("nij,nj->ni", m, x)

    x, n_iter = conjugate_gradient(apply, b, max_iter=200, tol=1e-12)
    ref = torch.linalg.solve(m, b)
    torch.testing.assert_close(x, ref, rtol=1e-8, atol=1e-10)
    assert n_iter.tolist()[0] == 1 and n_iter.tolist()[2] == 0 and n_iter[1] > 1
    # max_iter is honoured
    x3, n3 = conjugate_gradient(apply, b, max_iter=3, tol=1e-12)
    assert int(n3.max()) == 3
    assert float((apply(x3) - b)[1].norm()) > float((apply(x) - b)[1].norm())
    # x0 is honoured: starting from the solution needs no iteration
    x0 = ref.clone()
    xs, ns = conjugate_gradient(apply, b, x0, tol=1e-8)
    assert int(ns.max()) == 0 and torch.equal(xs, x0)


def test_tikhonov_x0_is_used():
    op = Blur(kernels.gaussian(3, 1.0).double())
    y = torch.rand(1, 1, 10, 10, dtype=torch.float64)
    sol = tikhonov(op, y, 0.1, tol=1e-12)
    again = tikhonov(op, y, 0.1, x0=sol, max_iter=1, tol=1e-6)
    torch.testing.assert_close(again, sol)  # started at the solution: already converged
    cold = tikhonov(op, y, 0.1, max_iter=1, tol=1e-6)
    assert float((cold - sol).norm()) > 1e-3


def test_errors():
    op = Identity()
    y = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match="unknown penalty"):
        tikhonov(op, y, 0.1, penalty="tv")
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="lam"):
            tikhonov(op, y, bad)
    with pytest.raises(ValueError, match="one value per sample"):
        tikhonov(op, y, torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(TypeError, match="lam"):
        tikhonov(op, y, "0.1")
    with pytest.raises(ValueError, match="x0"):
        tikhonov(op, y, 0.1, x0=torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="max_iter"):
        conjugate_gradient(lambda v: v, y, max_iter=-1)
    with pytest.raises(ValueError, match="tol"):
        conjugate_gradient(lambda v: v, y, tol=float("nan"))
