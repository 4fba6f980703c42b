"""The options of the `jfb` command: one parser builder per subcommand, and the argument types.

:func:`build_parser` is the parser ``jfb.cli.main`` runs; every option is defined here once.
"""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """Implicit networks (deep equilibrium models) trained with Jacobian-free
backpropagation for imaging inverse problems: deblurring, denoising, super-resolution,
inpainting, tomography. Start with `jfb demo`."""


def _add_common(p: argparse.ArgumentParser) -> None:
    """``--debug``, which every command takes."""
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")


def _add_compute_options(p: argparse.ArgumentParser) -> None:
    """``--threads`` and ``--quiet``, which every command that computes takes (``jfb.cli.main``
    applies them: ``jfb.cli._set_threads``, :func:`jfb.progress.silenced`)."""
    p.add_argument(
        "--threads", type=_positive_int, metavar="N",
        help="CPU threads of torch's operations (default: torch's own, about one per core)",
    )
    p.add_argument("--quiet", action="store_true",
                   help="no progress display (progress goes to stderr, on a terminal only)")


#: ``--metrics`` of `eval` and `compare` (jfb.quality names them; a test keeps the two in step).
METRICS_HELP = (
    "comma-separated metrics reported beside PSNR and SSIM (always reported): ms-ssim (5 "
    "scales, images of at least 176 px; ms-ssim:K for K < 5 scales), vif, haarpsi, gmsd, fsim "
    "(needs piq: pip install --no-deps piq==0.8.0), lpips:PATH, dists:PATH (PATH: a network "
    "exported with torch.export.save, see docs/questions/metrics.md); default psnr,ssim"
)


def _add_metrics_option(p: argparse.ArgumentParser) -> None:
    """``--metrics`` (``jfb.quality.parse_metrics`` reads it)."""
    p.add_argument("--metrics", default="psnr,ssim", metavar="LIST", help=METRICS_HELP)


def _positive_int(text: str) -> int:
    """An integer >= 1 (``--threads``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _add_restore_options(p: argparse.ArgumentParser) -> None:
    """The options `restore` and `deblur` share (:func:`restore_kwargs` passes them on)."""
    p.add_argument("--max-iter", type=int, help="fixed-point iteration budget")
    p.add_argument("--tol", type=float, help="fixed-point tolerance: the solve stops at this "
                   "relative residual ||T(s) - s|| / ||T(s)|| (default: the model's own)")
    p.add_argument(
        "--noise", type=_noise_value, metavar="SIGMA|auto",
        help="noise std of the input, in its value units (0.01 = 1%% of the [0, 1] range), or "
        "'auto' to estimate it from the input (blur and denoising models; a JPEG's compression "
        "error counts as noise); a DE-ADMM model "
        "scales its learned rho by (SIGMA / its training noise)^2, plug-and-play's rule "
        "(default: 'auto' for a model trained across noise levels, as the default model is; "
        "else the noise it was trained at)",
    )
    p.add_argument(
        "--max-memory", type=_byte_size, metavar="SIZE",
        help="memory the solve may use, e.g. 2G or 500M: an image that needs more is restored "
        "in tiles (default: half the memory available now)",
    )
    p.add_argument("--tile", type=int, metavar="PIXELS",
                   help="restore in tiles of this many pixels a side, whatever the memory "
                   "(default: the whole image when it fits --max-memory, else the largest tiles "
                   "that fit)")
    p.add_argument("--margin", type=int, metavar="PIXELS",
                   help="context pixels each tile gets beyond its borders (default: from the "
                   "blur's kernel and the model, 48 at least; e.g. 92 for gaussian:25:4 with "
                   "the natural model at noise 0.01)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--force", action="store_true",
                   help="overwrite an existing output file (several inputs: redo the outputs "
                   "that exist instead of skipping them)")
    _add_compute_options(p)
    _add_common(p)


#: What `restore` and `deblur` say of several inputs (jfb.batch).
BATCH = ("Several inputs, or a folder of them, go into the folder -o OUT/ (created if missing), "
         "the model loaded once, each result named after its input; outputs that exist are "
         "skipped unless --force, so running an interrupted command again finishes it; a file "
         "that fails is reported in one line and the others are still done (exit status 2).")


def _add_inputs(p: argparse.ArgumentParser, what: str) -> None:
    """The input files of `restore` and `deblur` and their ``-o``."""
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=what)
    p.add_argument("-o", "--output", required=True,
                   help="output image (.png, .tif, .jpg, .bmp), or with several inputs a "
                   "folder (OUT/ for one input)")


def _noise_value(text: str) -> float | str:
    """``--noise``: a number, or "auto"."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None


