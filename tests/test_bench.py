"""`jfb bench`: every scenario runs in its tiny configuration and writes well-formed JSON; the
graph-size measure behaves as it must (grows with the cap for Unrolled, not for JFB). No timing
is asserted anywhere: timings are benchmarks, not tests."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from jfb import bench
from jfb import cpu_malloc as allocator
from jfb.deq import JFB, Anderson, Unrolled
from jfb.nets import DnCNN

HEADER = {
    "scenario", "size", "device", "device_name", "torch", "threads", "date", "command",
    "python", "platform", "loadavg_start", "loadavg_end", "wall_s", "config", "timing",
    "results", "notes", "cpu_malloc",
}
STEP_ROW = {
    "strategy", "image", "batch", "max_iter", "tol", "oom", "forward_s", "backward_s",
    "optim_s", "step_s", "step_s_all", "forward_iters_mean", "n_evals_median",
    "backward_iters_mean", "peak_cuda_bytes", "graph_bytes", "step_over_jfb", "graph_over_jfb",
}


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    recs = {}
    for name in bench.ALL:
        rec = bench.run_scenario(name, size="tiny", out=out, threads=1, quiet=True)
        on_disk = json.loads((out / f"{name}_tiny.json").read_text())
        assert on_disk["scenario"] == name
        assert (out / f"{name}_tiny.md").read_text().startswith(f"## `{name}` (tiny)")
        recs[name] = on_disk
        assert rec["results"].keys() == on_disk["results"].keys()
    return recs


@pytest.mark.parametrize("name", list(bench.ALL))
def test_every_scenario_writes_header(records, name):
    rec = records[name]
    assert HEADER <= rec.keys()
    assert rec["size"] == "tiny" and rec["device"] == "cpu" and rec["threads"] == 1
    assert rec["torch"] == torch.__version__
    assert rec["config"]["depth"] == bench.SIZES["tiny"].depth


def test_step_tables(records):
    res = records["step"]["results"]
    names = {"JFB", "JFB(2)", "IFT-anderson", "IFT-gmres", "Neumann(5)", "Unrolled"}
    cfg = bench.SIZES["tiny"]
    assert {r["strategy"] for r in res["at_tol"]} == names
    assert len(res["iter_sweep"]) == len(names) * len(cfg.iter_caps)
    assert len(res["size_sweep"]) == len(names) * len(cfg.image_sizes)
    for table in ("at_tol", "iter_sweep", "size_sweep"):
        for row in res[table]:
            assert STEP_ROW <= row.keys()
            assert row["step_s"] > 0 and row["graph_bytes"] > 0
            assert len(row["step_s_all"]) == cfg.repeats
    # The fixed-iteration forward does exactly max_iter applications of T (equal forward work).
    for row in res["iter_sweep"] + res["size_sweep"]:
        assert row["forward_iters_mean"] == row["max_iter"] == row["n_evals_median"]
    # Implicit strategies report their backward iterations; JFB has none.
    for row in res["at_tol"]:
        has_bwd = row["strategy"].startswith(("IFT", "Neumann"))
        assert (row["backward_iters_mean"] is not None) == has_bwd
    jfb = [r for r in res["at_tol"] if r["strategy"] == "JFB"][0]
    assert jfb["step_over_jfb"] == pytest.approx(1.0)
    assert "JFB/IFT-anderson step time" in res["ratios_at_tol"]


def test_step_graph_grows_with_cap_for_unrolled_only(records):
    rows = records["step"]["results"]["iter_sweep"]
    caps = bench.SIZES["tiny"].iter_caps
    graph = {(r["strategy"], r["max_iter"]): r["graph_bytes"] for r in rows}
    assert graph[("Unrolled", caps[-1])] > graph[("Unrolled", caps[0])]
    for name in ("JFB", "JFB(2)", "Neumann(5)", "IFT-anderson"):
        assert graph[(name, caps[-1])] == graph[(name, caps[0])]


def _tiny_model(backward, cap):
    cfg = bench.SIZES["tiny"]
    model = bench.fresh_model(cfg, torch.device("cpu"), backward=backward,
                              solver=Anderson(tol=bench.FIXED_TOL, max_iter=cap))
    x, y = bench.synthetic_pair(2, 16, 3, model.op, 0, torch.device("cpu"))
    return model, y


@pytest.mark.parametrize("cap_small, cap_large", [(2, 8)])
def test_saved_tensor_measure_unrolled_grows_jfb_flat(cap_small, cap_large):
    sizes = {}
    for name, strategy in (("jfb", JFB()), ("unrolled", Unrolled())):
        for cap in (cap_small, cap_large):
            model, y = _tiny_model(strategy, cap)
            sizes[(name, cap)] = bench.saved_tensor_bytes(lambda m=model, y=y: m(y),
                                                          exclude=model.parameters())
    assert sizes[("jfb", cap_small)] == sizes[("jfb", cap_large)] > 0
    # Unrolled keeps every iteration: roughly linear in the cap.
    assert sizes[("unrolled", cap_large)] > 2 * sizes[("unrolled", cap_small)]
    assert sizes[("unrolled", cap_small)] > sizes[("jfb", cap_small)]


def test_meter_counts_each_storage_once_and_releases():
    a = torch.randn(1000, requires_grad=True)
    w = torch.nn.Parameter(torch.randn(1000))
    meter = bench.SavedTensorMeter(exclude=[w])
    with meter:
        b = a * 2  # mul by a scalar saves nothing of a
        c = b * b  # saves b twice: one storage
        d = c * w  # saves c and w; w (a parameter) is excluded
    assert meter.current == meter.peak == 2 * 1000 * 4
    del b, c, d
    assert meter.current == 0 and meter.peak == 8000


def test_solver_scenario(records):
    res = records["solver"]["results"]
    assert res["model_source"].startswith("freshly initialised")
    cfg = bench.SIZES["tiny"]
    assert {r["solver"] for r in res["rows"]} == {
        "Picard", "Anderson(m=5)", "Anderson(m=5), no compaction", "Anderson(m=5, lam=1e-8)",
        "Broyden(m=20)"}
    by = {(r["model"], r["solver"]): r for r in res["rows"]}
    for (model, solver), row in by.items():  # compaction changes the cost, not the solve
        if solver == "Anderson(m=5), no compaction":
            assert row["iterations_per_sample"] == by[(model, "Anderson(m=5)")][
                "iterations_per_sample"]
    for row in res["rows"]:
        assert row["samples"] == cfg.solver_samples
        assert sum(row["histogram"]["counts"]) == cfg.solver_samples
        assert len(row["iterations_per_sample"]) == cfg.solver_samples
        assert 1 <= row["iters_max"] <= cfg.solver_max_iter
        assert 0.0 <= row["converged_frac"] <= 1.0


def test_floor_scenario(records):
    res = records["floor"]["results"]
    assert res["t_f_s"] > 0 and res["t_fb_s"] > 0
    n = bench.SIZES["tiny"].floor_iters
    assert res["rows"][0]["floor_s"] == pytest.approx(n * res["t_f_s"] + res["t_fb_s"])
    assert {r["solver"] for r in res["rows"]} == {
        "Picard, check_every=1", "Picard, check_every=10",
        "Anderson(m=5), check_every=1", "Anderson(m=5), check_every=10",
    }
    for row in res["rows"]:
        assert row["n_evals"] == n
        assert row["fwd_bwd_over_floor"] > 0


def test_peer_scenario(records):
    res = records["peer"]["results"]
    if res["skipped"]:
        pytest.skip(res["reason"])
    assert {r["method"] for r in res["rows"]} == {
        "ours JFB", "torchdeq 1-step phantom", "ours IFT", "torchdeq IFT"}
    agree = res["gradient_agreement"]
    # Same map, same gradient: JFB equals the one-step phantom gradient; the IFTs agree.
    assert agree["fixed: cos(ours JFB, torchdeq 1-step phantom)"] > 0.9999
    assert agree["fixed: cos(ours IFT, torchdeq IFT)"] > 0.99
    by = {(r["method"], r["regime"]): r for r in res["rows"]}
    cap = bench.SIZES["tiny"].max_iter
    # Fixed regime: both do max_iter solver calls plus one re-entry; torchdeq's IFT re-applies
    # T once in the backward, ours reuses the forward's graph.
    assert by[("ours JFB", "fixed")]["T_calls_forward"] == cap + 1
    assert by[("torchdeq IFT", "fixed")]["T_calls_backward"] == 1
    assert by[("ours IFT", "fixed")]["T_calls_backward"] == 0


def test_peer_skips_without_torchdeq(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torchdeq", None)  # import raises ImportError
    rec = bench.run_scenario("peer", size="tiny", out=tmp_path, threads=1, quiet=True)
    assert rec["results"]["skipped"] is True
    assert "torchdeq" in rec["notes"][0]
    assert "Skipped" in (tmp_path / "peer_tiny.md").read_text()


def test_inference_scenario(records):
    rows = records["inference"]["results"]["rows"]
    assert [r["image"] for r in rows] == list(bench.SIZES["tiny"].infer_sizes)
    for row in rows:
        assert not row["oom"] and row["ms_per_image"] > 0 and row["iters_mean"] >= 1


def test_main_returns_zero(tmp_path):
    argv = ["--scenario", "floor", "--size", "tiny", "--out", str(tmp_path), "--quiet",
            "--threads", "1", "--repeats", "1"]
    assert bench.main(argv) == 0
    rec = json.loads((tmp_path / "floor_tiny.json").read_text())
    assert rec["command"] == "jfb bench " + " ".join(argv)
    assert rec["config"]["repeats"] == 1


def test_threads_restored_and_bad_options(tmp_path):
    before = torch.get_num_threads()
    bench.run_scenario("inference", size="tiny", threads=1, quiet=True)
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="unknown scenario"):
        bench.run_scenario("nope", size="tiny")
    with pytest.raises(ValueError, match="unknown size"):
        bench.run_scenario("step", size="huge")
    with pytest.raises(SystemExit):
        bench.main(["--scenario", "nope"])


def test_malloc_scenario_default_then_tuned(monkeypatch, tmp_path):
    # The real tuning is irreversible for the process: replace it here, check the flow.
    calls = []

    def fake_tune() -> str:
        calls.append(1)
        monkeypatch.setattr(allocator, "_malloc_state", "tuned: fake")
        return "tuned: fake"

    monkeypatch.setattr(allocator, "_malloc_state", "default")
    monkeypatch.setattr(allocator, "tune_cpu_malloc", fake_tune)
    rec = bench.run_scenario("malloc", size="tiny", out=tmp_path, threads=1, quiet=True)
    res = rec["results"]
    if sys.platform.startswith("linux"):
        assert calls == [1] and not res["skipped"]
        assert [r["malloc"] for r in res["rows"]] == ["default", "tuned: fake"]
        assert rec["cpu_malloc"]["state"] == "tuned: fake"
        assert set(res["ratios"]) == {"default/tuned inference time",
                                      "default/tuned JFB step time"}
    # Once tuned, the comparison cannot be made again in this process.
    again = bench.run_scenario("malloc", size="tiny", threads=1, quiet=True)
    assert again["results"]["skipped"] is True


def test_all_excludes_malloc_and_photo():
    assert "malloc" in bench.SCENARIOS and "malloc" not in bench.ALL
    assert "photo" in bench.SCENARIOS and "photo" not in bench.ALL
    assert set(bench.ALL) | {"malloc", "photo"} == set(bench.SCENARIOS)


def test_photo_scenario(tmp_path):
    # jfb deblur's path on a mosaic photo, in a process of its own (no timing asserted)
    rec = bench.run_scenario("photo", size="tiny", out=tmp_path, threads=1, quiet=True)
    res = rec["results"]
    assert not res["skipped"] and res["threads"] == 1
    (row,) = res["rows"]
    assert (row["height"], row["width"]) == bench.photo.photo_shape(0.01) == (87, 116)
    assert row["threads"] == 1 and row["iterations"] and row["denoiser_calls"] >= 1
    assert row["psnr_db"] > row["input_psnr_db"]
    assert row["denoiser_gflop"] == pytest.approx(
        bench.photo.conv_flops_per_pixel(DnCNN(in_channels=3, depth=7, width=32)) / 1e9
        * row["denoiser_pixels"])
    assert row["peak_rss_bytes"] > 0 and row["user_s"] > 0
    assert (tmp_path / "photo_tiny.md").read_text().startswith("## `photo` (tiny)")


def test_photo_mosaic_is_a_photo_of_the_size_asked():
    x = bench.photo.mosaic(70, 90)
    assert x.shape == (3, 70, 90) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert float(x.std()) > 0.1
    assert bench.photo.photo_shape(12) == (3000, 4000)


# ------------------------------------------------------------------ --checkpoint: a trained model
CKPT_TASK = "op=blur,kernel=gaussian:5:1.0,noise=0.01,train=natural:patches:16," \
            "val=natural:crops:16"


def _checkpoint(path, kind: str, zero_net: bool):
    """A checkpoint of a ``kind`` model with a tiny DnCNN; ``zero_net``: R(v) = 0, so that
    DE-Prox's T(x) = R(...) = 0 and every solve stops after two iterations."""
    from jfb.config import Config
    from jfb.models import build_model
    from jfb.tasks import get_task
    from jfb.train.checkpoint import save_checkpoint

    cfg = Config.from_dict({"task": CKPT_TASK, "model": {
        "kind": kind, "net": {"name": "dncnn", "depth": 2, "width": 4,
                              "spectral_norm": False, "residual": not zero_net}}})
    torch.manual_seed(0)
    model = build_model(cfg.to_dict()["model"], get_task(CKPT_TASK).operator(), channels=3)
    if zero_net:
        with torch.no_grad():
            for p in model.net.parameters():
                p.zero_()
    save_checkpoint(path, model=model, step=0, config=cfg.to_dict(), rng=False)
    return str(path)


