"""Forward solvers: known fixed points, speed of Anderson and Broyden, per-sample freezing, every
option."""

from __future__ import annotations

import pytest
import torch

from jfb.deq import Anderson, Broyden, Picard, fixed_point, relative_residual
from jfb.errors import SolverError

DT = torch.float64  # explicit everywhere: no global default-dtype change leaking into other tests


def affine_problem(n=3, d=40, radius=0.95, seed=0):
    """T(x) = W x + b per sample, W symmetric with eigenvalues in [-radius, radius]."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, d, d, generator=g, dtype=DT))
    ev = (torch.rand(n, d, generator=g, dtype=DT) * 2 - 1) * radius
    w = q @ torch.diag_embed(ev) @ q.transpose(1, 2)
    b = torch.randn(n, d, generator=g, dtype=DT)

    def f(x):
        return torch.einsum("nij,nj->ni", w, x) + b

    x_true = torch.linalg.solve(torch.eye(d, dtype=DT) - w, b[..., None])[..., 0]
    return f, x_true, w, b


def easy_and_hard_problem():
    """(f, f_easy, W): an easy (radius 0.1) and a hard (radius 0.95) affine sample in one batch,
    and the easy one alone."""
    fe, _, we, be = affine_problem(n=1, radius=0.1, seed=1)
    _, _, wh, bh = affine_problem(n=1, radius=0.95, seed=2)
    w, b = torch.cat([we, wh]), torch.cat([be, bh])

    def f(x):
        return torch.einsum("nij,nj->ni", w, x) + b

    return f, fe, w


@pytest.mark.parametrize(
    "solver",
    [Picard(tol=1e-10, max_iter=3000), Anderson(tol=1e-10, max_iter=500),
     Broyden(tol=1e-10, max_iter=500), Broyden(tol=1e-10, max_iter=500, m=3)],
)
def test_solvers_reach_the_known_fixed_point(solver):
    f, x_true, _, _ = affine_problem()
    x, stats = fixed_point(f, torch.zeros_like(x_true), solver=solver, training=True)
    assert stats.all_converged
    assert torch.allclose(x, x_true, atol=1e-7, rtol=0)
    assert float(relative_residual(f(x), x).max()) < 1e-9


def test_anderson_needs_clearly_fewer_evaluations_than_picard():
    f, x_true, _, _ = affine_problem(radius=0.97)
    x0 = torch.zeros_like(x_true)
    _, sp = fixed_point(f, x0, solver=Picard(tol=1e-6, max_iter=5000))
    _, sa = fixed_point(f, x0, solver=Anderson(tol=1e-6, max_iter=5000, m=10))
    assert sp.all_converged and sa.all_converged
    assert sa.n_evals * 2 < sp.n_evals, (sa.n_evals, sp.n_evals)


def test_broyden_needs_far_fewer_evaluations_than_picard_when_ill_conditioned():
    """Eigenvalues of W up to 0.99: Picard's error shrinks by at most 0.99 a step."""
    f, x_true, _, _ = affine_problem(radius=0.99)
    x0 = torch.zeros_like(x_true)
    _, sp = fixed_point(f, x0, solver=Picard(tol=1e-8, max_iter=5000))
    x, sb = fixed_point(f, x0, solver=Broyden(tol=1e-8, max_iter=5000))
    assert sp.all_converged and sb.all_converged
    assert sb.n_evals * 4 < sp.n_evals, (sb.n_evals, sp.n_evals)
    assert torch.allclose(x, x_true, atol=1e-6, rtol=0)


def test_broyden_terminates_in_2d_steps_on_a_linear_map_unless_its_memory_restarts():
    """Gay (1979): on g(x) = (W - I) x + b in R^d, Broyden's good method from H = -I finds the
    root in at most 2d steps, for any W with W - I invertible (here ||W||_2 > 1, where Picard
    diverges): 2d + 1 applications of T with the final residual test. Restarting the memory
    every m < 2d updates loses that (and ``m`` is the option the test makes take effect)."""
    d = 6
    g = torch.Generator().manual_seed(3)
    w = 1.4 * torch.randn(2, d, d, generator=g, dtype=DT) / d**0.5
    b = torch.randn(2, d, generator=g, dtype=DT)

    def f(x):
        return torch.einsum("nij,nj->ni", w, x) + b

    assert float(torch.linalg.matrix_norm(w, ord=2).min()) > 1
    x_true = torch.linalg.solve(torch.eye(d, dtype=DT) - w, b[..., None])[..., 0]
    x0 = torch.zeros_like(b)
    x, st = fixed_point(f, x0, solver=Broyden(tol=1e-10, max_iter=200, m=2 * d))
    assert st.all_converged and int(st.iterations.max()) <= 2 * d + 1, st.iterations
    assert torch.allclose(x, x_true, atol=1e-8, rtol=0)
    _, short = fixed_point(f, x0, solver=Broyden(tol=1e-10, max_iter=200, m=2))
    assert int(short.iterations.min()) > 2 * d + 1, short.iterations