def _byte_size(text: str) -> float:
    """``--max-memory``: bytes, or a number with K, M, G or T (powers of 1024)."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size such as 2G or 500M, got {text!r}") \
            from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"the size must be positive, got {text!r}")
    return value


def _budgets(text: str) -> list[float]:
    """``--budgets 5,10,30``: positive CPU-minutes."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"budgets are comma-separated minutes, got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"budgets must be positive minutes, got {text!r}")
    return values


def restore_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments of ``jfb.deblur.restore_file`` and ``jfb.batch.restore_images`` from
    ``_add_restore_options``."""
    return {"checkpoint": args.checkpoint, "max_iter": args.max_iter, "tol": args.tol,
            "noise": args.noise, "max_memory": args.max_memory, "tile": args.tile,
            "margin": args.margin, "device": args.device, "force": args.force, "report": print,
            "progress": True,
            "warn": lambda line: print(f"jfb {args.command}: warning: {line}", file=sys.stderr)}


def _demo_parser(sub: argparse._SubParsersAction) -> None:
    """``jfb demo``: train, compare and report on built-in photos."""
    p = sub.add_parser(
        "demo",
        help="train the best recipe on built-in photos, compare it, write a report",
        description="On photos that ship with scikit-image (CPU, a few minutes): "
        "train DE-ADMM whose denoiser is first pre-trained as one, then by JFB through "
        "the fixed point, and a feedforward net with the same DnCNN for the same "
        "seconds; compare them with the blurred input, tuned Tikhonov and TV, and the "
        "shipped default model (trained on CelebA faces); write report.md, "
        "results.json, figure.png and curve.png.",
    )
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.steps=50 (repeatable)",
    )
    _add_compute_options(p)
    _add_common(p)


def _train_parser(sub: argparse._SubParsersAction) -> None:
    """``jfb train``: train from a config."""
    p = sub.add_parser(
        "train",
        help="train a model from a config file",
        description="Train the model a config describes; writes logs and "
        "checkpoints (last.safetensors, best.safetensors) to the output folder.",
    )
    p.add_argument("--config", help="TOML or YAML config file (default: built-in defaults)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set model.backward.name=ift",
    )
    p.add_argument("--out", help="output folder (default: train.out_dir of the config)")
    p.add_argument(
        "--resume", action="store_true", help="continue exactly from OUT/last.safetensors"
    )
    p.add_argument(
        "--print-config", action="store_true", help="print the resolved config as TOML and exit"
    )
    _add_compute_options(p)
    _add_common(p)


def _eval_parser(sub: argparse._SubParsersAction) -> None:
    """``jfb eval``: a checkpoint (or an untrained config) on a task's evaluation images."""
    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint on a task's evaluation images",
        description="PSNR/SSIM (PROTOCOL.md), and the metrics of --metrics, of a checkpoint on "
        "a task's evaluation split with seeded noise; writes results.json, results.md, "
        "per_image.csv and a figure grid.",
    )
    p.add_argument("checkpoint", nargs="?", help="a .safetensors checkpoint written by `jfb train`")
    p.add_argument(
        "--config",
        help="instead of a checkpoint: evaluate the untrained model this config builds (R from "
        "train.init_net if set), i.e. what training would start from; --set overrides apply",
    )
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of --config (repeatable)")
    p.add_argument("--task", help="task name or spec (default: the checkpoint's own task)")
    p.add_argument("--max-images", type=int, help="evaluate on the first N images only")
    p.add_argument(
        "--eval-max-iter", type=int, help="test-time fixed-point iteration budget (implicit models)"
    )
    p.add_argument("--eval-tol", type=float,
                   help="test-time fixed-point tolerance, a relative residual (implicit models)")
    p.add_argument("--batch-size", type=int, default=16, help="images per batch (default 16)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--out", help="output folder (default: beside the checkpoint, eval-<task>)")
    p.add_argument(
        "--contraction",
        action="store_true",
        help="also measure the local contraction factor ||J_T(x*)||_2 of every reconstruction "
        "(implicit models; 10 power iterations) and report its mean and max",
    )
    p.add_argument(
        "--adapt-noise", action="store_true",
        help="DE-ADMM models: scale the learned rho by (task noise / training noise)^2, "
        "plug-and-play's rule, for a --task noisier or cleaner than the training one",
    )
    _add_metrics_option(p)
    _add_compute_options(p)
    _add_common(p)


