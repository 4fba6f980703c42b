"""The literature's non-blind deblurring benchmark on CBSD68 (``jfb benchmark deblur``).

Protocol (``../shared/PROTOCOL.md``, task family ``natural-anyblur``): the 68 colour BSDS test
photos, whole; y = k (*) x + n with circular convolution and n ~ N(0, sigma^2) drawn from a
generator seeded per (setting, image), float measurements; PSNR and SSIM on the output clamped to
[0, 1], no border crop, the mean over images. Settings: a 25x25 Gaussian of std 1.6 and 2.0 at
noise 0.01 (DPIR's and DRP's), Levin's eight camera-shake kernels at noise 0.01 and 0.03. Every
method is told the kernel and the noise std, and timed per image (CPU seconds of this process).

Methods (``--methods``): a checkpoint path (any jfb model, given the physics per call);
``wiener`` and ``tv``, whose weight (times sigma^2) is tuned on BSDS training photos; ``bm3d``
(BM3D deblurring told the noise, an optional extra: :mod:`jfb.baselines.bm3d`);
``pnp-admm:CKPT`` and ``hqs:CKPT``, the net of CKPT used as a plug-and-play denoiser (ADMM to its
fixed point, and DPIR's half-quadratic splitting with a decreasing noise schedule).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jfb.atomic import write_text
from jfb.baselines.bm3d import bm3d_deblur, require_bm3d
from jfb.baselines.pnp import pnp_admm, pnp_hqs
from jfb.baselines.tv import tv_reconstruct
from jfb.baselines.wiener import wiener
from jfb.data.open import open_dataset
from jfb.deblur import is_shipped, shipped_checkpoint, takes_noise
from jfb.errors import ConfigError, DataError
from jfb.metrics import psnr, ssim
from jfb.physics import Blur, Physics, kernels
from jfb.pipeline import load_model
from jfb.progress import progress_bar

__all__ = ["PUBLISHED", "SETTINGS", "Setting", "benchmark_deblur", "write_benchmark"]

#: Published PSNRs on CBSD68 (25x25 Gaussian, noise 0.01), Hu et al., "A Restoration Network as
#: an Implicit Prior" (DRP, ICLR 2024), Table 1, checked against the paper's text (all five
#: columns; DPIR's DRUNet has 32.6M parameters). The paper uses the two 25x25 Gaussian kernels
#: of Zhang et al. (2019) and AWGN 2.55/255, tunes its hyperparameters on Set5, and does not say
#: how the blur treats the border, whether the measurements are quantised, or whether PSNR
#: crops a border. Our choices are those of DPIR's main_dpir_deblur.py: circular ('wrap')
#: blur, float measurements, no border crop; DPIR also crops images to a multiple of 8, rounds
#: its output to 8 bits before the PSNR and applies all 8 Levin kernels to every image.
PUBLISHED = {
    "gauss-1.6": {"SD-RED": 25.78, "IRCNN+": 26.86, "DPIR": 28.86, "PnP-ADMM (DRP's)": 28.90,
                  "DRP": 29.10},
    "gauss-2.0": {"SD-RED": 24.43, "IRCNN+": 25.97, "DPIR": 27.52, "PnP-ADMM (DRP's)": 27.45,
                  "DRP": 27.46},
}
PUBLISHED_SOURCE = ("Hu et al., DRP, ICLR 2024, Table 1 (CBSD68, 25x25 Gaussian kernels of "
                    "Zhang et al. 2019, noise 2.55/255; border handling, quantisation and "
                    "border crop not stated)")


@dataclass(frozen=True)
class Setting:
    """One row group of the table: a kernel family and a noise std."""

    name: str
    noise: float
    kernels: Callable[[], list[torch.Tensor]]


def levin_kernels() -> list[torch.Tensor]:
    """Levin et al.'s (2009) eight camera-shake kernels, from ``../shared`` (evaluation only)."""
    from jfb.data.datasets import shared_data

    root = shared_data("kernels") / "levin09"
    return [kernels.from_file(root / f"k{i}.npy") for i in range(1, 9)]


