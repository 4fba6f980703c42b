"""The equal-cost study of issue #15 on celeba-gauss5 (docs/RESULTS.md "Equal cost").

Every learned method trains on the same budget of CPU-seconds (``train.max_cpu_minutes``, one
thread, validation not counted), from ``configs/cost/deadmm-jfb.toml`` with the overrides of
:data:`RUNS`. Each run's step count is sized so that its learning-rate schedule ends near the
budget: ``time`` measures the CPU seconds of a pre-training step and of a main step of each run.

    python scripts/cost_study.py time [NAME...]        # CPU seconds per step, 1 thread
    python scripts/cost_study.py command NAME          # the jfb train command of a run
    python scripts/cost_study.py run NAME [--resume]   # run it (in the background: nohup)
    python scripts/cost_study.py collect               # evaluate and write docs/results/cost/
    python scripts/cost_study.py infer NAME=CKPT...    # inference CPU ms per image, in turn

``collect`` evaluates every finished run's final weights (``last.safetensors``, the end of its
curve), and Tikhonov, TV, the blurred input, the default before the study (commit 5bf9818) and
the default shipped now (at its own test-time settings), on val[:200] (``jfb
compare``, 1 thread; each evaluation once, kept in ``runs/cost/eval``), times
each model's inference in CPU ms per image (1 thread, 16 faces of 128x128, process CPU time,
the allocator tuned as the ``jfb`` commands tune it, the models in turn over 5 rounds: CPU time
moves with the machine's load, but then alike for all), and writes
``docs/results/cost/celeba-gauss5.json`` (the schema of issue #15), ``curves.png`` (PSNR
against training CPU-minutes), ``pareto.png`` (PSNR against inference CPU ms per image),
``iterations.png`` (PSNR against test-time iterations of the implicit models, val[:50]) and
the budget table ``curves.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE = "configs/cost/deadmm-jfb.toml"
OUT = "runs/cost"
DOCS = "docs/results/cost"
TASK = "celeba-gauss5"
FINAL_IMAGES = 200
BUDGET_MINUTES = 30  # configs/cost/deadmm-jfb.toml's train.max_cpu_minutes
#: The default model the study compares with: the one shipped before it (commit 5bf9818; the
#: study's DE-ADMM + JFB run replaced it), taken out of git into the study's folder.
SHIPPED = f"{OUT}/previous-default.safetensors"
SHIPPED_FROM = "5bf9818:src/jfb/weights/default.safetensors"
#: The default shipped now, at its own test-time settings: a point of the Pareto plot.
DEFAULT = Path("src/jfb/weights/faces.safetensors")
ITERATION_IMAGES = 50  # PSNR against test-time iterations of the implicit models
ITERATIONS = "2,3,4,5,6,8,12"
BUDGETS_MINUTES = (5, 10, 15, 20, 30)

#: name -> (method, backward, overrides of BASE). Step counts: the budget over the CPU seconds
#: per step that ``time`` measured (2026-12-06, 1 thread, load 3.5) on the untrained models,
#: corrected for the DE-ADMM runs by what deadmm-jfb's first 150 JFB steps cost (0.67 s per
#: step, not 1.37: the trained model's solves take fewer iterations) and for IFT by what its
#: first 75 steps cost (3.05 s each), a little less where the cost per step changes as the
#: model trains. "feedforward matched" is a DnCNN 20x64: 1 thread,
#: 128x128 faces, it costs about what the default DE-ADMM model's solve costs (DnCNN 17x64:
#: 222 ms/image, the default model: 270 ms/image, the 7x32 twin: 34 ms/image).
RUNS: dict[str, tuple[str, str | None, list[str]]] = {
    "deadmm-jfb": ("DE-ADMM", "jfb", []),
    "feedforward": ("feedforward", None, [
        "model.kind=feedforward", "train.pretrain_steps=0", "train.jacobian_penalty=0",
        "train.steps=20000", "train.val_every=1000", "train.warmup_steps=50"]),
    "feedforward-matched": ("feedforward matched", None, [
        "model.kind=feedforward", "model.net.depth=20", "model.net.width=64",
        "train.pretrain_steps=0", "train.jacobian_penalty=0", "train.steps=2300",
        "train.val_every=200", "train.warmup_steps=50"]),
    # deadmm-jfb's pre-training alone (same seed: the same denoiser): its pretrained.safetensors
    # is PnP-ADMM with that denoiser, rho = 0.03; its cost is the pre-training's.
    "pnp-admm": ("PnP-ADMM", None, ["train.steps=1"]),
    "deadmm-jfb2": ("DE-ADMM", "jfb(2)", ["model.backward.k=2", "train.steps=1800"]),
    "deadmm-ift": ("DE-ADMM", "ift", ["model.backward.name=ift", "train.steps=520",
                                      "train.val_every=50"]),
    "deadmm-unrolled6": ("DE-ADMM", "unrolled(6)", [
        "model.backward.name=unrolled", "model.solver.max_iter=6",
        "model.solver.eval_max_iter=6", "train.steps=1650"]),
    # Not an equal-cost run: 15 more CPU-minutes on deadmm-jfb's final weights (R from them,
    # rho from their learned 0.0303), over-relaxed (model.relax 1.8), with truncated training
    # solves (each cut at 3, 4 or 5 iterations, or run to the tolerance, at random): the JFB
    # gradient at a truncated iterate teaches T to get there in few iterations.
    "deadmm-jfb-truncated": ("DE-ADMM", "jfb, truncated", [
        f"train.init_net={OUT}/deadmm-jfb/last.safetensors", "model.rho=0.0303063",
        "model.relax=1.8", "model.cg_iters=3", "model.solver.train_caps=[3, 4, 5]",
        "train.pretrain_steps=0", "train.lr=2e-4", "train.steps=1500", "train.val_every=150",
        "train.max_cpu_minutes=15"]),
    "degrad-jfb": ("DE-GRAD", "jfb", [
        "model.kind=degrad", "model.eta=1.0", "model.eta_max=2.0",
        "model.net.spectral_norm=true", "model.net.residual=false",
        "train.pretrain=deblur", "train.pretrain_steps=200", "train.jacobian_penalty=0",
        "train.steps=6000", "train.val_every=500", "train.warmup_steps=50"]),
}

#: Runs that go on from another run's final weights (run -> that run): their budget is theirs
#: alone, so the equal-cost curves and budget table leave them out.
CONTINUES = {"deadmm-jfb-truncated": "deadmm-jfb"}


def overrides(name: str, extra: list[str] = ()) -> list[str]:
    return [*RUNS[name][2], f"train.out_dir={OUT}/{name}", *extra]


def train_args(name: str) -> list[str]:
    """The ``jfb`` arguments that train run ``name``."""
    return ["train", "--config", BASE, *(a for o in overrides(name) for a in ("--set", o)),
            "--threads", "1"]


def command(name: str) -> str:
    return shlex.join(["jfb", *train_args(name)])


def first_record(run_dir: Path, kind: str) -> dict:
    """The first record of ``kind`` in a training run's ``metrics.jsonl``."""
    with open(run_dir / "metrics.jsonl") as fh:
        return next(r for r in map(json.loads, fh) if r["kind"] == kind)


