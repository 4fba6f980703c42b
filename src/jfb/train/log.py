"""Metric logging (JSONL + CSV, optional TensorBoard) and the trainer's progress line.

``MetricLogger.log(kind, step, **metrics)`` appends one JSON object per line to
``<dir>/metrics.jsonl`` (``{"kind", "step", "time", ...}``) and one row to ``<dir>/<kind>.csv``,
flushing both after every record so that a crash loses nothing already logged.
``Progress`` shows step, rate, ETA, loss, PSNR, mean solver iterations and step time with
:class:`jfb.progress.ProgressBar`: one self-overwriting line on a terminal, or a plain line every
``every`` steps otherwise (files, CI logs). ``StepWindow`` sums the training steps between two
``train`` records and makes the record.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from jfb.progress import ProgressBar, is_silenced

__all__ = ["MetricLogger", "Progress", "StepWindow", "format_fields", "format_metrics",
           "tensorboard_available", "typical_step_ms"]


def tensorboard_available() -> bool:
    """True when the optional ``tensorboard`` package can be imported."""
    return importlib.util.find_spec("tensorboard") is not None


def _make_tb_writer(log_dir: Path) -> Any:
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(log_dir))


def _clean(value: Any) -> Any:
    """JSON-friendly scalar: tensors/numpy scalars to Python numbers; NaN/Inf as strings."""
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf": standard JSON has no NaN
    return value


class MetricLogger:
    """Append-only metric records in ``metrics.jsonl`` and one CSV file per record kind.

    ``tensorboard=True`` also writes numeric metrics as ``<kind>/<name>`` scalars when the
    ``tensorboard`` package is installed (else ``warning`` holds the reason and it is skipped).
    ``enabled=False`` (non-zero DDP ranks) makes every method a no-op.
    """

    def __init__(self, log_dir: str | Path, *, tensorboard: bool = False,
                 enabled: bool = True) -> None:
        self.dir = Path(log_dir)
        self.enabled = enabled
        self.warning: str | None = None
        self._tb = None
        if not enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.dir / "metrics.jsonl"
        if tensorboard:
            if tensorboard_available():
                self._tb = _make_tb_writer(self.dir / "tensorboard")
            else:
                self.warning = "tensorboard requested but the 'tensorboard' package is not " \
                               "installed; logging to JSONL/CSV only"

    def csv_path(self, kind: str) -> Path:
        return self.dir / f"{kind}.csv"

    def log(self, kind: str, step: int, **metrics: Any) -> dict[str, Any]:
        """Append one record; returns it (with ``kind``, ``step`` and wall ``time``)."""
        record: dict[str, Any] = {"kind": kind, "step": int(step), "time": round(time.time(), 3)}
        record.update({k: _clean(v) for k, v in metrics.items()})
        if not self.enabled:
            return record
        with open(self.jsonl_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
        self._append_csv(kind, record)
        if self._tb is not None:
            for k, v in record.items():
                if k not in ("kind", "step", "time") and isinstance(v, int | float) \
                        and not isinstance(v, bool):
                    self._tb.add_scalar(f"{kind}/{k}", v, int(step))
            self._tb.flush()
        return record

    def _append_csv(self, kind: str, record: Mapping[str, Any]) -> None:
        path = self.csv_path(kind)
        row = {k: v for k, v in record.items() if k != "kind"}
        header: list[str] = []
        if path.exists() and path.stat().st_size > 0:
            with open(path, newline="", encoding="utf-8") as fh:
                header = next(csv.reader(fh), [])
        new_keys = [k for k in row if k not in header]
        if header and new_keys:  # a new column: rewrite the file with the wider header
            rows = self._read_csv(path)
            header = header + new_keys
            self._write_csv(path, header, rows)
        elif not header:
            header = list(row)
            self._write_csv(path, header, [])
        with open(path, "a", newline="", encoding="utf-8") as fh:
            csv.DictWriter(fh, fieldnames=header).writerow(row)
            fh.flush()

    @staticmethod
    def _read_csv(path: Path) -> list[dict[str, str]]:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    @staticmethod
    def _write_csv(path: Path, header: list[str], rows: list[Mapping[str, Any]]) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def rewind(self, step: int) -> None:
        """Drop records with ``step`` greater than the given one (used when resuming from a
        checkpoint taken at ``step``, so that steps run after it are not logged twice)."""
        if not self.enabled:
            return
        if self.jsonl_path.exists():
            keep = []
            with open(self.jsonl_path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut by a crash
                    if int(rec.get("step", 0)) <= step:
                        keep.append(line if line.endswith("\n") else line + "\n")
            tmp = self.jsonl_path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(keep), encoding="utf-8")
            os.replace(tmp, self.jsonl_path)
        for path in self.dir.glob("*.csv"):
            with open(path, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                header = list(reader.fieldnames or [])
                rows = [r for r in reader if _int_or(r.get("step"), 0) <= step]
            if header:
                self._write_csv(path, header, rows)

    def read(self, kind: str | None = None) -> list[dict[str, Any]]:
        """All JSONL records (of one ``kind`` if given)."""
        if not self.enabled or not self.jsonl_path.exists():
            return []
        out = []
        with open(self.jsonl_path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if kind is None or rec.get("kind") == kind:
                    out.append(rec)
        return out

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _int_or(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def format_metrics(step: int, total: int | None = None, **metrics: Any) -> str:
    """``"step 120/1000 | loss 1.23e-03 | psnr 28.41 dB | iters 12.3 | 45.1 ms/step"``."""
    width = len(str(total)) if total else 0
    head = f"step {step:>{width}d}/{total}" if total else f"step {step}"
    fields = format_fields(metrics)
    return f"{head} | {fields}" if fields else head


_FIELD_FORMATS = {
    "loss": lambda v: f"loss {v:.3e}",
    "psnr": lambda v: f"psnr {v:.2f} dB",
    "val_psnr": lambda v: f"val {v:.2f} dB",
    "iters": lambda v: f"iters {v:.1f}",
    "step_ms": lambda v: f"{v:.1f} ms/step",
    "lr": lambda v: f"lr {v:.2e}",
}


def format_fields(metrics: Mapping[str, Any]) -> str:
    """``"loss 1.23e-03 | psnr 28.41 dB | iters 12.3"``: training metrics in their units; None
    values are left out."""
    parts = []
    for key, value in metrics.items():
        if value is None:
            continue
        if key in _FIELD_FORMATS and isinstance(value, int | float):
            parts.append(_FIELD_FORMATS[key](value))
        else:
            parts.append(f"{key} {value}")
    return " | ".join(parts)


class Progress:
    """The trainer's progress line, a :class:`jfb.progress.ProgressBar` counted in global steps.

    ``update(step, force, **metrics)`` takes the global step (a rollback moves it back) and the
    metrics of :func:`format_fields`. On a terminal: a live line with the rate and ETA, redrawn
    at most every ``min_interval`` s. Elsewhere (files, CI logs): a plain line every ``every``
    steps, when forced and at the last step. ``message`` lines stay; ``enabled=False`` or
    :func:`jfb.progress.silenced`: silent.
    """

    def __init__(self, total: int | None, *, stream: TextIO | None = None, every: int = 50,
                 is_tty: bool | None = None, enabled: bool = True, min_interval: float = 0.1,
                 **options: Any) -> None:
        self.bar = ProgressBar(
            total, unit="step", stream=stream, is_tty=is_tty, log_lines=True,
            enabled=enabled and not is_silenced(), min_interval=min_interval,
            fields=format_fields, **options,
        )
        self.every = max(1, int(every))

    @property
    def is_tty(self) -> bool:
        return self.bar.is_tty

    def restart(self, step: int) -> None:
        """A run starts (or resumes) at global step ``step``: time the rate and ETA from now."""
        self.bar.reset(step)

    def update(self, step: int, force: bool = False, **metrics: Any) -> None:
        periodic = not self.is_tty and step % self.every == 0
        self.bar.update_to(step, force=force or periodic, **metrics)

    def message(self, text: str) -> None:
        """A line that stays (above the progress line on a terminal)."""
        self.bar.message(text)

    def close(self) -> None:
        self.bar.close()


def typical_step_ms(ms: Sequence[float]) -> float | None:
    """Median step time, leaving out the first steps (warm-up) when there are enough."""
    if not ms:
        return None
    ms = list(ms[2:]) if len(ms) > 5 else list(ms)
    return statistics.median(ms)


class StepWindow:
    """The good steps since the last ``train`` record, summed; ``record`` makes the record.

    ``add`` takes a step's outputs (``loss`` (the batch mean), ``n``, ``psnr_sum``,
    ``grad_norm``, ``lr`` and, when measured, ``iters_sum``, ``conv_sum``, ``jacobian``,
    ``contraction``). The record holds means over the window: loss and PSNR per sample (over
    every rank under DDP), gradient norm and step/data times per step, solver iterations and
    converged fraction per sample, the Jacobian penalty per step; and the last ``lr`` and
    contraction factor. ``solver_iters`` / ``solver_samples`` run over the whole ``fit``.
    """

    #: The sums that :meth:`record` adds up over ranks (the others are this rank's).
    SUMMED_OVER_RANKS = ("loss_sum", "psnr_sum", "n", "iters_sum", "iters_n", "conv_sum")

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.solver_iters = 0.0
        self.solver_samples = 0.0

    def add(self, out: Mapping[str, Any], *, data_s: float, step_s: float) -> dict[str, Any]:
        """Add a good step; returns its own loss, PSNR, iterations and time (the live line)."""
        vals = {
            "loss_sum": float(out["loss"]) * out["n"],
            "psnr_sum": float(out["psnr_sum"]),
            "n": float(out["n"]),
            "grad_norm": float(out["grad_norm"]),
            "steps": 1.0,
            "data_s": data_s,
            "step_s": step_s,
        }
        if out.get("iters_sum") is not None:
            vals["iters_sum"] = float(out["iters_sum"])
            vals["iters_n"] = float(out["n"])
            if out.get("conv_sum") is not None:
                vals["conv_sum"] = float(out["conv_sum"])
            self.solver_iters += vals["iters_sum"]
            self.solver_samples += vals["iters_n"]
        if out.get("jacobian") is not None:
            vals["jac_sum"] = float(out["jacobian"])
            vals["jac_n"] = 1.0
        for k, v in vals.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.sums["lr"] = out["lr"]
        if out.get("contraction") is not None:  # the last measurement of the window
            self.sums["contraction"] = float(out["contraction"].mean())
            self.sums["contraction_max"] = float(out["contraction"].max())
        iters = vals["iters_sum"] / vals["iters_n"] if "iters_sum" in vals else None
        return {"loss": vals["loss_sum"] / vals["n"], "psnr": vals["psnr_sum"] / vals["n"],
                "iters": iters, "step_ms": 1000 * step_s}

    @property
    def mean_solver_iters(self) -> float | None:
        """Solver iterations per sample over every good step of the run (None: no solver)."""
        return self.solver_iters / self.solver_samples if self.solver_samples else None

    def clear(self) -> None:
        """Forget the window's steps (the run totals stay)."""
        self.sums.clear()

    def record(self, phase: str, reduce: Callable[[Sequence[float]], Sequence[float]] | None = None
               ) -> dict[str, Any] | None:
        """The window's ``train`` record (None when it holds no good step), and a new window.
        ``reduce`` sums the values of :attr:`SUMMED_OVER_RANKS` over ranks: under DDP every
        rank must call it, with or without steps."""
        w = self.sums
        if reduce is not None:
            keys = self.SUMMED_OVER_RANKS
            w.update(zip(keys, reduce([w.get(k, 0.0) for k in keys]), strict=True))
        if not w.get("steps"):
            self.clear()
            return None
        n, steps = w["n"], w["steps"]
        rec: dict[str, Any] = {
            "phase": phase,
            "loss": w["loss_sum"] / n,
            "psnr": w["psnr_sum"] / n,
            "lr": w.get("lr"),
            "grad_norm": w["grad_norm"] / steps,
            "step_ms": 1000 * w["step_s"] / steps,
            "data_ms": 1000 * w["data_s"] / steps,
        }
        if w.get("iters_n"):
            rec["iters"] = w["iters_sum"] / w["iters_n"]
            rec["converged"] = w.get("conv_sum", 0.0) / w["iters_n"]
        for key in ("contraction", "contraction_max"):
            if key in w:
                rec[key] = w[key]
        if w.get("jac_n"):
            rec["jacobian"] = w["jac_sum"] / w["jac_n"]
        self.clear()
        return rec
