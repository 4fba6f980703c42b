"""The files of `jfb compare`: results.json, results.md, figure.png, iterations.png, and the
methods ranked by each metric next to their ranking by PSNR."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jfb.atomic import write_text
from jfb.report import (
    figure_grid,
    legend_outside,
    markdown_table,
    save_figure,
    with_metrics,
    write_json,
)

if TYPE_CHECKING:
    from jfb.compare import Row
    from jfb.quality import Metric

#: The columns of the comparison table; the metrics of ``--metrics`` beyond PSNR and SSIM go
#: after "ssim_std" (:func:`columns`).
COLUMNS = [
    "method",
    "psnr",
    "psnr_std",
    "ssim",
    "ssim_std",
    "params",
    "train_seconds",
    "mean_solver_iters",
    "infer_ms_per_image",
    "n_images",
]


def columns(metric_list: Sequence[Metric] = ()) -> list[str]:
    """:data:`COLUMNS` with a mean and a std column for each metric beyond PSNR and SSIM."""
    return with_metrics(COLUMNS, [m.name for m in metric_list if m.name not in ("psnr", "ssim")])


def mean_score(row: Row, name: str) -> float:
    """The mean over images of metric ``name`` in ``row``."""
    result = row.result
    values = {"psnr": result.psnr, "ssim": result.ssim}.get(name, result.scores.get(name))
    if values is None:
        raise KeyError(f"row {result.method!r} has no metric {name!r}")
    return float(values.mean())


def rankings(rows: Sequence[Row], metric_list: Sequence[Metric]) -> dict[str, list[list[str]]]:
    """Per metric of ``metric_list``, the rows' short names in tiers, best first by the metric's
    mean in its own direction; a tier holds the rows of equal means (in table order)."""
    names = [r.short or r.result.method for r in rows]
    out = {}
    for m in metric_list:
        sign = -1.0 if m.higher_is_better else 1.0
        keys = [sign * mean_score(r, m.name) for r in rows]
        tiers: list[list[str]] = []
        last = None
        for i in sorted(range(len(rows)), key=keys.__getitem__):
            if keys[i] != last:
                tiers.append([])
                last = keys[i]
            tiers[-1].append(names[i])
        out[m.name] = tiers
    return out


def ranking_text(tiers: list[list[str]]) -> str:
    """E.g. "b > a = c" (best first, "=" joining a tier)."""
    return " > ".join(" = ".join(tier) for tier in tiers)


def _reversed(base: list[list[str]], other: list[list[str]]) -> bool:
    """Whether ``other`` puts some row strictly above one that ``base`` puts strictly above it."""
    at = {name: i for i, tier in enumerate(base) for name in tier}
    there = {name: i for i, tier in enumerate(other) for name in tier}
    return any(at[a] < at[b] and there[a] > there[b] for a in at for b in at)


def ranking_notes(orders: dict[str, list[list[str]]]) -> list[str]:
    """One line per metric that ranks some pair of rows the other way round from PSNR ("ranking
    by vif differs from PSNR's: psnr: a > b; vif: b > a"; ties are no difference), or one line
    saying that none does; nothing for fewer than two rows."""
    base = orders.get("psnr")
    if base is None or sum(map(len, base)) < 2:
        return []
    lines = [f"ranking by {name} differs from PSNR's: psnr: {ranking_text(base)}; "
             f"{name}: {ranking_text(tiers)}"
             for name, tiers in orders.items() if name != "psnr" and _reversed(base, tiers)]
    if not lines:
        others = [n for n in orders if n != "psnr"]
        return [f"{', '.join(others)} rank the methods as PSNR does: {ranking_text(base)}"]
    return lines


def write_comparison(
    out: dict[str, Any], out_dir: str | Path, *, command: str, device: str, date: str
) -> list[dict[str, Any]]:
    """results.json, results.md, figure.png (same images across methods), iterations.png; the
    table's rows. ``out`` is what :func:`jfb.compare.compare` returned; its metrics (PSNR and
    SSIM when it names none) give the columns, and a ranking that differs from PSNR's is said
    in results.md and the JSON."""
    from jfb.quality import parse_metrics

    out_dir = Path(out_dir)
    metric_list = out.get("metrics") or parse_metrics(None)
    rows = out["rows"]
    table = []
    for row in rows:
        rec = row.result.summary()
        rec.update({k: v for k, v in row.info.items() if v is not None})
        rec.update(device=device, date=date, command=command)
        table.append(rec)
    orders = rankings(rows, metric_list)
    notes = ranking_notes(orders)
    write_json(
        out_dir / "results.json",
        {
            "task": out["task"],
            "rows": table,
            "metrics": {m.name: {"higher_is_better": m.higher_is_better,
                                 "range": m.value_range, "source": m.source}
                        for m in metric_list},
            "rankings": {name: ranking_text(tiers) for name, tiers in orders.items()},
            "ranking_notes": notes,
            "iterations_curves": out["curves"],
            "tuning": out["tuning"],
        },
    )
    md = [
        f"# Comparison on `{out['task']}`\n",
        f"{date}, {device}. Command: `{command}`\n",
        markdown_table(table, columns(metric_list)),
        f"Metrics: {'; '.join(m.describe() for m in metric_list)}.\n",
        *(f"- {line}" for line in notes),
    ]
    write_text(out_dir / "results.md", "\n".join(md) + "\n")
    short = {r.result.method: r.short or r.result.method for r in rows}  # row names are unique
    n = min(len(r.result.examples) for r in rows) if rows else 0
    if n:
        val = out["val"]
        images = [[val[i][0]] + [r.result.examples[i] for r in rows] for i in range(n)]
        labels = [[""] + [f"{float(r.result.psnr[i]):.2f} dB" for r in rows] for i in range(n)]
        figure_grid(
            out_dir / "figure.png",
            ["ground truth"] + [r.short or r.result.method for r in rows],
            images,
            labels,
            caption=_legend(rows),
        )
    if out["curves"]:
        _plot_curves(out_dir / "iterations.png",
                     {short.get(name, name): pts for name, pts in out["curves"].items()})
    return table


def _legend(rows: Sequence[Row]) -> list[str]:
    """One line per figure column whose short name hides details: "short: row name [checkpoint]"."""
    lines = []
    for r in rows:
        full = r.result.method
        if "checkpoint" in r.info:
            full += f" [{r.info['checkpoint']}]"
        if r.short and r.short != full:
            lines.append(f"{r.short}: {full}")
    return lines


def _plot_curves(path: Path, curves: dict[str, list[dict[str, float]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for name, pts in curves.items():
        ax.plot([p["iterations"] for p in pts], [p["psnr"] for p in pts], marker="o", label=name)
    ax.set_xlabel("test-time fixed-point iterations")
    ax.set_ylabel("PSNR (dB)")
    ax.grid(alpha=0.3)
    legend_outside(ax)
    save_figure(fig, path)
