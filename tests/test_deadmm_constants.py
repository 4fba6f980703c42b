"""DE-ADMM computes A^T y once per solve (its ``context``): one adjoint per forward whatever
the iteration count, the same gradients w.r.t. y and the parameters as a map that recomputes it
at every application, and the restricted map of compaction takes the matching rows."""

from __future__ import annotations

import pytest
import torch

from jfb.deq import IFT, JFB, Anderson, Unrolled, fixed_point
from test_deadmm import Shrink, images, model


def counting_adjoint(m, y):
    """Count the calls of m.op.A_adjoint on the measurement ``y`` itself."""
    calls = []
    adjoint = m.op.A_adjoint

    def counted(v, *args, **kwargs):
        calls.append(v is y)
        return adjoint(v, *args, **kwargs)

    m.op.A_adjoint = counted
    return calls


@pytest.mark.parametrize("train", [False, True])
def test_a_forward_applies_the_adjoint_to_y_twice_whatever_the_iterations(train):
    """Once for the initial iterate (init="adjoint"), once for the whole solve."""
    m = model(Shrink(0.4, 0.1), solver=Anderson(tol=1e-12, max_iter=400, compact=False))
    m.train(train)
    y = images(n=2, h=5, w=6, seed=3)
    calls = counting_adjoint(m, y)
    with torch.set_grad_enabled(train):
        m(y)
    assert m.last_stats.n_evals > 3
    assert sum(calls) == 2


def admm_step(m, s, y):
    """One ADMM iteration written out, with A^T y applied by the public x_update each time."""
    z, u = s.chunk(2, dim=1)
    x = m.x_update(z, u, y)
    z_new = m.net(x + u)
    return torch.cat([z_new, u + x - z_new], dim=1)


@pytest.mark.parametrize("backward", [JFB(), IFT(tol=1e-12, max_iter=300), Unrolled()])
def test_gradients_are_those_of_a_map_recomputing_the_adjoint(backward):
    """y requires grad: the reference solves the same problem with an ADMM step that applies A^T
    to y at every application; the gradients w.r.t. y and every parameter agree."""
    y = images(n=2, h=4, w=5, seed=7)
    w = images(n=2, h=4, w=5, seed=8)
    grads = {}
    for how in ("once", "every"):
        m = model(Shrink(0.4, 0.1), backward=backward,
                  solver=Anderson(tol=1e-12, max_iter=400)).train()
        yy = y.clone().requires_grad_(True)
        if how == "once":
            out = m(yy)
        else:
            with m.fixed_map():
                s, _ = fixed_point(lambda s, m=m, yy=yy: admm_step(m, s, yy), m.initial(yy),
                                   solver=m.solver, backward=backward,
                                   params=[*m.parameters(), yy])
            out = m.output(s)
        (out * w).sum().backward()
        grads[how] = torch.cat([yy.grad.flatten(), *(p.grad.flatten() for p in m.parameters())])
    assert float(grads["once"].abs().max()) > 0
    torch.testing.assert_close(grads["once"], grads["every"], rtol=1e-9, atol=1e-12)


def test_the_restricted_map_takes_the_matching_rows_of_the_adjoint():
    m = model(Shrink(0.4, 0.1)).eval()
    y = images(n=3, h=5, w=6, seed=1)
    s = torch.cat([images(n=3, h=5, w=6, seed=2), images(n=3, h=5, w=6, seed=4)], dim=1)
    idx = torch.tensor([2, 0])
    with torch.no_grad():
        f = m.fixed_point_map(m.context(y, m.physics_of(None)))
        full, part = m.T(s, y), f.restrict(idx)(s.index_select(0, idx))
    torch.testing.assert_close(f(s), full, rtol=0, atol=1e-12)
    torch.testing.assert_close(part, full.index_select(0, idx), rtol=0, atol=1e-12)
