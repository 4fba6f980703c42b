"""How far a tile border changes a model's solve, by kernel and padding: the numbers behind
jfb.restore.tile_margin.

``profile``: a photo crop (H x W) is blurred (``op``), noised (sigma) and restored whole, then
restored as one context of L columns in the middle, open on its left and right (its outer
columns, as wide as the operator's reach, unobserved: what jfb.restore gives a tile), all rows.
The mean |difference| to the whole image, by distance d from the nearer open side (both sides
folded, bands of 4 columns), falls with d about exponentially, to a floor that is not flat: two
solves on different domains stop at different iterates within the solver's tolerance
everywhere (Anderson's and CG's inner products are global), more where the photo is textured.
The floor is the profile's smallest band; the reach is the distance of the first band below
max(1e-3, 2 x floor) (1e-3: a quarter of an 8-bit level).

``tiles``: the same photo restored whole (with the solve's iterations and final residual: a
whole image stopped by the iteration cap is no fixed point that tiles could reproduce) and by
jfb.deblur.restore_tensor in forced tiles of ``--tile`` pixels at each margin given: PSNR to
the clean image, the difference tiles - whole in dB and the largest |difference|.

    python scripts/tile_reach.py profile                      # both models, 5..31 px, 3 paddings
    python scripts/tile_reach.py tiles --sizes 25 --rows 64 --cols 256 --margins 48 auto
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import time
from pathlib import Path

import torch

from jfb.data import load_image
from jfb.data.builtin import ALL_IMAGES, natural_images
from jfb.data.datasets import shared_data
from jfb.deblur import call_physics, restore_tensor, shipped_checkpoint, solve_under
from jfb.margins import margin_for, prior_reach, ridge_weight
from jfb.physics import Blur, GaussianNoise, LinearOperator, Mask, kernels
from jfb.physics.compose import Composed
from jfb.pipeline import load_model
from jfb.restore import Box, deconvolution_reach, operator_reach, window_for

#: The photo measured by default: a CBSD68 test image (../shared/data/cbsd68).
PHOTO = "cbsd68/108005.png"
THRESHOLD = 1e-3
BAND = 4


def blur(kind: str, size: int, padding: str) -> Blur:
    """A ``size`` x ``size`` Gaussian (sigma = (size - 1) / 6, the whole bell inside) or
    camera-shake motion blur (seed 0, intensity 0.5) with ``padding``."""
    k = (kernels.gaussian(size, (size - 1) / 6) if kind == "gaussian"
         else kernels.motion(size, seed=0, intensity=0.5))
    return Blur(k, padding=padding)


def measurement(x: torch.Tensor, op: LinearOperator, sigma: float) -> torch.Tensor:
    """y = A x + n for one image x (C, H, W), the noise seeded."""
    noise = GaussianNoise(sigma)
    return noise(op.A(x[None]), generator=torch.Generator().manual_seed(0))[0]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """10 log10(1 / mean (a - b)^2)."""
    return -10 * math.log10(float(((a - b) ** 2).mean()))


@torch.no_grad()
def border_profile(model: torch.nn.Module, y: torch.Tensor, op: LinearOperator, sigma: float,
                   width: int) -> torch.Tensor:
    """Mean |x_context - x_whole| by distance from the nearer open side of a ``width``-column
    context in the middle of y (C, H, W), averaged over bands of :data:`BAND` columns."""
    _, h, w = y.shape
    whole, _ = solve_under(model, y[None], op, sigma)
    c0 = (w - width) // 2
    box = Box(0, h, c0, c0 + width, 0, h, c0, c0 + width)
    window = window_for(box, h, w, operator_reach(op.A))
    part, _ = solve_under(model, y[None, :, :, c0 : c0 + width] * window,
                          Composed(Mask(window), op), sigma)
    err = (part - whole[..., c0 : c0 + width]).abs().mean(dim=(0, 1, 2))
    half = width // 2 // BAND * BAND
    folded = (err[:half] + err.flip(0)[:half]) / 2
    return folded.reshape(-1, BAND).mean(1)


def reach_of(profile: torch.Tensor) -> tuple[int, float]:
    """(reach in pixels, floor) of a banded profile (see the module)."""
    floor = float(profile.min())
    below = (profile <= max(THRESHOLD, 2 * floor)).nonzero()
    return BAND * int(below.min()), floor


def photo(rows: int, cols: int, source: str = PHOTO) -> torch.Tensor:
    """The central rows x cols crop of the built-in photo ``source`` (jfb.data.builtin), or of
    the image file ``source`` (relative to the shared data folder when it is not a file), RGB
    in [0, 1]."""
    if source in ALL_IMAGES:
        x = natural_images([source])[0][1]
    else:
        folder, _, name = source.partition("/")
        path = Path(source) if Path(source).is_file() else shared_data(folder) / name
        x = load_image(path, mode="rgb")
    r0, c0 = (x.shape[-2] - rows) // 2, (x.shape[-1] - cols) // 2
    return x[:, r0 : r0 + rows, c0 : c0 + cols].contiguous()


def cases(args: argparse.Namespace):
    """(model name, model, config, blur name, blur) for every model, kernel kind, size and
    padding the arguments ask for, each model loaded once."""
    for name in args.models:
        model, cfg, _ = load_model(shipped_checkpoint(name))
        for kind, size, padding in itertools.product(args.kinds, args.sizes, args.paddings):
            yield name, model, cfg, f"{kind}:{size} {padding}", blur(kind, size, padding)


def run_profiles(args: argparse.Namespace) -> None:
    x = photo(args.rows, args.cols, args.photo)
    for name, model, _cfg, what, op in cases(args):
        start = time.process_time()
        prof = border_profile(model, measurement(x, op, args.sigma), op, args.sigma,
                              args.width)
        reach, floor = reach_of(prof)
        guard = operator_reach(op.A)
        physics = call_physics(model, op, args.sigma)
        ridge = deconvolution_reach(op.kernel, ridge_weight(model, physics))
        net = prior_reach(model)
        marks = " ".join(f"{float(v):.0e}" for v in prof[::2])
        print(f"{name} {what}: reach {reach} px, floor {floor:.0e}; "
              f"guard {guard} + 2 x ridge {ridge} + net {net} = "
              f"{guard + 2 * ridge + net} px, "
              f"margin {margin_for(model, physics, guard)}; "
              f"{time.process_time() - start:.0f} CPU s; mean |diff| at 0, "
              f"{2 * BAND}, {4 * BAND}, ... px: {marks}", flush=True)


def run_tiles(args: argparse.Namespace) -> None:
    x = photo(args.rows, args.cols, args.photo)
    for name, model, cfg, what, op in cases(args):
        y = measurement(x, op, args.sigma)
        solve = functools.partial(restore_tensor, model, cfg, y, op=op,
                                  noise=args.sigma, warn=lambda _line: None)
        physics = call_physics(model, op, args.sigma)
        with torch.no_grad():  # restore_tensor's whole-image path, with its stats
            whole, stats = model.solve(y[None], physics)
        whole = whole[0].clamp(0, 1)
        line = (f"{name} {what}: whole {psnr(whole, x):.2f} dB "
                f"({int(stats.iterations.max())} iterations, residual "
                f"{float(stats.residual.max()):.1e})")
        for given in args.margins:
            margin = (margin_for(model, physics, operator_reach(op.A))
                      if given == "auto" else int(given))
            tiled = solve(tile=args.tile, margin=margin)
            line += (f"; margin {margin}{' (auto)' * (given == 'auto')}: "
                     f"{psnr(tiled, x) - psnr(whole, x):+.3f} dB, "
                     f"max |diff| {float((tiled - whole).abs().max()):.2g}")
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("profile", "tiles"))
    parser.add_argument("--models", nargs="+", default=["natural", "faces"])
    parser.add_argument("--kinds", nargs="+", default=["gaussian", "motion"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[5, 11, 17, 25, 31])
    parser.add_argument("--paddings", nargs="+", default=["circular", "reflect", "zeros"])
    parser.add_argument("--photo", default=PHOTO, help="an image file or a built-in photo")
    parser.add_argument("--sigma", type=float, default=0.01)
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--cols", type=int, default=384)
    parser.add_argument("--width", type=int, default=256, help="profile: context columns")
    parser.add_argument("--tile", type=int, default=128, help="tiles: core size")
    parser.add_argument("--margins", nargs="+", default=["48", "auto"],
                        help="tiles: margins to try; auto: jfb.deblur.margin_for's")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    (run_profiles if args.mode == "profile" else run_tiles)(args)


if __name__ == "__main__":
    main()
