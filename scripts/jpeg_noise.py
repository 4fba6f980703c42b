"""Which noise std should a model be told for a JPEG? The study behind ``JPEG_NOISE``.

For BSDS training crops (``shared:cbsd432``, never the test photos), kernels and noise levels:
blur (circular) + Gaussian noise, saved as an 8-bit JPEG of quality Q with Pillow's defaults
(4:2:0 chroma), read back; the model is told each noise std of a grid and the best is kept.
The rule fitted is sigma_told = sqrt((c sigma_est)^2 + (a (100 - Q)^b)^2), sigma_est the
stop-band estimate of ``jfb.physics.estimate_noise_std`` (8-bit rounding taken out), (c, a, b)
chosen on a grid for the least mean PSNR loss against the best told value (PSNR interpolated
between grid points in log sigma). Run with ``--fit FILE`` on the records to fit only.

    PYTHONPATH=src python scripts/jpeg_noise.py --out runs/jpeg/study.jsonl
    PYTHONPATH=src python scripts/jpeg_noise.py --fit runs/jpeg/study.jsonl
    PYTHONPATH=src python scripts/jpeg_noise.py --validate --images 0,1,2,3,4,5
    python scripts/batch_folder.py runs/trial/in
    PYTHONPATH=src python scripts/jpeg_noise.py --trial runs/trial/in

One thread by default; about 10 CPU-seconds per case on a 128-px crop (8 told values).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from jfb.data.open import open_dataset
from jfb.deblur import shipped_checkpoint
from jfb.metrics import psnr
from jfb.physics import Blur, Physics, kernels
from jfb.physics.noise import estimate_noise_std
from jfb.pipeline import load_model

KERNELS = {"gauss5": lambda: kernels.gaussian(5, 5.0),
           "motion15": lambda: kernels.motion(15, seed=3)}
TOLD = [0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.045]


def as_jpeg(y: torch.Tensor, quality: int) -> torch.Tensor:
    """y (1, 3, H, W) in [0, 1] written as an 8-bit JPEG of ``quality`` and read back."""
    a = (y[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    b = np.asarray(Image.open(buf).convert("RGB")).astype(np.float32) / 255
    return torch.from_numpy(b).permute(2, 0, 1)[None].contiguous()


def study(args: argparse.Namespace) -> None:
    model, _, _ = load_model(shipped_checkpoint(args.checkpoint))
    photos = open_dataset("shared:cbsd432", train=False, crop=args.crop)
    with open(args.out, "a") as out:
        for i in args.images:
            x = photos[i][None]
            for name in args.kernels:
                k = KERNELS[name]()
                op = Blur(k, padding="circular")
                for sigma in args.sigmas:
                    g = torch.Generator().manual_seed(1000 * i + int(sigma * 1e4))
                    blurred = Physics(op, sigma).measure(x, generator=g) if sigma > 0 else op.A(x)
                    for q in args.qualities:
                        y = as_jpeg(blurred, q)
                        est = float(estimate_noise_std(y, k, 1 / 255)[0])
                        scores = {}
                        for told in TOLD:
                            with torch.no_grad():
                                x_hat, _ = model.solve(y, Physics(op, told))
                            scores[repr(told)] = float(psnr(x_hat.clamp(0, 1), x))
                        rec = {"image": i, "crop": args.crop, "kernel": name, "sigma": sigma,
                               "quality": q, "estimate": est,
                               "error_std": float((y - op.A(x)).std()), "psnr": scores}
                        out.write(json.dumps(rec) + "\n")
                        out.flush()
                        best = max(scores, key=scores.get)
                        print(f"photo {i} {name} sigma {sigma} Q {q}: estimate {est:.4f}, "
                              f"best told {best} ({scores[best]:.2f} dB)", flush=True)


def _psnr_at(rec: dict, told: float) -> float:
    grid = sorted(float(k) for k in rec["psnr"])
    return float(np.interp(math.log(told), np.log(grid), [rec["psnr"][repr(g)] for g in grid]))


def rule(rec: dict, c: float, a: float, b: float) -> float:
    return math.hypot(c * max(rec["estimate"], 1e-3), a * (100 - rec["quality"]) ** b)


def loss(rec: dict, told: float) -> float:
    return max(rec["psnr"].values()) - _psnr_at(rec, told)


def fit(path: str) -> None:
    recs = [json.loads(line) for line in open(path)]
    found = []
    for c in np.linspace(1.0, 3.0, 21):
        for a in np.linspace(0.0005, 0.012, 47):
            for b in np.linspace(0.0, 1.2, 25):
                losses = [loss(r, rule(r, c, a, b)) for r in recs]
                found.append((float(np.mean(losses)), float(np.max(losses)), c, a, b))
    found.sort()
    mean, worst, c, a, b = found[0]
    alone = [loss(r, max(r["estimate"], 1e-3)) for r in recs]
    print(f"{len(recs)} cases; told the estimate: mean loss {np.mean(alone):.2f} dB, worst "
          f"{max(alone):.2f}")
    print(f"rule c = {c:.2f}, a = {a:.4f}, b = {b:.2f}: mean loss {mean:.3f} dB, worst {worst:.2f}")
    print("s(Q) = a (100 - Q)^b: " + ", ".join(f"Q {q}: {a * (100 - q) ** b:.4f}"
                                               for q in (50, 75, 85, 90, 95, 98)))


def validate(args: argparse.Namespace) -> None:
    """Held out: the first ``--images`` CBSD68 photos, whole, Levin kernel i mod 8 (circular),
    each (noise, quality) of ``--cases``: PSNR told the estimate alone, the rule, the true std."""
    from jfb.benchmark import levin_kernels
    from jfb.physics.noise import jpeg_noise_std

    model, _, _ = load_model(shipped_checkpoint(args.checkpoint))
    photos = open_dataset("shared:cbsd68", train=False)
    levin = levin_kernels()
    for case in args.cases.split(","):
        sigma, q = float(case.split("@")[0]), int(case.split("@")[1])
        rows = []
        for i in args.images:
            x, k = photos[i][None], levin[i % len(levin)]
            op = Blur(k, padding="circular")
            g = torch.Generator().manual_seed(2000 + i)
            y = as_jpeg(Physics(op, sigma).measure(x, generator=g), q)
            est = max(float(estimate_noise_std(y, k, 1 / 255)[0]), 1e-3)
            row = []
            for told in (est, jpeg_noise_std(est, q), sigma):
                with torch.no_grad():
                    x_hat, _ = model.solve(y, Physics(op, told))
                row.append(float(psnr(x_hat.clamp(0, 1), x)))
            rows.append(row)
            print(f"  photo {i}: estimate {est:.4f} -> rule {jpeg_noise_std(est, q):.4f}; PSNR "
                  + " / ".join(f"{v:.2f}" for v in row), flush=True)
        m = np.mean(rows, axis=0)
        print(f"noise {sigma} Q {q}, {len(rows)} CBSD68 photos: told the estimate {m[0]:.2f} dB, "
              f"the rule {m[1]:.2f}, the true std {m[2]:.2f}", flush=True)


def trial(folder: str) -> None:
    """The JPEGs of ``scripts/batch_folder.py``'s folder (Q 75, 9x9 Gaussian std 2, noise 0.01),
    restored by ``jfb.deblur.restore_file`` with ``--noise auto`` (the rule) and told the
    stop-band estimate alone."""
    sys.path.insert(0, str(Path(__file__).parent))
    from batch_folder import NAMES, SIZES

    from jfb.data import load_image
    from jfb.data.builtin import natural_images
    from jfb.deblur import restore_file
    from jfb.diagnose import input_noise

    photos = natural_images(list(NAMES))
    op = Blur(kernels.gaussian(9, 2.0), padding="reflect")
    for i in (1, 5, 9, 13, 17):
        name, x = photos[i % len(photos)]
        h, w = SIZES[i % len(SIZES)]
        r0, c0 = (i * 17) % (x.shape[1] - h), (i * 29) % (x.shape[2] - w)
        x = x[:, r0:r0 + h, c0:c0 + w]
        x = x.mean(dim=0, keepdim=True) if i % 5 == 4 else x
        src = Path(folder) / f"{i:02d}-{name}.jpg"
        y = load_image(src, mode="rgb")[None]
        seen = input_noise(op, y, 1 / 255)
        out = {}
        for tag, noise in (("rule", None), ("estimate", seen)):
            warned: list[str] = []
            with tempfile.TemporaryDirectory() as tmp:
                dst = restore_file(src, Path(tmp) / "out.png", kernel="gaussian:9:2.0",
                                   noise=noise, device="cpu", warn=warned.append)
                x_hat = load_image(dst, mode="keep")
            out[tag] = (float(psnr(x_hat[None], x[None])), len(warned))
        print(f"{src.name}: input {float(psnr(load_image(src, mode='keep')[None], x[None])):.2f}"
              f" dB; told the estimate {seen:.4f}: {out['estimate'][0]:.2f} dB, "
              f"{out['estimate'][1]} warnings; the rule: {out['rule'][0]:.2f} dB, "
              f"{out['rule'][1]} warnings", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/jpeg/study.jsonl")
    p.add_argument("--fit", metavar="FILE", help="fit the rule to these records and stop")
    p.add_argument("--validate", action="store_true",
                   help="held out: CBSD68 photos (--images), Levin kernels, --cases")
    p.add_argument("--cases", default="0.01@90,0.005@80", help="NOISE@QUALITY,...")
    p.add_argument("--trial", metavar="FOLDER",
                   help="the JPEGs of scripts/batch_folder.py's FOLDER, with and without the rule")
    p.add_argument("--checkpoint", default="natural")
    p.add_argument("--images", type=lambda s: [int(t) for t in s.split(",")],
                   default=[120, 300, 400])
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--kernels", type=lambda s: s.split(","), default=list(KERNELS))
    p.add_argument("--sigmas", type=lambda s: [float(t) for t in s.split(",")],
                   default=[0.0, 0.01, 0.02])
    p.add_argument("--qualities", type=lambda s: [int(t) for t in s.split(",")],
                   default=[75, 85, 95])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.fit:
        fit(args.fit)
        return 0
    torch.set_num_threads(args.threads)
    if args.trial:
        trial(args.trial)
        return 0
    if args.validate:
        validate(args)
        return 0
    study(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
