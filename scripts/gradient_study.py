"""JFB is not the steepest descent: what does it cost? (issue 21, question 7)

DE-ADMM on celeba-gauss5 (``configs/cost/deadmm-jfb.toml``) trained from one start, R from the
blind denoiser ``runs/nat-denoiser/pretrained.safetensors`` (the natural model's pre-training,
``src/jfb/weights/natural.md``), with each backward strategy of :data:`RUNS`, the same data order,
a constant learning rate and the same budget of training CPU-minutes (validation not counted;
one thread); validation every 100 steps on val[:20]. ``collect`` draws the training loss and the
validation PSNR against steps and against training CPU-minutes (``docs/questions/gradients.png``)
and prints the table of ``docs/QUESTIONS.md``, Q7.

    python scripts/gradient_study.py run [NAME...]     # in turn (nohup it: ~1 hour); without
                                                       # names, the start's evaluation first
    python scripts/gradient_study.py collect
    python scripts/gradient_study.py run jfb jfb5 --seed 1   # another data order (train.seed):
                                                            # runs/q7/seed1/NAME, in collect's
                                                            # seed table
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

RUNS = {
    "jfb": ["model.backward.name=jfb"],
    "jfb2": ["model.backward.name=jfb", "model.backward.k=2"],
    "jfb5": ["model.backward.name=jfb", "model.backward.k=5"],
    "neumann5": ["model.backward.name=neumann", "model.backward.k=5"],
    "ift": ["model.backward.name=ift"],
}
COMMON = ["train.pretrain_steps=0", "train.init_net=runs/nat-denoiser/pretrained.safetensors",
          "train.steps=5000", "train.schedule=constant", "train.lr=5e-4",
          "train.max_cpu_minutes=8", "train.val_every=100", "train.log_every=10",
          "data.max_val_images=20"]
OUT = Path("runs/q7")


def out_dir(name: str, seed: int = 0) -> Path:
    """Seed 0 (the data order of the figure) in runs/q7/NAME, another in runs/q7/seedS/NAME."""
    return OUT / name if seed == 0 else OUT / f"seed{seed}" / name


def command(name: str, seed: int = 0) -> list[str]:
    sets = [a for kv in COMMON + RUNS[name] + [f"train.seed={seed}"] for a in ("--set", kv)]
    return [sys.executable, "-m", "jfb", "train", "--config", "configs/cost/deadmm-jfb.toml",
            "--threads", "1", "--quiet", *sets, "--out", str(out_dir(name, seed))]


def start_command() -> list[str]:
    """``jfb eval`` of the common start (the untrained DE-ADMM with R from the denoiser)."""
    sets = [a for kv in COMMON for a in ("--set", kv)]
    return [sys.executable, "-m", "jfb", "eval", "--config", "configs/cost/deadmm-jfb.toml",
            *sets, "--max-images", "20", "--threads", "1", "--quiet", "--out",
            str(OUT / "start")]


def records(name: str, seed: int = 0) -> tuple[list[dict], list[dict]]:
    rows = [json.loads(line) for line in (out_dir(name, seed) / "metrics.jsonl").open()]
    return ([r for r in rows if r.get("kind") == "train"],
            [r for r in rows if r.get("kind") == "val"])


def collect() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    start = OUT / "start" / "results.json"
    if start.is_file():
        p0 = json.loads(start.read_text())["psnr"]
        print(f"the common start (step 0, jfb eval on val[:20]): {p0:.2f} dB")
        for ax in axes[1]:
            ax.axhline(p0, color="grey", ls=":", lw=1, label="start")
    print("| backward | steps in 8 CPU-min | CPU s / step | val PSNR at 100 steps | at 300 "
          "| final | best |")
    print("|---|---|---|---|---|---|---|")
    for name in RUNS:
        if not (OUT / name / "metrics.jsonl").is_file():
            continue
        train, val = records(name)
        if not val:
            continue
        steps = np.array([v["step"] for v in val], float)
        cpu = np.array([v["cpu_seconds"] for v in val], float) / 60
        psnr = np.array([v["psnr"] for v in val], float)
        t_steps = np.array([t["step"] for t in train], float)
        loss = np.array([t["loss"] for t in train], float)
        t_cpu = np.interp(t_steps, np.r_[0, steps], np.r_[0, cpu])  # CPU-min at each step
        w = 5  # a running mean over 5 records (50 steps), drawn at their centre
        smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
        centre = slice(w // 2, len(loss) - w // 2)
        axes[0, 0].semilogy(t_steps[centre], smooth, label=name)
        axes[0, 1].semilogy(t_cpu[centre], smooth, label=name)
        axes[1, 0].plot(steps, psnr, "o-", ms=3, label=name)
        axes[1, 1].plot(cpu, psnr, "o-", ms=3, label=name)
        at = {s: psnr[steps == s][0] if (steps == s).any() else float("nan") for s in (100, 300)}
        per_step = 60 * cpu[-1] / steps[-1]
        print(f"| {name} | {int(steps[-1])} | {per_step:.2f} | {at[100]:.2f} | {at[300]:.2f} "
              f"| {psnr[-1]:.2f} | {psnr.max():.2f} |")
    for ax, (x, y) in zip(axes.flat, [("steps", "training loss (50-step running mean)"),
                                      ("training CPU-minutes", "training loss"),
                                      ("steps", "val[:20] PSNR dB"),
                                      ("training CPU-minutes", "val[:20] PSNR dB")], strict=True):
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.grid(alpha=0.3)
    axes[0, 0].legend()
    fig.suptitle("DE-ADMM on celeba-gauss5 from one start: backward strategies at equal CPU")
    fig.tight_layout()
    out = Path("docs/questions/gradients.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"written: {out}")
    seeds = sorted(int(d.name[4:]) for d in OUT.glob("seed*") if d.name[4:].isdigit())
    if seeds:
        print("\n| backward | " + " | ".join(f"seed {s}" for s in [0, *seeds]) + " |")
        print("|---|" + "---|" * (len(seeds) + 1))
        for name in RUNS:
            finals = []
            for s in [0, *seeds]:
                done = (out_dir(name, s) / "metrics.jsonl").is_file()
                val = records(name, s)[1] if done else []
                finals.append(f"{val[-1]['psnr']:.2f}" if val else "-")
            print(f"| {name} | " + " | ".join(finals) + " |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("action", choices=["run", "collect", "command"])
    p.add_argument("names", nargs="*")
    p.add_argument("--seed", type=int, default=0, help="train.seed: the data order (default 0)")
    args = p.parse_args()
    names = args.names or list(RUNS)
    if args.action == "collect":
        collect()
    if args.action == "run" and not args.names and args.seed == 0:
        subprocess.run(start_command(), check=False)
    for name in names if args.action != "collect" else ():
        if args.action == "command":
            print(" ".join(command(name, args.seed)))
            continue
        print(f"=== {name}", flush=True)
        subprocess.run(command(name, args.seed), check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
