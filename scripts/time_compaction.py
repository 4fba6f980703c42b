"""Time a trained implicit model's evaluation with and without compaction (the solver applying T
to the unfinished samples only), on a task's first val images, round-robin in one process.

    PYTHONPATH=src python scripts/time_compaction.py CHECKPOINT [--task T] [--images 48]
        [--batch-size 16] [--repeats 3] [--threads 1]

Prints the median process-CPU and wall seconds of each and the largest output difference.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from jfb.pipeline import load_model
from jfb.tasks import get_task


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--task", help="default: the checkpoint's own task")
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, cfg, _ = load_model(args.checkpoint)
    task = get_task(args.task or cfg.task)
    model.op = task.operator()
    pairs = task.val_pairs(limit=args.images)
    ys = [torch.stack([pairs[i][1] for i in range(s, min(s + args.batch_size, len(pairs)))])
          for s in range(0, len(pairs), args.batch_size)]
    spans: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    outs: dict[bool, torch.Tensor] = {}
    iters = []
    for _ in range(args.repeats):
        for compact in (False, True):  # round-robin: a change of load falls on both
            model.solver.compact = compact
            c0, w0 = time.process_time(), time.perf_counter()
            with torch.no_grad():
                out = []
                for y in ys:
                    out.append(model(y))
                    if compact:
                        iters += model.last_stats.iterations.tolist()
            spans[compact].append((time.process_time() - c0, time.perf_counter() - w0))
            outs[compact] = torch.cat(out)
    for compact in (False, True):
        cpu = statistics.median(a for a, _ in spans[compact])
        wall = statistics.median(b for _, b in spans[compact])
        print(f"compact={compact}: CPU {cpu:.2f} s, wall {wall:.2f} s")
    ratio = (statistics.median(a for a, _ in spans[False])
             / statistics.median(a for a, _ in spans[True]))
    n = len(iters) // args.repeats
    print(f"CPU time without / with compaction: {ratio:.2f}; per-sample iterations: mean "
          f"{statistics.fmean(iters[:n]):.1f}, max {max(iters[:n])}; largest output difference "
          f"{float((outs[True] - outs[False]).abs().max()):.2e}")


if __name__ == "__main__":
    main()
