"""What a wrong kernel does to the default model's solve: iterations, convergence, data misfit.

A 256x256 crop of a built-in photo, blurred (circular) by a camera shake with Gaussian noise;
the natural model is told the noise and either the true kernel or a wrong one (a smaller
Gaussian, another shake, a wide Gaussian), at its shipped budget (tol 1e-4, 200 iterations).
Prints PSNR, iterations (200 = the cap: not converged, what ``jfb deblur`` now warns of) and the
misfit ||Ax - y|| / (sigma sqrt(n)) (the misfit warning fires above 1.3).

    PYTHONPATH=src python scripts/wrong_kernel.py [--photos astronaut,coffee]
"""

from __future__ import annotations

import argparse

import torch

from jfb.data.builtin import natural_images
from jfb.deblur import shipped_checkpoint
from jfb.metrics import psnr
from jfb.physics import Blur, Physics, kernels
from jfb.pipeline import load_model

TRUE = {"shake25": lambda: kernels.motion(25, seed=11, intensity=0.7),
        "shake15": lambda: kernels.motion(15, seed=4)}
WRONG = {"gaussian:9:1.5": lambda: kernels.gaussian(9, 1.5),
         "motion:25:3": lambda: kernels.motion(25, seed=3),
         "gaussian:25:4": lambda: kernels.gaussian(25, 4.0)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", default="astronaut")
    p.add_argument("--noises", default="0.01,0.03")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, _, _ = load_model(shipped_checkpoint("natural"))
    for name, photo in natural_images(args.photos.split(",")):
        x = photo[:, 64:320, 100:356][None]
        for true_name, true_k in TRUE.items():
            kt = true_k()
            for sigma in (float(s) for s in args.noises.split(",")):
                y = Physics(Blur(kt, padding="circular"), sigma).measure(
                    x, generator=torch.Generator().manual_seed(0))
                for told, k in [("the true kernel", kt)] + [(n, f()) for n, f in WRONG.items()]:
                    op = Blur(k, padding="circular")
                    with torch.no_grad():
                        x_hat, st = model.solve(y, Physics(op, sigma))
                    misfit = float((op.A(x_hat) - y).square().mean().sqrt()) / sigma
                    print(f"{name} {true_name} noise {sigma}, told {told:15s}: "
                          f"{float(psnr(x_hat.clamp(0, 1), x)):.2f} dB, "
                          f"{int(st.iterations[0]):3d} iterations"
                          f"{'' if bool(st.converged[0]) else ' (cap)'}, misfit {misfit:.2f}",
                          flush=True)


if __name__ == "__main__":
    main()