def _deblur_parser(sub: argparse._SubParsersAction) -> None:
    """``jfb deblur``: deblur image files."""
    p = sub.add_parser(
        "deblur",
        help="deblur image files",
        description="Deblur images, told their blur (--kernel), with a trained model: the "
        "shipped model 'natural' (trained across blurs and noise levels on natural photos) "
        "unless --checkpoint names another. An image whose solve does not fit --max-memory "
        "is processed in overlapping tiles. " + BATCH,
    )
    _add_inputs(p, "blurred images (png, jpg, bmp, tif), or folders of them")
    p.add_argument("--checkpoint",
                   help="a checkpoint file or a shipped model: natural (default), faces (CelebA "
                   "faces, its own 5x5 Gaussian blur)")
    p.add_argument(
        "--kernel",
        help="the blur: gaussian:SIZE:SIGMA, motion:SIZE[:SEED], disk:RADIUS, or the path of "
        "a PSF image or .npy array (normalised to sum 1); required by the default model; "
        "default for a model trained on one blur: that blur",
    )
    p.add_argument(
        "--padding",
        default=None,
        help="boundary of the blur model: zeros, circular, reflect (default: model's)",
    )
    _add_restore_options(p)


def _restore_parser(sub: argparse._SubParsersAction) -> None:
    """``jfb restore``: reconstruct images from measurement files."""
    p = sub.add_parser(
        "restore",
        help="reconstruct images from measurement files",
        description="Reconstruct images from their measurements (image files, or .npy "
        "arrays such as sinograms) with a trained model, under the checkpoint's task or "
        "--task. Blur, denoising, super-resolution and given masks go in "
        "overlapping tiles when the whole image does not fit --max-memory. " + BATCH,
    )
    _add_inputs(p, "measurements: images (png, jpg, bmp, tif) or .npy arrays, or folders of "
                "them")
    p.add_argument("--checkpoint", help="model checkpoint (default: the shipped deblurring model)")
    p.add_argument(
        "--task",
        help="task name or spec whose operator replaces the model's (e.g. op=sr:4, or "
        "kernel=gaussian:7:2.0); default: the checkpoint's task",
    )
    p.add_argument("--mask", help="inpainting: image or .npy of the input's size, nonzero = seen")
    _add_restore_options(p)


def _degrade_parser(sub: argparse._SubParsersAction) -> None:
    """``jfb degrade``: simulate a measurement of a clean image."""
    p = sub.add_parser(
        "degrade",
        help="simulate a measurement of a clean image under a task",
        description="Write y = A x + n for a clean image under a task's forward model (seeded "
        "noise): an image file, or a .npy array for tomography.",
    )
    p.add_argument("input", help="clean image (png, jpg, bmp, tif)")
    p.add_argument("-o", "--output", required=True, help="output (.png, .tif, ... or .npy)")
    p.add_argument("--task", required=True, help="task name or spec")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    _add_compute_options(p)
    _add_common(p)


def _compare_parser(sub: argparse._SubParsersAction) -> None:
    """``jfb compare``: several methods on one task, as one table."""
    p = sub.add_parser(
        "compare",
        help="evaluate several methods on one task, as one table",
        description="Evaluate classical methods (weights tuned on training "
        "images) and trained checkpoints on the same images, noise and metrics; "
        "writes results.json, results.md, figure.png and iterations.png.",
    )
    p.add_argument("--task", default="celeba-gauss5", help="task name or spec")
    p.add_argument(
        "--methods",
        required=True,
        help="comma-separated: input (alias blurred), tikhonov, tikhonov-identity, tv, wiener, "
        "paths of .safetensors checkpoints, or pnp-admm:PATH / pnp-pgd:PATH (PATH: a denoiser "
        "checkpoint trained with op=denoise)",
    )
    p.add_argument("--max-images", type=int, help="evaluate on the first N images only")
    p.add_argument(
        "--tune-images",
        type=int,
        default=16,
        help="training images used to tune classical weights (default 16)",
    )
    p.add_argument(
        "--iterations",
        default="",
        help="test-time iteration budgets for the PSNR-vs-iterations curve, e.g. 1,2,5,10,20",
    )
    p.add_argument(
        "--adapt-noise", action="store_true",
        help="DE-ADMM checkpoints: scale the learned rho by (task noise / training noise)^2, "
        "plug-and-play's rule (the row name says so); other methods are unchanged",
    )
    p.add_argument("--batch-size", type=int, default=16, help="images per batch (default 16)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--out", required=True, help="output folder")
    _add_metrics_option(p)
    _add_compute_options(p)
    _add_common(p)


