"""Sensitivity and architecture sweeps (issue 21, questions 4 and 10).

One-at-a-time changes around the project's best CPU recipe, DE-ADMM + JFB on celeba-gauss5
(``configs/cpu-deadmm.toml``: R a 7-layer, 32-channel residual DnCNN, pre-trained as a blind
denoiser for 450 steps, then JFB), and a few around the paper's model, DE-GRAD
(``configs/cpu-degrad.toml``: a spectrally normalised 7x32 DnCNN, 50 steps of pre-training),
each run **from scratch on the same budget of training
CPU-minutes** (pre-training counted, validation not; one thread), with a constant learning rate
after the warm-up (a cosine schedule cut by the budget would favour the runs whose steps are
cheap) and one validation on val[:50] when the budget is spent. The base recipes run with
three seeds (DE-ADMM) and two (DE-GRAD); their spread is drawn beside every factor's range in
the tornado chart, so a reader sees which effects are larger than the seed's.

    python scripts/sweep_study.py run --shard 0/2      # nohup two shards, one per core
    python scripts/sweep_study.py run --shard 1/2
    python scripts/sweep_study.py run NAME...          # given runs only
    python scripts/sweep_study.py command NAME         # the jfb train command of one run
    python scripts/sweep_study.py equilibrium          # each finished run at tol 1e-3 and
                                                       # 1e-5 (val[:20]): is it a fixed point?
    python scripts/sweep_study.py collect              # tables + docs/questions/sweeps.png

A finished run (a ``done`` file beside its records) is skipped; an interrupted one resumes
(``--resume``: the budget counts all resumes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

BUDGET_CPU_MINUTES = 5
CONFIGS = {"DE-ADMM": "configs/cpu-deadmm.toml", "DE-GRAD": "configs/cpu-degrad.toml"}
COMMON = ["train.schedule=constant", "train.steps=100000",
          f"train.max_cpu_minutes={BUDGET_CPU_MINUTES}", "train.val_every=100000",
          "train.log_every=25", "data.max_val_images=50", "model.solver.eval_tol=1e-3"]
OUT = Path("runs/sweep")
#: The equilibrium check: val[:20] solved to each tolerance, at most 300 iterations.
EQUILIBRIUM_TOLS = ("1e-3", "1e-5")


@dataclass(frozen=True)
class Run:
    question: str  # "Q4" or "Q10"
    factor: str  # the row of the tornado chart ("" for the base recipe)
    value: str  # the value as a reader reads it
    overrides: tuple[str, ...] = ()
    seed: int = 0
    model: str = "DE-ADMM"  # a key of CONFIGS


BASE_VALUES = {"learning rate": "1e-3", "batch size": "8", "rho init": "0.03",
               "Anderson memory": "5", "training tolerance": "1e-3", "Jacobian penalty": "1e-3",
               "pre-training steps": "450", "width": "32", "depth": "7", "activation": "relu",
               "residual R": "on", "normalisation": "none"}


def _factor(question: str, factor: str, key: str, values: dict[str, str],
            model: str = "DE-ADMM") -> dict[str, Run]:
    prefix = "" if model == "DE-ADMM" else "degrad-"
    return {f"{prefix}{key.rsplit('.', 1)[-1]}={label}":
            Run(question, factor, label, (f"{key}={v}",), model=model)
            for label, v in values.items()}


RUNS: dict[str, Run] = {
    **{f"base-s{s}": Run("base", "", "", (f"train.seed={s}",), seed=s) for s in (0, 1, 2)},
    **_factor("Q4", "learning rate", "train.lr", {"3e-4": "3e-4", "3e-3": "3e-3"}),
    **_factor("Q4", "batch size", "data.batch_size", {"4": "4", "16": "16"}),
    **_factor("Q4", "rho init", "model.rho", {"0.01": "0.01", "0.1": "0.1"}),
    **_factor("Q4", "Anderson memory", "model.solver.m", {"2": "2", "10": "10"}),
    **_factor("Q4", "training tolerance", "model.solver.tol", {"1e-2": "1e-2", "1e-4": "1e-4"}),
    **_factor("Q4", "Jacobian penalty", "train.jacobian_penalty", {"0": "0", "1e-2": "1e-2"}),
    **_factor("Q4", "pre-training steps", "train.pretrain_steps", {"0": "0", "1500": "1500"}),
    **_factor("Q4", "width", "model.net.width", {"16": "16", "64": "64"}),
    **_factor("Q10", "depth", "model.net.depth", {"3": "3", "5": "5", "11": "11", "17": "17"}),
    **_factor("Q10", "activation", "model.net.activation",
              {"gelu": "gelu", "silu": "silu", "leaky_relu": "leaky_relu"}),
    **_factor("Q10", "residual R", "model.net.residual", {"off": "false"}),
    "norm=group": Run("Q10", "normalisation", "GroupNorm", ("model.net.group_norm=true",)),
    "norm=spectral": Run("Q10", "normalisation", "spectral", ("model.net.spectral_norm=true",)),
    **{f"degrad-base-s{s}": Run("base", "", "", (f"train.seed={s}",), seed=s, model="DE-GRAD")
       for s in (0, 1)},
    **_factor("Q10", "depth", "model.net.depth", {"3": "3"}, model="DE-GRAD"),
    **_factor("Q10", "normalisation", "model.net.spectral_norm", {"none": "false"},
              model="DE-GRAD"),
}
DEGRAD_BASE_VALUES = {"depth": "7", "normalisation": "spectral"}


def command(name: str) -> list[str]:
    run = RUNS[name]
    sets = [a for kv in COMMON + list(run.overrides) for a in ("--set", kv)]
    return [sys.executable, "-m", "jfb", "train", "--config", CONFIGS[run.model], "--threads", "1",
            "--quiet", *sets, "--out", str(OUT / name)]


def records(name: str) -> list[dict]:
    path = OUT / name / "metrics.jsonl"
    return [json.loads(line) for line in path.open()] if path.is_file() else []


def summary(name: str) -> dict | None:
    """The run's final validation and its last training record (None: not finished)."""
    rows = records(name)
    vals = [r for r in rows if r.get("kind") == "val"]
    train = [r for r in rows if r.get("kind") == "train" and r.get("phase") == "train"]
    ends = [r for r in rows if r.get("kind") == "summary"]
    if not vals or not ends or not (OUT / name / "done").is_file():
        return None
    last, end = vals[-1], ends[-1]
    return {"psnr": last["psnr"], "iters": last.get("iters"), "converged": last.get("converged"),
            "steps": end["steps"], "cpu_s": last.get("cpu_seconds"),
            "contraction": train[-1].get("contraction_max") if train else None,
            "skipped": end.get("skipped_steps", 0), "rollbacks": end.get("rollbacks", 0)}


