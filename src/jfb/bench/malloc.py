"""Scenario ``malloc`` (CPU, run on its own): inference and JFB steps with glibc's default
allocator, then with :func:`~jfb.cpu_malloc.tune_cpu_malloc`, in one process. Reaches the
allocator through its module (``allocator.tune_cpu_malloc``), so that tests can replace it.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import torch

from jfb import cpu_malloc as allocator
from jfb.bench.common import (
    FIXED_TOL,
    Context,
    median_cpu,
    median_wall,
    synthetic_pair,
    time_training,
)
from jfb.deq import JFB, Anderson


def scenario_malloc(ctx: Context) -> dict[str, Any]:
    """Inference and JFB training steps with glibc's default allocator settings, then the same
    after :func:`tune_cpu_malloc`, in one process (the tuning cannot be undone, so the order is
    fixed: default first). Skipped on CUDA, off Linux, or when the process is already tuned."""
    if ctx.device.type != "cpu" or not sys.platform.startswith("linux"):
        return {"skipped": True, "reason": "CPU on Linux (glibc) only", "rows": []}
    if allocator.malloc_state() != "default":
        return {"skipped": True, "rows": [],
                "reason": "the allocator was already tuned in this process (run this scenario "
                "on its own: jfb bench --scenario malloc)"}
    cfg = ctx.cfg
    base = ctx.model()
    x, y = synthetic_pair(cfg.batch, cfg.image, cfg.channels, base.op, 1, ctx.device)
    n = cfg.floor_iters

    def measure(state: str) -> dict[str, Any]:
        model = copy.deepcopy(base).eval()
        model.solver = Anderson(m=5, tol=FIXED_TOL, max_iter=n)
        spans = []
        with torch.no_grad():  # inference first, as a process that only restores images
            for i in range(cfg.warmup + cfg.repeats):
                t0 = ctx.now()
                model(y)
                if i >= cfg.warmup:
                    spans.append(ctx.now() - t0)
        model.train()
        model.backward = JFB()
        timed = time_training(ctx, model, x, y, repeats=cfg.repeats, warmup=cfg.warmup,
                              measure_graph=False)
        return {"malloc": state, "inference_s": median_wall(spans),
                "inference_cpu_s": median_cpu(spans),
                "step_s": timed["step_s"], "step_cpu_s": timed["step_cpu_s"],
                "forward_s": timed["forward_s"], "backward_s": timed["backward_s"]}

    before = measure("default")
    after = measure(allocator.tune_cpu_malloc())
    for row in (before, after):
        ctx.log(f"malloc: {row['malloc'][:7]}: inference {row['inference_s'] * 1e3:.1f} ms, "
                f"JFB step {row['step_s'] * 1e3:.1f} ms")
    return {
        "skipped": False,
        "model": ctx.describe_model(),
        "image": cfg.image,
        "batch": cfg.batch,
        "iterations": n,
        "protocol": f"one process: {cfg.warmup} warm-up + {cfg.repeats} inference solves "
        f"(Anderson, exactly {n} iterations, no grad), then as many JFB training steps; "
        "default allocator first, then tuned",
        "rows": [before, after],
        "ratios": {
            "default/tuned inference time": before["inference_s"] / after["inference_s"],
            "default/tuned JFB step time": before["step_s"] / after["step_s"],
        },
    }
