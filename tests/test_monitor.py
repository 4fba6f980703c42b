"""jfb.train.monitor (``train.monitor_jfb_every``): the logged cosine, norm ratio and gamma against
a dense computation on tiny float64 models, the records the option writes, and training left
unchanged by it."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.autograd.functional import jacobian
from torch.utils.data import Dataset

from jfb.config import Config
from jfb.models import build_model
from jfb.physics import Blur, kernels
from jfb.train import monitor as monitor_module
from jfb.train.trainer import Trainer

DT = torch.float64
SIZE = 16
OP = Blur(kernels.gaussian(3, 1.0))
#: Tiny models whose fixed points a float64 solve reaches: DE-GRAD in the RED form
#: (||J|| ~ 0.51), DE-ADMM with a plain denoiser (||J|| ~ 0.999, spectral radius ~ 0.49).
MODELS = {
    "degrad": {"kind": "degrad", "eta": 0.5,
               "net": {"depth": 2, "width": 4, "residual": True, "spectral_norm": True}},
    "deadmm": {"kind": "deadmm", "rho": 1.0,
               "net": {"depth": 2, "width": 4, "residual": False, "spectral_norm": True}},
}


class Pairs(Dataset):
    """(x, A x + 0.01 n) in ``dtype``, the noise fixed per item."""

    def __init__(self, n: int, dtype: torch.dtype = DT) -> None:
        self.x = torch.rand(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0),
                            dtype=dtype)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        noise = torch.randn(self.x[i].shape, generator=torch.Generator().manual_seed(i),
                            dtype=self.x.dtype)
        return self.x[i], OP.A(self.x[i][None])[0] + 0.01 * noise


def _trainer(out: Path, kind: str = "degrad", dtype: torch.dtype = DT, **train) -> Trainer:
    cfg = Config.from_dict({
        "model": {**MODELS[kind], "solver": {"max_iter": 30, "tol": 1e-4}},
        "data": {"batch_size": 2},
        "train": {"steps": 3, "pretrain_steps": 0, "val_every": 100, "log_every": 1,
                  "device": "cpu", "lr": 1e-2, **train},
    })
    torch.manual_seed(0)
    model = build_model(cfg.to_dict()["model"], OP, channels=1).to(dtype)
    return Trainer(model, Pairs(6, dtype), None, cfg, out_dir=out, progress=False)


def _records(out: Path, kind: str = "monitor") -> list[dict]:
    path = out / "metrics.jsonl"
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == kind]


def _flat(grads) -> torch.Tensor:
    return torch.cat([g.flatten() for g in grads])


def dense_reference(model, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """The cosine and norm ratio of JFB's gradient and the exact one, and max_i ||J_i||_2, with
    dense Jacobians: v solves (I - J)^T v = dL/ds* (torch.linalg.solve), g_ift = (dT/dtheta)^T v,
    g_jfb = (dT/dtheta)^T dL/ds*, at a fixed point solved to 1e-13."""
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():
        x_hat, _ = model.solve(y, tol=1e-13, max_iter=5000)
    ctx = model.context(y, model.physics_of(None))
    s = model.state_at(x_hat, y).detach()  # a point: rho reaches it through state_at
    n, size = s.shape[0], s[0].numel()
    with model.fixed_map(advance=False):
        def T(state):
            return model.T_with(state, ctx)

        J = jacobian(T, s).reshape(n * size, n * size)
        leaf = s.clone().requires_grad_(True)
        (w,) = torch.autograd.grad(F.mse_loss(model.output(leaf), x), leaf)
        v = torch.linalg.solve((torch.eye(n * size, dtype=DT) - J).T, w.flatten())
        out = T(s)
        g_ift = _flat(torch.autograd.grad(out, params, v.view_as(s), retain_graph=True))
        g_jfb = _flat(torch.autograd.grad(out, params, w))
    blocks = J.view(n, size, n, size)
    gamma = max(float(torch.linalg.matrix_norm(blocks[i, :, i, :], 2)) for i in range(n))
    return {"cosine": float(g_jfb @ g_ift / (g_jfb.norm() * g_ift.norm())),
            "ratio": float(g_jfb.norm() / g_ift.norm()), "gamma": gamma}


@pytest.mark.parametrize("kind", list(MODELS))
def test_the_logged_cosine_and_gamma_are_a_dense_computation(tmp_path, monkeypatch, kind):
    """A 2-layer DE-GRAD / DE-ADMM on 16x16 float64 images trains 3 steps with the monitor at
    every step; the model and batch each record was measured on are copied and recomputed with
    dense Jacobians."""
    seen = []
    measure = monitor_module.measure

    def spy(model, x, y, *args, **kwargs):
        seen.append((copy.deepcopy(model), x.clone(), y.clone()))
        return measure(model, x, y, *args, **kwargs)

    monkeypatch.setattr(monitor_module, "measure", spy)
    _trainer(tmp_path, kind, monitor_jfb_every=1).fit()
    records = _records(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3] and len(seen) == 3
    for record, (model, x, y) in zip(records, seen, strict=True):
        ref = dense_reference(model, x, y)
        assert record["cosine"] == pytest.approx(ref["cosine"], abs=1e-6)
        assert record["ratio"] == pytest.approx(ref["ratio"], rel=1e-5)
        # Lanczos (40 products) approaches ||J||_2 from below
        assert ref["gamma"] * (1 - 1e-3) <= record["gamma"] <= ref["gamma"] * (1 + 1e-9)
        assert record["contractive"] == (record["gamma"] < 1)
        gamma = record["gamma"]
        assert record["cos_bound"] == (pytest.approx((1 - gamma) / (1 + gamma)) if gamma < 1
                                       else None)
        assert record["descent"] == (record["dloss"] < 0)
        assert record["fp_residual"] < 1e-10 and record["ift_residual"] < 1e-11
        # the line search's first-order prediction, -t ||g_ift|| cos, is the loss change
        assert record["dloss"] == pytest.approx(record["dloss_pred"], rel=0.2)


def test_off_writes_no_records_and_on_one_every_n_fixed_point_steps(tmp_path):
    """Pre-training steps are not counted: with 2 of them and N = 2, steps 4 and 6 of 6."""
    _trainer(tmp_path / "off", dtype=torch.float32, steps=4, pretrain_steps=2).fit()
    assert _records(tmp_path / "off") == []
    assert not (tmp_path / "off" / "monitor.csv").exists()
    _trainer(tmp_path / "on", dtype=torch.float32, steps=4, pretrain_steps=2,
             monitor_jfb_every=2).fit()
    records = _records(tmp_path / "on")
    assert [r["step"] for r in records] == [4, 6]
    for r in records:
        assert -1 <= r["cosine"] <= 1 and -1 <= r["cos_step"] <= 1
        assert r["ratio"] > 0 and r["gamma"] > 0 and isinstance(r["descent"], bool)
        assert r["kappa_max"] == pytest.approx(1 / r["gamma"])


def test_the_monitor_does_not_change_training(tmp_path):
    """Same weights (spectral-norm vectors included), optimiser moments, training records and
    global RNG state after steps with and without the monitor, with truncated training solves
    (their caps drawn from the global RNG) and a Jacobian penalty."""
    results = {}
    for every in (0, 1):
        t = _trainer(tmp_path / str(every), dtype=torch.float32, steps=4, pretrain_steps=1,
                     monitor_jfb_every=every, jacobian_penalty=0.1, grad_clip=0.5)
        t.model.solver.train_caps = (3, 5)
        t.fit()
        results[every] = (
            {k: v.clone() for k, v in t.model.state_dict().items()},
            [s["exp_avg"].clone() for s in t.optimizer.state.values()],
            [{k: v for k, v in r.items() if k not in ("time", "step_ms", "data_ms")}
             for r in _records(tmp_path / str(every), "train")],
            torch.get_rng_state(),
        )
    (w0, m0, r0, g0), (w1, m1, r1, g1) = results[0], results[1]
    assert len(_records(tmp_path / "1")) == 4
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
    assert all(torch.equal(a, b) for a, b in zip(m0, m1, strict=True))
    assert r0 == r1 and torch.equal(g0, g1)


def test_a_model_without_an_implicit_solve_is_noted_and_not_monitored(tmp_path):
    net = torch.nn.Conv2d(1, 1, 3, padding=1)
    cfg = Config.from_dict({"data": {"batch_size": 2},
                            "train": {"steps": 2, "device": "cpu", "monitor_jfb_every": 1}})
    t = Trainer(net, Pairs(4, torch.float32), None, cfg, out_dir=tmp_path, progress=False)
    assert any("monitor_jfb_every ignored" in n for n in t.notes)
    t.fit()
    assert _records(tmp_path) == []