def eval_command(name: str, tol: str) -> list[str]:
    return [sys.executable, "-m", "jfb", "eval", str(OUT / name / "last.safetensors"),
            "--max-images", "20", "--eval-tol", tol, "--eval-max-iter", "300", "--threads", "1",
            "--quiet", "--out", str(OUT / name / f"eval-tol{tol}")]


def equilibrium(names: list[str]) -> None:
    """``jfb eval`` of each finished run at the :data:`EQUILIBRIUM_TOLS` (once each)."""
    for name in names:
        for tol in EQUILIBRIUM_TOLS:
            if summary(name) is not None and not (OUT / name / f"eval-tol{tol}" /
                                                  "results.json").is_file():
                subprocess.run(eval_command(name, tol), check=False, stdout=subprocess.DEVNULL)


def evaluated(name: str, tol: str) -> dict | None:
    path = OUT / name / f"eval-tol{tol}" / "results.json"
    return json.loads(path.read_text()) if path.is_file() else None


def run(names: list[str]) -> None:
    for name in names:
        if (OUT / name / "done").is_file():
            continue
        cmd = command(name)
        if (OUT / name / "last.safetensors").is_file():
            cmd.append("--resume")
        print(" ".join(cmd), flush=True)
        if subprocess.run(cmd, check=False).returncode == 0:
            (OUT / name / "done").touch()