def time_steps(name: str, steps: int = 12) -> dict[str, float]:
    """CPU seconds per pre-training step and per main step of run ``name`` (1 thread)."""
    import torch

    from jfb.config import load_config
    from jfb.data import collate_images
    from jfb.pipeline import build_run
    from jfb.train.trainer import Trainer

    torch.set_num_threads(1)
    result = {}
    for phase, sets in (("pretrain", [f"train.pretrain_steps={steps}", "train.steps=1"]),
                        ("main", ["train.pretrain_steps=0", f"train.steps={steps}"])):
        if phase == "pretrain" and "train.pretrain_steps=0" in RUNS[name][2]:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config(BASE, overrides(name, [*sets, f"train.val_every={steps}",
                                                     "data.max_val_images=1",
                                                     f"train.out_dir={tmp}",
                                                     "train.max_cpu_minutes=null"]))
            run = build_run(cfg)
            Trainer(run.model, run.train_pairs, run.val_pairs, cfg, progress=False,
                    collate_fn=collate_images).fit()
            record = first_record(Path(tmp), "pretrain_val" if phase == "pretrain" else "val")
            result[phase] = record["cpu_seconds"] / steps  # validation is not counted
    return result


def final_weights(name: str) -> Path:
    """What a run's final row evaluates: the end of its curve (PnP-ADMM: its pre-training)."""
    return Path(OUT) / name / ("pretrained.safetensors" if name == "pnp-admm"
                               else "last.safetensors")


