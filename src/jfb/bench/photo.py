"""Scenario ``photo``: what ``jfb deblur`` costs on photos of 1, 4 and 12 megapixels.

A photo of each size is a mosaic of scikit-image's own photos (three rows, each photo
scaled to its row's height: a 12-megapixel mosaic has them about 2x larger; nothing is
downloaded), 4:3, blurred and noised (seeded) as the model's task says, or, for a model trained
across blurs (the default model of ``jfb deblur``), as :data:`PHOTO_TASK` says (the protocol's
5x5 Gaussian, sigma 5, zero padding, noise 0.005), and rounded to 8 bits as a file would be.
Each size is restored by :func:`jfb.deblur.restore_tensor`, the path of ``jfb deblur`` (whole
or in tiles, as the memory budget says; a model trained across blurs is told the blur, as
``jfb deblur --kernel gaussian:5:5 --padding zeros`` tells it, and its noise is estimated), in
a fresh process
of its own (spawned), so that its peak resident memory is its own; the allocator is tuned
there as ``jfb deblur`` tunes it (unless ``--malloc default``) and torch gets the parent's
thread count (``--threads``).

Per size: wall, user and system CPU seconds of the restoration (file reading and writing and
the interpreter's start left out), CPU seconds per megapixel, minor page faults, peak RSS of the
process, the iterations, PSNR against the clean mosaic, and the denoiser's share: its calls,
its CPU and wall seconds, and its achieved GFLOP/s counted on the image's pixels (the halo of
its chunks is work it does beyond that) beside the floor, the denoiser's FLOPs at the CPU's
nominal fp32 peak (:data:`PEAK_GFLOPS_PER_CORE` per thread).
"""

from __future__ import annotations

import math
import multiprocessing
import resource
import time
from typing import Any

import torch
import torch.nn.functional as F

from jfb.bench.common import Context

#: Nominal fp32 peak of one core of this project's CPU (AMD EPYC, Zen 4: AVX-512 on two 256-bit
#: FMA pipes, 32 FLOP per cycle at about 3 GHz): the issue's "near 190 GFLOP/s for 2 cores".
PEAK_GFLOPS_PER_CORE = 95.0
#: The photos' blur and noise for a model trained across blurs (told this blur).
PHOTO_TASK = "celeba-gauss5"
#: scikit-image's colour photos (and one grey one) that tile the mosaic, in order.
MOSAIC_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left",
                 "immunohistochemistry", "camera", "hubble_deep_field")


def mosaic(height: int, width: int, rows: int = 3) -> torch.Tensor:
    """A (3, height, width) photo in [0, 1] without gaps: ``rows`` rows of scikit-image's photos,
    each scaled (bicubic) to the row's height and placed left to right, the last one cut."""
    from jfb.data.builtin import natural_images

    photos = [x for _, x in natural_images(MOSAIC_PHOTOS)]
    out = torch.empty(3, height, width)
    edges = [round(i * height / rows) for i in range(rows + 1)]
    k = 0
    for top, bottom in zip(edges[:-1], edges[1:], strict=True):
        col = 0
        while col < width:
            photo = photos[k % len(photos)]
            k += 1
            h = bottom - top
            w = max(1, round(photo.shape[-1] * h / photo.shape[-2]))
            scaled = F.interpolate(photo[None], size=(h, w), mode="bicubic", align_corners=False,
                                   antialias=h < photo.shape[-2])[0].clamp(0, 1)
            n = min(w, width - col)
            out[:, top:bottom, col : col + n] = scaled[..., :n]
            col += n
    return out


def photo_shape(megapixels: float) -> tuple[int, int]:
    """(height, width) of a 4:3 photo of about ``megapixels`` (12 -> 3000 x 4000)."""
    height = round(math.sqrt(megapixels * 1e6 * 3 / 4))
    return height, round(height * 4 / 3)


def conv_flops_per_pixel(net: torch.nn.Module) -> int:
    """Multiply-adds x 2 of one application of a convolutional net, per pixel."""
    return sum(2 * m.weight.numel() for m in net.modules() if isinstance(m, torch.nn.Conv2d))


def _usage() -> tuple[float, float, float, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), r.ru_utime, r.ru_stime, r.ru_minflt


