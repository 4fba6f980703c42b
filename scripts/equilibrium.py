"""Is a model an equilibrium model? PSNR and iterations against the test-time tolerance.

For each tolerance, the same weights solve the first N CBSD68 photos of a `jfb benchmark
deblur` setting (the benchmark's seeded measurements, the physics given per call); a model whose
fixed point is what it was trained to reach gives the same PSNR at its shipped tolerance and at
1e-5. Prints one line per tolerance: mean PSNR, mean and max iterations, converged fraction.

    python scripts/equilibrium.py CKPT --setting gauss-1.6 --images 4 --tols 3e-3,1e-3,1e-4,1e-5
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from jfb.benchmark import SETTINGS, measurements
from jfb.data.open import open_dataset
from jfb.metrics import psnr
from jfb.pipeline import load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--setting", default="gauss-1.6", choices=list(SETTINGS))
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--tols", default="3e-3,1e-3,1e-4,1e-5")
    p.add_argument("--max-iter", type=int, default=400)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, _, _ = load_model(args.checkpoint)
    clean = open_dataset("shared:cbsd68", train=False)
    cases = measurements(SETTINGS[args.setting], [clean[i] for i in range(args.images)],
                         every_kernel=False)
    print(f"{args.checkpoint}: {args.setting}, first {args.images} CBSD68 photos, "
          f"{args.threads} thread(s), {time.strftime('%Y-%m-%d %H:%M')}")
    for tol in (float(t) for t in args.tols.split(",")):
        ps, its, conv, cpu = [], [], [], 0.0
        for _i, x, y, physics in cases:
            t0 = time.process_time()
            with torch.no_grad():
                x_hat, stats = model.solve(y, physics, tol=tol, max_iter=args.max_iter)
            cpu += time.process_time() - t0
            ps.append(float(psnr(x_hat.clamp(0, 1), x[None])))
            its.append(int(stats.iterations.max()))
            conv.append(bool(stats.converged.all()))
        print(f"tol {tol:g}: {np.mean(ps):.3f} dB, iterations mean {np.mean(its):.1f} max "
              f"{max(its)}, converged {np.mean(conv):.2f}, {cpu / len(ps):.1f} CPU-s/image")


if __name__ == "__main__":
    main()
