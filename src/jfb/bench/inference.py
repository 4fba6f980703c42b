"""Scenario ``inference``: ms per 128x128 and per 512x512 image (the ``infer_sizes`` of the
preset), eval mode, no grad, and the cost of one application of T (fresh model or
``--checkpoint``).
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

from jfb.bench.common import (
    Context,
    empty_cache,
    is_oom,
    median_cpu,
    median_wall,
    synthetic_pair,
)
from jfb.deq import Anderson


def scenario_inference(ctx: Context) -> dict[str, Any]:
    """ms per image at each side in ``infer_sizes`` (eval mode, no grad, Anderson to tol 1e-4)."""
    cfg = ctx.cfg
    if ctx.checkpoint:  # its own solver and test-time budget
        model = ctx.model().eval()
        source = f"checkpoint {ctx.checkpoint}"
    else:
        model = ctx.model(solver=Anderson(m=5, tol=cfg.tol, max_iter=cfg.max_iter)).eval()
        source = "freshly initialised (untrained)"
    tol, max_iter = model.solver.budget(training=False)
    rows = []
    for side, batch in zip(cfg.infer_sizes, cfg.infer_batch, strict=True):
        _x, y = synthetic_pair(batch, side, cfg.channels, model.op, 7, ctx.device)
        times, iters = [], []
        try:
            with torch.no_grad():
                for i in range(cfg.warmup + cfg.repeats):
                    t0 = ctx.now()
                    model(y)
                    t1 = ctx.now()
                    if i >= cfg.warmup:
                        times.append(t1 - t0)
                        iters.append(model.last_stats.mean_iterations())
                with model.fixed_map():
                    t_t, s0 = [], model.initial(y)
                    for i in range(cfg.warmup + cfg.repeats):
                        t0 = ctx.now()
                        model.T(s0, y)
                        t1 = ctx.now()
                        if i >= cfg.warmup:
                            t_t.append(t1 - t0)
        except RuntimeError as exc:
            if not is_oom(exc):
                raise
            rows.append({"image": side, "batch": batch, "oom": True})
            empty_cache(ctx.device)
            continue
        t = median_wall(times)
        row = {
            "image": side,
            "batch": batch,
            "oom": False,
            "ms_per_image": 1e3 * t / batch,  # type: ignore[operator]
            "ms_per_batch": 1e3 * t,  # type: ignore[operator]
            "iters_mean": statistics.fmean(iters),
            "ms_per_image_cpu": 1e3 * median_cpu(times) / batch,  # type: ignore[operator]
            "ms_per_T_per_image": 1e3 * median_wall(t_t) / batch,  # type: ignore[operator]
        }
        rows.append(row)
        ctx.log(f"inference: {side}x{side}: {row['ms_per_image']:.1f} ms/image, "
                f"{row['iters_mean']:.1f} it")
    return {
        "model_source": source,
        "model": ctx.describe_model(),
        "solver": f"{type(model.solver).__name__}, eval tol {tol:g}, eval max_iter {max_iter}",
        "rows": rows,
    }