SETTINGS = {
    "gauss-1.6": Setting("gauss-1.6", 0.01, lambda: [kernels.gaussian(25, 1.6)]),
    "gauss-2.0": Setting("gauss-2.0", 0.01, lambda: [kernels.gaussian(25, 2.0)]),
    "levin-0.01": Setting("levin-0.01", 0.01, levin_kernels),
    "levin-0.03": Setting("levin-0.03", 0.03, levin_kernels),
}

#: Seeds of the measurements: setting s, image i, kernel j -> (BASE + 1000 s + i) * 8 + j.
_SEED_BASE = 20240
Method = Callable[[torch.Tensor, Physics], torch.Tensor]


def measurements(setting: Setting, images: Sequence[torch.Tensor], *, every_kernel: bool
                 ) -> list[tuple[int, torch.Tensor, torch.Tensor, Physics]]:
    """(image index, x, y, physics) of a setting: every kernel on every image
    (``every_kernel``), else kernel i mod K on image i."""
    ks = setting.kernels()
    s = list(SETTINGS).index(setting.name)
    out = []
    for i, x in enumerate(images):
        for j, k in enumerate(ks):
            if not every_kernel and j != i % len(ks):
                continue
            physics = Physics(Blur(k, padding="circular"), torch.tensor([setting.noise]))
            g = torch.Generator().manual_seed((_SEED_BASE + 1000 * s + i) * 8 + j)
            out.append((i, x, physics.measure(x[None], generator=g), physics))
    return out


# ------------------------------------------------------------------------------ the methods
def checkpoint_method(path: str, *, tol: float | None, max_iter: int | None
                      ) -> tuple[Method, int, str]:
    """A jfb model given the physics per call; (method, parameters, description)."""
    model, cfg, _ = load_model(path, eval_tol=tol, eval_max_iter=max_iter)
    n = sum(p.numel() for p in model.parameters())

    told = takes_noise(model)

    def run(y: torch.Tensor, physics: Physics) -> torch.Tensor:
        x, _ = model.solve(y, physics if told else Physics(physics.op))
        return x

    return run, n, f"{cfg.model.kind}, task {cfg.task}"


def denoiser_of(path: str) -> tuple[Callable[[torch.Tensor], torch.Tensor], int]:
    """The net of a checkpoint as a denoiser D(v) (``model.feedforward``)."""
    model, _, _ = load_model(path)
    return model.feedforward, sum(p.numel() for p in model.net.parameters())


def _rho_pnp(sigma: float) -> float:
    """PnP-ADMM's penalty for measurement noise sigma: sigma^2 / sigma_D^2 with the denoiser's
    strength sigma_D = 0.03 (the blind denoiser was trained on noise up to 0.08), floored at
    the 8-bit level."""
    return max(sigma, 0.004) ** 2 / 0.03**2


def pnp_admm_method(path: str) -> tuple[Method, int, str]:
    denoise, n = denoiser_of(path)

    def run(y: torch.Tensor, physics: Physics) -> torch.Tensor:
        sigma = float(physics.noise_std.reshape(-1)[0])
        return pnp_admm(physics.op, y, denoise, rho=_rho_pnp(sigma), max_iter=100, tol=1e-4,
                        cg_iters=2)

    return run, n, "PnP-ADMM (100 iterations at most, tol 1e-4), rho = sigma^2 / 0.03^2"


def hqs_method(path: str) -> tuple[Method, int, str]:
    denoise, n = denoiser_of(path)

    def run(y: torch.Tensor, physics: Physics) -> torch.Tensor:
        sigma = float(physics.noise_std.reshape(-1)[0])
        return pnp_hqs(physics.op, y, denoise, sigma=max(sigma, 0.004))

    return run, n, "HQS, 8 iterations, DPIR's schedule sigma_k 49/255 -> sigma, lambda 0.23"


