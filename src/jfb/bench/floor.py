"""Scenario ``floor``: t_f (one application of T, no grad), t_fb (one application, forward +
backward); the floor of a JFB step with n forward iterations is n t_f + t_fb; the measured step
over that floor, for Picard / Anderson and ``check_every`` 1 / 10, and each solver's own cost per
iteration measured on a map that costs almost nothing.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from jfb.bench.common import (
    FIXED_TOL,
    Context,
    Span,
    StepTimer,
    median_cpu,
    median_wall,
    synthetic_pair,
)
from jfb.deq import JFB, Anderson, Picard


class _CheapMap:
    """x -> 0.9 roll(x) + c: a map that costs one copy, to time a solver's own work."""

    def __init__(self, like: torch.Tensor) -> None:
        self.c = torch.rand_like(like)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return 0.9 * torch.roll(x, 1, dims=-1) + self.c


def scenario_floor(ctx: Context) -> dict[str, Any]:
    """t_f, t_fb and the measured JFB step against its floor n t_f + t_fb."""
    cfg = ctx.cfg
    n = cfg.floor_iters
    reps = max(cfg.repeats, 5)
    model = ctx.model()
    x, y = synthetic_pair(cfg.batch, cfg.image, cfg.channels, model.op, 1, ctx.device)
    x0 = model.initial(y)
    variants = {
        "Picard, check_every=1": Picard(tol=FIXED_TOL, max_iter=n, check_every=1),
        "Picard, check_every=10": Picard(tol=FIXED_TOL, max_iter=n, check_every=10),
        "Anderson(m=5), check_every=1": Anderson(m=5, tol=FIXED_TOL, max_iter=n, check_every=1),
        "Anderson(m=5), check_every=10": Anderson(m=5, tol=FIXED_TOL, max_iter=n,
                                                  check_every=10),
    }
    timers = {}
    for vname, solver in variants.items():
        copy_ = copy.deepcopy(model)
        copy_.solver, copy_.backward = solver, JFB()
        timers[vname] = StepTimer(ctx, copy_, x, y)
    g = torch.randn_like(x0)
    per_call = 5  # applications of T per t_f sample

    def one_t_f() -> Span:
        """One application of T without grad (map frozen, as inside a solve)."""
        with torch.no_grad(), model.fixed_map():
            t0 = ctx.now()
            for _ in range(per_call):
                model.T(x0, y)
            return (ctx.now() - t0) / per_call

    def one_t_fb() -> Span:
        """One application with grad + its backward to the parameters, setting up the frozen
        map included (spectral-norm power step), as a JFB step does once."""
        model.zero_grad(set_to_none=True)
        t0 = ctx.now()
        with model.fixed_map():
            out = model.T(x0, y)
        (out * g).sum().backward()
        return ctx.now() - t0

    # Round-robin: every repeat measures t_f, t_fb and one step of each variant, so that a
    # change of load on a shared machine falls on the floor and the steps alike. The first
    # rounds (warm-up, at least one) include full training steps, so that t_f meets the process
    # in the state a training run is in (allocator and kernel caches warm).
    t_f_all, t_fb_all = [], []
    for i in range(max(cfg.warmup, 1) + reps):
        record = i >= max(cfg.warmup, 1)
        for timer in timers.values():
            timer.step(record=record)
        tf, tfb = one_t_f(), one_t_fb()
        if record:
            t_f_all.append(tf)
            t_fb_all.append(tfb)
    t_f, t_fb = median_wall(t_f_all), median_wall(t_fb_all)
    floor = n * t_f + t_fb  # type: ignore[operator]
    t_f_cpu, t_fb_cpu = median_cpu(t_f_all), median_cpu(t_fb_all)
    floor_cpu = n * t_f_cpu + t_fb_cpu  # type: ignore[operator]

    # Each solver's own cost per iteration, on a map that costs one copy (round-robin too).
    cheap = _CheapMap(x0)
    t_map_all: list[Span] = []
    over: dict[str, list[Span]] = {v: [] for v in variants}
    with torch.no_grad():
        for i in range(cfg.warmup + reps):
            t0 = ctx.now()
            for _ in range(n):
                cheap(x0)
            t_map = (ctx.now() - t0) / n
            for vname, solver in variants.items():
                t0 = ctx.now()
                _, st = solver.solve(cheap, x0)
                per_iter = (ctx.now() - t0) / st.n_evals
                if i >= cfg.warmup:
                    over[vname].append(per_iter - t_map)
            if i >= cfg.warmup:
                t_map_all.append(t_map)
    t_map = Span(median_wall(t_map_all), median_cpu(t_map_all))  # type: ignore[arg-type]

    rows = []
    for vname, timer in timers.items():
        timed = timer.row()
        overhead, overhead_cpu = median_wall(over[vname]), median_cpu(over[vname])
        fb = timed["forward_s"] + timed["backward_s"]
        fb_cpu = timed["forward_cpu_s"] + timed["backward_cpu_s"]
        predicted = floor + n * overhead  # type: ignore[operator]
        predicted_cpu = floor_cpu + n * overhead_cpu  # type: ignore[operator]
        rows.append({
            "solver": vname,
            "iterations": n,
            "n_evals": timed["n_evals_median"],
            "solver_overhead_per_iter_s": overhead,
            "solver_overhead_per_iter_cpu_s": overhead_cpu,
            "forward_s": timed["forward_s"],
            "backward_s": timed["backward_s"],
            "optim_s": timed["optim_s"],
            "step_s": timed["step_s"],
            "step_cpu_s": timed["step_cpu_s"],
            "floor_s": floor,
            "floor_cpu_s": floor_cpu,
            "fwd_bwd_over_floor": fb / floor,
            "fwd_bwd_over_floor_cpu": fb_cpu / floor_cpu,
            "floor_plus_overhead_s": predicted,
            "fwd_bwd_over_floor_plus_overhead": fb / predicted,
            "fwd_bwd_over_floor_plus_overhead_cpu": fb_cpu / predicted_cpu,
        })
        ctx.log(f"floor: {vname}: step {timed['step_s'] * 1e3:.1f} ms, floor {floor * 1e3:.1f} "
                f"ms, ratio {fb / floor:.2f}")
    return {
        "model": ctx.describe_model(),
        "image": cfg.image,
        "batch": cfg.batch,
        "t_f_s": t_f,
        "t_fb_s": t_fb,
        "t_fb_over_t_f": t_fb / t_f,  # type: ignore[operator]
        "t_f_cpu_s": t_f_cpu,
        "t_fb_cpu_s": t_fb_cpu,
        "t_cheap_map_s": t_map.wall,
        "t_f_all": [s.wall for s in t_f_all],
        "t_fb_all": [s.wall for s in t_fb_all],
        "floor_definition": "floor = n * t_f + t_fb (n no-grad applications in the solve, one "
        "application with forward + backward); fwd_bwd_over_floor compares the measured forward "
        "+ backward of a JFB step with it (the optimiser step is reported apart)",
        "rows": rows,
    }