def test_checkpoint_is_the_model_every_scenario_times(records, tmp_path, monkeypatch):
    """A DE-Prox whose R is 0 converges in two iterations where the fresh DE-GRAD needs more:
    each scenario's iteration counts show which model it timed, and so does the class whose T
    it applies (counted here, which does not depend on the machine's floating point)."""
    from jfb.models import DEADMM, DEGrad, DEProx

    fresh = [r for r in records["step"]["results"]["at_tol"] if r["strategy"] == "JFB"][0]
    assert fresh["forward_iters_mean"] > 2
    ckpt = _checkpoint(tmp_path / "prox.safetensors", "deprox", zero_net=True)
    applied: list[str] = []  # the class of every application of T
    for cls in (DEGrad, DEProx, DEADMM):
        def counted(self, s, ctx, _T=cls.T_with):  # every solve applies T_with
            applied.append(type(self).__name__)
            return _T(self, s, ctx)

        monkeypatch.setattr(cls, "T_with", counted)
    run, calls = {}, {}
    for name in ("step", "solver", "inference", "floor", "peer"):
        applied.clear()
        run[name] = bench.run_scenario(name, size="tiny", checkpoint=ckpt, threads=1,
                                       quiet=True)["results"]
        calls[name] = list(applied)
    for name, res in run.items():
        assert res.get("skipped") or res["model"].startswith(f"checkpoint {ckpt}: DEProx"), name
        assert res.get("skipped") or (calls[name] and set(calls[name]) == {"DEProx"}), name
    for row in run["step"]["at_tol"]:
        assert row["forward_iters_mean"] <= 2, row["strategy"]
    assert all(r["iters_max"] <= 2 for r in run["solver"]["rows"])
    assert all(r["iters_mean"] <= 2 for r in run["inference"]["rows"])
    if not run["peer"]["skipped"]:
        rows = run["peer"]["rows"]
        # Ours: T is a constant map (R's weights stay 0, only its last bias learns), so the
        # residual is exactly 0 at the second iteration on any machine; the fresh model's fixed
        # regime makes max_iter + 1 calls. torchdeq's stop is its own floating point: its counts
        # are only checked to be counts of this model's T, within the budget.
        for r in rows:
            assert 1 <= r["T_calls_forward"] <= r["max_iter"] + 1, r
            assert r["T_calls_backward"] >= 0, r
            if r["method"].startswith("ours"):
                assert r["T_calls_forward"] <= 4, r
        assert sum(r["T_calls_forward"] + r["T_calls_backward"] for r in rows) <= len(
            calls["peer"])


