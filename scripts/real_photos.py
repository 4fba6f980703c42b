"""`jfb deblur` on real photos, as a user runs it: PSNR, time and peak memory per image, whole
against tiled, at sizes from 256 to 2048 pixels (docs/RESULTS.md, "Real photos").

Each photo comes from scikit-image's data (the 2048x2048 one is a 4x4 mosaic of 512-pixel crops
of eight of them), is blurred by the protocol's 5x5 Gaussian (sigma 5, zero padding) with noise
std 0.005, and saved as an 8-bit PNG. Each restoration is a `jfb deblur` command run in its
own process (wall and CPU seconds of the command, peak resident memory), first with the
defaults, then on the whole image (`--tile 100000`), then tiled under a `--max-memory` that
fits 2 x 2 tiles (a core of half the longer side plus the default margin of 48 pixels on each
side).

    python scripts/real_photos.py --out runs/real-photos --threads 2 [--sizes 256,512,...]
        [--checkpoint CKPT]   # another model than the shipped default
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from jfb.data import load_image, save_image
from jfb.deblur import DEFAULT_MARGIN, memory_per_pixel, shipped_checkpoint
from jfb.metrics import psnr
from jfb.physics import Blur, GaussianNoise, kernels
from jfb.pipeline import load_model

#: name -> (skimage photo, crop (top, left, height, width) or None for the mosaic)
PHOTOS = {
    "256": ("astronaut", (0, 128, 256, 256)),
    "512": ("astronaut", None),
    "384x640": ("rocket", (21, 0, 384, 640)),
    "400x600": ("coffee", None),
    "872x1000": ("hubble_deep_field", None),
    "1024": ("mosaic", 2),
    "2048": ("mosaic", 4),
}
MOSAIC = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "camera", "brick",
          "motorcycle_left"]


def _photo(name: str) -> torch.Tensor:
    from jfb.data.builtin import natural_images

    return natural_images([name])[0][1]


def clean_photo(size: str) -> torch.Tensor:
    """The clean (3, H, W) image of one size."""
    name, crop = PHOTOS[size]
    if name != "mosaic":
        x = _photo(name)
        if crop is not None:
            t, left, h, w = crop
            x = x[:, t : t + h, left : left + w]
        return x
    n = crop
    tiles = []
    for i in range(n * n):
        x = _photo(MOSAIC[i % len(MOSAIC)])[:, :512, :512]
        x = x.flip(-1) if (i // len(MOSAIC)) % 2 else x
        if x.shape[-1] < 512 or x.shape[-2] < 512:
            x = torch.nn.functional.pad(x[None], (0, 512 - x.shape[-1], 0, 512 - x.shape[-2]),
                                        mode="reflect")[0]
        tiles.append(x)
    rows = [torch.cat(tiles[r * n : (r + 1) * n], dim=-1) for r in range(n)]
    return torch.cat(rows, dim=-2)


def run_deblur(src: Path, dst: Path, threads: int, extra: list[str]) -> dict:
    """`jfb deblur` in a fresh process (see :func:`child`): wall and CPU seconds of the command
    (model loading, reading, restoring, writing; not Python's start-up), peak resident memory
    (MiB), what it printed."""
    argv = ["deblur", str(src), "-o", str(dst), "--force", "--quiet", "--threads", str(threads),
            *extra]
    res = subprocess.run([sys.executable, __file__, "--child", json.dumps(argv)],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"jfb {' '.join(argv)} failed: {res.stderr}")
    *printed, last = res.stdout.strip().splitlines()
    out = json.loads(last)
    out.update(stdout=printed, warnings=[ln for ln in res.stderr.splitlines() if "warning" in ln],
               command="jfb deblur IN -o OUT " + " ".join(extra))
    return out


def child(argv: list[str]) -> None:
    """Run `jfb ARGV` in this process; print its times and peak memory as the last line."""
    import resource
    import time

    from jfb.cli import main as jfb_main

    wall, cpu = time.perf_counter(), time.process_time()
    code = jfb_main(argv)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"code": code, "seconds": wall, "cpu_seconds": cpu, "peak_mib": peak}))
    sys.exit(code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/real-photos")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", default=",".join(PHOTOS))
    parser.add_argument("--checkpoint", default=str(shipped_checkpoint("faces")),
                        help="the model to restore with (default: the shipped default)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    op = Blur(kernels.gaussian(5, 5.0))
    per_pixel = memory_per_pixel(load_model(args.checkpoint).model)
    rows = []
    for size in args.sizes.split(","):
        x = clean_photo(size)
        y = GaussianNoise(0.005)(op.A(x[None]), generator=torch.Generator().manual_seed(0))[0]
        src = out / f"{size}-blurred.png"
        save_image(y.clamp(0, 1), src)
        y8 = load_image(src)
        row = {"size": size, "photo": PHOTOS[size][0], "pixels": int(x.shape[-1] * x.shape[-2]),
               "input_psnr": float(psnr(y8[None], x[None])), "threads": args.threads}
        results = {}
        side = (max(x.shape[-2:]) + 1) // 2 + 2 * DEFAULT_MARGIN
        budget = int(per_pixel * side * side) + 1
        modes = (("default", []), ("whole", ["--tile", "100000"]),
                 ("tiled", ["--max-memory", str(budget)]))
        for mode, extra in modes:
            dst = out / f"{size}-{mode}.png"
            r = run_deblur(src, dst, args.threads, ["--checkpoint", args.checkpoint, *extra])
            r["psnr"] = float(psnr(load_image(dst)[None], x[None]))
            results[mode] = load_image(dst)
            row[mode] = r
        row["tiled_vs_whole_psnr"] = float(psnr(results["tiled"][None], results["whole"][None]))
        row["default_vs_whole_psnr"] = float(psnr(results["default"][None],
                                                  results["whole"][None]))
        diff = (results["tiled"] - results["whole"]).abs().mean(0)
        save_image((diff / max(float(diff.max()), 1e-6))[None], out / f"{size}-difference.png")
        rows.append(row)
        w, t, d = row["whole"], row["tiled"], row["default"]
        print(f"{size:>9} in {row['input_psnr']:.2f} dB | default {d['psnr']:.2f} dB "
              f"{d['seconds']:.1f} s ({d['cpu_seconds']:.1f} CPU s) {d['peak_mib']:.0f} MiB "
              f"{d['stdout'][:1]} | whole {w['psnr']:.2f} dB "
              f"{w['seconds']:.1f} s ({w['cpu_seconds']:.1f} CPU s) {w['peak_mib']:.0f} MiB | "
              f"tiled {t['psnr']:.2f} dB {t['seconds']:.1f} s ({t['cpu_seconds']:.1f} CPU s) "
              f"{t['peak_mib']:.0f} MiB {t['stdout'][:1]} | tiled vs whole "
              f"{row['tiled_vs_whole_psnr']:.1f} dB, CPU x{t['cpu_seconds'] / w['cpu_seconds']:.2f}"
              f" | load {os.getloadavg()[0]:.1f}", flush=True)
        (out / "results.json").write_text(json.dumps(
            {"threads": args.threads, "load": os.getloadavg(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
