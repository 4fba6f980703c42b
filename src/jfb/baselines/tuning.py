"""Choose a baseline's weight (lam, rho, ...) by grid search on validation pairs.

best = argmax_v mean_images metric(make_method(v)(y), x), metric PSNR or SSIM on outputs clamped
to [0, 1] (:func:`jfb.evaluate.evaluate`). Tune on the validation split (PROTOCOL.md: ``val/``),
never on the images whose numbers are reported: a weight picked on the test images inflates the
test score.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import torch
from torch.utils.data import Dataset, Subset

from jfb.errors import check_choice, check_int, check_positive
from jfb.evaluate import evaluate

__all__ = ["TuneRow", "log_grid", "tune"]

METRICS = ("psnr", "ssim")


class TuneRow(NamedTuple):
    """One grid point: the value and the mean PSNR (dB) and SSIM over the pairs."""

    value: Any
    psnr: float
    ssim: float


def log_grid(lo: float, hi: float, n: int) -> list[float]:
    """n values lo (hi / lo)^(k / (n - 1)), k = 0..n-1: geometric, both ends exact (n = 1: [lo])."""
    check_positive("lo", lo)
    check_positive("hi", hi)
    if hi < lo:
        raise ValueError(f"hi must be >= lo, got lo={lo}, hi={hi}")
    check_int("n", n, minimum=1)
    if n == 1:
        return [float(lo)]
    ratio = math.log(hi / lo)
    grid = [float(lo) * math.exp(ratio * k / (n - 1)) for k in range(n)]
    grid[0], grid[-1] = float(lo), float(hi)
    return grid


def _limit(pairs: Dataset | Iterable, max_images: int | None) -> Dataset | Iterable:
    if max_images is None:
        return pairs
    check_int("max_images", max_images, minimum=1)
    if not hasattr(pairs, "__len__") or not hasattr(pairs, "__getitem__"):
        raise TypeError("max_images needs an indexable dataset of (x, y) pairs")
    return Subset(pairs, range(min(max_images, len(pairs))))  # type: ignore[arg-type]


def tune(
    make_method: Callable[[Any], Callable[[torch.Tensor], torch.Tensor]],
    grid: Sequence[Any],
    pairs: Dataset | Iterable,
    *,
    metric: str = "psnr",
    batch_size: int = 8,
    max_images: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[Any, list[TuneRow]]:
    """Evaluate ``make_method(v)`` (a y -> x_hat callable) on ``pairs`` for each v in ``grid``.

    Returns (best value, table): the table has one :class:`TuneRow` (value, mean PSNR, mean SSIM)
    per grid value in grid order; the best maximises the mean of ``metric`` ("psnr" or "ssim"),
    the first one on ties; NaN means count as worst. ``max_images`` keeps the first images only.
    Use validation pairs, never the reported test images.
    """
    check_choice("metric", metric, METRICS)
    grid = list(grid)
    if not grid:
        raise ValueError("grid is empty")
    check_int("batch_size", batch_size, minimum=1)
    pairs = _limit(pairs, max_images)
    table: list[TuneRow] = []
    for value in grid:
        res = evaluate(make_method(value), pairs, name=f"tune[{value!r}]",
                       batch_size=batch_size, device=device)
        table.append(TuneRow(value, float(res.psnr.mean()), float(res.ssim.mean())))

    def score(row: TuneRow) -> float:
        s = row.psnr if metric == "psnr" else row.ssim
        return -math.inf if math.isnan(s) else s

    best = max(range(len(table)), key=lambda i: (score(table[i]), -i))
    return table[best].value, table
