"""The physics as an argument of every call: per-sample blurs (BatchBlur), per-sample noise
levels (Physics), DE-ADMM's noise rule, test-time budgets per call, and a model that no call
changes."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from jfb.deq import JFB, Anderson
from jfb.linalg import admm_x_update
from jfb.models import DEADMM, Feedforward
from jfb.models.init import initial_estimate
from jfb.nets import DnCNN
from jfb.physics import BatchBlur, Blur, Physics, kernels, stack_blurs, stack_physics
from test_deadmm import Shrink

DT = torch.float64


def rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


def some_kernels(n=3, seed=0, max_size=9):
    rng = np.random.default_rng(seed)
    return [kernels.sample(rng, max_size).to(DT) for _ in range(n)]


# ------------------------------------------------------------------------------ BatchBlur
@pytest.mark.parametrize("padding", ["zeros", "circular", "reflect", "valid"])
@pytest.mark.parametrize("method", ["direct", "fft"])
def test_batch_blur_equals_one_blur_per_sample(padding, method):
    ks = some_kernels(3, seed=1)
    op = BatchBlur(ks, padding=padding, method=method)
    x = rand(3, 2, 13, 12, seed=2)
    y = rand(*op.out_shape(x.shape), seed=3)
    side = op.kernel_size[0]
    for i, k in enumerate(ks):
        one = Blur(kernels.centre_pad(k, side), padding=padding, method=method)
        torch.testing.assert_close(op.A(x)[i], one.A(x[i:i + 1])[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(op.A_adjoint(y)[i], one.A_adjoint(y[i:i + 1])[0],
                                   rtol=0, atol=1e-12)
    # the adjoint test, sample by sample
    lhs = (op.A(x) * y).flatten(1).sum(1)
    rhs = (x * op.A_adjoint(y)).flatten(1).sum(1)
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)


def test_padding_a_kernel_about_its_centre_is_the_same_blur():
    k = kernels.motion(5, seed=4).to(DT)
    x = rand(1, 1, 11, 11)
    for padding in ("zeros", "circular", "reflect"):
        torch.testing.assert_close(Blur(kernels.centre_pad(k, 9), padding=padding).A(x),
                                   Blur(k, padding=padding).A(x), rtol=0, atol=1e-12)


def test_batch_blur_select_and_checks():
    op = BatchBlur(some_kernels(4, seed=5), padding="circular")
    x = rand(4, 3, 10, 10)
    idx = torch.tensor([3, 1])
    torch.testing.assert_close(op.select(idx).A(x[idx]), op.A(x)[idx], rtol=0, atol=0)
    assert op.selectable() and not op.shared_across_batch()
    with pytest.raises(ValueError, match="4 kernels"):
        op.A(x[:2])
    with pytest.raises(ValueError, match="kernel 1"):
        BatchBlur(torch.stack([torch.ones(3, 3), -torch.ones(3, 3)]))
    with pytest.raises(ValueError, match="odd"):
        BatchBlur([torch.ones(2, 2)])


def test_ridge_preconditioner_is_exact_per_sample_for_circular_blurs():
    op = BatchBlur(some_kernels(2, seed=6), padding="circular")
    rho = torch.tensor([0.05, 0.5], dtype=DT).view(-1, 1, 1, 1)
    v = rand(2, 3, 8, 9, seed=7)
    p = op.ridge_preconditioner(rho)
    torch.testing.assert_close(op.normal(p(v)) + rho * p(v), v, rtol=0, atol=1e-10)


# ------------------------------------------------------------------------------- Physics
def test_physics_measures_with_the_noise_of_each_sample_and_selects():
    op = BatchBlur(some_kernels(3, seed=8), padding="circular")
    ph = Physics(op, torch.tensor([0.0, 0.1, 0.2]))
    x = torch.zeros(3, 3, 64, 64)
    y = ph.measure(x, generator=torch.Generator().manual_seed(0))
    std = y.flatten(1).std(1)
    assert float(std[0]) == 0
    assert abs(float(std[1]) - 0.1) < 0.005 and abs(float(std[2]) - 0.2) < 0.01
    sub = ph.select(torch.tensor([2]))
    assert sub.op.batch_size == 1 and sub.noise_std.tolist() == pytest.approx([0.2])
    with pytest.raises(ValueError, match=">= 0"):
        Physics(op, -0.1)
    with pytest.raises(TypeError):
        Physics("blur")


def test_stacking_the_physics_of_samples():
    ks = some_kernels(3, seed=9)
    items = [Physics(Blur(k, padding="circular"), torch.tensor([0.01 * i])) for i, k in
             enumerate(ks)]
    ph = stack_physics(items)
    assert ph.op.batch_size == 3 and ph.noise_std.tolist() == pytest.approx([0, 0.01, 0.02])
    x = rand(3, 3, 12, 12)
    for i, item in enumerate(items):
        torch.testing.assert_close(ph.op.A(x)[i], item.op.A(x[i:i + 1])[0], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="paddings"):
        stack_physics([items[0], Physics(Blur(ks[1], padding="zeros"), torch.tensor([0.0]))])
    with pytest.raises(ValueError, match="noise level"):
        stack_physics([Physics(items[0].op)])
    assert isinstance(stack_blurs(ks[:1], [0.0]).op, Blur)


# --------------------------------------------------------------------------------- models
def deadmm(**kw):
    kw = {"rho": 0.5, "cg_iters": 50, "cg_tol": 1e-12, "noise_ref": 0.02,
          "solver": Anderson(tol=1e-11, max_iter=300), **kw}
    return DEADMM(None, Shrink(0.5, 0.2), **kw).to(DT).eval()


def test_per_sample_physics_in_one_batch_equals_separate_calls():
    """One batch mixing kernels and noise levels gives what one call per sample gives."""
    m = deadmm(noise_floor=0.01)
    ks = some_kernels(3, seed=10)
    sig = torch.tensor([0.0, 0.01, 0.05], dtype=DT)
    y = rand(3, 2, 9, 10, seed=11)
    with torch.no_grad():
        together, stats = m.solve(y, Physics(BatchBlur(ks, padding="zeros"), sig))
        for i, k in enumerate(ks):
            alone, _ = m.solve(y[i:i + 1], Physics(Blur(k, padding="zeros"), sig[i:i + 1]))
            torch.testing.assert_close(together[i], alone[0], rtol=0, atol=1e-9)
    assert bool(stats.converged.all())


def test_the_noise_rule_scales_rho_per_sample():
    m = deadmm(noise_floor=0.01)
    f2 = float(m.noise_floor().detach()) ** 2
    op = BatchBlur(some_kernels(2, seed=12))
    y = rand(2, 1, 5, 5)
    rho = m.rho_of(Physics(op, torch.tensor([0.0, 0.04])), y).flatten()
    want = float(m.rho.detach()) * torch.tensor([f2, 0.04**2 + f2]) / (0.02**2 + f2)
    torch.testing.assert_close(rho.float(), want.float(), rtol=1e-6, atol=0)
    assert m.rho_of(Physics(op), y) is not None  # unknown noise: the learned rho itself
    with pytest.raises(ValueError, match="noise rule"):
        DEADMM(None, Shrink(0.5), noise_ref=None).to(DT).rho_of(Physics(op, 0.01), y)
    with pytest.raises(ValueError, match="default operator"):
        m(y)


def test_per_sample_rho_gradient_equals_one_solve_per_sample():
    op = BatchBlur(some_kernels(2, seed=13), padding="zeros")
    aty, z, u = rand(2, 1, 6, 6, seed=1), rand(2, 1, 6, 6, seed=2), rand(2, 1, 6, 6, seed=3)
    w = rand(2, 1, 6, 6, seed=4)
    rho = torch.tensor([0.3, 0.9], dtype=DT, requires_grad=True)
    x = admm_x_update(op, aty, z, u, rho, cg_iters=100, cg_tol=1e-14)
    (g,) = torch.autograd.grad((x * w).sum(), rho)
    for i in range(2):
        r = rho.detach()[i].clone().requires_grad_(True)
        xi = admm_x_update(op.select(torch.tensor([i])), aty[i:i + 1], z[i:i + 1], u[i:i + 1],
                           r, cg_iters=100, cg_tol=1e-14)
        torch.testing.assert_close(xi[0], x[i].detach(), rtol=0, atol=1e-10)
        (gi,) = torch.autograd.grad((xi * w[i:i + 1]).sum(), r)
        torch.testing.assert_close(gi, g[i], rtol=1e-8, atol=1e-12)


def test_solve_takes_a_budget_per_call_and_changes_nothing():
    net = DnCNN(in_channels=1, depth=3, width=4, residual=True).to(DT)
    m = DEADMM(None, net, rho=0.3, noise_ref=0.01, noise_floor=0.004, cg_iters=3,
               solver=Anderson(tol=1e-3, max_iter=50, eval_tol=1e-3), backward=JFB()).to(DT)
    m.eval()
    ph = Physics(BatchBlur(some_kernels(2, seed=14), padding="circular"), 0.02)
    y = rand(2, 1, 16, 16, seed=15)
    before_state = copy.deepcopy(m.state_dict())
    before_attrs = {k: v for k, v in vars(m).items() if not k.startswith("_")}
    with torch.no_grad():
        _, loose = m.solve(y, ph)
        _, tight = m.solve(y, ph, tol=1e-8, max_iter=7)
    assert (tight.tol, tight.max_iter, int(tight.iterations.max())) == (1e-8, 7, 7)
    assert (loose.tol, loose.max_iter) == (1e-3, 50)
    assert m.solver.eval_tol == 1e-3 and m.solver.eval_max_iter is None
    assert {k: v for k, v in vars(m).items() if not k.startswith("_")} == before_attrs
    for key, value in m.state_dict().items():
        torch.testing.assert_close(value, before_state[key], rtol=0, atol=0)


def test_wiener_initialisation_is_told_the_noise():
    op = Blur(kernels.gaussian(7, 1.5).to(DT), padding="circular")
    y = rand(2, 3, 16, 16)
    sig = torch.tensor([0.001, 0.05], dtype=DT)
    x0 = initial_estimate(op, y, "wiener", sig)
    from jfb.baselines.wiener import wiener

    for i in range(2):
        lam = max(float(sig[i]), 0.004) ** 2 / 0.005
        torch.testing.assert_close(x0[i], wiener(op, y[i:i + 1], lam, penalty="gradient")[0])
    assert not torch.allclose(x0, initial_estimate(op, y, "wiener", None))


def test_feedforward_takes_the_physics_per_call():
    net = DnCNN(in_channels=3, depth=2, width=4, residual=True).to(DT)
    ff = Feedforward(None, net, init="wiener").to(DT)
    ks = some_kernels(2, seed=16)
    y = rand(2, 3, 12, 12)
    ph = Physics(BatchBlur(ks, padding="circular"), torch.tensor([0.01, 0.03], dtype=DT))
    with torch.no_grad():
        both = ff(y, ph)
        for i in range(2):
            one = ff(y[i:i + 1], Physics(Blur(ks[i], padding="circular"), ph.noise_std[i:i + 1]))
            torch.testing.assert_close(both[i], one[0], rtol=0, atol=1e-12)


# -------------------------------------------------------------------------------- kernels
def test_sampled_kernels_cover_every_kind_within_the_size():
    rng = np.random.default_rng(0)
    sizes = []
    for _ in range(200):
        k = kernels.sample(rng, 31)
        assert k.shape[0] % 2 == 1 and k.shape[1] % 2 == 1 and max(k.shape) <= 31
        assert abs(float(k.sum()) - 1) < 1e-5 and float(k.min()) >= 0
        sizes.append(max(k.shape))
    assert min(sizes) <= 5 and max(sizes) >= 29
    with pytest.raises(ValueError, match="odd"):
        kernels.sample(rng, 30)


def test_anisotropic_gaussian_is_the_gaussian_when_round_and_rotates():
    torch.testing.assert_close(kernels.anisotropic_gaussian(9, 1.5, 1.5, 0.7),
                               kernels.gaussian(9, 1.5), rtol=0, atol=1e-7)
    k = kernels.anisotropic_gaussian(11, 3.0, 1.0, 0.0)
    torch.testing.assert_close(kernels.anisotropic_gaussian(11, 3.0, 1.0, math.pi / 2), k.T,
                               rtol=0, atol=1e-7)
    assert float(k[5, :].sum()) > float(k[:, 5].sum())  # wide along x at angle 0
