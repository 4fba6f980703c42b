"""Calibration of jfb.diagnose: the default model's data misfit ||A x - y|| / sqrt(n), in units
of the noise it assumes, and the input's estimated noise, for photos measured as it assumes and
for the mistakes users make (much more noise, a different or larger blur, no blur at all).

    python scripts/trust_calibration.py [--size 192]
"""

from __future__ import annotations

import argparse
import math

import torch

from jfb.data.builtin import natural_images
from jfb.deblur import shipped_checkpoint
from jfb.diagnose import data_misfit
from jfb.metrics import psnr
from jfb.physics import Blur, GaussianNoise, estimate_noise_std, kernels, quantisation_step
from jfb.pipeline import load_model

#: name -> (the blur the photo really went through, its noise std)
CASES = {
    "as assumed (5x5 Gaussian, sigma 0.005)": (kernels.gaussian(5, 5.0), 0.005),
    "noise 0.02": (kernels.gaussian(5, 5.0), 0.02),
    "9x9 Gaussian sigma 3 (larger)": (kernels.gaussian(9, 3.0), 0.005),
    "motion blur, 9 px": (kernels.motion(9, 1), 0.005),
    "3x3 Gaussian sigma 1 (smaller)": (kernels.gaussian(3, 1.0), 0.005),
    "no blur": (torch.ones(1, 1), 0.005),
}


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=192)
    args = parser.parse_args()
    model, cfg, _ = load_model(shipped_checkpoint("faces"))
    op = model.op
    for name, x in natural_images(["astronaut", "coffee", "grass"]):
        x = x[:, : args.size, : args.size]
        for case, (kernel, sigma) in CASES.items():
            y = GaussianNoise(sigma)(Blur(kernel).A(x[None]),
                                     generator=torch.Generator().manual_seed(0))
            y = (y.clamp(0, 1) * 255).round() / 255
            step = quantisation_step(y)
            seen = float(estimate_noise_std(y, op.kernel, step)[0])
            x_hat = model(y).clamp(0, 1)
            expected = math.sqrt(0.005**2 + step * step / 12)
            ratio = data_misfit(op, x_hat, y, border=2) / expected
            print(f"{name:>10} | {case:<40} | noise seen {seen:.4f} | misfit / sigma "
                  f"{ratio:.2f} | PSNR in {float(psnr(y, x[None])):.2f} out "
                  f"{float(psnr(x_hat, x[None])):.2f}")


if __name__ == "__main__":
    main()
