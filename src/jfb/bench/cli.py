"""The ``jfb bench`` command line: its argument parser and :func:`main`, reached by
``jfb bench ...`` (through :func:`jfb.cli.main`) and by ``python -m jfb.bench ...``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jfb import cpu_malloc as allocator
from jfb.bench.common import SIZES
from jfb.bench.runner import ALL, SCENARIOS, run_scenario


def build_parser() -> argparse.ArgumentParser:
    """The ``jfb bench`` argument parser."""
    p = argparse.ArgumentParser(
        prog="jfb bench",
        description="Training and inference cost of implicit models: per-step time and memory "
        "of every gradient strategy, solver convergence, the floor of a JFB step, torchdeq, "
        "inference. Writes JSON + markdown per scenario.",
    )
    p.add_argument("--scenario", default="all", choices=[*SCENARIOS, "all"],
                   help="which benchmark (default: all = every one but malloc, which "
                   "compares the CPU allocator settings and must run on its own, and photo, "
                   "jfb deblur on 1, 4 and 12-megapixel photos)")
    p.add_argument("--size", default="small", choices=list(SIZES),
                   help="full: the paper's sizes (for a GPU); small: CPU-sized; tiny: seconds")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    p.add_argument("--out", default="bench-results", help="output folder (default bench-results)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (median reported)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up runs per configuration")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--checkpoint", default=None,
                   help="a trained implicit model (DE-GRAD, DE-Prox or DE-ADMM checkpoint): "
                   "every scenario times it, with its own net and operator, instead of the "
                   "fresh DE-GRAD of --size (whose batch, image sizes and iteration caps still "
                   "apply); give it its own --out, the file names do not say which model ran")
    p.add_argument("--malloc", default="tuned", choices=["tuned", "default"],
                   help="CPU only: 'tuned' (default) keeps freed memory in glibc's heap "
                   "(see tune_cpu_malloc); 'default' leaves the allocator as it is")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    """``jfb bench``: run the chosen scenario(s); returns the exit status."""
    prog = "jfb bench" if argv is not None else "python -m jfb.bench"
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--"]:  # "jfb bench -- --scenario step" passes the separator through
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    names = list(ALL) if args.scenario == "all" else [args.scenario]
    command = " ".join([prog, *argv])
    if args.malloc == "tuned" and "malloc" not in names and not args.device.startswith("cuda"):
        allocator.tune_cpu_malloc()
    for name in names:
        record = run_scenario(
            name, size=args.size, device=args.device, out=args.out, repeats=args.repeats,
            warmup=args.warmup, checkpoint=args.checkpoint, threads=args.threads,
            quiet=args.quiet, command=command,
        )
        if not args.quiet:
            print(f"[bench] wrote {Path(args.out) / f'{name}_{args.size}'}.json/.md "
                  f"({record['wall_s']:.1f} s)", file=sys.stderr)
    return 0