def tuned_method(name: str, *, tune_images: int = 8) -> tuple[Method, int, str]:
    """Wiener (gradient penalty) or TV with weight c sigma^2, c tuned per (kernel family, noise)
    on ``tune_images`` 128-px crops of BSDS training photos."""
    clean = open_dataset("shared:cbsd432", train=False, crop=128)
    crops = [clean[i * (len(clean) // tune_images)] for i in range(tune_images)]
    grid = [10.0 ** e for e in np.arange(0.0, 4.01, 0.5)]
    cache: dict[tuple[float, tuple[int, ...], float], float] = {}

    def solve(c: float, y: torch.Tensor, op: Blur, sigma: float) -> torch.Tensor:
        lam = c * max(sigma, 0.004) ** 2
        if name == "wiener":
            return wiener(op, y, lam, penalty="gradient")
        return tv_reconstruct(op, y, lam, max_iter=300, vectorial=True)

    def best_c(op: Blur, sigma: float) -> float:
        key = (sigma, tuple(op.kernel.shape), float(op.kernel.sum()))
        if key not in cache:
            g = torch.Generator().manual_seed(7)
            pairs = [(x, Physics(op, sigma).measure(x[None], generator=g)) for x in crops]
            scores = [sum(float(psnr(solve(c, y, op, sigma).clamp(0, 1), x[None]))
                          for x, y in pairs) for c in grid]
            cache[key] = grid[int(np.argmax(scores))]
        return cache[key]

    def run(y: torch.Tensor, physics: Physics) -> torch.Tensor:
        sigma = float(physics.noise_std.reshape(-1)[0])
        return solve(best_c(physics.op, sigma), y, physics.op, sigma)

    what = "Wiener (gradient penalty)" if name == "wiener" else "colour TV (Chambolle-Pock, 300)"
    return run, 0, f"{what}, weight c sigma^2 with c tuned on {tune_images} BSDS training crops"


def bm3d_method() -> tuple[Method, int, str]:
    """BM3D deblurring (:mod:`jfb.baselines.bm3d`, an optional extra), told the noise std."""
    def run(y: torch.Tensor, physics: Physics) -> torch.Tensor:
        return bm3d_deblur(physics.op, y, float(physics.noise_std.reshape(-1)[0]))

    return run, 0, "BM3D deblurring (bm3d 4.0.3, profile np, each channel), told the noise"


def make_method(spec: str, *, tol: float | None, max_iter: int | None
                ) -> tuple[Method, int, str]:
    kind, _, arg = spec.partition(":")
    if spec in ("wiener", "tv"):
        return tuned_method(spec)
    if spec == "bm3d":
        try:
            require_bm3d()  # said before any work
        except ImportError as exc:
            raise ConfigError(str(exc)) from None
        return bm3d_method()
    if kind == "pnp-admm" and arg:
        return pnp_admm_method(arg)
    if kind == "hqs" and arg:
        return hqs_method(arg)
    if Path(spec).is_file():
        return checkpoint_method(spec, tol=tol, max_iter=max_iter)
    raise ConfigError(f"benchmark method {spec!r}: expected a checkpoint file, wiener, tv, "
                      "bm3d, pnp-admm:CKPT or hqs:CKPT")


def resolve_methods(text: str) -> list[tuple[str, str]]:
    """``--methods`` -> (name, spec) pairs: ``NAME=SPEC`` or a SPEC named after itself;
    ``default`` and ``natural`` are the shipped models."""
    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        name, eq, spec = item.partition("=")
        spec = spec if eq else name
        if is_shipped(spec):
            spec = str(shipped_checkpoint(spec))
        out.append((name, spec))
    if not out:
        raise ConfigError("--methods names no method")
    return out


# ------------------------------------------------------------------------------- the run
def benchmark_deblur(
    methods: Sequence[tuple[str, str]], *, settings: Sequence[str] = tuple(SETTINGS),
    images: int | None = None, every_kernel: bool = True, tol: float | None = None,
    max_iter: int | None = None, progress: bool = False,
) -> dict[str, Any]:
    """Run ``methods`` ((name, spec) pairs) on CBSD68 under ``settings``; the first ``images``
    photos (all 68 by default). Returns the result record (see :func:`write_benchmark`)."""
    for s in settings:
        if s not in SETTINGS:
            raise ConfigError(f"unknown setting {s!r}; expected one of {', '.join(SETTINGS)}")
    clean = open_dataset("shared:cbsd68", train=False)
    n_img = len(clean) if images is None else min(images, len(clean))
    photos = [clean[i] for i in range(n_img)]
    if not photos:
        raise DataError("no CBSD68 photos")
    rows: list[dict[str, Any]] = []
    for name, spec in methods:
        method, n_params, what = make_method(spec, tol=tol, max_iter=max_iter)
        row: dict[str, Any] = {"method": name, "spec": spec, "parameters": n_params,
                               "description": what, "settings": {}}
        for s in settings:
            cases = measurements(SETTINGS[s], photos, every_kernel=every_kernel)
            ps, ss, cpu = [], [], 0.0
            with progress_bar(len(cases), f"{name} {s}", unit="image", enabled=progress) as bar:
                for _i, x, y, physics in cases:
                    t0 = time.process_time()
                    with torch.no_grad():
                        x_hat = method(y, physics).clamp(0, 1)
                    cpu += time.process_time() - t0
                    ps.append(float(psnr(x_hat, x[None])))
                    ss.append(float(ssim(x_hat, x[None])))
                    bar.update()
            row["settings"][s] = {"psnr": float(np.mean(ps)), "ssim": float(np.mean(ss)),
                                  "psnr_std": float(np.std(ps)), "n": len(ps),
                                  "cpu_s_per_image": cpu / len(ps)}
        rows.append(row)
    inputs = {}
    for s in settings:
        cases = measurements(SETTINGS[s], photos, every_kernel=every_kernel)
        inputs[s] = float(np.mean([float(psnr(y.clamp(0, 1), x[None])) for _, x, y, _ in cases]))
    return {"protocol": __doc__.split("\n\n")[1].replace("\n", " "), "images": n_img,
            "every_kernel": every_kernel, "threads": torch.get_num_threads(),
            "input_psnr": inputs, "rows": rows, "published": PUBLISHED,
            "published_source": PUBLISHED_SOURCE}


def write_benchmark(result: dict[str, Any], json_path: str | Path,
                    command: str) -> str:
    """Write the record (with the ``command`` that made it) as JSON at ``json_path`` and a
    markdown table beside it (same name, ``.md``); returns the table. Rows of other methods in
    an existing record of the same photos, settings and kernels are kept (each row keeps the
    command, date and threads that made it), so the methods may be run in several commands."""
    stamp = {"command": command, "date": time.strftime("%Y-%m-%d"),
             "threads": result["threads"]}
    rows = [{**row, **stamp} for row in result["rows"]]
    path = Path(json_path)
    if path.is_file():
        old = json.loads(path.read_text())
        same = all(old.get(k) == result[k] for k in ("images", "every_kernel", "input_psnr"))
        if same:
            mine = {row["method"] for row in rows}
            rows = [row for row in old["rows"] if row["method"] not in mine] + rows
    result = {**result, "rows": rows, "command": command,
              "date": time.strftime("%Y-%m-%d"), "machine": _machine()}
    settings = list(result["input_psnr"])
    head = "| method | parameters | " + " | ".join(settings) + " | CPU s / image |"
    lines = [head, "|" + "---|" * (len(settings) + 3)]
    lines.append("| blurred input | | " + " | ".join(
        f"{result['input_psnr'][s]:.2f}" for s in settings) + " | |")
    for row in result["rows"]:
        cells = [f"{row['settings'][s]['psnr']:.2f} / {row['settings'][s]['ssim']:.3f}"
                 for s in settings]
        cpu = np.mean([row["settings"][s]["cpu_s_per_image"] for s in settings])
        params = f"{row['parameters']:,}" if row["parameters"] else "-"
        lines.append(f"| {row['method']} | {params} | " + " | ".join(cells) + f" | {cpu:.1f} |")
    for name in sorted({m for s in settings for m in PUBLISHED.get(s, {})}):
        cells = [f"{PUBLISHED[s][name]:.2f} (published)" if name in PUBLISHED.get(s, {})
                 else "" for s in settings]
        lines.append(f"| {name} | | " + " | ".join(cells) + " | |")
    table = "\n".join(lines) + (
        f"\n\nPSNR dB / SSIM, mean over {result['images']} CBSD68 photos"
        f"{'' if result['every_kernel'] else ' (Levin: kernel i mod 8 on photo i)'}; published "
        f"rows: {PUBLISHED_SOURCE}. Machine: {result['machine']}; each row's command, date "
        "and threads are in the JSON record.\n")
    write_text(path, json.dumps(result, indent=2) + "\n")
    write_text(path.with_suffix(".md"), table)
    return table


def _machine() -> str:
    from jfb.device import hardware_name

    try:
        return hardware_name(torch.device("cpu"))
    except Exception:  # a name is a courtesy, never a failure
        return "cpu"
