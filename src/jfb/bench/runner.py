"""Running one scenario: the registry (:data:`SCENARIOS`, :data:`ALL`) and :func:`run_scenario`,
which builds the context, runs the scenario, wraps its results in a record (device, date, torch
version, thread count, exact command, allocator state) and writes ``<out>/<scenario>_<size>.json``
and the markdown ``.md`` beside it.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from jfb.bench.common import SIZES, Context
from jfb.bench.floor import scenario_floor
from jfb.bench.inference import scenario_inference
from jfb.bench.malloc import scenario_malloc
from jfb.bench.peer import scenario_peer
from jfb.bench.photo import scenario_photo
from jfb.bench.report import to_markdown
from jfb.bench.solver import scenario_solver
from jfb.bench.step import scenario_step
from jfb.cpu_malloc import malloc_record
from jfb.device import hardware_name

SCENARIOS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "step": scenario_step,
    "solver": scenario_solver,
    "floor": scenario_floor,
    "peer": scenario_peer,
    "inference": scenario_inference,
    "malloc": scenario_malloc,
    "photo": scenario_photo,
}
#: What ``--scenario all`` runs (``malloc`` must run on its own, before any tuning; ``photo``
#: takes minutes per 12-megapixel photo and runs when asked for).
ALL = ("step", "solver", "floor", "peer", "inference")


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def run_scenario(
    name: str,
    *,
    size: str = "small",
    device: str | torch.device = "cpu",
    out: str | Path | None = None,
    repeats: int | None = None,
    warmup: int | None = None,
    checkpoint: str | None = None,
    threads: int | None = None,
    quiet: bool = False,
    command: str | None = None,
) -> dict[str, Any]:
    """Run one scenario and return its record; with ``out``, also write ``<name>_<size>.json``
    and ``.md`` there. ``repeats``/``warmup`` override the size preset."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but CUDA is not available")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    cfg = SIZES[size]
    if repeats is not None:
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        cfg = replace(cfg, repeats=repeats)
    if warmup is not None:
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        cfg = replace(cfg, warmup=warmup)
    ctx = Context(size, cfg, dev, checkpoint=checkpoint, quiet=quiet)
    if command is None:
        command = f"jfb.bench.run_scenario({name!r}, size={size!r}, device={str(dev)!r}, " \
                  f"repeats={repeats!r}, warmup={warmup!r}, checkpoint={checkpoint!r}, " \
                  f"threads={threads!r})"
    start = _loadavg()
    t0 = time.perf_counter()
    threads_before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        used_threads = torch.get_num_threads()
        results = SCENARIOS[name](ctx)
    finally:
        torch.set_num_threads(threads_before)
    record = {
        "scenario": name,
        "size": size,
        "device": str(dev),
        "device_name": hardware_name(dev),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if dev.type == "cuda" else None,
        "cuda_settings": {
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
        } if dev.type == "cuda" else None,
        "threads": used_threads,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_start": start,
        "loadavg_end": _loadavg(),
        "wall_s": time.perf_counter() - t0,
        "config": asdict(cfg),
        "timing": "median of repeats after warm-up; CUDA synchronised before every clock read; "
        "*_s: wall clock, *_cpu_s: CPU time of the process (time.process_time)",
        "cpu_malloc": malloc_record(),
        "results": results,
        "notes": ctx.notes,
    }
    if out is not None:
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = out_dir / f"{name}_{size}"
        stem.with_suffix(".json").write_text(json.dumps(record, indent=1, default=_json_default)
                                             + "\n")
        stem.with_suffix(".md").write_text(to_markdown(record))
    return record


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
