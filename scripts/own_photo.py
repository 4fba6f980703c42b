"""A photo the model never saw, blurred by a camera shake it never saw, restored as a user would:
the README's "Your own photos" numbers.

A 256x256 crop of scikit-image's astronaut, blurred by a 25x25 camera-shake kernel
(``kernels.motion(25, seed=11, intensity=0.7)``, reflect padding) with Gaussian noise std 0.03,
saved as an 8-bit PNG beside the PSF as a PNG. Then, as command lines:

    jfb deblur blurred.png -o sharp.png --kernel psf.png --noise 0.03       # the told kernel
    jfb deblur blurred.png -o wrong.png --kernel WRONG --noise 0.03         # wrong kernels

and Tikhonov (gradient penalty) and colour TV with their weights chosen on the truth (an
oracle no user has). Prints PSNRs and every warning ``jfb deblur`` gave.

    python scripts/own_photo.py [--out runs/own-photo] [--checkpoint NAME_OR_PATH]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from jfb.baselines.tv import tv_reconstruct
from jfb.data.builtin import natural_images
from jfb.linalg import tikhonov
from jfb.metrics import psnr
from jfb.physics import Blur, Physics, kernels

NOISE = 0.03
#: Kernels a user might wrongly give for the 25x25 shake: a smaller blur, another shake, none.
WRONG = ("gaussian:9:1.5", "motion:25:3", "gaussian:25:4.0")


def save(t: torch.Tensor, path: Path) -> None:
    """An image (C, H, W) in [0, 1] as an 8-bit PNG."""
    arr = (t.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(arr.squeeze()).save(path)


def load(path: Path) -> torch.Tensor:
    """An 8-bit PNG as (1, C, H, W) in [0, 1]."""
    arr = np.asarray(Image.open(path), dtype=np.float32) / 255
    return torch.from_numpy(arr).permute(2, 0, 1)[None]


def deblur(out: Path, blurred: Path, kernel: str, checkpoint: str | None) -> tuple[Path, str]:
    """``jfb deblur`` run as a user would; returns the output and its stderr (the warnings)."""
    cmd = [sys.executable, "-m", "jfb", "deblur", str(blurred), "-o", str(out), "--kernel",
           kernel, "--noise", str(NOISE), "--force", "--threads", "1"]
    if checkpoint:
        cmd += ["--checkpoint", checkpoint]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return out, done.stderr.strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/own-photo"))
    p.add_argument("--checkpoint", help="model for jfb deblur (default: its default)")
    args = p.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)

    x = natural_images(["astronaut"])[0][1][:, 0:256, 128:384]
    k = kernels.motion(25, seed=11, intensity=0.7)
    op = Blur(k, padding="reflect")
    y = Physics(op, NOISE).measure(x[None], generator=torch.Generator().manual_seed(1))[0]
    save(x, args.out / "sharp_truth.png")
    save(y, args.out / "blurred.png")
    save((k / k.max())[None], args.out / "psf.png")
    x, y = load(args.out / "sharp_truth.png"), load(args.out / "blurred.png")

    rows = [("input (8-bit PNG)", float(psnr(y, x)), "")]
    told, warned = deblur(args.out / "sharp.png", args.out / "blurred.png",
                          str(args.out / "psf.png"), args.checkpoint)
    rows.append(("jfb deblur --kernel psf.png", float(psnr(load(told), x)), warned))
    tik = max((float(psnr(tikhonov(op, y, lam, penalty="gradient", max_iter=200).clamp(0, 1),
                          x)), lam) for lam in (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1))
    rows.append((f"Tikhonov, weight {tik[1]:g} chosen on the truth", tik[0], ""))
    tv = max((float(psnr(tv_reconstruct(op, y, lam, max_iter=300, vectorial=True).clamp(0, 1),
                         x)), lam) for lam in (1e-3, 3e-3, 1e-2, 3e-2))
    rows.append((f"TV, weight {tv[1]:g} chosen on the truth", tv[0], ""))
    for i, spec in enumerate(WRONG):
        wrong, warned = deblur(args.out / f"wrong-{i}.png", args.out / "blurred.png", spec,
                               args.checkpoint)
        rows.append((f"jfb deblur --kernel {spec} (wrong)", float(psnr(load(wrong), x)), warned))
    for name, value, warned in rows:
        print(f"{name:48s} {value:6.2f} dB")
        for line in filter(None, warned.splitlines()):
            print(f"    stderr: {line}")


if __name__ == "__main__":
    main()
