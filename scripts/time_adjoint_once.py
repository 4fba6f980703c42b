"""Time DE-ADMM's evaluation with A^T y computed once per solve (the model as it is) against the
previous map, which applied A^T to y at every application of T, on a task's first val images,
interleaved in one process (same weights, same operator).

    PYTHONPATH=src python scripts/time_adjoint_once.py [CHECKPOINT] [--task celeba-gauss5]
        [--images 16] [--repeats 10] [--threads 1]

Prints the median process-CPU seconds of each, the solve's statistics, the largest output
difference, and what one A^T y on the batch costs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

from jfb.models import DEADMM
from jfb.models.implicit import SolveContext
from jfb.pipeline import load_model
from jfb.tasks import get_task


class EveryApplication(DEADMM):
    """The previous DE-ADMM map: A^T y at every application of T (the context keeps y)."""

    def context(self, y: torch.Tensor, physics) -> SolveContext:
        return SolveContext(physics, y, self.rho_of(physics, y))

    def T_with(self, s: torch.Tensor, ctx: SolveContext) -> torch.Tensor:
        return DEADMM.T_with(self, s, replace(ctx, data=ctx.op.A_adjoint(ctx.data)))


def cpu_seconds(fn) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", nargs="?", default="src/jfb/weights/faces.safetensors")
    p.add_argument("--task", default="celeba-gauss5")
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint).model
    if type(model) is not DEADMM:
        raise SystemExit(f"{args.checkpoint} is a {type(model).__name__}, not a DE-ADMM")
    before = EveryApplication.__new__(EveryApplication)
    before.__dict__ = model.__dict__  # the same module state: weights, operator, solver
    pairs = get_task(args.task).val_pairs(seed=0, limit=args.images)
    y = torch.stack([pairs[i][1] for i in range(len(pairs))])
    times: dict[str, list[float]] = {"once": [], "every": []}
    out = {}
    with torch.no_grad():
        for rep in range(args.repeats + 1):  # the first round warms up; the order alternates
            order = [("once", model), ("every", before)]
            for name, m in order[::-1] if rep % 2 else order:
                seconds = cpu_seconds(lambda m=m, name=name: out.__setitem__(name, m(y)))
                if rep:
                    times[name].append(seconds)
                out[name + " stats"] = m.last_stats
        adjoint = [cpu_seconds(lambda: model.op.A_adjoint(y)) for _ in range(30)]
    for name in ("once", "every"):
        st = out[name + " stats"]
        print(f"{name}: median CPU {statistics.median(times[name]):.3f} s "
              f"({', '.join(f'{t:.3f}' for t in times[name])}); {st.n_evals} batched T calls, "
              f"{st.mean_iterations():.2f} iterations per image")
    med = {name: statistics.median(t) for name, t in times.items()}
    same = torch.equal(out["once stats"].iterations, out["every stats"].iterations)
    print(f"once / every: {med['once'] / med['every']:.3f}")
    print(f"largest output difference: {float((out['once'] - out['every']).abs().max()):.2e}; "
          f"same iterations: {same}")
    print(f"one A^T y on the batch {tuple(y.shape)}: median CPU "
          f"{statistics.median(adjoint) * 1e3:.2f} ms")

if __name__ == "__main__":
    main()
