"""DE-ADMM's x-update with plain against preconditioned CG (``model.precondition``), on a task's
first val images at the model's evaluation settings, in one process on one thread.

    PYTHONPATH=src python scripts/time_precondition.py [CHECKPOINT] [--images 50]
        [--cg-iters 20 5 3] [--rounds 3] [--threads 1]

Every setting (the model's own ``cg_iters`` and those given, each with plain and with
preconditioned CG) is evaluated ``--rounds`` times, in interleaved rounds whose order reverses
every other round, so that a drift of the machine's load hits all settings alike. Prints per
setting: PSNR (clamped, as ``jfb eval``) and the solver's mean fixed-point iterations per image
(the same every round: checked), the CG iterations per x-update (mean over samples, and the
batch's steps, i.e. its slowest sample's, which is what the batch pays for), and the process-CPU
milliseconds per application of T to one image, of which the x-update, and of the whole
evaluation (min and max over rounds). The operator's A^T A and its preconditioner P are timed
alone on one batch, and the load average is printed at start and end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

import jfb.linalg.least_squares as least_squares
from jfb.cpu_malloc import tune_cpu_malloc
from jfb.evaluate import evaluate
from jfb.models import DEADMM
from jfb.pipeline import EVAL_SEED, load_model
from jfb.tasks import get_task

#: The CG the x-update calls, kept to restore it after :func:`instrument` wraps it.
conjugate_gradient = least_squares.conjugate_gradient


@dataclass
class Tally:
    """What one evaluation spent in T and in its x-updates."""

    t_images: int = 0  # images T was applied to, summed over its (compacted) calls
    t_seconds: float = 0.0
    x_seconds: float = 0.0
    cg_mean: list[float] = field(default_factory=list)  # per x-update: mean CG steps per sample
    cg_batch: list[int] = field(default_factory=list)  # per x-update: the batch's CG steps


def instrument(model: DEADMM, tally: Tally) -> None:
    """Count and time T and its x-update on this model instance (process CPU time)."""
    t_with, x_update = model.T_with, model._x_update
    in_x_update = [False]

    def timed_t(s: torch.Tensor, ctx) -> torch.Tensor:
        t0 = time.process_time()
        out = t_with(s, ctx)
        tally.t_seconds += time.process_time() - t0
        tally.t_images += s.shape[0]
        return out

    def timed_x(z: torch.Tensor, u: torch.Tensor, ctx) -> torch.Tensor:
        t0 = time.process_time()
        in_x_update[0] = True
        try:
            return x_update(z, u, ctx)
        finally:
            in_x_update[0] = False
            tally.x_seconds += time.process_time() - t0

    def counted_cg(*args, **kwargs):
        x, n_iter = conjugate_gradient(*args, **kwargs)
        if in_x_update[0]:  # not the Tikhonov initial estimate's CG
            tally.cg_mean.append(float(n_iter.float().mean()))
            tally.cg_batch.append(int(n_iter.max()))
        return x, n_iter

    model.T_with, model._x_update = timed_t, timed_x
    least_squares.conjugate_gradient = counted_cg  # restored by :func:`measure`


def median_ms(fn: Callable[[], object], repeats: int = 30) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times) * 1e3


@dataclass
class Row:
    """One evaluation of one (cg_iters, precondition) setting."""

    psnr: float
    fp_iterations: float
    cg_mean: float
    cg_batch: float
    t_ms: float  # process CPU ms per application of T to one image
    x_ms: float  # of which the x-update
    eval_seconds: float


def measure(model: DEADMM, pairs, cg_iters: int, precondition: bool) -> Row:
    """Evaluate ``model`` on ``pairs`` (batches of 16) with this CG budget and preconditioning."""
    model.cg_iters, model.precondition = cg_iters, precondition
    tally = Tally()
    instrument(model, tally)
    try:
        t0 = time.process_time()
        result = evaluate(model, pairs, batch_size=16)
        seconds = time.process_time() - t0
    finally:
        del model.T_with, model._x_update  # back to the class's methods
        least_squares.conjugate_gradient = conjugate_gradient
    return Row(float(result.psnr.mean()), float(result.iterations.float().mean()),
               statistics.mean(tally.cg_mean), statistics.mean(tally.cg_batch),
               tally.t_seconds / tally.t_images * 1e3, tally.x_seconds / tally.t_images * 1e3,
               seconds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", nargs="?", default="src/jfb/weights/faces.safetensors")
    p.add_argument("--images", type=int, default=50)
    p.add_argument("--cg-iters", type=int, nargs="+", default=[20, 5, 3])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {torch.get_num_threads()}, torch {torch.__version__}, {tune_cpu_malloc()}")
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    model, cfg, _ = load_model(args.checkpoint)
    if type(model) is not DEADMM:
        raise SystemExit(f"{args.checkpoint} is a {type(model).__name__}, not a DE-ADMM")
    pairs = get_task(cfg.task).val_pairs(seed=EVAL_SEED, limit=args.images)
    print(f"{args.checkpoint}: task {cfg.task}, {model.op}, rho {float(model.rho.detach()):.4f}, "
          f"own cg_iters {model.cg_iters}, cg_tol {model.cg_tol}, solver {model.solver}; "
          f"{len(pairs)} val images, batch 16")
    own = model.cg_iters
    settings = [(n, pc) for n in dict.fromkeys([own, *args.cg_iters]) for pc in (False, True)]
    rows: dict[tuple[int, bool], list[Row]] = {s: [] for s in settings}
    for r in range(args.rounds):  # interleaved rounds, the order reversed every other one
        for setting in settings[::-1] if r % 2 else settings:
            rows[setting].append(measure(model, pairs, *setting))
    same = all(len({(x.psnr, x.fp_iterations) for x in runs}) == 1 for runs in rows.values())
    print(f"times: min (max) over {args.rounds} interleaved rounds; PSNR and iterations: every "
          f"round the same: {same}")
    print("cg_iters precond |  PSNR dB | FP it/img | CG it/x-upd mean (batch) | "
          "ms/T/img           | x-update ms/T/img | eval CPU s")
    for (cg_iters, precondition), runs in rows.items():
        first = runs[0]

        def spread(name: str, runs: list[Row] = runs) -> str:
            values = [getattr(x, name) for x in runs]
            return f"{min(values):6.2f} ({max(values):6.2f})"

        print(f"{cg_iters:8d} {str(precondition):7s} | {first.psnr:8.4f} | "
              f"{first.fp_iterations:9.2f} | {first.cg_mean:12.2f} ({first.cg_batch:5.2f})     | "
              f"{spread('t_ms')} | {spread('x_ms')}   | {spread('eval_seconds')}")
    x = torch.stack([pairs[i][0] for i in range(min(16, len(pairs)))])
    precond = model.op.ridge_preconditioner(model.rho.detach())
    with torch.no_grad():
        print(f"one batch {tuple(x.shape)}: A^T A {median_ms(lambda: model.op.normal(x)):.2f} ms, "
              f"P {median_ms(lambda: precond(x)):.2f} ms (median process CPU)")
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
