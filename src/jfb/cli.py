"""The `jfb` command line: demo, train, eval, restore, deblur, degrade, compare, tasks, bench.

Errors in what the user handed in are one line on stderr and exit status 2 (no traceback unless
``--debug``); an unexpected failure is exit status 1 with a pointer to ``--debug``. The options
are defined in :mod:`jfb.cli_parsers`; each command here only calls one job.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from jfb.cli_parsers import build_parser, restore_kwargs


def main(argv: list[str] | None = None) -> int:
    """Run the `jfb` command on ``argv`` (default: the process's arguments); the exit status."""
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
        from jfb.errors import INPUT_ERRORS, one_line

        msg = one_line(exc)
        if isinstance(exc, INPUT_ERRORS):
            print(f"jfb {args.command}: error: {msg}", file=sys.stderr)
            return 2
        print(
            f"jfb {args.command}: internal error: {type(exc).__name__}: {msg} "
            "(run again with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


#: Commands whose models run many applications of T (tuned allocator on CPU).
COMPUTE_COMMANDS = ("demo", "train", "eval", "restore", "deblur", "compare", "benchmark")


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
    from jfb.quality import check_images, parse_metrics
    from jfb.report import write_evaluation
    from jfb.tasks import get_task

    metrics = parse_metrics(args.metrics)  # unknown names and missing packages first
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
    if len(pairs):
        check_images(metrics, pairs[0][0].shape)
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
            metrics=metrics,
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
    notes = [f"Metrics: {'; '.join(m.describe() for m in metrics)}."]
    print(write_evaluation(out, row, res, pairs, notes), end="")
    print(f"written: {out}")
    return 0


def cmd_deblur(args: argparse.Namespace) -> int:
    return _restore_files(args, kernel=args.kernel, padding=args.padding)


def cmd_restore(args: argparse.Namespace) -> int:
    from jfb.tasks import get_task

    return _restore_files(args, op=get_task(args.task).operator() if args.task else None,
                          mask=args.mask)


def _restore_files(args: argparse.Namespace, **job) -> int:
    """One input to ``-o FILE`` (:func:`jfb.deblur.restore_file`), else a batch
    (:func:`jfb.batch.restore_images`) that ends with its summary and exit status 2 when a file
    failed."""
    from jfb.batch import is_batch, restore_images
    from jfb.deblur import restore_file

    if not is_batch(args.inputs, args.output):
        dst = restore_file(args.inputs[0], args.output, **job, **restore_kwargs(args))
        print(f"written: {dst}")
        return 0
    result = restore_images(
        args.inputs, args.output, **job, **restore_kwargs(args),
        error=lambda line: print(f"jfb {args.command}: error: {line}", file=sys.stderr),
    )
    print(result.summary())
    return 2 if result.failed else 0


def cmd_degrade(args: argparse.Namespace) -> int:
    from jfb.deblur import degrade_file
    from jfb.tasks import get_task

    dst = degrade_file(args.input, args.output, get_task(args.task), seed=args.seed,
                       force=args.force)
    print(f"written: {dst}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import datetime

    from jfb.compare import compare
    from jfb.compare_report import columns, ranking_notes, rankings, write_comparison
    from jfb.device import device_name, resolve_device
    from jfb.quality import parse_metrics
    from jfb.report import markdown_table
    from jfb.tasks import get_task

    metrics = parse_metrics(args.metrics)  # unknown names and missing packages first
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
        metrics=metrics,
    )
    table = write_comparison(
        out,
        args.out,
        command=args.command_line,
        device=device_name(device),
        date=datetime.date.today().isoformat(),
    )
    print(markdown_table(table, columns(metrics)), end="")
    for line in ranking_notes(rankings(out["rows"], metrics)):
        print(line)
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


def cmd_benchmark(args: argparse.Namespace) -> int:
    from jfb.benchmark import benchmark_deblur, resolve_methods, write_benchmark

    result = benchmark_deblur(
        resolve_methods(args.methods), settings=[s.strip() for s in args.settings.split(",")],
        images=args.images, every_kernel=not args.levin_cycle, tol=args.tol,
        max_iter=args.max_iter, progress=not args.quiet)
    print(write_benchmark(result, args.out, command=args.command_line), end="")
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
    "benchmark": cmd_benchmark,
    "tasks": cmd_tasks,
}

if __name__ == "__main__":
    raise SystemExit(main())
