"""jfb.curves and ``jfb curves``: cost curves read from training logs, PSNR within a budget,
saturation, the budget table and the files the command writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jfb.cli import main
from jfb.curves import budget_table, psnr_within, read_curve, saturated, write_curves
from jfb.errors import DataError
from test_trainer import make


def fake_run(folder: Path, points: list[tuple[int, float, float]], *,
             budget_minutes: float | None = None, extra_lines: list[dict] = ()) -> Path:
    """A run folder whose val records are (step, cpu_seconds, psnr)."""
    folder.mkdir(parents=True)
    lines = [{"kind": "train", "step": 1, "loss": 0.1}]
    lines += [{"kind": "val", "step": s, "psnr": p, "cpu_seconds": c, "wall_seconds": 2 * c,
               "T_applications": 10 * s, "threads": 1} for s, c, p in points]
    lines += list(extra_lines)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (folder / "config.json").write_text(json.dumps({"train": {"max_cpu_minutes": budget_minutes}}))
    return folder


def test_read_curve_takes_val_records_with_their_cost_and_the_budget(tmp_path):
    run = fake_run(tmp_path / "ff", [(10, 60.0, 30.0), (20, 120.0, 31.0)], budget_minutes=3,
                   extra_lines=[{"kind": "val", "step": 20, "psnr": 31.5, "cpu_seconds": 121.0,
                                 "wall_seconds": 1.0, "T_applications": 0, "threads": 1}])
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"kind": "val", "step": 3')  # a line cut by a crash
    curve = read_curve(run)
    assert curve.label == "ff" and curve.budget_cpu_seconds == 180.0 and curve.threads == 1
    assert [p["step"] for p in curve.points] == [10, 20]
    assert curve.points[1] == {"step": 20, "cpu_seconds": 121.0, "wall_seconds": 1.0,
                               "T_applications": 0, "val_psnr": 31.5}  # the later record
    assert read_curve(run, "twin").label == "twin"


def test_a_folder_without_cost_records_is_refused(tmp_path):
    with pytest.raises(DataError, match="no metrics.jsonl"):
        read_curve(tmp_path)
    fake_run(tmp_path / "old", [])
    with pytest.raises(DataError, match="cost fields"):
        read_curve(tmp_path / "old")


def test_psnr_within_is_the_last_validation_inside_the_budget(tmp_path):
    curve = read_curve(fake_run(tmp_path / "r", [(1, 60.0, 30.0), (2, 120.0, 29.0),
                                                 (3, 180.0, 32.0)]))
    assert psnr_within(curve, 59.0) is None
    assert psnr_within(curve, 60.0) == 30.0
    assert psnr_within(curve, 179.0) == 29.0  # the last one, not the best one
    assert psnr_within(curve, 1e9) == 32.0


def test_saturation_compares_the_last_third_with_the_first_two(tmp_path):
    gaining = read_curve(fake_run(tmp_path / "a", [(1, 100.0, 30.0), (2, 200.0, 31.0),
                                                   (3, 300.0, 31.2)], budget_minutes=5))
    flat = read_curve(fake_run(tmp_path / "b", [(1, 100.0, 30.0), (2, 200.0, 31.0),
                                                (3, 300.0, 31.05)], budget_minutes=5))
    assert saturated(gaining) is False and saturated(flat) is True
    assert saturated(read_curve(fake_run(tmp_path / "c", [(1, 100.0, 30.0)]))) is None
    # a budget far beyond what the run spent: its own CPU seconds are the reference
    short = read_curve(fake_run(tmp_path / "d", [(1, 100.0, 30.0), (2, 200.0, 31.0),
                                                 (3, 300.0, 31.2)], budget_minutes=100))
    assert saturated(short) is False


def test_budget_table_and_written_files(tmp_path):
    a = read_curve(fake_run(tmp_path / "a", [(1, 60.0, 30.0), (2, 120.0, 31.0)]))
    b = read_curve(fake_run(tmp_path / "b", [(1, 90.0, 29.0), (2, 180.0, 32.0)]))
    rows = budget_table([a, b], [60.0, 120.0])
    assert rows[0] == {"run": "a", "1 CPU-min": 30.0, "2 CPU-min": 31.0, "final PSNR": 31.0,
                       "CPU-min": 2.0, "saturated": "no"}
    assert rows[1]["1 CPU-min"] is None and rows[1]["2 CPU-min"] == 29.0
    table = write_curves(tmp_path / "out", [a, b], [60.0, 120.0], command="jfb curves a b")
    saved = json.loads((tmp_path / "out" / "curves.json").read_text())
    assert saved["table"] == rows and saved["command"] == "jfb curves a b"
    assert [r["label"] for r in saved["runs"]] == ["a", "b"]
    assert saved["runs"][1]["curve"][1]["val_psnr"] == 32.0
    assert (tmp_path / "out" / "curves.md").read_text() == table
    assert (tmp_path / "out" / "curves.png").stat().st_size > 1000


def test_the_command_reads_a_real_training_run(tmp_path, capsys):
    make(tmp_path / "run").fit()  # 3 pre-training + 6 steps, validation every 2
    assert main(["curves", str(tmp_path / "run"), "--labels", "tiny", "--budgets", "0.5,60",
                 "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "| tiny |" in out and "0.5 CPU-min" in out and "written:" in out
    saved = json.loads((tmp_path / "out" / "curves.json").read_text())
    assert [p["step"] for p in saved["runs"][0]["curve"]] == [5, 7, 9]


def test_the_command_refuses_wrong_input(tmp_path, capsys):
    fake_run(tmp_path / "a", [(1, 60.0, 30.0)])
    assert main(["curves", str(tmp_path / "a"), "--labels", "x,y", "--out",
                 str(tmp_path / "o")]) == 2
    assert "--labels names 2 runs" in capsys.readouterr().err
    assert main(["curves", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["curves", str(tmp_path / "a"), "--budgets", "0,5", "--out", str(tmp_path / "o")])