def infer_cpu_ms(checkpoints: dict[str, Path], images: int = 16, rounds: int = 5) -> dict:
    """CPU ms per image of each model on the first ``images`` val faces as one batch, 1 thread:
    the median of ``rounds`` rounds, each timing every model once in turn, so that a load that
    changes during the measurement reaches all models alike."""
    import statistics

    import torch

    from jfb.cpu_malloc import tune_cpu_malloc
    from jfb.pipeline import EVAL_SEED, load_run

    torch.set_num_threads(1)
    tune_cpu_malloc()  # as the jfb commands run: freed memory is reused, not page-faulted again
    models, y = {}, None
    for key, path in checkpoints.items():
        model, _, _, task = load_run(path, device="cpu")
        models[key] = model.eval()
        if y is None:
            pairs = task.val_pairs(seed=EVAL_SEED, limit=images)
            y = torch.stack([pairs[i][1] for i in range(images)])
    times: dict[str, list[float]] = {key: [] for key in models}
    with torch.no_grad():
        for _ in range(rounds):
            for key, model in models.items():
                t0 = time.process_time()
                model(y)
                times[key].append(1000 * (time.process_time() - t0) / images)
    return {key: round(statistics.median(t), 1) for key, t in times.items()}


def compared(key: str, methods: list[str], images: int, iterations: str = "") -> dict:
    """``jfb compare`` of ``methods`` on val[:images] (1 thread), once: its results.json, kept
    in ``OUT/eval/KEY-IMAGES`` so that a later ``collect`` evaluates only what is new."""
    out = Path(OUT) / "eval" / f"{key}-{images}"
    if not (out / "results.json").is_file():
        cmd = [sys.executable, "-m", "jfb", "compare", "--task", TASK, "--methods",
               ",".join(methods), "--max-images", str(images), "--threads", "1", "--device",
               "cpu", "--quiet", "--out", str(out)]
        subprocess.run(cmd + (["--iterations", iterations] if iterations else []), check=True)
    return json.loads((out / "results.json").read_text())


def pretrain_cost(name: str) -> float:
    """CPU seconds of a run's pre-training (its ``pretrain_val`` record)."""
    return first_record(Path(OUT) / name, "pretrain_val")["cpu_seconds"]


