"""TV (Chambolle-Pock) and Wiener baselines: optimality against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from jfb.baselines.tikhonov import gradient, tikhonov
from jfb.baselines.tv import total_variation, tv_objective, tv_reconstruct
from jfb.baselines.wiener import wiener
from jfb.metrics import psnr
from jfb.physics import Blur, GaussianNoise, Identity, kernels

# A non-symmetric, well-conditioned 3x3 kernel (|symbol| >= 0.2): A^T A is invertible.
KERNEL = torch.tensor([[0.0, 0.1, 0.0], [0.05, 0.6, 0.15], [0.0, 0.1, 0.0]], dtype=torch.float64)



MODES = {  # name -> (isotropic, vectorial)
    "isotropic": (True, False),
    "anisotropic": (False, False),
    "vectorial": (True, True),
}


def _dense(fn, in_shape):
    """Matrix of a linear map fn on tensors of in_shape (batch 1), column by column."""
    n = int(np.prod(in_shape))
    cols = []
    for i in range(n):
        e = torch.zeros(n, dtype=torch.float64)
        e[i] = 1.0
        cols.append(fn(e.reshape(in_shape)).reshape(-1).numpy())
    return np.stack(cols, axis=1)


def _squares(n=1, c=1, h=24, w=24, seed=0):
    """Piecewise-constant images: random rectangles on a background."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.full((n, c, h, w), 0.2, dtype=torch.float64)
    for i in range(n):
        for _ in range(4):
            r0, c0 = (int(v) for v in torch.randint(0, h - 6, (2,), generator=gen))
            dr, dc = (int(v) for v in torch.randint(4, 10, (2,), generator=gen))
            x[i, :, r0 : r0 + dr, c0 : c0 + dc] = float(torch.rand(1, generator=gen)) * 0.8 + 0.2
    return x


# ------------------------------------------------------------------------------------------- TV
@pytest.mark.parametrize("mode", list(MODES))
def test_tv_reaches_the_dual_optimum_solved_by_scipy(mode):
    """P(x_cp) equals the optimal value of the dual max_{q in B} 0.5||y||^2 - 0.5 b^T M^-1 b
    (b = A^T y - D^T q, M = A^T A), solved independently by SLSQP (strong duality)."""
    isotropic, vectorial = MODES[mode]
    c, h, w, lam = 2, 4, 5, 0.05
    op = Blur(KERNEL, padding="zeros")
    gen = torch.Generator().manual_seed(3)
    y = torch.rand(1, c, h, w, generator=gen, dtype=torch.float64)
    x = tv_reconstruct(op, y, lam, max_iter=20000, tol=1e-11, isotropic=isotropic,
                       vectorial=vectorial)
    primal = float(tv_objective(op, y, x, lam, isotropic=isotropic, vectorial=vectorial)[0])

    shape = (1, c, h, w)
    a = _dense(op.A, shape)
    d = _dense(gradient, shape)  # rows ordered (c, direction, i, j)
    m_inv = np.linalg.inv(a.T @ a)
    aty = a.T @ y.reshape(-1).numpy()

    def f(q):  # 0.5 b^T M^-1 b and its gradient
        b = aty - d.T @ q
        mb = m_inv @ b
        return 0.5 * b @ mb, -(d @ mb)

    idx = np.arange(d.shape[0]).reshape(c, 2, h, w)
    cons, bounds = [], None
    if not isotropic:
        bounds = [(-lam, lam)] * d.shape[0]
    else:
        groups = ([idx[:, :, i, j].ravel() for i in range(h) for j in range(w)] if vectorial
                  else [idx[ch, :, i, j] for ch in range(c) for i in range(h) for j in range(w)])
        for g in groups:
            cons.append({"type": "ineq", "fun": lambda q, g=g: lam**2 - np.sum(q[g] ** 2),
                         "jac": lambda q, g=g: _sq_jac(q, g)})
    res = minimize(f, np.zeros(d.shape[0]), jac=True, method="SLSQP", bounds=bounds,
                   constraints=cons, options={"ftol": 1e-14, "maxiter": 1000})
    assert res.success, res.message
    dual = 0.5 * float(y.pow(2).sum()) - res.fun
    assert primal >= dual - 1e-9  # weak duality: nothing below the dual optimum
    assert primal - dual <= 1e-7 * primal


def _sq_jac(q, g):
    j = np.zeros_like(q)
    j[g] = -2.0 * q[g]
    return j


