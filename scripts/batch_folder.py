"""A folder of 20 blurred photos as a user has them, to try ``jfb deblur FOLDER -o OUT/``.

Nineteen crops of scikit-image's photos (astronaut, coffee, chelsea, rocket, camera), five sizes
from 96x128 to 240x180, in PNG, JPEG, TIFF and BMP, every fifth one grey, each blurred by a 9x9
Gaussian (std 2.0, reflect padding) with noise std 0.01 and saved in 8 bits; the twentieth is a
JPEG cut after 300 bytes (corrupt). Then, as a user would:

    python scripts/batch_folder.py runs/trial/in
    jfb deblur runs/trial/in -o runs/trial/out/ --kernel gaussian:9:2.0 --threads 1   # Ctrl-C...
    jfb deblur runs/trial/in -o runs/trial/out/ --kernel gaussian:9:2.0 --threads 1   # ...resumes
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from jfb.data.builtin import natural_images
from jfb.physics import Blur, Physics, kernels

NAMES = ("astronaut", "coffee", "chelsea", "rocket", "camera")
SIZES = ((96, 128), (160, 120), (200, 200), (128, 256), (240, 180))
FORMATS = ("png", "jpg", "tif", "bmp")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    args = p.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    photos = natural_images(list(NAMES))
    physics = Physics(Blur(kernels.gaussian(9, 2.0), padding="reflect"), 0.01)
    gen = torch.Generator().manual_seed(0)
    for i in range(19):
        name, x = photos[i % len(photos)]
        h, w = SIZES[i % len(SIZES)]
        r0, c0 = (i * 17) % (x.shape[1] - h), (i * 29) % (x.shape[2] - w)
        y = physics.measure(x[None, :, r0:r0 + h, c0:c0 + w], generator=gen)[0].clamp(0, 1)
        arr = y.permute(1, 2, 0).numpy()
        if i % 5 == 4:
            arr = arr.mean(axis=2)
        Image.fromarray((arr * 255).round().astype(np.uint8)).save(
            args.folder / f"{i:02d}-{name}.{FORMATS[i % 4]}")
    whole = (args.folder / "01-coffee.jpg").read_bytes()
    (args.folder / "19-broken.jpg").write_bytes(whole[:300])


if __name__ == "__main__":
    main()