def collect() -> None:
    rows = {name: summary(name) for name in RUNS}
    print("| model | question | factor | value | val[:50] PSNR | vs base mean | JFB steps | "
          "val iterations | largest norm of J_T (last training log) | val[:20] at tol 1e-5 | "
          "minus at 1e-3 | iterations to 1e-5 | skipped steps, rollbacks |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    bases = {}
    for model in CONFIGS:
        base = [r["psnr"] for n, r in rows.items() if r and RUNS[n].model == model
                and RUNS[n].question == "base"]
        if not base:
            continue
        bases[model] = base
        mean = sum(base) / len(base)
        for name, r in rows.items():
            if RUNS[name].model == model:
                print(_row(name, r, mean))
    for model, base in bases.items():
        print(f"\n{model} base recipe, {len(base)} seeds: "
              f"{', '.join(f'{p:.2f}' for p in base)} dB (mean {sum(base) / len(base):.2f}, "
              f"range {max(base) - min(base):.2f})")
    if bases:
        _tornado(rows, bases)


def _row(name: str, r: dict | None, mean: float) -> str:
    run_ = RUNS[name]
    factor, value = run_.factor or "base", run_.value or f"seed {run_.seed}"
    if r is None:
        return f"| {run_.model} | {run_.question} | {factor} | {value} | not run |" + " |" * 8
    gamma = "-" if r["contraction"] is None else f"{r['contraction']:.3f}"
    loose, tight = (evaluated(name, tol) for tol in EQUILIBRIUM_TOLS)
    if loose and tight:
        at = f"{tight['psnr']:.2f}"
        gap = f"{tight['psnr'] - loose['psnr']:+.2f}"
        its = f"{tight['mean_solver_iters']:.0f}"
    else:
        at = gap = its = "-"
    return (f"| {run_.model} | {run_.question} | {factor} | {value} | {r['psnr']:.2f} | "
            f"{r['psnr'] - mean:+.2f} | {r['steps']} | {r['iters']:.1f} | {gamma} | {at} | {gap} | "
            f"{its} | {r['skipped']}, {r['rollbacks']} |")


def _tornado(rows: dict[str, dict | None], bases: dict[str, list[float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts = []
    for model, base in bases.items():
        factors: dict[str, list[tuple[str, float]]] = {}
        for name, r in rows.items():
            if r is not None and RUNS[name].factor and RUNS[name].model == model:
                factors.setdefault(RUNS[name].factor, []).append((RUNS[name].value, r["psnr"]))
        if factors:
            charts.append((model, base, factors))
    heights = [len(f) + 1.5 for _, _, f in charts]
    fig, axes = plt.subplots(len(charts), 1, figsize=(9, 0.5 * sum(heights) + 1.2),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, (model, base, factors) in zip(axes[:, 0], charts, strict=True):
        _tornado_panel(ax, model, base, factors, rows)
    axes[-1, 0].set_xlabel("val[:50] PSNR minus the base recipe's mean over seeds (dB)")
    fig.suptitle(f"One factor at a time on celeba-gauss5, {BUDGET_CPU_MINUTES} training CPU-min "
                 "each, from scratch\n(orange: the base value, seed 0; ticks: the other values)",
                 fontsize=10)
    fig.tight_layout()
    out = Path("docs/questions/sweeps.png")
    fig.savefig(out, dpi=110)
    print(f"\nwrote {out}")


def _tornado_panel(ax, model: str, base: list[float], factors: dict, rows: dict) -> None:
    mean = sum(base) / len(base)
    seed0_name = "base-s0" if model == "DE-ADMM" else "degrad-base-s0"
    seed0 = rows[seed0_name]["psnr"] if rows.get(seed0_name) else mean
    base_values = BASE_VALUES if model == "DE-ADMM" else DEGRAD_BASE_VALUES
    # every factor's range includes the base recipe (seed 0 is the factor's base value)
    spans = {f: (min([p for _, p in v] + [seed0]), max([p for _, p in v] + [seed0]), v)
             for f, v in factors.items()}
    order = sorted(spans, key=lambda f: spans[f][1] - spans[f][0])
    for i, f in enumerate(order):
        lo, hi, values = spans[f]
        ax.barh(i, hi - lo, left=lo - mean, height=0.5, color="tab:blue", alpha=0.6)
        for j, (label, p) in enumerate(sorted(values, key=lambda v: v[1])):
            ax.annotate(label, (p - mean, i), fontsize=7, ha="center",  # alternately above
                        va="bottom" if j % 2 == 0 else "top",  # and below the bar
                        xytext=(0, 6 if j % 2 == 0 else -6), textcoords="offset points")
            ax.plot(p - mean, i, "k|", ms=10)
        ax.plot(seed0 - mean, i, "o", color="tab:orange", ms=4)
    ax.axvspan(min(base) - mean, max(base) - mean, color="grey", alpha=0.25,
               label=f"seed-to-seed range of the base recipe ({len(base)} seeds)")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(order)), [f"{f} (base {base_values[f]})" for f in order])
    ax.set_title(f"{model} (base: {mean:.2f} dB, mean of {len(base)} seeds)", fontsize=9)
    ax.margins(x=0.08)
    ax.legend(loc="best", fontsize=8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("run")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--shard", default="0/1", help="I/N: every N-th run from the I-th")
    c = sub.add_parser("command")
    c.add_argument("name", choices=list(RUNS))
    sub.add_parser("collect")
    e = sub.add_parser("equilibrium")
    e.add_argument("names", nargs="*", metavar="NAME")
    args = parser.parse_args()
    if args.what == "run":
        unknown = sorted(set(args.names) - set(RUNS))
        if unknown:
            parser.error(f"unknown runs {unknown}; choose from {list(RUNS)}")
        i, n = (int(v) for v in args.shard.split("/"))
        run(args.names or list(RUNS)[i::n])
    elif args.what == "equilibrium":
        equilibrium(args.names or list(RUNS))
    elif args.what == "command":
        print(" ".join(command(args.name)))
    else:
        collect()


if __name__ == "__main__":
    main()