def test_tv_modes_are_different_problems():
    x = torch.rand(1, 2, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    iso = total_variation(x)
    ani = total_variation(x, isotropic=False)
    vec = total_variation(x, vectorial=True)
    g = gradient(x)
    np.testing.assert_allclose(float(iso[0]), float(g.pow(2).sum(2).sqrt().sum()), rtol=1e-12)
    np.testing.assert_allclose(float(ani[0]), float(g.abs().sum()), rtol=1e-12)
    np.testing.assert_allclose(float(vec[0]), float(g.pow(2).sum((1, 2)).sqrt().sum()),
                               rtol=1e-12)
    assert float(vec[0]) < float(iso[0]) < float(ani[0])
    with pytest.raises(ValueError, match="vectorial"):
        tv_reconstruct(Identity(), x, 0.1, isotropic=False, vectorial=True)


def test_tv_small_lam_on_identity_returns_y():
    y = torch.rand(2, 1, 10, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = tv_reconstruct(Identity(), y, 1e-6, max_iter=2000, tol=1e-10)
    assert float((x - y).abs().max()) < 1e-4
    x_big = tv_reconstruct(Identity(), y, 0.05, max_iter=2000, tol=1e-10)
    assert float((x_big - y).abs().max()) > 1e-2


def test_larger_lam_lowers_tv():
    op = Blur(kernels.gaussian(5, 1.5).double(), padding="zeros")
    x_true = _squares(h=16, w=16)
    y = GaussianNoise(0.02)(op.A(x_true), generator=torch.Generator().manual_seed(0))
    tvs = [float(total_variation(tv_reconstruct(op, y, lam, max_iter=1000, tol=1e-7))[0])
           for lam in (0.003, 0.02, 0.1)]
    assert tvs[0] > tvs[1] > tvs[2]


@pytest.mark.parametrize("padding", ["zeros", "circular", "reflect", "valid"])
def test_tv_improves_psnr_on_piecewise_constant_images(padding):
    k = kernels.gaussian(5, 1.5).double()
    op = Blur(k, padding=padding)
    x_true = _squares(n=2, c=1, h=28, w=28, seed=2)
    y = GaussianNoise(0.02)(op.A(x_true), generator=torch.Generator().manual_seed(4))
    x = tv_reconstruct(op, y, 0.005, max_iter=150)
    assert x.shape == x_true.shape
    b = 4  # compare the interior, where y and x line up for every padding mode
    if padding == "valid":
        y_al = y[..., b - 2 : -(b - 2), b - 2 : -(b - 2)]  # y[i] is centred on x[i + 2]
    else:
        y_al = y[..., b:-b, b:-b]
    inner = x[..., b:-b, b:-b].clamp(0, 1)
    ref = x_true[..., b:-b, b:-b]
    gain = psnr(inner, ref) - psnr(y_al.clamp(0, 1), ref)
    assert bool((gain > 2.0).all()), gain


def test_tv_per_sample_lam_and_stopping_match_solving_each_sample_alone():
    op = Blur(KERNEL, padding="reflect")
    x_true = _squares(n=3, c=1, h=16, w=16, seed=5)
    y = GaussianNoise(0.02)(op.A(x_true), generator=torch.Generator().manual_seed(6))
    lam = torch.tensor([0.005, 0.05, 0.02], dtype=torch.float64)
    kw = {"max_iter": 400, "tol": 1e-3, "op_norm": 1.0}
    batch = tv_reconstruct(op, y, lam, **kw)
    for i in range(3):
        alone = tv_reconstruct(op, y[i : i + 1], float(lam[i]), **kw)
        torch.testing.assert_close(batch[i : i + 1], alone, rtol=0, atol=1e-12)
    # tol is honoured: running all 400 iterations gives something else
    full = tv_reconstruct(op, y, lam, max_iter=400, tol=0.0, op_norm=1.0)
    assert float((full - batch).abs().max()) > 1e-4


def test_tv_x0_max_iter_op_norm_and_step_ratio_take_effect():
    op = Blur(KERNEL, padding="zeros")
    gen = torch.Generator().manual_seed(7)
    y = torch.rand(1, 1, 8, 8, generator=gen, dtype=torch.float64)
    x0 = torch.rand(1, 1, 8, 8, generator=gen, dtype=torch.float64)
    assert torch.equal(tv_reconstruct(op, y, 0.1, max_iter=0, x0=x0), x0)
    assert torch.equal(tv_reconstruct(op, y, 0.1, max_iter=0), op.A_adjoint(y))
    ref = tv_reconstruct(op, y, 0.1, max_iter=5000, tol=1e-12)
    # the limit does not depend on x0 or step_ratio
    for kw in ({"x0": x0}, {"step_ratio": 1.0}):
        torch.testing.assert_close(tv_reconstruct(op, y, 0.1, max_iter=5000, tol=1e-12, **kw),
                                   ref, rtol=0, atol=1e-6)
    # ... but the path does
    short = tv_reconstruct(op, y, 0.1, max_iter=10, tol=0)
    assert float((tv_reconstruct(op, y, 0.1, max_iter=10, tol=0, step_ratio=1.0) - short)
                 .abs().max()) > 1e-3
    # a (wrongly) huge op_norm means tiny steps: far from the solution after 30 iterations
    err_default = float((tv_reconstruct(op, y, 0.1, max_iter=30, tol=0) - ref).norm())
    err_huge = float((tv_reconstruct(op, y, 0.1, max_iter=30, tol=0, op_norm=100.0) - ref)
                     .norm())
    assert err_huge > 3 * err_default


# --------------------------------------------------------------------------------------- Wiener
@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_wiener_identity_penalty_equals_tikhonov_cg(method, per_channel):
    k = kernels.motion(7, seed=0).double()
    if per_channel:
        k = torch.stack([k, k.T, kernels.gaussian(7, 1.0).double()])
    op = Blur(k, padding="circular", method=method)
    gen = torch.Generator().manual_seed(8)
    y = torch.rand(2, 3, 12, 10, generator=gen, dtype=torch.float64)
    lam = 0.01
    x_w = wiener(op, y, lam, penalty="identity")
    x_cg = tikhonov(op, y, lam, penalty="identity", tol=1e-13, max_iter=2000)
    assert float((x_w - x_cg).norm() / x_cg.norm()) < 1e-8
    np.testing.assert_allclose(x_w.numpy(), x_cg.numpy(), atol=1e-5)


def _periodic_diff(n):
    return np.roll(np.eye(n), 1, axis=1) - np.eye(n)  # (Dx)_i = x_{i+1 mod n} - x_i


def test_wiener_gradient_penalty_equals_dense_periodic_solve():
    """tikhonov's gradient penalty has Neumann boundaries, which the FFT does not diagonalise:
    the periodic system (A^T A + lam D_per^T D_per) x = A^T y is solved densely instead."""
    h, w, lam = 7, 6, 0.05
    op = Blur(kernels.motion(5, seed=1).double(), padding="circular")
    y = torch.rand(2, 1, h, w, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    x_w = wiener(op, y, torch.tensor([lam, 4 * lam], dtype=torch.float64), penalty="gradient")
    a = _dense(op.A, (1, 1, h, w))
    dv = np.kron(_periodic_diff(h), np.eye(w))
    dh = np.kron(np.eye(h), _periodic_diff(w))
    for i, lam_i in enumerate((lam, 4 * lam)):
        m = a.T @ a + lam_i * (dv.T @ dv + dh.T @ dh)
        x_ref = np.linalg.solve(m, a.T @ y[i].reshape(-1).numpy())
        np.testing.assert_allclose(x_w[i].reshape(-1).numpy(), x_ref, atol=1e-10)
    # and it is not tikhonov's Neumann-boundary problem
    x_neu = tikhonov(op, y, lam, penalty="gradient", tol=1e-13, max_iter=2000)
    assert float((x_w[:1] - x_neu[:1]).abs().max()) > 1e-3


@pytest.mark.parametrize("padding", ["zeros", "reflect", "valid"])
def test_wiener_refuses_non_circular_blurs(padding):
    op = Blur(kernels.gaussian(3, 1.0), padding=padding)
    with pytest.raises(ValueError, match="tikhonov"):
        wiener(op, torch.rand(1, 1, 8, 8), 0.1)


def test_wiener_identity_operator_dtypes_and_errors():
    y = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(10))
    torch.testing.assert_close(wiener(Identity(), y, 0.0), y)
    torch.testing.assert_close(wiener(Identity(), y, 1.0), y / 2)
    op = Blur(kernels.gaussian(3, 1.0), padding="circular")
    assert wiener(op, y.half(), 0.1).dtype == torch.float16
    torch.testing.assert_close(wiener(op, y.half(), 0.1).float(), wiener(op, y, 0.1),
                               atol=5e-3, rtol=0)
    with pytest.raises(ValueError, match="penalty"):
        wiener(op, y, 0.1, penalty="laplace")
    with pytest.raises(ValueError, match="lam"):
        wiener(op, y, -1.0)


class _Scaled(Blur):
    """s * Blur: an operator with a norm far from 1 (like tomography or super-resolution)."""

    def __init__(self, kernel, s):
        super().__init__(kernel)
        self.s = s

    def A(self, x):
        return self.s * super().A(x)

    def A_adjoint(self, y):
        return self.s * super().A_adjoint(y)


@pytest.mark.parametrize("s", [0.05, 40.0])
def test_tv_on_a_badly_scaled_operator_solves_the_same_problem(s):
    """min ||sA x - s y||^2/2 + s^2 lam TV(x) has the minimiser of the unscaled problem; the
    solver normalises the operator, so the same iteration budget reaches it."""
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(1, 1, 24, 24, dtype=torch.float64)
    x[..., 6:18, 8:20] = 1.0
    k = kernels.gaussian(5, 1.5).double()
    y = Blur(k).A(x) + 0.02 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    ref = tv_reconstruct(Blur(k), y, 0.02, max_iter=300)
    out = tv_reconstruct(_Scaled(k, s), s * y, s * s * 0.02, max_iter=300)
    assert float((out - ref).abs().max()) < 2e-3
