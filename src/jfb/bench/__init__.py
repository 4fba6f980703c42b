"""Benchmarks of training and inference cost: ``jfb bench --scenario NAME``.

Scenarios (each writes ``<out>/<scenario>_<size>.json`` and a markdown table ``.md`` beside it,
with the device, date, torch version, thread count and exact command inside the JSON):

``step``       time per training step of DE-GRAD + DnCNN for JFB, JFB(2), IFT (Anderson, GMRES),
               Neumann(5) and Unrolled, split into forward solve / backward / optimiser step, and
               the size of the autograd graph (bytes of tensors saved for backward; plus
               ``torch.cuda.max_memory_allocated`` on CUDA). Three tables: all strategies at the
               same forward tolerance; a sweep over the forward iteration cap with a
               fixed-iteration forward (equal forward work); a sweep over the image size.
``solver``     applications of T and time to reach tol 1e-4 for Picard and Anderson, and a
               per-sample histogram of the iterations.
``floor``      t_f (one application of T, no grad), t_fb (one application, forward + backward);
               the floor of a JFB step with n forward iterations is n t_f + t_fb; the measured
               step over that floor, for Picard / Anderson and ``check_every`` 1 / 10, and each
               solver's own cost per iteration measured on a map that costs almost nothing.
``peer``       torchdeq 0.1.0 (optional, skipped when not importable) on the same T: its Anderson
               with its IFT backward and with its one-step phantom gradient, against ours.
``inference``  ms per 128x128 and per 512x512 image, eval mode, no grad.
``malloc``     (CPU, run on its own) inference and JFB steps with glibc's default allocator,
               then with :func:`tune_cpu_malloc`, in one process.
``photo``      (CPU, run on its own) ``jfb deblur`` of 1, 4 and 12-megapixel photos with the
               default model (or ``--checkpoint``): CPU seconds per megapixel, peak memory,
               page faults, PSNR, the denoiser's GFLOP/s against its floor; one process per size.

Rules (docs/PROTOCOL.md, "Cost measurements"): warm-up first, synchronise CUDA before every
clock read, median of repeats, ratios only between numbers of one run. Sizes: ``full`` (the
paper's 17-layer 64-channel DnCNN, batch 16, 128x128 RGB; meant for a GPU), ``small`` (a
CPU-sized version) and ``tiny`` (seconds; for tests). With ``--checkpoint`` every scenario
times that trained model (any implicit kind, its own net and operator) in place of the fresh
DE-GRAD, at the preset's batch, image sizes and iteration caps.

Modules, imports pointing down the list only: :mod:`~jfb.bench.memory` (the saved-tensor meter),
:mod:`~jfb.bench.common` (size presets, context, clocks, synthetic model and data, the timed
training step); one module
per scenario (:mod:`~jfb.bench.step`, :mod:`~jfb.bench.solver`, :mod:`~jfb.bench.floor`,
:mod:`~jfb.bench.peer`, :mod:`~jfb.bench.inference`, :mod:`~jfb.bench.malloc`,
:mod:`~jfb.bench.photo`);
:mod:`~jfb.bench.report` (markdown of a record, no other bench import);
:mod:`~jfb.bench.runner` (the scenario registry and :func:`run_scenario`);
:mod:`~jfb.bench.cli` (the parser and :func:`main`). This package re-exports the public names.
"""

from jfb.bench.cli import build_parser, main
from jfb.bench.common import FIXED_TOL, NOISE, SIZES, BenchSize, fresh_model, synthetic_pair
from jfb.bench.floor import scenario_floor
from jfb.bench.inference import scenario_inference
from jfb.bench.malloc import scenario_malloc
from jfb.bench.memory import SavedTensorMeter, saved_tensor_bytes
from jfb.bench.peer import scenario_peer
from jfb.bench.photo import scenario_photo
from jfb.bench.report import to_markdown
from jfb.bench.runner import ALL, SCENARIOS, run_scenario
from jfb.bench.solver import scenario_solver
from jfb.bench.step import scenario_step
from jfb.cpu_malloc import tune_cpu_malloc

__all__ = [
    "ALL",
    "FIXED_TOL",
    "NOISE",
    "SCENARIOS",
    "SIZES",
    "BenchSize",
    "SavedTensorMeter",
    "build_parser",
    "fresh_model",
    "main",
    "run_scenario",
    "saved_tensor_bytes",
    "scenario_floor",
    "scenario_inference",
    "scenario_malloc",
    "scenario_peer",
    "scenario_photo",
    "scenario_solver",
    "scenario_step",
    "synthetic_pair",
    "to_markdown",
    "tune_cpu_malloc",
]