def _measure(megapixels: float, checkpoint: str | None, threads: int, tune: bool,
             seed: int) -> dict[str, Any]:
    """One size, in the current (fresh) process: the row of :func:`scenario_photo`."""
    from jfb import cpu_malloc
    from jfb.deblur import default_checkpoint, restore_tensor
    from jfb.metrics import psnr
    from jfb.pipeline import load_model, read_config, replace_blur
    from jfb.tasks import get_task

    if tune:
        cpu_malloc.tune_cpu_malloc()
    torch.set_num_threads(threads)
    path = checkpoint or str(default_checkpoint())
    task = get_task(read_config(path).task)
    op = None
    if task.is_family:  # told the photos' blur, as jfb deblur --kernel tells it
        task = get_task(PHOTO_TASK)
        op = replace_blur(task.kernel, task.padding)
    model, cfg, _ = load_model(path, op=op)
    h, w = photo_shape(megapixels)
    clean = mosaic(h, w)
    with torch.no_grad():
        y = task.noise()(model.op.A(clean[None]), generator=torch.Generator().manual_seed(seed))
    y = (y[0].clamp(0, 1) * 255).round() / 255  # an 8-bit file
    net = model.net
    calls: list[tuple[int, float, float]] = []
    forward = net.forward

    def timed(x: torch.Tensor) -> torch.Tensor:
        t0, c0 = time.perf_counter(), time.process_time()
        out = forward(x)
        calls.append((x.shape[0] * x.shape[-2] * x.shape[-1], time.perf_counter() - t0,
                      time.process_time() - c0))
        return out

    net.forward = timed
    notes: list[str] = []
    iterations: list[int] = []
    model_solve = model.solve

    def counted(v: torch.Tensor, physics=None, **budget):  # restore_tensor's calls
        out, stats = model_solve(v, physics, **budget)
        iterations.extend(stats.iterations.tolist())
        return out, stats

    model.solve = counted
    start = _usage()
    x = restore_tensor(model, cfg, y, report=notes.append, warn=notes.append)
    end = _usage()
    wall, user, system = end[0] - start[0], end[1] - start[1], end[2] - start[2]
    flop = conv_flops_per_pixel(net) * sum(c[0] for c in calls)
    net_wall, net_cpu = sum(c[1] for c in calls), sum(c[2] for c in calls)
    peak_gflops = PEAK_GFLOPS_PER_CORE * threads
    mp = h * w / 1e6
    return {
        "megapixels": mp, "height": h, "width": w, "threads": threads,
        "wall_s": wall, "user_s": user, "system_s": system,
        "cpu_s_per_megapixel": (user + system) / mp,
        "system_over_user": system / user if user > 0 else None,
        "minor_faults": end[3] - start[3],
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "iterations": iterations, "psnr_db": float(psnr(x[None], clean[None])),
        "input_psnr_db": float(psnr(y[None], clean[None])),
        "denoiser_calls": len(calls), "denoiser_pixels": sum(c[0] for c in calls),
        "denoiser_gflop": flop / 1e9, "denoiser_wall_s": net_wall, "denoiser_cpu_s": net_cpu,
        "denoiser_gflops": flop / 1e9 / net_wall if net_wall > 0 else None,
        "denoiser_floor_s": flop / 1e9 / peak_gflops, "peak_gflops_assumed": peak_gflops,
        "notes": notes,
    }


def _child(queue: Any, args: tuple) -> None:
    try:
        queue.put(("ok", _measure(*args)))
    except BaseException as exc:  # reported by the parent
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def run_in_child(megapixels: float, checkpoint: str | None, threads: int, tune: bool,
                 seed: int = 0) -> dict[str, Any]:
    """:func:`_measure` in a spawned process of its own (its peak RSS is that size's)."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, (megapixels, checkpoint, threads, tune, seed)))
    proc.start()
    status, value = queue.get()
    proc.join()
    if status != "ok":
        raise RuntimeError(f"photo scenario, {megapixels} MP: {value}")
    return value


def scenario_photo(ctx: Context) -> dict[str, Any]:
    """``jfb deblur`` (:func:`jfb.deblur.restore_tensor`) on mosaic photos of each size of the
    preset's ``photo_megapixels``, one fresh process each (see the module)."""
    from jfb import cpu_malloc

    if ctx.device.type != "cpu":
        return {"skipped": True, "reason": "the photo scenario measures the CPU path"}
    threads = torch.get_num_threads()
    tune = cpu_malloc.malloc_state() != "default"
    rows = []
    for mp in ctx.cfg.photo_megapixels:
        row = run_in_child(mp, ctx.checkpoint, threads, tune, seed=ctx.cfg.seed)
        rows.append(row)
        ctx.log(f"photo: {row['height']}x{row['width']}: {row['wall_s']:.1f} s wall, "
                f"{row['cpu_s_per_megapixel']:.1f} CPU-s/MP, "
                f"{row['peak_rss_bytes'] / 2**30:.2f} GiB, {row['psnr_db']:.2f} dB")
    return {
        "skipped": False,
        "model": ctx.checkpoint or "the default model (jfb deblur without --checkpoint)",
        "photos": "4:3 mosaic of scikit-image photos in 3 rows, blurred and noised by the "
        f"model's task or, for a model trained across blurs, {PHOTO_TASK}'s (seeded), "
        "rounded to 8 bits",
        "threads": threads,
        "allocator": "tuned as jfb deblur tunes it" if tune else "glibc's defaults",
        "rows": rows,
    }
