"""Quality against training cost: validation PSNR of training runs against their CPU seconds.

A run's cost curve is read from its ``metrics.jsonl``: one point per ``val`` record, with the
cumulative training cost the trainer logged there (:mod:`jfb.train.cost`: CPU seconds of every
thread, wall seconds and applications of T, validation not counted, summed over resumes). Runs
compare at equal compute through :func:`psnr_within` (the last validation inside a budget) and
:func:`budget_table`; :func:`saturated` says whether a run still gained at its end.

    curves = [read_curve("runs/cost/feedforward"), read_curve("runs/cost/deadmm-jfb")]
    budget_table(curves, [300, 900, 1800])      # CPU seconds
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jfb.errors import DataError

__all__ = [
    "POINT_FIELDS",
    "CostCurve",
    "budget_table",
    "plot_curves",
    "psnr_within",
    "read_curve",
    "saturated",
    "write_curves",
]

#: The fields of one point of a curve, as the trainer's ``val`` records name them.
POINT_FIELDS = ("step", "cpu_seconds", "wall_seconds", "T_applications", "val_psnr")

#: Less gain than this (dB) over the last third of a budget: the run has saturated.
SATURATION_DB = 0.1


@dataclass
class CostCurve:
    """One run's validation PSNR against its training cost; ``budget_cpu_seconds`` from its
    config's ``train.max_cpu_minutes`` (None: no budget), ``threads`` as the records say."""

    label: str
    run_dir: str
    points: list[dict[str, float]]
    budget_cpu_seconds: float | None = None
    threads: int | None = None
    config: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def final_psnr(self) -> float | None:
        return self.points[-1]["val_psnr"] if self.points else None

    @property
    def cpu_seconds(self) -> float:
        """The training's CPU seconds at its last validation."""
        return self.points[-1]["cpu_seconds"] if self.points else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "run_dir": self.run_dir,
                "budget_cpu_seconds": self.budget_cpu_seconds, "threads": self.threads,
                "saturated": saturated(self), "curve": self.points}


def read_curve(run_dir: str | os.PathLike[str], label: str | None = None) -> CostCurve:
    """The cost curve of the training run in ``run_dir`` (its ``metrics.jsonl`` and
    ``config.json``); ``label`` defaults to the folder's name. A record logged twice for one
    step (a run resumed without rewinding its log) counts once: the last one."""
    folder = Path(run_dir)
    metrics = folder / "metrics.jsonl"
    if not metrics.is_file():
        raise DataError(f"{folder} is not a training run: it has no metrics.jsonl")
    by_step: dict[int, dict[str, Any]] = {}
    with open(metrics, encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            if rec.get("kind") == "val" and "cpu_seconds" in rec:
                by_step[int(rec["step"])] = rec
    if not by_step:
        raise DataError(f"{metrics} has no validation records with cost fields (cpu_seconds): "
                        "train with a validation set and a version of jfb that logs them")
    records = [by_step[s] for s in sorted(by_step)]
    points = [{"step": int(r["step"]), "cpu_seconds": float(r["cpu_seconds"]),
               "wall_seconds": float(r["wall_seconds"]),
               "T_applications": int(r["T_applications"]), "val_psnr": float(r["psnr"])}
              for r in records]
    config: dict[str, Any] = {}
    if (folder / "config.json").is_file():
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    minutes = config.get("train", {}).get("max_cpu_minutes")
    threads = {int(r["threads"]) for r in records if r.get("threads") is not None}
    return CostCurve(label=label or folder.name, run_dir=str(folder), points=points,
                     budget_cpu_seconds=None if minutes is None else 60.0 * float(minutes),
                     threads=threads.pop() if len(threads) == 1 else None, config=config)


def psnr_within(curve: CostCurve, cpu_seconds: float) -> float | None:
    """The val PSNR of the last validation within ``cpu_seconds`` of training (None: none yet).
    What a user stopping the run at that budget has; a run whose schedule was sized for a
    larger budget is still at a high learning rate there."""
    inside = [p["val_psnr"] for p in curve.points if p["cpu_seconds"] <= cpu_seconds]
    return inside[-1] if inside else None


def saturated(curve: CostCurve, *, tol_db: float = SATURATION_DB) -> bool | None:
    """Whether the run gained less than ``tol_db`` over the last third of its cost: best PSNR
    of the whole run against the best within its first two thirds (its budget, or its CPU
    seconds when it had none or stopped short of it). None with fewer than two points."""
    if len(curve.points) < 2:
        return None
    spent = curve.cpu_seconds
    total = min(curve.budget_cpu_seconds or spent, spent)
    early = [p["val_psnr"] for p in curve.points if p["cpu_seconds"] <= 2 * total / 3]
    if not early:
        return None
    return max(p["val_psnr"] for p in curve.points) - max(early) < tol_db


def budget_table(curves: Sequence[CostCurve], budgets: Sequence[float]) -> list[dict[str, Any]]:
    """One row per run: its val PSNR within each budget (CPU seconds), its final PSNR and CPU
    seconds, and whether it saturated. Column names: ``"<minutes> CPU-min"``."""
    rows = []
    for c in curves:
        row: dict[str, Any] = {"run": c.label}
        for b in budgets:
            psnr = psnr_within(c, b)
            row[f"{b / 60:g} CPU-min"] = None if psnr is None else round(psnr, 2)
        row["final PSNR"] = None if c.final_psnr is None else round(c.final_psnr, 2)
        row["CPU-min"] = round(c.cpu_seconds / 60, 1)
        row["saturated"] = {True: "yes", False: "no", None: "-"}[saturated(c)]
        rows.append(row)
    return rows


def plot_curves(path: str | os.PathLike[str], curves: Sequence[CostCurve], *,
                title: str | None = None) -> None:
    """Validation PSNR against training CPU-minutes, one line per run, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jfb.report import legend_outside, save_figure

    fig, ax = plt.subplots(figsize=(7, 4))
    for c in curves:
        minutes = [p["cpu_seconds"] / 60 for p in c.points]
        ax.plot(minutes, [p["val_psnr"] for p in c.points], marker="o", markersize=3,
                label=c.label)
    ax.set_xlabel("training CPU-minutes (all threads; validation not counted)")
    ax.set_ylabel("validation PSNR (dB)")
    ax.grid(alpha=0.3)
    legend_outside(ax)
    save_figure(fig, path, title=title)


def write_curves(out: str | os.PathLike[str], curves: Sequence[CostCurve],
                 budgets: Sequence[float], *, command: str | None = None,
                 title: str = "validation PSNR at equal training compute") -> str:
    """Write ``curves.json`` (every curve and the budget table), ``curves.md`` (the table) and
    ``curves.png`` (:func:`plot_curves`, with ``title``) into the folder ``out``; returns the
    table."""
    from jfb.atomic import write_text
    from jfb.report import markdown_table, write_json

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    rows = budget_table(curves, budgets)
    columns = list(rows[0]) if rows else ["run"]
    table = markdown_table(rows, columns)
    write_json(folder / "curves.json", {"command": command, "budgets_cpu_seconds": list(budgets),
                                        "table": rows, "runs": [c.as_dict() for c in curves]})
    write_text(folder / "curves.md", table)
    plot_curves(folder / "curves.png", curves, title=title)
    return table
