"""Stability of the fixed point end to end: a real solver that diverges in training, and the
contraction factor measured in evaluation (docs/RELIABILITY.md)."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import TensorDataset

from jfb.config import Config
from jfb.deq import Anderson, Picard, contraction_estimate, fixed_point
from jfb.evaluate import evaluate
from jfb.models import DEGrad
from jfb.physics import Identity
from jfb.train.checkpoint import load_checkpoint
from jfb.train.trainer import Trainer, TrainingDivergedError


class Linear(nn.Module):
    """R(x) = w x, w = 0 at the start: with A = I, T(x) = (1 - eta (1 + w)) x + eta y."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.w * x


def identity_degrad(eta: float, **kw) -> DEGrad:
    return DEGrad(Identity(), Linear(), eta=eta, eta_max=None, init="adjoint", **kw)


def pairs(n: int, seed: int = 0, size: int = 8) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size, size, generator=g)
    return TensorDataset(x, x + 0.05 * torch.randn(x.shape, generator=g))


def test_a_really_diverging_solver_is_rolled_back_then_stops_with_the_checkpoint_kept(tmp_path):
    """eta = 5 on A = I: |1 - eta| = 4, Picard runs away from the fixed point (relative residual
    -> 5/4 > train.diverge_residual = 1) at every step; the real SolverStats say so."""
    torch.manual_seed(0)
    model = identity_degrad(5.0, solver=Picard(tol=1e-6, max_iter=20))
    cfg = Config.from_dict({
        "data": {"batch_size": 4},
        "train": {"steps": 6, "lr": 1e-2, "device": "cpu", "log_every": 1, "val_every": 2,
                  "max_rollbacks": 2, "grad_clip": "none"},
    })
    t = Trainer(model, pairs(8), pairs(4, seed=1), cfg, out_dir=tmp_path, progress=False)
    with pytest.raises(TrainingDivergedError, match=r"residual blow-up .* after 2 rollbacks"):
        t.fit()
    info = load_checkpoint(tmp_path / "last.safetensors")
    assert info["step"] == 0 and info["extra"]["lr_scale"] == 0.25  # no good step was taken
    events = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    rolls = [e for e in events if e.get("rollback")]
    assert [e["rollback"] for e in rolls] == [1, 2]
    assert [e["lr"] for e in rolls] == pytest.approx([5e-3, 2.5e-3])


def test_evaluate_reports_the_contraction_factor_when_asked():
    """T(x) = (1 - eta) x + eta y with eta = 0.25: ||J_T|| = 0.75 at every image."""
    model = identity_degrad(0.25, solver=Picard(tol=1e-7, max_iter=200))
    res = evaluate(model, pairs(5, size=12), batch_size=2, contraction=True, contraction_iters=3)
    assert res.contraction.shape == (5,)
    assert torch.allclose(res.contraction, torch.full((5,), 0.75, dtype=torch.float64), rtol=1e-5)
    row = res.summary()
    assert row["contraction_mean"] == pytest.approx(0.75) and row["contraction_max"] == 0.75
    plain = evaluate(model, pairs(5, size=12), batch_size=2)
    assert plain.contraction is None and "contraction_mean" not in plain.summary()
    with pytest.raises(ValueError, match="implicit model"):
        evaluate(lambda y: y, pairs(2, size=12), contraction=True)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 3),
    d=st.integers(1, 12),
    rho=st.floats(0.05, 0.9),
    seed=st.integers(0, 2**16),
    anderson=st.booleans(),
)
def test_solvers_and_the_contraction_estimate_on_random_contractions(n, d, rho, seed, anderson):
    """T(x) = W x + b per sample with ||W||_2 = rho < 1 (singular values: rho, then at most
    0.8 rho): both solvers reach x* = (I - W)^-1 b, and the power iteration gives rho."""
    dt = torch.float64
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(n, d, d, generator=g, dtype=dt))
    v, _ = torch.linalg.qr(torch.randn(n, d, d, generator=g, dtype=dt))
    s = torch.rand(n, d, generator=g, dtype=dt) * 0.8 * rho
    s[:, 0] = rho
    w = u @ torch.diag_embed(s) @ v.transpose(1, 2)
    b = torch.randn(n, d, generator=g, dtype=dt)

    def f(x):
        return torch.einsum("nij,nj->ni", w, x) + b

    x_true = torch.linalg.solve(torch.eye(d, dtype=dt) - w, b[..., None])[..., 0]
    solver = Anderson(tol=1e-11, max_iter=500) if anderson else Picard(tol=1e-11, max_iter=500)
    x, stats = fixed_point(f, torch.zeros_like(b), solver=solver, training=True)
    assert stats.all_converged and not bool(stats.nonfinite.any())
    scale = float(x_true.abs().max()) + 1.0
    assert float((x - x_true).abs().max()) < 1e-8 * scale
    sigma = contraction_estimate(f, x, n_iter=80, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(sigma, torch.full((n,), rho, dtype=dt), rtol=1e-6)
