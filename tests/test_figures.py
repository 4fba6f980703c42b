"""Figures a person can read: short column titles that do not overlap, full names in a caption
below the panels, legends outside the axes. Checked on the drawn geometry, not on pixels."""

from __future__ import annotations

import pytest
import torch

import jfb.compare_report
import jfb.report
from jfb.compare import Row
from jfb.compare_report import write_comparison
from jfb.evaluate import EvalResult

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

RUN = "celeba-gauss5-deadmm-pretrained-from-denoiser"  # a long run folder name
LONG = "degrad + jfb (dncnn 17x64, SN<=1, R pre-trained as a denoiser (300 steps))"


def drawn(monkeypatch, module):
    """Replace ``module.save_figure`` by one that lays out, draws and keeps each figure with its
    renderer (and still saves it)."""
    figures = []
    real = jfb.report.save_figure

    def keep(fig, path, *, title=None):
        if title:
            fig.suptitle(title, fontsize=11)
        fig.tight_layout()
        fig.canvas.draw()
        figures.append((fig, fig.canvas.get_renderer()))
        real(fig, path)

    monkeypatch.setattr(module, "save_figure", keep)
    return figures


def result(name: str, n: int = 2) -> EvalResult:
    g = torch.Generator().manual_seed(len(name))
    return EvalResult(name, torch.full((n,), 25.0), torch.full((n,), 0.8), 1.0,
                      iterations=torch.full((n,), 7),
                      examples=[torch.rand(3, 16, 16, generator=g) for _ in range(n)])


def comparison():
    rows = [
        Row(result("blurred input y"), {"params": 0}, "blurred y"),
        Row(result("tikhonov (0.003)"), {"params": 0}, "tikhonov"),
        Row(result(LONG), {"checkpoint": f"runs/{RUN}/best.safetensors"}, f"degrad ({RUN})"),
        Row(result(LONG + " v2"), {"checkpoint": "runs/other/best.safetensors"}, "degrad (other)"),
    ]
    val = [(torch.rand(3, 16, 16), torch.rand(3, 16, 16)) for _ in range(2)]
    curves = {LONG: [{"iterations": k, "psnr": 20.0 + k} for k in (1, 5, 10)],
              LONG + " v2": [{"iterations": k, "psnr": 21.0 + k} for k in (1, 5, 10)]}
    return {"task": "t", "rows": rows, "curves": curves, "tuning": {}, "val": val}


def test_compare_figure_titles_columns_with_short_names_and_captions_the_rest(monkeypatch,
                                                                             tmp_path):
    figures = drawn(monkeypatch, jfb.report)
    write_comparison(comparison(), tmp_path, command="jfb compare", device="cpu", date="today")
    assert (tmp_path / "figure.png").is_file() and (tmp_path / "iterations.png").is_file()
    fig, renderer = figures[0]
    top = [ax for ax in fig.axes if ax.get_title()]
    titles = ["".join(ax.get_title().split()) for ax in top]  # wrapped to the panel width
    expected = ["ground truth", "blurred y", "tikhonov",
                f"degrad ({RUN})", "degrad (other)"]
    assert titles == ["".join(t.split()) for t in expected]
    boxes = sorted((ax.title.get_window_extent(renderer) for ax in top), key=lambda b: b.x0)
    for left, right in zip(boxes, boxes[1:], strict=False):
        assert left.x1 <= right.x0, "column titles overlap"
    (caption,) = fig.texts
    text = caption.get_text().replace("\n", " ")
    assert f"degrad ({RUN}): {LONG} [runs/{RUN}/best.safetensors]" in text
    assert "tikhonov: tikhonov (0.003)" in text
    panels_bottom = min(ax.get_tightbbox(renderer).y0 for ax in fig.axes)
    assert caption.get_window_extent(renderer).y1 <= panels_bottom, "caption over the panels"


def test_iterations_plot_has_short_labels_and_its_legend_outside_the_axes(monkeypatch, tmp_path):
    figures = drawn(monkeypatch, jfb.compare_report)
    write_comparison(comparison(), tmp_path, command="jfb compare", device="cpu", date="today")
    ((fig, renderer),) = figures
    (ax,) = fig.axes
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [
        f"degrad ({RUN})", "degrad (other)"]
    box = legend.get_window_extent(renderer)
    assert box.x0 >= ax.get_window_extent(renderer).x1, "legend over the curves"
    assert not box.overlaps(ax.yaxis.label.get_window_extent(renderer)), "legend over the y label"
