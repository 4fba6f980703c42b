"""DE-ADMM's over-relaxation (``model.relax``) at test time: the same fixed points, reached in
fewer iterations. On a task's first val images, in one process on one thread.

    PYTHONPATH=src python scripts/relaxation.py [CHECKPOINT] [--images 50]
        [--alphas 1,1.5,1.8] [--iterations 3,4,5,6,8,12] [--tols 1e-3,2e-3] [--threads 1]
        [--photo astronaut] [--max-iter 300]

``--photo NAME`` takes, instead of the val faces, the 64x128 crop (rows 160-223, columns
160-287) of a built-in photo, blurred by the checkpoint's operator with its task's noise
(seed 0); ``--max-iter`` caps the solves stopped by a tolerance (default: the checkpoint's).

For each alpha (the checkpoint's own first), prints the PSNR (clamped, as ``jfb eval``) after
exactly k applications of T for each k of ``--iterations``, then, for each evaluation tolerance,
the PSNR, the mean fixed-point iterations per image and the process-CPU milliseconds per image
of the whole evaluation (one round; the load average is printed at start and end).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import torch

from jfb.cpu_malloc import tune_cpu_malloc
from jfb.data.builtin import natural_images
from jfb.evaluate import evaluate
from jfb.models import DEADMM
from jfb.pipeline import EVAL_SEED, load_model
from jfb.tasks import get_task

DEFAULT = "src/jfb/weights/faces.safetensors"


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def run(model: DEADMM, pairs, solver) -> tuple[float, float, float]:
    """(PSNR, mean iterations per image, CPU ms per image) of one evaluation with ``solver``."""
    model.solver = solver
    t0 = time.process_time()
    res = evaluate(model, pairs, batch_size=25)
    ms = 1000 * (time.process_time() - t0) / res.n_images
    return float(res.psnr.mean()), float(res.iterations.float().mean()), ms


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", nargs="?", default=DEFAULT)
    p.add_argument("--images", type=int, default=50)
    p.add_argument("--alphas", type=floats, default=[1.0, 1.5, 1.8])
    p.add_argument("--iterations", type=lambda t: [int(v) for v in t.split(",")],
                   default=[3, 4, 5, 6, 8, 12])
    p.add_argument("--tols", type=floats, default=[1e-3, 2e-3])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--photo", help="a built-in photo's 64x128 crop instead of the val faces")
    p.add_argument("--max-iter", type=int, help="iteration cap of the tolerance stops")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tune_cpu_malloc()
    model, cfg, _ = load_model(args.checkpoint)
    if not isinstance(model, DEADMM):
        raise SystemExit(f"{args.checkpoint} is a {type(model).__name__}, not DE-ADMM")
    task = get_task(cfg.task)
    if args.photo is None:
        pairs, what = task.val_pairs(seed=EVAL_SEED, limit=args.images), f"val[:{args.images}]"
    else:
        x = natural_images([args.photo])[0][1][:, 160:224, 160:288]
        y = task.noise()(model.op.A(x[None]), generator=torch.Generator().manual_seed(0))[0]
        pairs, what = [(x, y)], f"{args.photo}[160:224, 160:288]"
    base = model.solver
    if args.max_iter is not None:
        base = dataclasses.replace(base, eval_max_iter=args.max_iter)
    alphas = [model.relax, *(a for a in args.alphas if a != model.relax)]
    print(f"# {args.checkpoint}: {type(base).__name__}, {what}, "
          f"{args.threads} thread(s), load {os.getloadavg()[0]:.2f}")
    print("| alpha | " + " | ".join(f"k={k}" for k in args.iterations) + " | "
          + " | ".join(f"tol {t:g}: dB / iters / CPU ms" for t in args.tols) + " |")
    print("|---" * (1 + len(args.iterations) + len(args.tols)) + "|")
    for alpha in alphas:
        model.relax = alpha
        fixed = [run(model, pairs, dataclasses.replace(base, eval_max_iter=k, eval_tol=1e-12))[0]
                 for k in args.iterations]
        stops = [run(model, pairs, dataclasses.replace(base, eval_tol=t)) for t in args.tols]
        print(f"| {alpha:g} | " + " | ".join(f"{v:.3f}" for v in fixed) + " | "
              + " | ".join(f"{db:.3f} / {it:.2f} / {ms:.0f}" for db, it, ms in stops) + " |",
              flush=True)
    print(f"# load at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
