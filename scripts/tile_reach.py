"""How far a tile border changes a model's solve: the error profile that sets jfb.deblur's margin.

For each checkpoint, a built-in photo is blurred and noised as the model's task says, restored on
the whole image, then restored as its left part alone (columns [0, W/2 + margin), the right side
open: an unobserved frame as wide as the operator's reach, as jfb.restore does). The mean absolute
difference to the whole-image result is averaged over bands of 4 columns at each distance from
the open border. Far from it the difference does not reach 0: Anderson's mixing weights and CG's
step sizes are inner products over the whole tile, so two solves on different domains stop at
different iterates within the solver's tolerance everywhere. That floor is the median over
distances from W/4 to W/2 (the tile's far end is the image's own border); the reach is the
distance within W/4 beyond which the difference stays below max(1/1000, 2 x floor) (1/1000: a
quarter of an 8-bit level).

    python scripts/tile_reach.py CKPT [CKPT ...] [--photo astronaut] [--size 256]
"""

from __future__ import annotations

import argparse

import torch

from jfb.data.builtin import natural_images
from jfb.deblur import _operator
from jfb.physics import GaussianNoise, Mask
from jfb.physics.compose import Composed
from jfb.pipeline import load_model
from jfb.restore import operator_reach
from jfb.tasks import get_task

THRESHOLD = 1e-3


@torch.no_grad()
def profile(path: str, photo: str, size: int, margin: int) -> tuple[str, list[float], int, float]:
    model, cfg, _ = load_model(path)
    task = get_task(cfg.task)
    op = model.op
    x = natural_images([photo])[0][1][:, :size, :size]
    y = GaussianNoise(task.noise_sigma)(op.A(x[None]), generator=torch.Generator().manual_seed(0))
    whole = model(y)
    width = size // 2 + margin
    yt = y[..., :width]
    guard = operator_reach(op.A)
    window = torch.ones(1, 1, size, width)
    if guard:
        window[..., -guard:] = 0
    with _operator(model, Composed(Mask(window), op)):
        part = model(yt * window)
    err = (part - whole[..., :width]).abs().mean(dim=(0, 1, 2)).flip(0)  # by distance from edge
    bands = err[: len(err) // 4 * 4].reshape(-1, 4).mean(1).repeat_interleave(4)
    floor = float(bands[size // 4 : size // 2].median())
    above = (bands[: size // 4] > max(THRESHOLD, 2 * floor)).nonzero()
    reach = int(above.max()) + 1 if len(above) else 0
    return f"{cfg.model.kind} ({path})", bands.tolist(), reach, floor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--photo", default="astronaut")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--margin", type=int, default=96)
    args = parser.parse_args()
    for path in args.checkpoints:
        name, err, reach, floor = profile(path, args.photo, args.size, args.margin)
        marks = " ".join(f"{d}:{err[d]:.1e}" for d in (0, 8, 16, 24, 32, 40, 48, 64, 80)
                         if d < len(err))
        print(f"{name} on {args.photo}: reach {reach} px, floor {floor:.1e}; mean |diff| by "
              f"distance {marks}")


if __name__ == "__main__":
    main()