@pytest.mark.parametrize("cls", [Picard, Anderson, Broyden])
def test_a_finished_sample_does_not_move(cls):
    """The easy sample's output after its own last iteration equals its output once the hard
    one has iterated on; the statistics count each sample's applications and residuals."""
    f, _, _ = easy_and_hard_problem()
    x0 = torch.zeros(2, 40, dtype=DT)
    x, st = fixed_point(f, x0, solver=cls(tol=1e-8, max_iter=2000, record_trace=True))
    k = int(st.iterations[0])
    x_k, st_k = fixed_point(f, x0, solver=cls(tol=1e-8, max_iter=k))
    assert bool(st_k.converged[0]) and not bool(st_k.converged[1])
    assert torch.equal(x[0], x_k[0])
    assert st.all_converged and not st.nonfinite.any()
    assert st.n_evals == int(st.iterations[1]) == st.trace.shape[0] and k < st.n_evals
    assert bool((st.residual < 1e-8).all()) and bool((st.trace[k - 2] >= 1e-8).all())
    for i in range(2):  # the residual reported is the one of its last application
        assert float(st.residual[i]) == float(st.trace[int(st.iterations[i]) - 1, i])


def test_broyden_survives_a_zero_update_denominator():
    """T(x) = x + c: g never changes, so s^T H dg = 0 at every step; the update is skipped."""
    c = torch.ones(2, 5, dtype=DT)
    x, st = fixed_point(lambda x: x + c, torch.zeros(2, 5, dtype=DT),
                        solver=Broyden(tol=1e-6, max_iter=10))
    assert torch.isfinite(x).all()
    assert not st.nonfinite.any() and not st.converged.any()


@pytest.mark.parametrize(
    "solver",
    [Picard(tol=1e-8, max_iter=2000), Anderson(tol=1e-8, max_iter=2000),
     Broyden(tol=1e-8, max_iter=2000)],
)
def test_per_sample_freezing_easy_and_hard_sample(solver):
    """An easy (radius 0.1) and a hard (radius 0.95) sample in one batch stop separately, and the
    easy one's answer is what it gets alone: the hard one cannot drag it on."""
    f, fe, w = easy_and_hard_problem()
    x, stats = fixed_point(f, torch.zeros(2, w.shape[1], dtype=DT), solver=solver)
    assert stats.iterations[0] < stats.iterations[1] / 3
    assert stats.n_evals == int(stats.iterations.max())
    x_easy, st_easy = fixed_point(fe, torch.zeros(1, w.shape[1], dtype=DT), solver=solver)
    assert int(st_easy.iterations[0]) == int(stats.iterations[0])
    assert torch.allclose(x[0], x_easy[0], atol=1e-12, rtol=0)


def test_tolerance_and_budget_take_effect():
    f, x_true, _, _ = affine_problem()
    x0 = torch.zeros_like(x_true)
    _, loose = fixed_point(f, x0, solver=Picard(tol=1e-3, max_iter=5000))
    _, tight = fixed_point(f, x0, solver=Picard(tol=1e-9, max_iter=5000))
    assert loose.iterations.max() < tight.iterations.max()
    _, capped = fixed_point(f, x0, solver=Picard(tol=1e-12, max_iter=7))
    assert int(capped.iterations.max()) == 7 and not capped.converged.any()
    assert capped.max_iter == 7


