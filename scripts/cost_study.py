"""The equal-cost study of issue #15 on celeba-gauss5 (docs/RESULTS.md "Equal cost").

Every learned method trains on the same budget of CPU-seconds (``train.max_cpu_minutes``, one
thread, validation not counted), from ``configs/cost/deadmm-jfb.toml`` with the overrides of
:data:`RUNS`. Each run's step count is sized so that its learning-rate schedule ends near the
budget: ``time`` measures the CPU seconds of a pre-training step and of a main step of each run.

    python scripts/cost_study.py time [NAME...]        # CPU seconds per step, 1 thread
    python scripts/cost_study.py command NAME          # the jfb train command of a run
    python scripts/cost_study.py run NAME [--resume]   # run it (in the background: nohup)
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

BASE = "configs/cost/deadmm-jfb.toml"
OUT = "runs/cost"
BUDGET_MINUTES = 30

#: name -> (method, backward, overrides of BASE). Step counts: the budget over the CPU seconds
#: per step that ``time`` measured (2026-12-06, 1 thread, load 3.5), a little less where the
#: cost per step changes as the model trains. "feedforward matched" is a DnCNN 20x64: 1 thread,
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
    "deadmm-jfb2": ("DE-ADMM", "jfb(2)", ["model.backward.k=2", "train.steps=1300"]),
    "deadmm-ift": ("DE-ADMM", "ift", ["model.backward.name=ift", "train.steps=500",
                                      "train.val_every=50"]),
    "deadmm-unrolled6": ("DE-ADMM", "unrolled(6)", [
        "model.backward.name=unrolled", "model.solver.max_iter=6",
        "model.solver.eval_max_iter=6", "train.steps=1650"]),
    "degrad-jfb": ("DE-GRAD", "jfb", [
        "model.kind=degrad", "model.eta=1.0", "model.eta_max=2.0",
        "model.net.spectral_norm=true", "model.net.residual=false",
        "train.pretrain=deblur", "train.pretrain_steps=200", "train.jacobian_penalty=0",
        "train.steps=6000", "train.val_every=500", "train.warmup_steps=50"]),
}


def overrides(name: str, extra: list[str] = ()) -> list[str]:
    return [*RUNS[name][2], f"train.out_dir={OUT}/{name}", *extra]


def command(name: str) -> str:
    sets = " ".join(f"--set {shlex.quote(o)}" for o in overrides(name))
    return f"jfb train --config {BASE} {sets} --threads 1"


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
            kind = "pretrain_val" if phase == "pretrain" else "val"
            with open(Path(tmp) / "metrics.jsonl") as fh:
                record = next(r for r in map(json.loads, fh) if r["kind"] == kind)
            result[phase] = record["cpu_seconds"] / steps  # validation is not counted
    return result


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
    args = parser.parse_args(argv)
    if args.cmd == "time":
        for name in args.names or RUNS:
            print(json.dumps({"run": name, **time_steps(name)}), flush=True)
    elif args.cmd == "command":
        print(command(args.name))
    else:
        cmd = [sys.executable, "-m", "jfb", "train", "--config", BASE, "--threads", "1", "--quiet"]
        for o in overrides(args.name):
            cmd += ["--set", o]
        if args.resume:
            cmd.append("--resume")
        Path(OUT).mkdir(parents=True, exist_ok=True)
        return subprocess.call(cmd)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
