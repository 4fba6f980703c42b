"""Solvers apply T to the unfinished samples only (``SubsetMap``, ``compact``): the same
result and statistics as the whole-batch solve, fewer sample applications, and never under
autograd, with ``compact=False`` or for operators that hold per-sample data."""

from __future__ import annotations

import pytest
import torch

from jfb.config import Config
from jfb.deq import Anderson, Picard, SubsetMap, Unrolled
from jfb.models import DEADMM, DEGrad, build_model
from jfb.physics import Blur, Mask, kernels

DT = torch.float64


class CountingProblem:
    """T(x)_i = a_i x_i + b_i, with per-sample rates a_i from 0.1 to 0.9 (so samples finish at
    very different iterations); counts the sample rows every application received."""

    def __init__(self, n: int = 6, d: int = 30) -> None:
        g = torch.Generator().manual_seed(0)
        self.a = torch.linspace(0.1, 0.9, n, dtype=DT)[:, None]
        self.b = torch.randn(n, d, generator=g, dtype=DT)
        self.rows = 0
        self.restricted = 0

    def full(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        return self.a * x + self.b

    def subset(self, idx: torch.Tensor):
        self.restricted += 1

        def g(x: torch.Tensor) -> torch.Tensor:
            self.rows += x.shape[0]
            return self.a[idx] * x + self.b[idx]

        return g

    def map(self) -> SubsetMap:
        return SubsetMap(self.full, self.subset)


SOLVERS = [
    lambda **kw: Picard(tol=1e-10, max_iter=400, **kw),
    lambda **kw: Anderson(m=3, tol=1e-10, max_iter=400, **kw),
    lambda **kw: Picard(tol=1e-10, max_iter=400, check_every=4, **kw),
]


@pytest.mark.parametrize("make", SOLVERS)
def test_compacted_solve_equals_the_whole_batch_solve(make):
    plain, compacted = CountingProblem(), CountingProblem()
    x0 = torch.zeros_like(plain.b)
    with torch.no_grad():
        xa, sa = make(compact=False).solve(plain.map(), x0)
        xb, sb = make().solve(compacted.map(), x0)
    assert plain.restricted == 0 and compacted.restricted > 0
    torch.testing.assert_close(xb, xa, rtol=0, atol=1e-12)
    assert torch.equal(sa.iterations, sb.iterations) and torch.equal(sa.converged, sb.converged)
    assert sa.all_converged and sa.n_evals == sb.n_evals
    assert plain.rows == x0.shape[0] * sa.n_evals
    # Each sample costs its own iterations (up to check_every - 1 more), not the slowest's.
    assert compacted.rows <= int(sb.iterations.sum()) + x0.shape[0] * 3


@pytest.mark.parametrize("check_every", [1, 4])
def test_each_sample_costs_its_own_iterations(check_every):
    plain, compacted = CountingProblem(), CountingProblem()
    x0 = torch.zeros_like(plain.b)
    with torch.no_grad():
        Picard(tol=1e-10, max_iter=400, compact=False).solve(plain.map(), x0)
        _, st = Picard(tol=1e-10, max_iter=400, check_every=check_every).solve(
            compacted.map(), x0)
    assert int(st.iterations.min()) < int(st.iterations.max()) / 5  # very different samples
    assert compacted.rows < 0.5 * plain.rows
    assert compacted.rows <= int(st.iterations.sum()) + x0.shape[0] * (check_every - 1)


def test_no_compaction_under_autograd_or_for_a_plain_map():
    prob = CountingProblem()
    x0 = torch.zeros_like(prob.b).requires_grad_(True)
    _, st = Picard(tol=1e-10, max_iter=400).solve(prob.map(), x0)  # grad on: as Unrolled
    assert prob.restricted == 0 and prob.rows == x0.shape[0] * st.n_evals
    prob.rows = 0
    with torch.no_grad():
        _, st = Picard(tol=1e-10, max_iter=400).solve(prob.full, x0.detach())
    assert prob.rows == x0.shape[0] * st.n_evals


# ------------------------------------------------------------------------------ models
class Shrink(torch.nn.Module):
    """R(x) = k x |mean(x)| per sample: bright images shrink fast, dark ones slowly, so the
    samples of a batch converge at very different iterations."""

    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor(k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.k * x * x.mean(dim=(1, 2, 3), keepdim=True).abs()


def _rows_seen(model: torch.nn.Module) -> list[int]:
    rows: list[int] = []
    model.net.register_forward_hook(lambda _m, inp, _o: rows.append(inp[0].shape[0]))
    return rows


def _degrad(op, compact: bool) -> DEGrad:
    return DEGrad(op, Shrink(4.0), eta=0.5,
                  solver=Anderson(tol=1e-5, max_iter=100, compact=compact))


def _measurements(op) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    bright = torch.tensor([0.02, 0.05, 0.1, 0.3, 0.6, 1.0]).view(-1, 1, 1, 1)
    x = torch.rand(6, 3, 16, 16, generator=g) * bright
    return op.A(x) + 0.005 * torch.randn(x.shape, generator=g)


def test_a_model_on_a_shared_operator_compacts_with_the_same_output():
    op = Blur(kernels.gaussian(5, 1.5))
    y = _measurements(op)
    outs, seen = {}, {}
    for compact in (False, True):
        model = _degrad(op, compact).eval()
        seen[compact] = _rows_seen(model)
        with torch.no_grad():
            outs[compact] = model(y)
        assert model.last_stats.all_converged
    torch.testing.assert_close(outs[True], outs[False], rtol=1e-4, atol=1e-5)
    assert set(seen[False]) == {6} and min(seen[True]) < 6
    assert sum(seen[True]) < 0.6 * sum(seen[False])


def test_per_sample_masks_are_never_compacted_and_training_keeps_the_whole_batch():
    masks = (torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(2)) > 0.3).float()
    op = Mask(masks)
    assert not op.shared_across_batch() and Mask(masks[:1]).shared_across_batch()
    model = _degrad(op, True).eval()
    seen = _rows_seen(model)
    with torch.no_grad():
        model(_measurements(op))
    assert set(seen) == {6}
    # Unrolled training solves with autograd on: the whole batch, every iteration.
    model = _degrad(Blur(kernels.gaussian(5, 1.5)), True).train()
    model.backward = Unrolled()
    seen = _rows_seen(model)
    model(_measurements(model.op)).sum().backward()
    assert set(seen) == {6}


def test_deadmm_compacts_its_two_part_state():
    op = Blur(kernels.gaussian(5, 1.5))
    y = _measurements(op)
    outs = {}
    for compact in (False, True):
        model = DEADMM(op, Shrink(1.0), rho=0.5, cg_iters=10,
                       solver=Anderson(tol=1e-5, max_iter=60, compact=compact)).eval()
        seen = _rows_seen(model)
        with torch.no_grad():
            outs[compact] = model(y)
        assert model.last_stats.all_converged
        assert (min(seen) < 6) == compact
    torch.testing.assert_close(outs[True], outs[False], rtol=1e-4, atol=1e-5)


def test_the_config_key_reaches_the_solver():
    for value in (True, False):
        cfg = Config.from_dict({"model": {"solver": {"compact": value}}})
        model = build_model(cfg.to_dict()["model"], Blur(kernels.gaussian(3, 1.0)), channels=3)
        assert model.solver.compact is value


# ------------------------------------------------------------------------------ operators
def _shared_ops():
    from jfb.physics import BoxMask, Downsample, Identity, RandomMask
    from jfb.physics.radon import Radon

    one = (torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(3)) > 0.5).float()
    return [Blur(kernels.gaussian(5, 1.5)), Identity(), Downsample(2), Radon(12),
            RandomMask(0.5), BoxMask(0.25), Mask(one)]


@pytest.mark.parametrize("op", _shared_ops(), ids=lambda op: type(op).__name__)
def test_operators_that_claim_one_map_for_the_batch_act_alike_on_a_subset(op):
    assert op.shared_across_batch()
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    idx = torch.tensor([4, 1])
    torch.testing.assert_close(op.A(x.index_select(0, idx)), op.A(x).index_select(0, idx),
                               rtol=1e-5, atol=1e-6)
    y = op.A(x)
    torch.testing.assert_close(op.A_adjoint(y.index_select(0, idx)),
                               op.A_adjoint(y).index_select(0, idx), rtol=1e-5, atol=1e-6)


def test_an_operator_says_nothing_unless_it_knows():
    from jfb.physics import LinearOperator

    class PerSample(LinearOperator):
        def A(self, x):
            return x

        def A_adjoint(self, y):
            return y

    assert not PerSample().shared_across_batch()
