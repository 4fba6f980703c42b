"""Results a person can look at: markdown tables, figure grids with PSNR per panel, curves."""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Sequence
from typing import Any

import torch

from jfb.atomic import atomic_path, write_text


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A GitHub markdown table of ``rows`` restricted to ``columns`` (missing cells: '-')."""

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


#: The columns of an evaluation's table (results.md and the terminal).
EVAL_COLUMNS = ("method", "task", "psnr", "psnr_std", "ssim", "ssim_std", "mean_solver_iters",
                "infer_ms_per_image", "n_images")


def with_metrics(columns: Sequence[str], names: Sequence[str]) -> list[str]:
    """``columns`` with a mean and a std column for each metric of ``names`` after "ssim_std"
    (the ``--metrics`` beyond PSNR and SSIM)."""
    at = list(columns).index("ssim_std") + 1
    extra = [c for name in names for c in (name, f"{name}_std")]
    return [*columns[:at], *extra, *columns[at:]]


def write_evaluation(out: str | os.PathLike[str], row: dict[str, Any], result: Any,
                     pairs: Any, notes: Sequence[str] = ()) -> str:
    """Write one method's evaluation into the folder ``out``: ``results.json`` (``row``),
    ``results.md`` (its table, then ``notes``, e.g. what each metric is), ``per_image.csv``
    (PSNR, SSIM, the other metrics of ``result.scores``, iterations and, when measured, the
    contraction of each image) and ``figure.png`` (ground truth / measurement / reconstruction of
    the examples ``result`` kept, ``pairs`` the (x, y) dataset); returns the table."""
    from pathlib import Path

    out = Path(out)
    write_json(out / "results.json", row)
    cols = with_metrics(EVAL_COLUMNS, list(result.scores))
    if result.contraction is not None:
        cols += ["contraction_mean", "contraction_max"]
    table = markdown_table([row], cols)
    write_text(out / "results.md", table + "".join(f"\n{line}\n" for line in notes))
    head = ["index", "psnr", "ssim", *result.scores, "iterations"]
    lines = [",".join(head) + ("" if result.contraction is None else ",contraction")]
    for i in range(result.n_images):
        it = "" if result.iterations is None else int(result.iterations[i])
        scores = "".join(f"{float(v[i]):.5f}," for v in result.scores.values())
        line = f"{i},{float(result.psnr[i]):.4f},{float(result.ssim[i]):.5f},{scores}{it}"
        if result.contraction is not None:
            line += f",{float(result.contraction[i]):.5f}"
        lines.append(line)
    write_text(out / "per_image.csv", "\n".join(lines) + "\n")
    n = len(result.examples)
    if n:
        images = [[pairs[i][0], pairs[i][1], result.examples[i]] for i in range(n)]
        labels = [["", "", f"{float(result.psnr[i]):.2f} dB"] for i in range(n)]
        figure_grid(out / "figure.png", ["ground truth", "measurement", "reconstruction"],
                    images, labels)
    return table


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Pretty JSON, written atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_figure(fig, path: str | os.PathLike[str], *, title: str | None = None) -> None:
    """Give ``fig`` its title and tight layout, write it as PNG atomically, and close it. The
    saved image grows to hold what lies outside the axes (legends, captions)."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title, fontsize=11)
    outside = [ax.get_legend() for ax in fig.axes
               if ax.get_legend() is not None and not ax.get_legend().get_in_layout()]
    fig.tight_layout()  # without the legends of legend_outside: the axes keep their size
    for legend in outside:
        legend.set_in_layout(True)  # ... and the saved image grows to hold them
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)


def legend_outside(ax, **kwargs: Any) -> None:
    """The legend of ``ax`` to the right of its axes, where it hides no curve and no label.
    It stays out of :func:`save_figure`'s layout (the axes keep their size), and the saved image
    widens to hold it."""
    legend = ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                       **{"fontsize": 8, **kwargs})
    legend.set_in_layout(False)


def _wrap(text: str, width: int) -> str:
    """``text`` on lines of at most ``width`` characters, broken at spaces."""
    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False)) or text


def _to_hwc(img: torch.Tensor):
    img = img.detach().float().clamp(0, 1).cpu()
    if img.dim() == 3 and img.shape[0] == 1:
        return img[0].numpy(), "gray"
    return img.permute(1, 2, 0).numpy(), None


def figure_grid(
    path: str | os.PathLike[str],
    columns: Sequence[str],
    images: Sequence[Sequence[torch.Tensor]],
    labels: Sequence[Sequence[str]] | None = None,
    *,
    title: str | None = None,
    caption: Sequence[str] = (),
) -> None:
    """Save a grid: one row per example, one column per method; ``labels`` under each panel.

    ``images[r][c]`` is a (C, H, W) tensor in [0, 1]; ``labels[r][c]`` e.g. "31.2 dB". Column
    titles wrap to the panel width; ``caption`` lines (e.g. "short name: full name") go below.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(images), len(columns)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.4 * n_cols, 2.5 * n_rows), squeeze=False)
    for r in range(n_rows):
        for c in range(n_cols):
            ax = axes[r][c]
            arr, cmap = _to_hwc(images[r][c])
            ax.imshow(arr, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(_wrap(columns[c], 22), fontsize=10)
            if labels is not None and labels[r][c]:
                ax.set_xlabel(labels[r][c], fontsize=9)
    if caption:
        width = max(40, int(16 * 2.4 * n_cols))  # characters of 8-point text across the figure
        text = "\n".join(_wrap(line, width) for line in caption)
        fig.text(0.01, 0.0, text, ha="left", va="top", fontsize=8)
    save_figure(fig, path, title=title)


def training_curve(
    path: str | os.PathLike[str], records: Sequence[dict[str, Any]], *, title: str | None = None
) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """Plot training loss and validation PSNR against the step, from the trainer's log records
    (``metrics.jsonl``: kind "train" with "loss", kind "val" with "psnr"). Returns the two
    series plotted, (step, loss) and (step, val PSNR).
    """
    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train" and "loss" in r]
    val = [(r["step"], r["psnr"]) for r in records if r.get("kind") == "val" and "psnr" in r]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    if train:
        axes[0].semilogy(*zip(*train, strict=True))
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("training loss (MSE)")
    axes[0].grid(alpha=0.3)
    if val:
        axes[1].plot(*zip(*val, strict=True), marker="o")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("validation PSNR (dB)")
    axes[1].grid(alpha=0.3)
    save_figure(fig, path, title=title)
    return train, val
