"""jfb.train.cost: the cost fields of ``val`` records, their totals across resumes, and the
``train.max_cpu_minutes`` budget, on a fake CPU clock (no timed assertions)."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from types import SimpleNamespace

import torch

import jfb.train.cost as cost_mod
import jfb.train.trainer as trainer_mod
from jfb.train.checkpoint import load_checkpoint
from jfb.train.cost import t_applications
from test_trainer import Plain, Tiny, assert_same, make, records, weights

CPU_PER_STEP = 10.0  # fake CPU seconds per global step


class Solved(Tiny):
    """Tiny with a solve of 4 batched calls of T and an implicit backward of at most 2 VJPs."""

    def forward(self, y):
        out = super().forward(y)
        n = y.shape[0]
        self.last_stats.n_evals = 4
        self.last_stats.backward = {"iterations": torch.arange(n) % 3}  # max 2 with n >= 3
        return out


def fake_cpu(monkeypatch, holder: dict) -> None:
    """The CPU clock reads ``CPU_PER_STEP`` seconds per global step of ``holder["t"]``: what a
    new process resuming at step s reads there is where the old one stopped."""
    monkeypatch.setattr(cost_mod, "process_time", lambda: CPU_PER_STEP * holder["t"].step)


def fake_wall(monkeypatch, clock: dict) -> None:
    """The trainer's wall clock reads ``clock["now"]``, one second later at every reading."""

    class FakeTime:
        @staticmethod
        def perf_counter():
            clock["now"] += 1.0
            return clock["now"]

        def __getattr__(self, name):
            return getattr(time, name)

    monkeypatch.setattr(trainer_mod, "time", FakeTime())


def test_t_applications_counts_the_solve_and_the_backward():
    assert t_applications(None) == 0
    assert t_applications(SimpleNamespace(iterations=torch.ones(2))) == 0  # no n_evals
    assert t_applications(SimpleNamespace(n_evals=5)) == 5
    stats = SimpleNamespace(n_evals=5, backward={"iterations": torch.tensor([2, 7, 3])})
    assert t_applications(stats) == 12


def test_val_records_carry_cost_fields_that_continue_across_resume(tmp_path, monkeypatch):
    fake_wall(monkeypatch, {"now": 0.0})
    holder: dict = {}
    fake_cpu(monkeypatch, holder)
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)  # what the records must report, not a default
    try:
        holder["t"] = first = make(tmp_path, model_cls=Solved)
        assert first.fit(max_steps=7)["stopped"] == "max_steps"
        assert load_checkpoint(tmp_path / "last.safetensors")["extra"]["cpu_seconds"] == 70.0
        holder["t"] = second = make(tmp_path, model_seed=123, model_cls=Solved)
        assert second.fit(resume=True)["global_step"] == 9
    finally:
        torch.set_num_threads(threads)

    vals = records(tmp_path, "val")  # 3 pre-training steps, then validation every 2 steps
    assert [r["step"] for r in vals] == [5, 7, 9]
    # Summed over the resume: the resumed run's CPU clock counts from where it started.
    assert [r["cpu_seconds"] for r in vals] == [CPU_PER_STEP * r["step"] for r in vals]
    # 4 + 2 applications per main step; pre-training steps have no solve.
    assert [r["T_applications"] for r in vals] == [6 * (r["step"] - 3) for r in vals]
    walls = [r["wall_seconds"] for r in vals]
    assert walls == sorted(walls) and len(set(walls)) == 3 and walls[0] > 0
    assert all(r["threads"] == threads + 1 for r in vals)
    with open(Path(tmp_path) / "val.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["cpu_seconds"]) for r in rows] == [50.0, 70.0, 90.0]
    assert {"wall_seconds", "T_applications", "threads"} <= rows[0].keys()


def test_models_without_a_solve_apply_no_t(tmp_path):
    make(tmp_path, model_cls=Plain).fit()  # no last_stats: 6 steps, no pre-training
    assert [r["T_applications"] for r in records(tmp_path, "val")] == [0, 0, 0]
    make(tmp_path / "tiny").fit()  # solver stats without n_evals
    assert {r["T_applications"] for r in records(tmp_path / "tiny", "val")} == {0}


def test_cpu_budget_stops_resumably_and_the_resumed_run_equals_an_uninterrupted_one(
    tmp_path, monkeypatch
):
    """train.max_cpu_minutes is a budget on the training's total CPU time, over resumes."""
    ref = make(tmp_path / "a")
    ref.fit()
    holder: dict = {}
    fake_cpu(monkeypatch, holder)
    out = tmp_path / "b"
    # 30 s: the check of step index 3 (the 4th step) reads 30 s, so the run stops after it.
    holder["t"] = first = make(out, train={"max_cpu_minutes": 0.5})
    s1 = first.fit()
    assert s1["stopped"] == "cpu_limit" and s1["global_step"] == 4
    assert load_checkpoint(out / "last.safetensors")["step"] == 4
    assert "max_cpu_minutes=0.5" in records(out, "event")[-1]["message"]
    # The budget's end is validated: the curve ends at the weights the run stopped with.
    assert records(out, "val")[-1]["step"] == 4
    # A larger budget goes on to 60 s of the total, not 60 s more: step 7.
    holder["t"] = second = make(out, model_seed=123, train={"max_cpu_minutes": 1.0})
    s2 = second.fit(resume=True)
    assert s2["stopped"] == "cpu_limit" and s2["global_step"] == 7
    holder["t"] = third = make(out, model_seed=7)
    s3 = third.fit(resume=True)
    assert s3["global_step"] == 9 and s3["stopped"] == "completed"
    assert_same(weights(ref), weights(third))


def test_validation_counts_in_neither_cpu_seconds_nor_wall_seconds(tmp_path, monkeypatch):
    """Each validation burns 1000 fake CPU and wall seconds; the records must not show them."""
    holder: dict = {"validations": 0}
    wall = {"now": 0.0}
    fake_wall(monkeypatch, wall)  # and 1000 more seconds per validation, below
    monkeypatch.setattr(cost_mod, "process_time",
                        lambda: CPU_PER_STEP * holder["t"].step + 1000.0 * holder["validations"])
    monkeypatch.setattr(cost_mod, "wall_time", lambda: wall["now"])
    real_validate = trainer_mod.Trainer.validate

    def costly_validate(self, **kwargs):
        holder["validations"] += 1
        wall["now"] += 1000.0
        return real_validate(self, **kwargs)

    monkeypatch.setattr(trainer_mod.Trainer, "validate", costly_validate)
    holder["t"] = first = make(tmp_path, model_cls=Solved)
    first.fit(max_steps=7)
    holder["t"] = second = make(tmp_path, model_seed=123, model_cls=Solved)
    second.fit(resume=True)
    assert holder["validations"] == 4  # after pre-training, then at steps 5, 7 and 9
    pre = records(tmp_path, "pretrain_val")
    vals = records(tmp_path, "val")
    assert [r["cpu_seconds"] for r in pre + vals] == [30.0, 50.0, 70.0, 90.0]
    walls = [r["wall_seconds"] for r in pre + vals]
    assert walls == sorted(walls) and 0 < walls[0] and walls[-1] < 1000
