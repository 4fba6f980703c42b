"""The `jfb` command line: demo, train, eval, restore, deblur, degrade, compare, tasks, bench.

Errors in what the user handed in are one line on stderr and exit status 2 (no traceback unless
``--debug``); an unexpected failure is exit status 1 with a pointer to ``--debug``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

DESCRIPTION = """Implicit networks (deep equilibrium models) trained with Jacobian-free
backpropagation for imaging inverse problems: deblurring, denoising, super-resolution,
inpainting, tomography. Start with `jfb demo`."""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")


def _add_compute_options(p: argparse.ArgumentParser) -> None:
    """``--threads`` and ``--quiet``, which every command that computes takes (``main`` applies
    them: :func:`_set_threads`, :func:`jfb.progress.silenced`)."""
    p.add_argument(
        "--threads", type=_positive_int, metavar="N",
        help="CPU threads of torch's operations (default: torch's own, about one per core)",
    )
    p.add_argument("--quiet", action="store_true",
                   help="no progress display (progress goes to stderr, on a terminal only)")


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
    """The options `restore` and `deblur` share (see ``_restore_kwargs``)."""
    p.add_argument("--max-iter", type=int, help="fixed-point iteration budget")
    p.add_argument("--tol", type=float, help="fixed-point tolerance: the solve stops at this "
                   "relative residual ||T(s) - s|| / ||T(s)|| (default: the model's own)")
    p.add_argument(
        "--noise", type=_noise_value, metavar="SIGMA|auto",
        help="noise std of the input, in its value units (0.01 = 1%% of the [0, 1] range), or "
        "'auto' to estimate it from the input (blur and denoising models); a DE-ADMM model "
        "scales its learned rho by (SIGMA / its training noise)^2, plug-and-play's rule "
        "(default: the noise it was trained at)",
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
    p.add_argument("--margin", type=int, default=48, metavar="PIXELS",
                   help="context pixels each tile gets beyond its borders (default 48: wider "
                   "than the 24-44 pixels over which a border changed the models measured)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    _add_compute_options(p)
    _add_common(p)


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


def _restore_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments of ``jfb.deblur.restore_file`` from ``_add_restore_options``."""
    return {"checkpoint": args.checkpoint, "max_iter": args.max_iter, "tol": args.tol,
            "noise": args.noise, "max_memory": args.max_memory, "tile": args.tile,
            "margin": args.margin, "device": args.device, "force": args.force, "report": print,
            "progress": True,
            "warn": lambda line: print(f"jfb {args.command}: warning: {line}", file=sys.stderr)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jfb", description=DESCRIPTION)
    _add_common(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

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

    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint on a task's evaluation images",
        description="PSNR/SSIM (PROTOCOL.md) of a checkpoint on a task's "
        "evaluation split with seeded noise; writes results.json, results.md, "
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
    _add_compute_options(p)
    _add_common(p)

    p = sub.add_parser(
        "deblur",
        help="deblur an image file",
        description="Deblur one image with a trained model (the shipped default "
        "model when --checkpoint is not given). An image whose solve does not "
        "fit --max-memory is processed in overlapping tiles.",
    )
    p.add_argument("input", help="blurred image (png, jpg, bmp, tif)")
    p.add_argument("-o", "--output", required=True, help="output image (.png, .tif, .jpg, .bmp)")
    p.add_argument("--checkpoint", help="model checkpoint (default: the shipped model)")
    p.add_argument(
        "--kernel",
        help="blur kernel: gaussian:SIZE:SIGMA, motion:SIZE[:SEED], "
        "disk:RADIUS or file:PATH (.npy or image); default: the model's task kernel",
    )
    p.add_argument(
        "--padding",
        default=None,
        help="boundary of the blur model: zeros, circular, reflect (default: model's)",
    )
    _add_restore_options(p)

    p = sub.add_parser(
        "restore",
        help="reconstruct an image from a measurement file",
        description="Reconstruct one image from its measurement (an image file, or a .npy "
        "array such as a sinogram) with a trained model, under the checkpoint's task or "
        "--task. Blur, denoising, super-resolution and given masks go in "
        "overlapping tiles when the whole image does not fit --max-memory.",
    )
    p.add_argument("input", help="measurement: image (png, jpg, bmp, tif) or .npy array")
    p.add_argument("-o", "--output", required=True, help="output image (.png, .tif, .jpg, .bmp)")
    p.add_argument("--checkpoint", help="model checkpoint (default: the shipped deblurring model)")
    p.add_argument(
        "--task",
        help="task name or spec whose operator replaces the model's (e.g. op=sr:4, or "
        "kernel=gaussian:7:2.0); default: the checkpoint's task",
    )
    p.add_argument("--mask", help="inpainting: image or .npy of the input's size, nonzero = seen")
    _add_restore_options(p)

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
    _add_compute_options(p)
    _add_common(p)

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

    p = sub.add_parser("tasks", help="list the built-in tasks")
    _add_common(p)

    # Listed for --help only: main() hands `jfb bench ...` to jfb.bench.main before parsing.
    sub.add_parser("bench", help="benchmarks of training and inference cost (jfb bench --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # the bench has its own parser (see `jfb bench --help`)
        from jfb.bench import main as bench_main

        return bench_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = "jfb " + " ".join(argv)  # recorded in results next to their numbers
    if args.command is None:
        parser.print_help()
        return 0
    debug = bool(getattr(args, "debug", False)) or "--debug" in argv
    _tune_cpu_malloc(args)
    from jfb.progress import silenced

    try:
        _set_threads(args)
        with silenced(getattr(args, "quiet", False)):
            return int(COMMANDS[args.command](args) or 0)
    except KeyboardInterrupt:
        print("jfb: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's one place that turns errors into lines
        if debug:
            raise
        from jfb.errors import JFBError

        # TypeError is a bug (a wrong call), not the user's input: it is an internal error
        user_error = isinstance(exc, (JFBError, ValueError, OSError))
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if user_error:
            print(f"jfb {args.command}: error: {msg}", file=sys.stderr)
            return 2
        print(
            f"jfb {args.command}: internal error: {type(exc).__name__}: {msg} "
            "(run again with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


#: Commands whose models run many applications of T (tuned allocator on CPU).
COMPUTE_COMMANDS = ("demo", "train", "eval", "restore", "deblur", "compare")


def _tune_cpu_malloc(args: argparse.Namespace) -> None:
    """Keep freed memory in glibc's heap for the CPU runs of the compute commands
    (:func:`jfb.cpu_malloc.tune_cpu_malloc`: fresh pages for every large tensor of T cost up to
    2.7x on inference, docs/BENCHMARKS.md); ``JFB_MALLOC=default`` leaves glibc as it is."""
    if args.command not in COMPUTE_COMMANDS or os.environ.get("JFB_MALLOC") == "default":
        return
    import torch

    from jfb import cpu_malloc

    if getattr(args, "device", None) == "cpu" or not torch.cuda.is_available():
        cpu_malloc.tune_cpu_malloc()


def _set_threads(args: argparse.Namespace) -> None:
    """``--threads N``: torch's intra-op threads, before any work (torch keeps its own default
    otherwise). Inter-op threads are left alone: eager models do not use them, and torch
    refuses to change them once any parallel work has run in the process."""
    if getattr(args, "threads", None) is not None:
        import torch

        torch.set_num_threads(args.threads)


# --------------------------------------------------------------------------------- commands
def cmd_demo(args: argparse.Namespace) -> int:
    from jfb.demo import run_demo

    t0 = time.perf_counter()
    out = run_demo(args.out, args.overrides, progress=not args.quiet)
    from jfb.report import markdown_table

    print(markdown_table(out["rows"], ["method", "psnr", "ssim", "mean_solver_iters"]))
    print(f"report: {Path(out['out_dir']) / 'report.md'}  ({time.perf_counter() - t0:.0f} s)")
    return 0


def _check_fresh_run(out: Path, *, resume: bool) -> None:
    """A new run does not go into a folder that holds one: its logs would be appended to the
    old run's and its checkpoints would replace them."""
    from jfb.errors import ConfigError
    from jfb.train.trainer import LAST

    if not resume and (out / LAST).exists():
        raise ConfigError(f"{out} already holds a training run ({LAST}): continue it with "
                          "--resume, or give another --out (or delete the folder)")


def cmd_train(args: argparse.Namespace) -> int:
    from jfb.config import load_config
    from jfb.data import collate_images
    from jfb.pipeline import build_run
    from jfb.train.distributed import cleanup_distributed, init_distributed
    from jfb.train.trainer import Trainer

    overrides = list(args.overrides) + ([f"train.out_dir={args.out}"] if args.out else [])
    cfg = load_config(args.config, overrides)
    if args.print_config:
        print(cfg.to_toml(), end="")
        return 0
    _check_fresh_run(Path(cfg.train.out_dir), resume=args.resume)
    dist = init_distributed(cfg.train.device)  # under torchrun: join its process group
    run = build_run(cfg)
    summary = Trainer(run.model, run.train_pairs, run.val_pairs, cfg, progress=not args.quiet,
                      collate_fn=collate_images).fit(resume=args.resume)
    cleanup_distributed()
    if dist.is_main:
        print(" ".join(f"{k}={v}" for k, v in summary.items() if not isinstance(v, (dict, list))))
    return 0


def _untrained_model(args: argparse.Namespace, device, other) -> tuple[Any, Any, dict, Any]:
    """The model ``--config`` builds, before any training step, in eval mode on ``device``, and
    its task, parsed once (None when ``other`` replaces it)."""
    from jfb.config import load_config
    from jfb.pipeline import initial_model, set_eval_budget
    from jfb.tasks import get_task

    cfg = load_config(args.config, args.overrides)
    trained = None if other is not None else get_task(cfg.task)
    model = initial_model(cfg, (other or trained).operator())
    set_eval_budget(model, max_iter=args.eval_max_iter, tol=args.eval_tol)
    info = {"step": 0, "config": cfg.to_dict(), "extra": {}}
    return model.to(device).eval(), cfg, info, trained


def cmd_eval(args: argparse.Namespace) -> int:
    from jfb.device import resolve_device
    from jfb.errors import ConfigError
    from jfb.evaluate import evaluate
    from jfb.pipeline import EVAL_SEED, adapt_noise, load_model, load_run
    from jfb.progress import progress_bar
    from jfb.report import write_evaluation
    from jfb.tasks import get_task

    device = resolve_device(args.device)
    other = get_task(args.task) if args.task else None  # evaluate under that task's physics
    if (args.checkpoint is None) == (args.config is None):
        raise ConfigError("give either a checkpoint or --config")
    if args.overrides and args.config is None:
        raise ConfigError("--set applies to --config only")
    if args.config is not None:
        model, cfg, info, trained = _untrained_model(args, device, other)
        source = Path(args.config)
    elif other is None:
        model, cfg, info, trained = load_run(args.checkpoint, device=device,
                                             eval_max_iter=args.eval_max_iter,
                                             eval_tol=args.eval_tol)
        source = Path(args.checkpoint)
    else:
        model, cfg, info = load_model(args.checkpoint, device=device, op=other.operator(),
                                      eval_max_iter=args.eval_max_iter, eval_tol=args.eval_tol)
        trained, source = None, Path(args.checkpoint)
    task = other or trained  # the task parsed once: --task, else the model's own
    rho_factor = (adapt_noise(model, cfg, task.noise_sigma, task=trained)
                  if args.adapt_noise else None)
    if args.contraction and not callable(getattr(model, "contraction", None)):
        raise ConfigError(f"--contraction needs an implicit model; {source} holds a "
                          f"{type(model).__name__}")
    pairs = task.val_pairs(seed=EVAL_SEED, limit=args.max_images)
    with progress_bar(len(pairs), f"eval {source.name} on {task.name}", unit="image") as bar:
        res = evaluate(
            model,
            pairs,
            name=source.stem,
            batch_size=args.batch_size,
            device=device,
            keep=4,
            contraction=args.contraction,
            progress=bar,
        )
    row = res.summary()
    row.update(
        task=task.name,
        step=info["step"],
        device=str(device),
        params=sum(p.numel() for p in model.parameters()),
        command=args.command_line,
    )
    if rho_factor is not None:
        row["rho_factor"] = rho_factor
    if args.out:
        out = Path(args.out)
    elif args.config is not None:
        out = Path(cfg.train.out_dir) / f"eval-untrained-{task.name}"
    else:
        out = source.parent / f"eval-{task.name}"
    print(write_evaluation(out, row, res, pairs), end="")
    print(f"written: {out}")
    return 0


def cmd_deblur(args: argparse.Namespace) -> int:
    from jfb.deblur import deblur_file

    dst = deblur_file(
        args.input, args.output, kernel=args.kernel, padding=args.padding, **_restore_kwargs(args)
    )
    print(f"written: {dst}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from jfb.deblur import restore_file
    from jfb.tasks import get_task

    dst = restore_file(
        args.input,
        args.output,
        op=get_task(args.task).operator() if args.task else None,
        mask=args.mask,
        **_restore_kwargs(args),
    )
    print(f"written: {dst}")
    return 0


def cmd_degrade(args: argparse.Namespace) -> int:
    from jfb.deblur import degrade_file
    from jfb.tasks import get_task

    dst = degrade_file(args.input, args.output, get_task(args.task), seed=args.seed,
                       force=args.force)
    print(f"written: {dst}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import datetime

    from jfb.compare import COLUMNS, compare, write_comparison
    from jfb.device import device_name, resolve_device
    from jfb.report import markdown_table
    from jfb.tasks import get_task

    device = resolve_device(args.device)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    budgets = [int(k) for k in args.iterations.split(",") if k.strip()]
    out = compare(
        get_task(args.task),
        methods,
        max_images=args.max_images,
        tune_images=args.tune_images,
        batch_size=args.batch_size,
        device=device,
        iteration_budgets=budgets,
        adapt_rho=args.adapt_noise,
        progress=not args.quiet,
    )
    table = write_comparison(
        out,
        args.out,
        command=args.command_line,
        device=device_name(device),
        date=datetime.date.today().isoformat(),
    )
    print(markdown_table(table, COLUMNS), end="")
    print(f"written: {args.out}")
    return 0


def cmd_curves(args: argparse.Namespace) -> int:
    from jfb.curves import read_curve, write_curves

    labels = [x.strip() for x in args.labels.split(",")] if args.labels else [None] * len(args.runs)
    if len(labels) != len(args.runs):
        raise ValueError(f"--labels names {len(labels)} runs, but {len(args.runs)} were given")
    curves = [read_curve(run, label) for run, label in zip(args.runs, labels, strict=True)]
    print(write_curves(args.out, curves, [60 * m for m in args.budgets],
                       command=args.command_line), end="")
    print(f"written: {args.out}")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from jfb.tasks import TASKS

    for name, task in TASKS.items():
        print(f"{name:20s} {task.description}")
    return 0


COMMANDS = {
    "demo": cmd_demo,
    "train": cmd_train,
    "eval": cmd_eval,
    "restore": cmd_restore,
    "deblur": cmd_deblur,
    "degrade": cmd_degrade,
    "compare": cmd_compare,
    "curves": cmd_curves,
    "tasks": cmd_tasks,
}

if __name__ == "__main__":
    raise SystemExit(main())