@pytest.mark.parametrize("cls", [Picard, Broyden])
def test_eval_budget_is_used_when_not_training(cls):
    f, x_true, _, _ = affine_problem()
    solver = cls(tol=1e-2, max_iter=5, eval_tol=1e-9, eval_max_iter=3000)
    x0 = torch.zeros_like(x_true)
    _, tr = fixed_point(f, x0, solver=solver, training=True)
    _, ev = fixed_point(f, x0, solver=solver, training=False)
    assert int(tr.iterations.max()) <= 5 and tr.tol == 1e-2
    assert ev.all_converged and ev.tol == 1e-9 and ev.iterations.max() > 5
    with torch.no_grad():  # default: grad mode off -> evaluation budget
        _, default = fixed_point(f, x0, solver=solver)
    assert default.tol == 1e-9


@pytest.mark.parametrize("cls", [Picard, Anderson, Broyden])
def test_train_caps_truncate_training_solves_at_random_and_leave_evaluation_alone(cls):
    """Each training solve stops at a cap drawn from train_caps and max_iter (all of them
    seen over the draws, in proportion); an evaluation solve ignores them."""
    f, x_true, _, _ = affine_problem()
    x0 = torch.zeros_like(x_true)
    solver = cls(tol=1e-12, max_iter=9, train_caps=(2, 4), eval_tol=1e-12, eval_max_iter=11)
    torch.manual_seed(0)
    seen = [int(fixed_point(f, x0, solver=solver, training=True)[1].iterations.max())
            for _ in range(60)]
    assert set(seen) == {2, 4, 9} and all(seen.count(k) > 10 for k in (2, 4, 9))
    for _ in range(5):
        assert int(fixed_point(f, x0, solver=solver, training=False)[1].iterations.max()) == 11
    for bad in ((0,), (2, 1.5), (True,)):
        with pytest.raises((ValueError, TypeError), match="train_caps"):
            cls(train_caps=bad)


def test_check_every_only_delays_the_exit_test():
    f, x_true, _, _ = affine_problem()
    x0 = torch.zeros_like(x_true)
    x1, s1 = fixed_point(f, x0, solver=Picard(tol=1e-8, max_iter=3000, check_every=1))
    x7, s7 = fixed_point(f, x0, solver=Picard(tol=1e-8, max_iter=3000, check_every=7))
    assert torch.equal(s1.iterations, s7.iterations)  # per-sample counts unchanged
    assert torch.equal(x1, x7)  # frozen samples stay frozen during the extra calls
    assert s7.n_evals % 7 == 0 and s1.n_evals <= s7.n_evals < s1.n_evals + 7


def test_trace_is_recorded_on_request():
    f, x_true, _, _ = affine_problem()
    _, st = fixed_point(f, torch.zeros_like(x_true), solver=Picard(tol=1e-6, max_iter=3000))
    assert st.trace is None
    _, st = fixed_point(
        f, torch.zeros_like(x_true), solver=Picard(tol=1e-6, max_iter=3000, record_trace=True)
    )
    assert st.trace.shape == (st.n_evals, x_true.shape[0])
    assert torch.allclose(st.trace[st.iterations[0] - 1, 0], st.residual[0].to(st.trace.dtype))


def test_damping_and_anderson_parameters_change_the_iteration():
    f, x_true, _, _ = affine_problem()
    x0 = torch.zeros_like(x_true)

    def iters(solver):
        x, st = fixed_point(f, x0, solver=solver)
        assert torch.allclose(x, x_true, atol=1e-5)
        return st.iterations.tolist()

    base = dict(tol=1e-8, max_iter=5000)
    assert iters(Picard(**base)) != iters(Picard(**base, damping=0.5))
    assert iters(Anderson(**base, m=2)) != iters(Anderson(**base, m=8))
    assert iters(Anderson(**base)) != iters(Anderson(**base, beta=0.5))
    assert iters(Anderson(**base)) != iters(Anderson(**base, lam=1.0))


def test_anderson_survives_a_singular_least_squares_system():
    """T(x) = x + c has identical residuals every step: G G^T is rank one, the bordered system
    singular without regularisation. Anderson must fall back, not produce NaN."""
    c = torch.ones(2, 5, dtype=DT)

    def f(x):
        return x + c

    for lam in (0.0, 1e-4):
        x, st = fixed_point(
            f, torch.zeros(2, 5, dtype=DT), solver=Anderson(tol=1e-6, max_iter=10, lam=lam)
        )
        assert torch.isfinite(x).all()
        assert not st.nonfinite.any() and not st.converged.any()


