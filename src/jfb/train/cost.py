"""What a training run has cost so far, summed over its resumes, and its time budgets.

:class:`CostMeter` counts the process CPU seconds of ``fit`` (:func:`time.process_time`: every
thread of this process, not its DataLoader workers) and the applications of T: per training step,
the forward solve's batched calls of T (``last_stats.n_evals``) plus, when an implicit backward
reported its per-sample ``iterations``, its batched vector-Jacobian products (their maximum); 0
for models without solver stats. Validation is not training: what runs inside :meth:`excluded`
(the trainer's validations) counts in neither the CPU seconds, the T applications nor the
``wall_seconds`` of the records, so runs that validate often or at high cost are compared
on what their training cost. The totals travel in the
checkpoint's ``extra`` (:meth:`state`/:meth:`load_state`), so ``--resume`` continues them, and
``train.max_cpu_minutes`` is a budget on the total: a resumed run needs a larger one to go on
(``train.max_minutes`` is one on the wall time of each ``fit``). Under DDP each rank counts its
own process (the loop stops every rank when one is out of time).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["BUDGET_STOPS", "EARLY_STOPS", "CostMeter", "t_applications"]

BUDGET_STOPS = ("time_limit", "cpu_limit")  # the ``stopped`` values of :meth:`CostMeter.limits`
EARLY_STOPS = ("signal", *BUDGET_STOPS)  # stops on a signal or a budget

process_time = time.process_time  # the CPU clock (a module attribute: tests replace it)
wall_time = time.perf_counter  # the wall clock of excluded spans (likewise)


def t_applications(stats: Any) -> int:
    """Batched applications of T in one step's solve and backward (see the module docs)."""
    if stats is None:
        return 0
    n = int(getattr(stats, "n_evals", 0) or 0)
    backward = getattr(stats, "backward", None) or {}
    iters = backward.get("iterations") if isinstance(backward, dict) else None
    if iters is not None and iters.numel():
        n += int(iters.max())
    return n


class CostMeter:
    """A run's cumulative CPU seconds and applications of T; ``max_cpu_minutes`` (training
    total) and ``max_minutes`` (wall time of one ``fit``): the budgets (None: none)."""

    def __init__(self, max_cpu_minutes: float | None, max_minutes: float | None = None) -> None:
        self.max_cpu_minutes = max_cpu_minutes
        self.max_minutes = max_minutes
        self.cpu_before = 0.0  # CPU seconds of the runs this one resumes
        self.t_applications = 0
        self.excluded_wall = 0.0  # wall seconds of excluded spans, over all resumed runs
        self._cpu_start: float | None = None
        self._cpu_excluded = 0.0  # CPU seconds of this process's excluded spans

    def start(self) -> None:
        """Start this process's CPU clock (once the run is set up, resumed or not)."""
        self._cpu_start = process_time()

    def cpu_seconds(self) -> float:
        """CPU seconds of this training so far, over all its resumed runs."""
        running = 0.0 if self._cpu_start is None else process_time() - self._cpu_start
        return self.cpu_before + running - self._cpu_excluded

    @contextmanager
    def excluded(self) -> Iterator[None]:
        """A span that is not training (a validation): its CPU and wall time are not counted."""
        cpu, wall = process_time(), wall_time()
        try:
            yield
        finally:
            self._cpu_excluded += process_time() - cpu
            self.excluded_wall += wall_time() - wall

    def count(self, stats: Any) -> None:
        """Add one training step's applications of T (after its backward has run)."""
        self.t_applications += t_applications(stats)

    def limit(self, *, fit_seconds: float) -> str | None:
        """Which budget is used up: ``"time_limit"`` (``fit_seconds``, the wall time of this
        ``fit``, reached ``max_minutes``), ``"cpu_limit"`` (the training's CPU seconds reached
        ``max_cpu_minutes``) or None."""
        if self.max_minutes is not None and fit_seconds >= 60 * self.max_minutes:
            return "time_limit"
        cpu = self.max_cpu_minutes
        return "cpu_limit" if cpu is not None and self.cpu_seconds() >= 60 * cpu else None

    def limits(self) -> dict[str, str]:
        """The budgets in words, by the ``stopped`` value they give."""
        return {"time_limit": f"max_minutes={self.max_minutes}",
                "cpu_limit": f"max_cpu_minutes={self.max_cpu_minutes}"}

    def record(self, *, wall_seconds: float) -> dict[str, Any]:
        """The cost fields of a ``val`` record: ``cpu_seconds``, ``wall_seconds`` (the
        training's ``wall_seconds`` given, less the excluded spans), ``T_applications`` and
        ``threads`` (intra-op threads now)."""
        return {"cpu_seconds": round(self.cpu_seconds(), 3),
                "wall_seconds": round(wall_seconds - self.excluded_wall, 3),
                "T_applications": self.t_applications, "threads": torch.get_num_threads()}

    def state(self) -> dict[str, Any]:
        """The totals, for the checkpoint's ``extra``."""
        return {"cpu_seconds": round(self.cpu_seconds(), 3), "T_applications": self.t_applications,
                "excluded_wall_seconds": round(self.excluded_wall, 3)}

    def load_state(self, extra: dict[str, Any]) -> None:
        """Continue the totals of a checkpoint's ``extra`` (0 when it has none)."""
        self.cpu_before = float(extra.get("cpu_seconds", 0.0) or 0.0)
        self.t_applications = int(extra.get("T_applications", 0) or 0)
        self.excluded_wall = float(extra.get("excluded_wall_seconds", 0.0) or 0.0)
