"""Gradient strategies, each against an independent reference (finite differences, unrolling)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from jfb.deq import (
    IFT,
    JFB,
    Anderson,
    Neumann,
    Picard,
    Unrolled,
    contraction_estimate,
    fixed_point,
)

DT = torch.float64
TIGHT = Picard(tol=1e-13, max_iter=2000)


class SmallT(nn.Module):
    """T(x; y) = 0.6 tanh(conv(x) + b) + y: a contraction with a real Jacobian."""

    def __init__(self, channels: int = 2, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, dtype=DT)
        with torch.no_grad():
            self.conv.weight.copy_(
                0.25 * torch.randn(self.conv.weight.shape, generator=g, dtype=DT)
            )
            self.conv.bias.copy_(0.1 * torch.randn(self.conv.bias.shape, generator=g, dtype=DT))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 0.6 * torch.tanh(self.conv(x)) + y


def problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed + 100)
    model = SmallT(seed=seed)
    y = torch.randn(2, 2, 5, 6, generator=g, dtype=DT)
    c = torch.randn(2, 2, 5, 6, generator=g, dtype=DT)
    return model, y, c


def loss_and_grads(model, y, c, backward, solver=TIGHT):
    y = y.clone().requires_grad_(True)
    model.zero_grad()
    x, stats = fixed_point(
        lambda x: model(x, y),
        torch.zeros_like(y),
        solver=solver,
        backward=backward,
        params=list(model.parameters()) + [y],
    )
    loss = (x * c).sum()
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters()] + [y.grad.flatten()])
    return grads, stats


def finite_difference_grads(model, y, c, h=1e-6):
    """Central differences of L(theta) = <x*(theta), c> for every weight, bias and y entry."""

    def loss():
        with torch.no_grad():
            x, _ = fixed_point(lambda x: model(x, y), torch.zeros_like(y), solver=TIGHT)
        return float((x * c).sum())

    out = []
    for tensor in (model.conv.weight, model.conv.bias, y):
        flat = tensor.data.view(-1)
        for i in range(flat.numel()):
            old = float(flat[i])
            flat[i] = old + h
            up = loss()
            flat[i] = old - h
            down = loss()
            flat[i] = old
            out.append((up - down) / (2 * h))
    return torch.tensor(out, dtype=DT)


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def reference():
    model, y, c = problem()
    return model, y, c, finite_difference_grads(model, y, c)


@pytest.mark.parametrize("solver", ["fixed_point", "anderson", "gmres"])
def test_ift_matches_central_finite_differences(reference, solver):
    model, y, c, fd = reference
    g, stats = loss_and_grads(model, y, c, IFT(solver=solver, tol=1e-12, max_iter=500))
    assert rel_err(g, fd) < 1e-5
    assert stats.backward["iterations"].shape == (2,)
    assert float(stats.backward["residual"].max()) < 1e-10


def test_ift_matches_autograd_through_a_converged_unrolled_solve():
    model, y, c = problem(seed=1)
    g_ift, _ = loss_and_grads(model, y, c, IFT(tol=1e-12, max_iter=500))
    g_unr, st = loss_and_grads(model, y, c, Unrolled())
    assert st.all_converged
    assert rel_err(g_ift, g_unr) < 1e-8


def test_unrolled_through_anderson_is_differentiable_and_close_to_ift():
    model, y, c = problem(seed=2)
    g_ift, _ = loss_and_grads(model, y, c, IFT(tol=1e-12, max_iter=500))
    g_unr, _ = loss_and_grads(model, y, c, Unrolled(), solver=Anderson(tol=1e-12, max_iter=300))
    assert rel_err(g_unr, g_ift) < 1e-6


def test_neumann_approaches_ift_as_k_grows(reference):
    model, y, c, fd = reference
    errors = [rel_err(loss_and_grads(model, y, c, Neumann(k))[0], fd) for k in (0, 1, 3, 8, 40)]
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[0] > 1e-2 and errors[-1] < 1e-6, errors


def test_neumann_zero_is_jfb_and_jfb_k_is_neumann_k_minus_one():
    model, y, c = problem(seed=3)
    for k in (1, 2, 4):
        g_jfb, _ = loss_and_grads(model, y, c, JFB(k))
        g_neu, _ = loss_and_grads(model, y, c, Neumann(k - 1))
        assert rel_err(g_jfb, g_neu) < 1e-9, k


def test_jfb_differs_from_the_exact_gradient_when_t_depends_on_x(reference):
    model, y, c, fd = reference
    g, _ = loss_and_grads(model, y, c, JFB())
    assert rel_err(g, fd) > 1e-2
    # ... but is a descent direction here, as the JFB paper proves for contractive T.
    assert float(g @ fd) > 0


def test_jfb_is_exact_when_t_does_not_depend_on_x():
    model, y, c = problem(seed=4)

    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x, y):
            return 0.0 * x + self.inner(y, y)  # T(x) = g(theta, y): J = 0

    const = Constant()
    g_jfb, _ = loss_and_grads(const, y, c, JFB())
    g_ift, _ = loss_and_grads(const, y, c, IFT(tol=1e-12))
    assert rel_err(g_jfb, g_ift) < 1e-12


def test_no_gradient_step_when_nothing_needs_a_gradient():
    model, y, c = problem()
    calls = {"n": 0}

    def f(x):
        calls["n"] += 1
        return model(x, y)

    x0 = torch.zeros_like(y)
    with torch.no_grad():
        _, st = fixed_point(f, x0, solver=Picard(tol=1e-8, max_iter=500))
    assert calls["n"] == st.n_evals
    calls["n"] = 0
    _, st = fixed_point(f, x0, solver=Picard(tol=1e-8, max_iter=500), params=[])
    assert calls["n"] == st.n_evals  # params say nothing needs a gradient
    calls["n"] = 0
    out, st = fixed_point(
        f, x0, solver=Picard(tol=1e-8, max_iter=500), params=list(model.parameters())
    )
    assert calls["n"] == st.n_evals + 1 and out.requires_grad
    frozen = SmallT().requires_grad_(False)
    _, st = fixed_point(lambda x: frozen(x, y), x0, solver=Picard(tol=1e-8))
    assert st.n_evals > 0


def test_module_f_uses_its_own_parameters():
    model, y, c = problem()

    class WithY(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, x):
            return self.m(x, y)

    out, _ = fixed_point(WithY(), torch.zeros_like(y), solver=Picard(tol=1e-8, max_iter=500))
    assert out.requires_grad
    out, _ = fixed_point(
        WithY().requires_grad_(False), torch.zeros_like(y), solver=Picard(tol=1e-8, max_iter=500)
    )
    assert not out.requires_grad


@pytest.mark.parametrize("method", ["power", "lanczos"])
def test_contraction_estimate_is_the_spectral_norm_of_a_linear_map(method):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 6, 6, generator=g, dtype=DT) * 0.3
    b = torch.randn(3, 6, generator=g, dtype=DT)

    def f(x):
        return torch.einsum("nij,nj->ni", w, x) + b

    est = contraction_estimate(f, torch.zeros(3, 6, dtype=DT), n_iter=200, method=method)
    true = torch.linalg.matrix_norm(w, ord=2)
    assert torch.allclose(est, true, rtol=1e-6)
    if method == "power":
        return
    _, st = fixed_point(
        f, torch.zeros(3, 6, dtype=DT), solver=Picard(tol=1e-3, max_iter=2000), contraction_iters=50
    )
    assert st.contraction is not None and st.contraction.shape == (3,)
    _, st = fixed_point(f, torch.zeros(3, 6, dtype=DT), solver=Picard(tol=1e-3, max_iter=2000))
    assert st.contraction is None


def test_lanczos_finds_a_clustered_top_singular_value_sooner_than_power_iteration():
    """Singular values crowded below the largest (as a blur's are): after 20 products with
    J^T J both estimates are below it, Lanczos at least five times closer; over the whole space
    (n_iter = dimension) Lanczos is exact."""
    g = torch.Generator().manual_seed(1)
    d = 60
    u = torch.linalg.qr(torch.randn(2, d, d, generator=g, dtype=DT))[0]
    v = torch.linalg.qr(torch.randn(2, d, d, generator=g, dtype=DT))[0]
    s = 1 - torch.linspace(0, 0.5, d, dtype=DT) ** 2
    w = u @ torch.diag(s) @ v.mT

    def f(x):
        return torch.einsum("nij,nj->ni", w, x)

    x = torch.zeros(2, d, dtype=DT)
    est = {m: contraction_estimate(f, x, n_iter=20, method=m,
                                   generator=torch.Generator().manual_seed(2))
           for m in ("power", "lanczos")}
    assert (est["power"] <= 1 + 1e-12).all() and (est["lanczos"] <= 1 + 1e-12).all()
    assert (1 - est["lanczos"] < 0.2 * (1 - est["power"])).all()
    exact = contraction_estimate(f, x, n_iter=d, method="lanczos")
    assert torch.allclose(exact, torch.ones(2, dtype=DT), atol=1e-10)
    with pytest.raises(ValueError, match="method"):
        contraction_estimate(f, x, method="arnoldi")


def test_ift_gmres_solves_where_the_fixed_point_iteration_cannot():
    """With ||J|| > 1 the backward fixed-point iteration diverges but I - J^T is invertible."""
    w = torch.tensor([[[1.5, 0.0], [0.0, 0.2]]], dtype=DT)
    b = torch.tensor([[1.0, 1.0]], dtype=DT, requires_grad=True)
    x_star = torch.linalg.solve(torch.eye(2, dtype=DT) - w[0], b.detach()[0])[None]

    def f(x):
        return torch.einsum("nij,nj->ni", w, x) + b

    from jfb.deq.backward import _implicit_output
    from jfb.deq.solvers import Picard as P

    _, stats = P(tol=1e-3, max_iter=1).solve(lambda x: x, x_star)  # only to get a stats object
    for solver, ok in (("gmres", True), ("fixed_point", False)):
        out = _implicit_output(f, x_star, stats, IFT(solver=solver, tol=1e-10, max_iter=60)._solve)
        (grad,) = torch.autograd.grad(out.sum(), b)
        exact = torch.linalg.solve((torch.eye(2, dtype=DT) - w[0]).T, torch.ones(2, dtype=DT))
        close = bool(torch.allclose(grad[0], exact, atol=1e-8))
        assert close is ok, (solver, grad, exact)


def test_bad_strategy_settings_are_rejected():
    for make in (
        lambda: JFB(0),
        lambda: Neumann(-1),
        lambda: IFT(solver="lu"),
        lambda: IFT(tol=0),
        lambda: IFT(max_iter=0),
        lambda: IFT(m=0),
    ):
        with pytest.raises(ValueError):
            make()
    with pytest.raises(TypeError, match="backward"):
        fixed_point(lambda x: x, torch.zeros(1, 2), backward="jfb")