@pytest.mark.parametrize("name", ["inference", "floor"])
def test_a_deadmm_checkpoint_runs_on_its_two_part_state(tmp_path, name):
    """DE-ADMM's state (z, u) has twice the image's channels: T is applied to model.initial(y),
    never to y itself."""
    ckpt = _checkpoint(tmp_path / "admm.safetensors", "deadmm", zero_net=False)
    res = bench.run_scenario(name, size="tiny", checkpoint=ckpt, threads=1, quiet=True,
                             repeats=1, warmup=0)["results"]
    assert res["model"].startswith(f"checkpoint {ckpt}: DEADMM")


def test_context_model_copies_the_checkpoint_in_training_mode_with_the_given_parts(tmp_path):
    from jfb.bench.common import Context

    ckpt = _checkpoint(tmp_path / "prox.safetensors", "deprox", zero_net=False)
    ctx = Context("tiny", bench.SIZES["tiny"], torch.device("cpu"), checkpoint=ckpt)
    solver, backward = Anderson(max_iter=3), Unrolled()
    a, b = ctx.model(solver=solver, backward=backward), ctx.model()
    assert a.training and b.training  # the loaded model is in eval mode; steps train
    assert a.solver is solver and a.backward is backward and b.solver is not solver
    assert a.net is not b.net  # copies: one scenario's optimiser steps do not reach another's
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
