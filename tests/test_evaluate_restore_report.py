"""Evaluation (protocol metrics, repeatability), reports, atomic writes (tiling: test_tiling.py)."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import TensorDataset

from jfb.atomic import atomic_path, write_text
from jfb.deq import Anderson
from jfb.evaluate import evaluate
from jfb.metrics import psnr
from jfb.models import DEGrad
from jfb.nets import DnCNN
from jfb.physics import Blur, kernels
from jfb.report import figure_grid, markdown_table, training_curve, write_json


def pairs(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 16, 16, generator=g)
    y = x + 0.1 * torch.randn(n, 3, 16, 16, generator=g)
    return x, y


def test_evaluate_clamps_and_reports_per_image_metrics():
    x, y = pairs()
    res = evaluate(lambda t: t, TensorDataset(x, y), name="identity", batch_size=2)
    assert res.n_images == 5
    assert torch.allclose(res.psnr, psnr(y.clamp(0, 1), x).double())
    s = res.summary()
    assert s["method"] == "identity" and s["mean_solver_iters"] is None
    assert abs(s["psnr"] - float(res.psnr.mean())) < 1e-3
    assert s["psnr_std"] > 0 and 0 < s["ssim"] < 1


def test_evaluate_collects_solver_iterations_and_examples():
    x, y = pairs(n=3)
    op = Blur(kernels.gaussian(3, 1.0))
    model = DEGrad(op, DnCNN(depth=3, width=4, residual=True), solver=Anderson(tol=1e-3))
    res = evaluate(model, TensorDataset(x, op.A(x)), batch_size=2, keep=2)
    assert res.iterations is not None and res.iterations.shape == (3,)
    assert len(res.examples) == 2 and res.examples[0].shape == (3, 16, 16)
    assert res.summary()["mean_solver_iters"] > 0
    assert not model.training
    with pytest.raises(ValueError, match="empty"):
        evaluate(lambda t: t, TensorDataset(x[:0], y[:0]))


def test_evaluate_reads_the_stats_a_method_returns_with_its_result():
    """A solve given the physics per call returns (x_hat, stats): the iterations come from it,
    not from a model attribute (the same as the model's own ``last_stats`` here)."""
    x, _ = pairs(n=3)
    op = Blur(kernels.gaussian(3, 1.0))
    model = DEGrad(op, DnCNN(depth=3, width=4, residual=True), solver=Anderson(tol=1e-3))
    data = TensorDataset(x, op.A(x))
    ref = evaluate(model, data, batch_size=2)
    res = evaluate(lambda y: model.solve(y, op, tol=1e-3), data, batch_size=2)
    assert res.iterations is not None and torch.equal(res.iterations, ref.iterations)
    assert torch.allclose(res.psnr, ref.psnr)
    fewer = evaluate(lambda y: model.solve(y, op, max_iter=1), data, batch_size=2)
    assert torch.equal(fewer.iterations, torch.ones(3, dtype=fewer.iterations.dtype))


def test_markdown_table_and_json(tmp_path):
    table = markdown_table([{"method": "a", "psnr": 30.12345}, {"method": "b"}], ["method", "psnr"])
    assert table.splitlines()[0] == "| method | psnr |"
    assert "30.12" in table and "| b | - |" in table
    write_json(tmp_path / "r.json", [{"x": 1}])
    assert json.loads((tmp_path / "r.json").read_text()) == [{"x": 1}]


def test_figures_are_written_as_png(tmp_path):
    imgs = [[torch.rand(3, 8, 8), torch.rand(1, 8, 8)]]
    figure_grid(tmp_path / "g.png", ["a", "b"], imgs, [["1 dB", "2 dB"]], title="t")
    train, val = training_curve(tmp_path / "c.png", [
        {"kind": "train", "step": 1, "loss": 0.1}, {"kind": "val", "step": 2, "psnr": 20.0},
        {"kind": "pretrain_val", "step": 1, "psnr": 9.0}])
    assert train == [(1, 0.1)] and val == [(2, 20.0)]
    for name in ("g.png", "c.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "g.png"]  # no temp files left


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path):
    target = tmp_path / "report.md"
    write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]
