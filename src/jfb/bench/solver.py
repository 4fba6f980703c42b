"""Scenario ``solver``: applications of T and time to reach tol 1e-4 for Picard, Anderson (with
and without compaction: T applied to the unfinished samples only) and Broyden, and a per-sample
histogram of the iterations (eval mode, no grad; fresh models or ``--checkpoint``).
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

from jfb.bench.common import (
    Context,
    Span,
    fresh_model,
    median_cpu,
    median_wall,
    synthetic_pair,
)
from jfb.deq import Anderson, Broyden, Picard, fixed_point


def _histogram(values: list[int], max_iter: int) -> dict[str, Any]:
    edges = [e for e in (1, 2, 3, 5, 8, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000)
             if e <= max_iter]
    edges = sorted(set([*edges, max_iter + 1]))
    counts = [0] * (len(edges) - 1)
    for v in values:
        for i in range(len(edges) - 1):
            if edges[i] <= v < edges[i + 1]:
                counts[i] += 1
                break
    pairs = zip(edges, edges[1:], strict=False)
    labels = [f"{a}" if b == a + 1 else f"{a}-{b - 1}" for a, b in pairs]
    return {"bins": labels, "edges": edges, "counts": counts}


def scenario_solver(ctx: Context) -> dict[str, Any]:
    """Applications of T and time to tol 1e-4, Picard against Anderson and Broyden, eval mode,
    no grad."""
    cfg = ctx.cfg
    if ctx.checkpoint:
        models = {f"checkpoint {ctx.checkpoint}": ctx.model().eval()}
    else:
        models = {
            f"fresh eta={eta}": fresh_model(cfg, ctx.device, eta=eta).eval()
            for eta in (1.0, 0.5)
        }
    tol = 1e-4
    solvers = {
        "Picard": Picard(tol=tol, max_iter=cfg.solver_max_iter),
        "Anderson(m=5)": Anderson(m=5, tol=tol, max_iter=cfg.solver_max_iter),
        # Every sample of the batch costs an application of T until the last one finishes.
        "Anderson(m=5), no compaction": Anderson(m=5, tol=tol, max_iter=cfg.solver_max_iter,
                                                 compact=False),
        # The default lam (1e-4 times the mean of the Gram diagonal) is dominated by the oldest,
        # largest residual of the history; a much smaller lam shows what that costs.
        "Anderson(m=5, lam=1e-8)": Anderson(m=5, lam=1e-8, tol=tol,
                                            max_iter=cfg.solver_max_iter),
        # Quasi-Newton: a rank-one secant update of the inverse Jacobian per iteration, kept
        # for 20 updates before a restart.
        "Broyden(m=20)": Broyden(m=20, tol=tol, max_iter=cfg.solver_max_iter),
    }
    rows = []
    for mname, model in models.items():
        model.eval()
        op = model.op
        batches = []
        for start in range(0, cfg.solver_samples, cfg.batch):
            n = min(cfg.batch, cfg.solver_samples - start)
            batches.append(synthetic_pair(n, cfg.image, cfg.channels, op, 100 + start,
                                          ctx.device))
        times: dict[str, list[Span]] = {sname: [] for sname in solvers}
        last: dict[str, tuple[list[int], int, list[bool]]] = {}
        for rep in range(cfg.warmup + cfg.repeats):
            for sname, solver in solvers.items():  # round-robin over the solvers
                t0 = ctx.now()
                run_iters, run_evals, run_conv = [], 0, []
                for _x, y in batches:
                    with torch.no_grad(), model.fixed_map():
                        solve_ctx = model.context(y, model.physics_of(None))
                        _, st = fixed_point(model.fixed_point_map(solve_ctx),
                                            model.initial(y, solve_ctx),
                                            solver=solver, training=False)
                    run_iters += st.iterations.tolist()
                    run_evals += st.n_evals
                    run_conv += st.converged.tolist()
                t1 = ctx.now()
                if rep >= cfg.warmup:
                    times[sname].append(t1 - t0)
                last[sname] = (run_iters, run_evals, run_conv)
        for sname in solvers:
            per_sample, evals, conv = last[sname]
            row = {
                "model": mname,
                "solver": sname,
                "tol": tol,
                "max_iter": cfg.solver_max_iter,
                "samples": len(per_sample),
                "time_s": median_wall(times[sname]),
                "time_cpu_s": median_cpu(times[sname]),
                "ms_per_sample": 1e3 * median_wall(times[sname]) / len(per_sample),  # type: ignore
                "batched_T_calls": evals,
                "iters_mean": statistics.fmean(per_sample),
                "iters_median": statistics.median(per_sample),
                "iters_max": max(per_sample),
                "converged_frac": sum(conv) / len(conv),
                "iterations_per_sample": per_sample,
                "histogram": _histogram(per_sample, cfg.solver_max_iter),
            }
            rows.append(row)
            ctx.log(f"solver: {mname} {sname}: {row['iters_mean']:.1f} it, "
                    f"{row['converged_frac']:.0%} converged, {row['time_s']:.3f} s")
    ratios = {}
    for mname in models:
        pic = next(r for r in rows if r["model"] == mname and r["solver"] == "Picard")
        anc = next(r for r in rows if r["model"] == mname and r["solver"] == "Anderson(m=5)")
        ratios[f"{mname}: Picard/Anderson time"] = pic["time_s"] / anc["time_s"]
        ratios[f"{mname}: Picard/Anderson T calls"] = pic["batched_T_calls"] / anc[
            "batched_T_calls"]
        small = next(r for r in rows if r["model"] == mname and "lam=1e-8" in r["solver"])
        ratios[f"{mname}: Anderson lam=1e-8 / lam=1e-4 T calls"] = small["batched_T_calls"] / anc[
            "batched_T_calls"]
        whole = next(r for r in rows if r["model"] == mname and "no compaction" in r["solver"])
        ratios[f"{mname}: Anderson no compaction / compaction time"] = (
            whole["time_s"] / anc["time_s"])
        bro = next(r for r in rows if r["model"] == mname and r["solver"] == "Broyden(m=20)")
        ratios[f"{mname}: Broyden/Anderson time"] = bro["time_s"] / anc["time_s"]
        ratios[f"{mname}: Broyden/Anderson T calls"] = bro["batched_T_calls"] / anc[
            "batched_T_calls"]
    return {
        "model_source": "checkpoint" if ctx.checkpoint else "freshly initialised (untrained)",
        "model": ctx.describe_model(eta=None),
        "image": cfg.image,
        "batch": cfg.batch,
        "rows": rows,
        "ratios": ratios,
    }