def collect(names: list[str], *, images: int = FINAL_IMAGES, iteration_images: int =
            ITERATION_IMAGES, docs: str = DOCS) -> None:
    import datetime

    from jfb.curves import read_curve, saturated, write_curves
    from jfb.report import legend_outside, save_figure, write_json

    names = [n for n in names if final_weights(n).is_file()]
    if not Path(SHIPPED).is_file():
        Path(SHIPPED).write_bytes(subprocess.run(["git", "show", SHIPPED_FROM], check=True,
                                                 capture_output=True).stdout)
    lined = ["input", "tikhonov", "tv", SHIPPED]
    line_rows = dict(zip(lined, compared("lines", lined, images)["rows"], strict=True))
    implicit = ["shipped", *(n for n in names if RUNS[n][0].startswith(("DE-", "PnP")))]
    iteration_curves = {}
    for name in implicit:
        path = SHIPPED if name == "shipped" else str(final_weights(name))
        curves_of = compared(f"{name}-iterations", [path], iteration_images,
                             ITERATIONS)["iterations_curves"]
        iteration_curves[name] = next(iter(curves_of.values()))
    curves = {n: read_curve(Path(OUT) / n, n) for n in names if n != "pnp-admm"}
    cpu_ms = infer_cpu_ms({"shipped": Path(SHIPPED), **{n: final_weights(n) for n in names},
                           "default": DEFAULT})
    digest = hashlib.sha256(DEFAULT.read_bytes()).hexdigest()[:10]  # a new default: a new row
    default_row = compared(f"default-{digest}", [str(DEFAULT)], images)["rows"][0]
    default = {"val_psnr": default_row["psnr"], "val_ssim": default_row["ssim"],
               "images": default_row["n_images"], "infer_cpu_ms_per_image": cpu_ms["default"],
               "mean_solver_iters": default_row.get("mean_solver_iters"), "sha256": digest}
    runs = []
    for name in names:
        method, backward, _ = RUNS[name]
        row = compared(name, [str(final_weights(name))], images)["rows"][0]
        curve = curves.get(name)
        runs.append({
            "name": name, "method": method, "backward": backward, "params": row["params"],
            "budget_cpu_seconds": curve.budget_cpu_seconds if curve else pretrain_cost(name),
            "curve": curve.points if curve else [],
            "final": {"val_psnr": row["psnr"], "val_ssim": row["ssim"],
                      "images": row["n_images"],
                      "infer_ms_per_image": row["infer_ms_per_image"],
                      "infer_cpu_ms_per_image": cpu_ms[name],
                      "mean_solver_iters": row.get("mean_solver_iters"), "threads": 1},
            "saturated": saturated(curve) if curve else None,
            "continues": CONTINUES.get(name), "command": command(name)})
    lines = [{"method": "previous default" if m == SHIPPED else m,
              "val_psnr": line_rows[m]["psnr"], "val_ssim": line_rows[m]["ssim"],
              "images": line_rows[m]["n_images"],
              "infer_cpu_ms_per_image": cpu_ms["shipped"] if m == SHIPPED else None}
             for m in lined]
    docs = Path(docs)
    docs.mkdir(parents=True, exist_ok=True)
    write_json(docs / f"{TASK}.json", {
        "task": TASK, "machine": "2-core CPU (torch 2.13.0)", "threads": 1,
        "date": datetime.date.today().isoformat(), "budget_cpu_minutes": BUDGET_MINUTES,
        "validation": "val[:50] along the way (not counted in the cost), final on "
                      f"val[:{images}]", "lines": lines, "runs": runs, "default": default,
        "iterations_curves": {"images": iteration_images, "curves": iteration_curves},
        "evaluation_command": f"jfb compare --task {TASK} --methods CHECKPOINT --max-images "
                              f"{images} --threads 1 --device cpu (input, tikhonov, tv and the "
                              f"shipped default in one call; --iterations {ITERATIONS} on "
                              f"val[:{iteration_images}] for the implicit models)"})
    write_curves(docs, [c for n, c in curves.items() if n not in CONTINUES],
                 [60.0 * m for m in BUDGETS_MINUTES],
                 command="python scripts/cost_study.py collect",
                 title=f"{TASK}: validation PSNR (val[:50]) at equal training compute")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(7, 4))
    for run in runs:
        ax.scatter(run["final"]["infer_cpu_ms_per_image"], run["final"]["val_psnr"],
                   label=run["name"])
    ax.scatter(default["infer_cpu_ms_per_image"], default["val_psnr"], marker="*", s=120,
               color="black", label="shipped default")
    for line in lines[1:]:
        ax.axhline(line["val_psnr"], color="grey", lw=0.8, ls="--")
        ax.annotate(line["method"], (0, line["val_psnr"]), xycoords=("axes fraction", "data"),
                    fontsize=8, va="bottom")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks([20, 50, 100, 200, 500])
    ax.set_xlabel("inference CPU ms per 128x128 image (1 thread)")
    ax.set_ylabel(f"PSNR on val[:{images}] (dB)")
    ax.grid(alpha=0.3)
    legend_outside(ax)
    save_figure(fig, docs / "pareto.png", title=f"{TASK}: quality against inference cost")
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, points in iteration_curves.items():
        ax.plot([p["iterations"] for p in points], [p["psnr"] for p in points], marker="o",
                markersize=3, label=name)
    ax.set_xlabel("test-time fixed-point iterations (a cap)")
    ax.set_ylabel(f"PSNR on val[:{iteration_images}] (dB)")
    ax.grid(alpha=0.3)
    legend_outside(ax)
    save_figure(fig, docs / "iterations.png", title=f"{TASK}: PSNR against test-time iterations")
    print((docs / "curves.md").read_text(), end="")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("time")
    p.add_argument("names", nargs="*")
    p = sub.add_parser("command")
    p.add_argument("name", choices=RUNS)
    p = sub.add_parser("run")
    p.add_argument("name", choices=RUNS)
    p.add_argument("--resume", action="store_true")
    p = sub.add_parser("infer")
    p.add_argument("models", nargs="+", metavar="NAME=CHECKPOINT")
    p.add_argument("--rounds", type=int, default=9)
    p = sub.add_parser("collect")
    p.add_argument("names", nargs="*")
    p.add_argument("--images", type=int, default=FINAL_IMAGES)
    p.add_argument("--iteration-images", type=int, default=ITERATION_IMAGES)
    p.add_argument("--docs", default=DOCS, help="where the results go")
    args = parser.parse_args(argv)
    if args.cmd == "infer":
        models = dict(m.split("=", 1) for m in args.models)
        print(json.dumps({**infer_cpu_ms({k: Path(v) for k, v in models.items()},
                                         rounds=args.rounds), "load": os.getloadavg()}))
    elif args.cmd == "collect":
        collect(args.names or list(RUNS), images=args.images,
                iteration_images=args.iteration_images, docs=args.docs)
    elif args.cmd == "time":
        for name in args.names or RUNS:
            print(json.dumps({"run": name, **time_steps(name)}), flush=True)
    elif args.cmd == "command":
        print(command(args.name))
    else:
        cmd = [sys.executable, "-m", "jfb", *train_args(args.name), "--quiet"]
        if args.resume:
            cmd.append("--resume")
        Path(OUT).mkdir(parents=True, exist_ok=True)
        return subprocess.call(cmd)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
