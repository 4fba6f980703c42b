"""Scenario ``step``: time per training step of DE-GRAD + DnCNN (or of the ``--checkpoint``
model) for JFB, JFB(2), IFT (Anderson, GMRES), Neumann(5) and Unrolled, split into forward solve /
backward / optimiser step, and the size of the autograd graph (bytes of tensors saved for
backward; plus ``torch.cuda.max_memory_allocated`` on CUDA). Three tables: all strategies at the
same forward tolerance; a sweep over the forward iteration cap with a fixed-iteration forward
(equal forward work); a sweep over the image size.
"""

from __future__ import annotations

from typing import Any

from jfb.bench.common import (
    FIXED_TOL,
    BenchSize,
    Context,
    StepTimer,
    empty_cache,
    is_oom,
    synthetic_pair,
)
from jfb.deq import IFT, JFB, Anderson, BackwardStrategy, Neumann, Unrolled


def _strategies(cfg: BenchSize) -> dict[str, BackwardStrategy]:
    """The gradient strategies compared; IFT solves to the forward's tol with its budget."""
    return {
        "JFB": JFB(),
        "JFB(2)": JFB(2),
        "IFT-anderson": IFT(solver="anderson", tol=cfg.tol, max_iter=cfg.max_iter),
        "IFT-gmres": IFT(solver="gmres", tol=cfg.tol, max_iter=cfg.max_iter),
        "Neumann(5)": Neumann(5),
        "Unrolled": Unrolled(),
    }


def _run_strategy_rows(
    ctx: Context, label: str, configs: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One row per (strategy, image side, forward solver) in ``configs``.

    Configurations with the same image side and iteration cap form a group whose strategies are
    timed round-robin (one step of each in turn, ``repeats`` times, after each one's warm-up), so
    that a change of load on a shared machine falls on all of them alike.
    """
    cfg = ctx.cfg
    rows: list[dict[str, Any]] = []
    groups: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for conf in configs:
        groups.setdefault((conf["image"], conf["solver"].max_iter), []).append(conf)
    for (side, cap), group in groups.items():
        timers: dict[str, StepTimer] = {}
        group_rows: dict[str, dict[str, Any]] = {}
        x = y = None
        for conf in group:
            name, solver = conf["strategy"], conf["solver"]
            model = ctx.model(solver=solver, backward=_strategies(cfg)[name])
            if x is None:
                x, y = synthetic_pair(cfg.batch, side, cfg.channels, model.op, 1, ctx.device)
            group_rows[name] = {"strategy": name, "image": side, "batch": cfg.batch,
                                "max_iter": cap, "tol": solver.tol, "oom": False}
            timer = StepTimer(ctx, model, x, y)  # type: ignore[arg-type]
            try:
                for _ in range(cfg.warmup):
                    timer.step(record=False)
                timers[name] = timer
            except RuntimeError as exc:
                if not is_oom(exc):
                    raise
                group_rows[name]["oom"] = True
                del timer, model
                empty_cache(ctx.device)
        for _ in range(cfg.repeats):
            for name in list(timers):
                try:
                    timers[name].step()
                except RuntimeError as exc:
                    if not is_oom(exc):
                        raise
                    group_rows[name]["oom"] = True
                    del timers[name]
                    empty_cache(ctx.device)
        for name, timer in timers.items():
            group_rows[name].update(timer.row())
            try:
                group_rows[name]["graph_bytes"] = timer.graph_bytes()
            except RuntimeError as exc:
                if not is_oom(exc):
                    raise
            empty_cache(ctx.device)
        del timers
        empty_cache(ctx.device)
        for name, row in group_rows.items():
            rows.append(row)
            ctx.log(f"step/{label}: {name} side={side} cap={cap} -> "
                    + ("OOM" if row["oom"] else f"{row['step_s'] * 1e3:.1f} ms/step"))
    return rows


def _add_ratios(rows: list[dict[str, Any]], group: tuple[str, ...]) -> None:
    """step_s and graph_bytes of each row over those of JFB in the same group (same run)."""
    ref: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        if r["strategy"] == "JFB":
            ref[tuple(r[k] for k in group)] = r
    for r in rows:
        base = ref.get(tuple(r[k] for k in group))
        for key, out in (("step_s", "step_over_jfb"), ("graph_bytes", "graph_over_jfb")):
            ok = base is not None and not r["oom"] and not base["oom"]
            ok = ok and r.get(key) is not None and base.get(key)  # type: ignore[union-attr]
            r[out] = (r[key] / base[key]) if ok else None  # type: ignore[index]


def scenario_step(ctx: Context) -> dict[str, Any]:
    """Training-step cost of every gradient strategy (see the module docstring)."""
    cfg = ctx.cfg
    names = list(_strategies(cfg))
    at_tol = _run_strategy_rows(ctx, "at_tol", [
        {"strategy": n, "image": cfg.image,
         "solver": Anderson(m=5, tol=cfg.tol, max_iter=cfg.max_iter)} for n in names
    ])
    sweep = _run_strategy_rows(ctx, "iter_sweep", [
        {"strategy": n, "image": cfg.image,
         "solver": Anderson(m=5, tol=FIXED_TOL, max_iter=cap)}
        for cap in cfg.iter_caps for n in names
    ])
    sizes = _run_strategy_rows(ctx, "size_sweep", [
        {"strategy": n, "image": side,
         "solver": Anderson(m=5, tol=FIXED_TOL, max_iter=cfg.sweep_iters)}
        for side in cfg.image_sizes for n in names
    ])
    for rows in (at_tol, sweep, sizes):
        _add_ratios(rows, ("image", "max_iter"))

    def pick(rows: list[dict[str, Any]], strategy: str, key: str) -> float | None:
        vals = [r[key] for r in rows if r["strategy"] == strategy and not r["oom"]]
        return vals[0] if vals and vals[0] is not None else None

    headline: dict[str, Any] = {}
    jfb_t, jfb_g = pick(at_tol, "JFB", "step_s"), pick(at_tol, "JFB", "graph_bytes")
    for name in names:
        t, g = pick(at_tol, name, "step_s"), pick(at_tol, name, "graph_bytes")
        headline[f"JFB/{name} step time"] = jfb_t / t if jfb_t and t else None
        headline[f"{name}/JFB graph bytes"] = g / jfb_g if g and jfb_g else None
    return {
        "model": ctx.describe_model(),
        "forward_solver": "Anderson(m=5, lam=1e-4); at_tol: tol and max_iter below; sweeps: "
        f"tol={FIXED_TOL:g} so every solve does exactly max_iter iterations",
        "ift_backward": f"tol={cfg.tol:g}, max_iter={cfg.max_iter}, Anderson m=10 / GMRES "
        "restart 10",
        "loss": "MSE(x_hat, x), Adam lr 1e-3",
        "memory_measure": "graph_bytes: peak bytes of distinct storages saved for backward by "
        "autograd during the forward (parameters excluded); peak_cuda_bytes: "
        "torch.cuda.max_memory_allocated over the step (CUDA only)",
        "at_tol": at_tol,
        "iter_sweep": sweep,
        "size_sweep": sizes,
        "ratios_at_tol": headline,
    }
