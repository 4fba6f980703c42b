"""torch.compile on CPU: inference CPU ms per image of the shipped default model (DE-ADMM) and of
its feedforward twin (the same 7x32 DnCNN, model.kind = "feedforward"), eager and with the
denoiser compiled (inductor, static shapes), side by side in one run (docs/BENCHMARKS.md).

    python scripts/time_compile.py [--threads 1] [--images 16]

CPU time of the process (time.process_time), best of ``--repeats`` passes over one batch of
``--images`` celeba-gauss5 val faces (128x128); the compile time is the first call's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from jfb.config import load_config
from jfb.pipeline import EVAL_SEED, initial_model, load_run

DEFAULT = "src/jfb/weights/faces.safetensors"


def cpu_ms_per_image(model: torch.nn.Module, y: torch.Tensor, repeats: int) -> float:
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            t0 = time.process_time()
            model(y)
            best = min(best, time.process_time() - t0)
    return 1000 * best / y.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, cfg, _, task = load_run(DEFAULT, device="cpu")
    twin_cfg = load_config(None, [f"task={cfg.task}", "model.kind=feedforward",
                                  "model.init=tikhonov", "model.net.depth=7",
                                  "model.net.width=32", "model.net.residual=true"])
    twin = initial_model(twin_cfg, model.op)
    pairs = task.val_pairs(seed=EVAL_SEED, limit=args.images)
    y = torch.stack([pairs[i][1] for i in range(args.images)])
    rows = {}
    for name, m in (("default (DE-ADMM)", model), ("feedforward twin", twin)):
        m.eval()
        eager = cpu_ms_per_image(m, y, args.repeats)
        net = m.net
        m.net = torch.compile(net, dynamic=False)
        t0 = time.perf_counter()
        with torch.no_grad():
            m(y)
        compile_s = time.perf_counter() - t0
        compiled = cpu_ms_per_image(m, y, args.repeats)
        m.net = net
        rows[name] = {"eager_ms": round(eager, 1), "compiled_ms": round(compiled, 1),
                      "speedup": round(eager / compiled, 2), "compile_s": round(compile_s, 1)}
    d, t = rows["default (DE-ADMM)"], rows["feedforward twin"]
    print(json.dumps({"threads": args.threads, "images": args.images,
                      "load": os.getloadavg(), "rows": rows,
                      "default/twin eager": round(d["eager_ms"] / t["eager_ms"], 2),
                      "default/twin compiled": round(d["compiled_ms"] / t["compiled_ms"], 2)},
                     indent=1))


if __name__ == "__main__":
    main()
