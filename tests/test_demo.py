"""`jfb demo`: every row of the table, the files, the hand-over pause and the feedforward twin,
on a tiny version of the demo's config (`--set` overrides, through the command line)."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from torch.utils.data import Dataset

from jfb import demo
from jfb.cli import main
from jfb.pipeline import build_run, load_model
from jfb.train.trainer import Trainer

TINY = [
    "task=demo",
    "model.net.depth=3",
    "model.net.width=4",
    "model.solver.max_iter=4",
    "model.solver.eval_max_iter=4",
    "data.batch_size=2",
    "data.patch_size=24",
    "data.max_val_images=2",
    "train.steps=2",
    "train.pretrain_steps=1",
    "train.val_every=1",
    "train.log_every=1",
]


def _sets(overrides):
    return [arg for kv in overrides for arg in ("--set", kv)]


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(demo, "TUNE_IMAGES", 4)  # the tuning is not under test here: keep it short
        code = main(["demo", "--out", str(out), "--quiet", *_sets(TINY)])
    assert code == 0
    return out


def _results(out):
    return json.loads((out / "results.json").read_text())


def test_the_table_has_every_row_in_order_and_the_files_exist(demo_out):
    res = _results(demo_out)
    rows = res["rows"]
    assert [r["key"] for r in rows] == list(demo.ROW_KEYS)
    assert all(r["n_images"] == 2 for r in rows)  # data.max_val_images reached the table
    report = (demo_out / "report.md").read_text()
    for r in rows:
        assert f"| {r['method']} |" in report
    names = {r["key"]: r["method"] for r in rows}
    assert "BSDS" in names["default"] and "feedforward" in names["feedforward"]
    iters = {r["key"]: r["mean_solver_iters"] for r in rows}
    assert iters["default"] > 1 and iters["implicit"] >= 1  # the shipped model's solve, counted
    assert iters["feedforward"] is None and iters["tv"] is None
    assert names["implicit"].startswith("DE-ADMM + JFB")
    for name in ("figure.png", "curve.png", "implicit/config.json",
                 "feedforward/config.json", f"implicit/{demo.HANDOVER}"):
        assert (demo_out / name).is_file(), name


def test_step_counts_follow_the_overrides_and_match_the_log(demo_out):
    res = _results(demo_out)
    summary = res["training"]["implicit"]
    assert (summary["pretrain_steps"], summary["steps"]) == (1, 2)  # --set train.steps=2
    rows = {r["key"]: r for r in res["rows"]}
    assert rows["implicit"]["steps"] == "1 + 2" and rows["handover"]["steps"] == "1 + 0"
    log = [json.loads(line)
           for line in (demo_out / "implicit/metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in log if r["kind"] == "train") == 3  # the curve's last step
    phases = [(r["step"], r["phase"]) for r in log if r["kind"] == "train"]
    assert phases == [(1, "pretrain"), (2, "train"), (3, "train")]
    report = (demo_out / "report.md").read_text()
    assert "global steps 1-1 pre-train" in report and "steps 2-3" in report


def test_the_handover_checkpoint_is_the_model_after_pretraining(demo_out):
    _, _, info = load_model(demo_out / "implicit" / demo.HANDOVER)
    assert info["step"] == 1
    _, _, last = load_model(demo_out / "implicit" / "last.safetensors")
    assert last["step"] == 3


def test_the_twin_is_the_same_net_fed_forward_for_the_implicit_runs_seconds(demo_out):
    res = _results(demo_out)
    implicit_cfg = json.loads((demo_out / "implicit/config.json").read_text())
    twin_cfg = json.loads((demo_out / "feedforward/config.json").read_text())
    assert twin_cfg["model"]["kind"] == "feedforward"
    assert twin_cfg["model"]["net"] == implicit_cfg["model"]["net"]
    assert twin_cfg["train"]["pretrain_steps"] == 0
    seconds = res["training"]["implicit"]["train_seconds"]
    assert twin_cfg["train"]["max_minutes"] * 60 == pytest.approx(seconds, rel=1e-9)
    rows = {r["key"]: r for r in res["rows"]}
    assert rows["feedforward"]["params"] == rows["implicit"]["params"] - 1  # DE-ADMM adds rho
    assert res["training"]["feedforward"]["steps"] == int(rows["feedforward"]["steps"])


def test_twin_config_changes_the_kind_the_schedule_and_nothing_of_the_net(tmp_path):
    cfg = demo.demo_config([*TINY, "train.init_net=x.safetensors"])
    twin = demo.twin_config(cfg, steps=7, seconds=30.0, out_dir=tmp_path)
    assert twin.model.kind == "feedforward" and twin.model.net == cfg.model.net
    assert twin.model.init == cfg.model.init
    t = twin.train
    assert (t.steps, t.pretrain_steps, t.init_net, t.jacobian_penalty) == (7, 0, None, 0.0)
    assert t.max_minutes == pytest.approx(0.5) and t.out_dir == tmp_path.as_posix()
    assert t.val_every == 2  # ceil(7 / TWIN_VALIDATIONS): the last validation is the last step
    assert demo.twin_config(cfg, steps=7, seconds=None, out_dir=tmp_path).train.max_minutes \
        is None


def test_the_twin_takes_as_many_steps_as_the_probe_says_fit(monkeypatch, tmp_path):
    cfg = demo.demo_config(TINY)
    run = build_run(cfg)
    monkeypatch.setattr(demo, "seconds_per_step", lambda run, cfg: 10.0)
    twin = demo.train_twin(run, cfg, 60.0, tmp_path / "ff", progress=False)
    assert twin.summary["steps"] == 6 and twin.summary["stopped"] == "completed"


def test_the_probe_times_a_run_of_the_twin_without_touching_the_twins_folder(tmp_path):
    cfg = demo.demo_config([*TINY, f"train.out_dir={(tmp_path / 'ff').as_posix()}"])
    probe = demo.twin_config(cfg, steps=3, seconds=None, out_dir=tmp_path / "ff")
    assert demo.seconds_per_step(build_run(cfg), probe) > 0
    assert not (tmp_path / "ff").exists()


def test_the_handover_pause_leaves_the_training_as_it_was(tmp_path):
    cfg = demo.demo_config([*TINY, f"train.out_dir={(tmp_path / 'paused').as_posix()}"])
    paused = demo.train_with_handover(build_run(cfg), cfg, progress=False)
    straight = build_run(cfg)
    Trainer(straight.model, straight.train_pairs, straight.val_pairs, cfg,
            out_dir=tmp_path / "straight", progress=False).fit()
    a = load_model(paused.out_dir / "last.safetensors").model.state_dict()
    b = load_model(tmp_path / "straight" / "last.safetensors").model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-7, msg=key)
    assert paused.summary["global_step"] == 3


class SignalOnRead(Dataset):
    """``data`` that sends this process SIGTERM when its ``at``-th item is read (the trainer's
    handler, installed during ``fit``, turns it into a clean stop after the step)."""

    def __init__(self, data, at: int) -> None:
        self.data, self.at, self.reads = data, at, 0

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        self.reads += 1
        if self.reads == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return self.data[i]


@pytest.mark.parametrize("at", [1, 3])  # in the first step (pre-training), in the second
def test_a_signal_stops_the_demo_not_just_the_run_in_progress(tmp_path, at):
    received = []
    previous = signal.signal(signal.SIGTERM, lambda *_: received.append(1))  # outside fit
    try:
        cfg = demo.demo_config([*TINY, f"train.out_dir={(tmp_path / 'run').as_posix()}"])
        run = build_run(cfg)
        run.train_pairs = SignalOnRead(run.train_pairs, at)  # batch_size 2: read 3 is step 2
        with pytest.raises(KeyboardInterrupt):
            demo.train_with_handover(run, cfg, progress=False)
        run.train_pairs = SignalOnRead(run.train_pairs.data, at)
        with pytest.raises(KeyboardInterrupt):
            demo.train_twin(run, cfg, 60.0, tmp_path / "ff", progress=False)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not received  # every signal reached the trainer's handler


def test_report_lines_never_begin_with_a_plus_which_markdown_reads_as_a_list_item():
    import textwrap

    texts = ["a" * n + " DE-ADMM + JFB moved it" for n in range(80, 100)]
    plus = [t for t in texts if any(line.startswith("+")
                                    for line in textwrap.fill(t, 100).splitlines())]
    assert plus  # plain wrapping would start a line with "+" for some of them
    for text in texts:
        lines = demo._fill(text).splitlines()
        assert not any(line.lstrip().startswith("+") for line in lines)
        assert " ".join(lines) == text and max(map(len, lines)) <= 100


def test_a_second_demo_in_the_same_folder_replaces_the_first_runs_logs(monkeypatch, tmp_path):
    monkeypatch.setattr(demo, "seconds_per_step", lambda run, cfg: 10.0)  # 6 twin steps
    cfg = demo.demo_config([*TINY, f"train.out_dir={(tmp_path / 'run').as_posix()}"])
    for _ in range(2):
        trained = demo.train_with_handover(build_run(cfg), cfg, progress=False)
        twin = demo.train_twin(build_run(cfg), cfg, 60.0, tmp_path / "ff", progress=False)
    steps = [r["step"] for r in trained.records if r["kind"] == "train"]
    assert steps == [1, 2, 3]  # one run's log, not two
    assert sum(r["kind"] == "summary" for r in twin.records) == 1


def test_the_demo_does_not_delete_a_folder_that_is_not_one_of_its_runs(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(demo.ConfigError, match="not a training run"):
        demo.fresh_run_folder(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    assert demo.fresh_run_folder(tmp_path / "new") == tmp_path / "new"


def test_the_report_says_when_the_twin_missed_the_implicit_runs_seconds(tmp_path):
    def run(seconds):
        return demo.TrainedRun(tmp_path, {"train_seconds": seconds}, [], [(0.0, 0.0)])

    assert demo._pace_note(run(100.0), run(95.0)) == ""
    note = demo._pace_note(run(100.0), run(40.0))
    assert "40%" in note and "idle" in note