def _curves_parser(sub: argparse._SubParsersAction) -> None:
    """``jfb curves``: training runs' validation PSNR against their CPU time."""
    p = sub.add_parser(
        "curves",
        help="validation PSNR of training runs against their training CPU time",
        description="Read the validation records of training runs (their metrics.jsonl: CPU "
        "seconds of training, validation not counted) and compare the runs at equal compute: "
        "writes curves.json, curves.md (PSNR within each budget, final PSNR, saturated or "
        "not) and curves.png (PSNR against CPU-minutes).",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="training run folders")
    p.add_argument("--labels", help="comma-separated names of the runs (default: folder names)")
    p.add_argument("--budgets", type=_budgets, default="5,10,20,30",
                   help="comma-separated CPU-minute budgets of the table (default 5,10,20,30)")
    p.add_argument("--out", required=True, help="output folder")
    _add_common(p)


def _benchmark_parser(sub: argparse._SubParsersAction) -> None:
    """``jfb benchmark deblur``: the literature's CBSD68 deblurring table."""
    p = sub.add_parser(
        "benchmark",
        help="the literature's benchmark: CBSD68 deblurring, published numbers beside ours",
        description="Non-blind deblurring of the 68 CBSD68 photos (../shared/data/cbsd68), "
        "circular blur, seeded noise, float measurements, PSNR/SSIM without border crop: a "
        "25x25 Gaussian (std 1.6 and 2.0) at noise 0.01 and Levin's 8 kernels at noise 0.01 "
        "and 0.03. Every method is told the kernel and the noise. Writes a JSON record and a "
        "markdown table (published rows beside ours).",
    )
    p.add_argument("problem", choices=["deblur"], help="the benchmark (deblur)")
    p.add_argument("--methods", default="natural,faces,wiener,tv",
                   help="comma-separated: checkpoint paths, the shipped models 'natural' (the "
                   "default) and 'faces', wiener, tv, bm3d (an optional extra), pnp-admm:CKPT, "
                   "hqs:CKPT; NAME=SPEC names a row (default: natural,faces,wiener,tv)")
    p.add_argument("--settings", default="gauss-1.6,gauss-2.0,levin-0.01,levin-0.03",
                   help="comma-separated settings (default: all four)")
    p.add_argument("--images", type=_positive_int, help="the first N photos (default: all 68)")
    p.add_argument("--levin-cycle", action="store_true",
                   help="Levin settings: kernel i mod 8 on photo i instead of all 8 on each "
                   "(8x cheaper; not the literature's protocol)")
    p.add_argument("--tol", type=float, help="test-time tolerance of the implicit models")
    p.add_argument("--max-iter", type=_positive_int, help="test-time iteration cap")
    p.add_argument("--out", default="docs/results/cbsd68-deblur.json",
                   help="the JSON record (the table goes beside it as .md)")
    _add_compute_options(p)
    _add_common(p)


def _tasks_parser(sub: argparse._SubParsersAction) -> None:
    """``jfb tasks``: list the built-in tasks."""
    p = sub.add_parser("tasks", help="list the built-in tasks")
    _add_common(p)


#: The subcommands in the order ``jfb --help`` lists them.
SUBCOMMANDS = (_demo_parser, _train_parser, _eval_parser, _deblur_parser, _restore_parser,
               _degrade_parser, _compare_parser, _curves_parser, _benchmark_parser,
               _tasks_parser)


def build_parser() -> argparse.ArgumentParser:
    """The parser of the `jfb` command and all its subcommands."""
    parser = argparse.ArgumentParser(prog="jfb", description=DESCRIPTION)
    _add_common(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    # Listed for --help only: main() hands `jfb bench ...` to jfb.bench.main before parsing.
    sub.add_parser("bench", help="benchmarks of training and inference cost (jfb bench --help)")
    return parser
