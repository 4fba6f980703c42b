"""Broyden in the engine and the models: every gradient strategy through it, compaction, and the
config name. Its forward behaviour (fixed points, speed, freezing, stats) is in
test_deq_solvers.py with the other solvers'."""

from __future__ import annotations

import pytest
import torch

from jfb.config import load_config
from jfb.deq import IFT, JFB, Broyden, Neumann, SubsetMap, Unrolled
from jfb.models import build_model
from jfb.physics import Blur, kernels
from test_deq_backward import TIGHT, loss_and_grads, problem, rel_err
from test_deq_solvers import affine_problem


@pytest.mark.parametrize(
    ("backward", "bound"),
    [(JFB(), 1e-8), (JFB(3), 1e-8), (Neumann(4), 1e-8), (IFT(tol=1e-12, max_iter=500), 1e-8),
     (Unrolled(), 1e-6)],
)
def test_every_strategy_gives_the_gradient_it_gives_with_picard(backward, bound):
    """The implicit strategies see only x*, so Broyden's x* must give Picard's gradient; an
    unrolled solve converged to 1e-12 differentiates to the exact (IFT) gradient."""
    model, y, c = problem(seed=3)
    reference = IFT(tol=1e-12, max_iter=500) if isinstance(backward, Unrolled) else backward
    g_ref, _ = loss_and_grads(model, y, c, reference, solver=TIGHT)
    g, st = loss_and_grads(model, y, c, backward, solver=Broyden(tol=1e-12, max_iter=300))
    assert st.all_converged and int(st.iterations.max()) < int(TIGHT.max_iter)
    assert rel_err(g, g_ref) < bound, rel_err(g, g_ref)


@pytest.mark.parametrize("check_every", [1, 3])
def test_compacted_broyden_solve_equals_the_whole_batch_solve(check_every):
    """Six affine samples that finish at different iterations: cutting the map down to the
    unfinished ones changes neither the result nor the statistics, and costs fewer rows."""
    _, x_true, w, b = affine_problem(n=6, d=30, radius=0.97, seed=4)
    rows = {True: 0, False: 0}

    def counted(compact):
        def restrict(idx):
            def g(x):
                rows[compact] += x.shape[0]
                return torch.einsum("nij,nj->ni", w[idx], x) + b[idx]
            return g
        return SubsetMap(restrict(torch.arange(6)), restrict)

    out = {}
    with torch.no_grad():
        for compact in (False, True):
            solver = Broyden(tol=1e-10, max_iter=400, check_every=check_every, compact=compact)
            out[compact] = solver.solve(counted(compact), torch.zeros_like(b))
    (xa, sa), (xb, sb) = out[False], out[True]
    assert int(sa.iterations.min()) < int(sa.iterations.max())
    torch.testing.assert_close(xb, xa, rtol=0, atol=1e-12)
    torch.testing.assert_close(xb, x_true, rtol=0, atol=1e-7)
    assert torch.equal(sa.iterations, sb.iterations) and sa.all_converged
    assert rows[False] == 6 * sa.n_evals and rows[True] < rows[False]


@pytest.mark.parametrize("m", [3, 20])
def test_the_autograd_path_iterates_as_the_buffered_one(m):
    """Without autograd the low-rank factors sit in preallocated buffers, with it they are
    concatenated: the same iterates either way, through restarts (m = 3) or not."""
    f, x_true, _, _ = affine_problem(n=3, d=30, radius=0.97, seed=5)
    solver = Broyden(tol=1e-10, max_iter=200, m=m)
    x0 = torch.zeros_like(x_true)
    with torch.no_grad():
        xa, sa = solver.solve(f, x0)
    xb, sb = solver.solve(f, x0.clone().requires_grad_(True))
    assert xb.requires_grad and not xa.requires_grad
    assert torch.equal(sa.iterations, sb.iterations) and sa.all_converged
    torch.testing.assert_close(xb.detach(), xa, rtol=0, atol=1e-12)


def test_the_config_name_builds_broyden_with_its_keys():
    cfg = load_config(None, ["model.net.depth=2", "model.net.width=4", "model.solver.name=broyden",
                             "model.solver.m=7", "model.solver.eval_max_iter=90"]).model
    model = build_model(cfg, Blur(kernels.gaussian(3, 1.0)), channels=3)
    solver = model.solver
    assert isinstance(solver, Broyden)
    assert (solver.m, solver.eval_max_iter, solver.tol) == (7, 90, cfg.solver.tol)