@pytest.mark.parametrize("cls", [Anderson, Broyden])
def test_nonfinite_samples_are_reported_frozen_and_can_raise(cls):
    f0, x_true, _, _ = affine_problem(n=2)

    def f(x):
        out = f0(x)
        return torch.cat([out[:1], out[1:] * float("nan")])

    x, st = fixed_point(f, torch.zeros_like(x_true), solver=cls(tol=1e-8, max_iter=500))
    assert st.nonfinite.tolist() == [False, True]
    assert st.converged.tolist() == [True, False]
    assert torch.allclose(x[0], x_true[0], atol=1e-6)
    with pytest.raises(SolverError, match="NaN"):
        fixed_point(f, torch.zeros_like(x_true), solver=cls(max_iter=50, on_failure="raise"))


def test_non_convergence_warns_or_raises_on_request():
    f, x_true, _, _ = affine_problem()
    x0 = torch.zeros_like(x_true)
    with pytest.warns(RuntimeWarning, match="did not reach"):
        fixed_point(f, x0, solver=Picard(tol=1e-12, max_iter=3, on_failure="warn"))
    with pytest.raises(SolverError, match="did not reach tol"):
        fixed_point(f, x0, solver=Picard(tol=1e-12, max_iter=3, on_failure="raise"))
    fixed_point(f, x0, solver=Picard(tol=1e-12, max_iter=3))  # "ignore": silent


@pytest.mark.parametrize("cls", [Anderson, Broyden])
def test_works_on_image_shaped_batches_and_float32(cls):
    x0 = torch.zeros(3, 2, 5, 7, dtype=torch.float32)
    target = torch.randn(3, 2, 5, 7, dtype=torch.float32)

    def f(x):
        return 0.5 * x + 0.5 * target

    x, st = fixed_point(f, x0, solver=cls(tol=1e-5, max_iter=100))
    assert x.dtype == torch.float32 and x.shape == x0.shape
    assert torch.allclose(x, target, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(tol=0),
        dict(tol=float("nan")),
        dict(max_iter=0),
        dict(check_every=0),
        dict(on_failure="explode"),
        dict(eval_max_iter=-1),
    ],
)
def test_bad_solver_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        Picard(**kwargs)


def test_bad_anderson_settings_and_bad_calls_are_rejected():
    for kw in (dict(m=0), dict(lam=-1.0), dict(beta=0.0), dict(beta=1.5)):
        with pytest.raises(ValueError):
            Anderson(**kw)
    for m in (0, 2.5):
        with pytest.raises((ValueError, TypeError), match="m"):
            Broyden(m=m)
    with pytest.raises(ValueError, match="damping"):
        Picard(damping=0.0)
    with pytest.raises(TypeError, match="solver"):
        fixed_point(lambda x: x, torch.zeros(1, 2, dtype=DT), solver="anderson")
    with pytest.raises(ValueError, match="shape"):
        fixed_point(lambda x: x[:, :1], torch.zeros(2, 3, dtype=DT), solver=Picard())


@pytest.mark.parametrize("kw", [dict(m=3), dict(m=5, beta=0.6), dict(m=1), dict(m=4, lam=0.0)])
def test_anderson_buffers_without_autograd_match_the_autograd_path(kw):
    # without autograd Anderson keeps its history in rings (newest over oldest) and the Gram
    # matrix row by row; with autograd it stacks the history out of place: the same iterates
    f0, x_true, _, _ = affine_problem(n=3, radius=0.97)

    def f(x):  # one sample goes NaN: frozen and reported the same way on both paths
        out = f0(x)
        return torch.cat([out[:2], out[2:] * float("nan")])

    solver = Anderson(tol=1e-9, max_iter=60, record_trace=True, **kw)
    x0 = torch.zeros_like(x_true)
    with torch.no_grad():
        xa, sa = solver.solve(f, x0)
    with torch.enable_grad():
        xb, sb = solver.solve(f, x0)
    torch.testing.assert_close(xa, xb, rtol=0, atol=1e-10, equal_nan=True)
    assert torch.equal(sa.iterations, sb.iterations) and torch.equal(sa.converged, sb.converged)
    assert sa.nonfinite.tolist() == [False, False, True]
    torch.testing.assert_close(sa.trace, sb.trace, rtol=1e-6, atol=1e-12, equal_nan=True)
    if kw["m"] > 1:
        assert sa.n_evals > 2 * kw["m"]  # the rings wrapped around
