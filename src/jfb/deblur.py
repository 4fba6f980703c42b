"""Image files in and out: restore a measurement with a trained model (`jfb restore`,
`jfb deblur`), or simulate one from a clean image (`jfb degrade`)."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jfb.atomic import atomic_path
from jfb.config import Config
from jfb.data import (
    IMAGE_SUFFIXES,
    Photo,
    load_image,
    output_notes,
    read_photo,
    resolve_output,
    save_image,
    write_photo,
)
from jfb.diagnose import input_noise, noise_estimable, trust_warnings
from jfb.errors import ConfigError, DataError, TrustWarning
from jfb.margins import margin_for
from jfb.physics import (
    Blur,
    Downsample,
    Identity,
    LinearOperator,
    Mask,
    Physics,
    quantisation_step,
)
from jfb.physics.compose import Composed
from jfb.physics.mask import MaskOperator
from jfb.physics.noise import jpeg_noise_std
from jfb.pipeline import CHANNELS, NO_BLUR, LoadedModel, load_model, replace_blur
from jfb.progress import progress_bar
from jfb.restore import MIN_MARGIN, operator_reach, plan_tiles, restore_tiled, tile_for_budget
from jfb.tasks import Task, get_task

#: The models shipped inside the package (trained by the project; model cards beside them), by
#: the names ``--checkpoint`` takes: ``natural`` (the default: trained across blurs and noise
#: levels on BSDS photos, it must be told the kernel) and ``faces`` (trained on CelebA faces for
#: the faces protocol's one blur, a 5x5 Gaussian: the model of the faces tables). ``default``
#: names :data:`DEFAULT_NAME`.
SHIPPED = {"natural": "natural.safetensors", "faces": "faces.safetensors"}
DEFAULT_NAME = "natural"


def is_shipped(name: str) -> bool:
    """Whether ``name`` names a shipped model (a key of :data:`SHIPPED`, or ``"default"``)."""
    return name == "default" or name in SHIPPED


def shipped_checkpoint(name: str) -> Path:
    """Path of the shipped model ``name`` (a key of :data:`SHIPPED`, or ``"default"``)."""
    name = DEFAULT_NAME if name == "default" else name
    if name not in SHIPPED:
        raise DataError(f"no shipped model {name!r}; the shipped models are "
                        f"{', '.join(SHIPPED)} (default: {DEFAULT_NAME})")
    path = Path(str(resources.files("jfb") / "weights" / SHIPPED[name]))
    if not path.is_file():
        raise DataError(f"the shipped model {name!r} is missing at {path}; pass --checkpoint")
    return path


def default_checkpoint() -> Path:
    """Path of the default model shipped inside the package (:data:`DEFAULT_NAME`)."""
    return shipped_checkpoint(DEFAULT_NAME)


def checkpoint_path(checkpoint: str | os.PathLike[str] | None) -> Path:
    """A checkpoint file, or a shipped model's name (``natural``, ``faces``, ``default``) when no
    such file exists; None: the default model."""
    if checkpoint is None:
        return default_checkpoint()
    path = Path(checkpoint)
    if not path.exists() and is_shipped(str(checkpoint)):
        return shipped_checkpoint(str(checkpoint))
    return path


def load_measurement(path: str | os.PathLike[str]) -> torch.Tensor:
    """A measurement as a float tensor (C, H, W): an image file (values in [0, 1]), or a ``.npy``
    array (H, W) or (C, H, W) of finite values in any range (e.g. a sinogram)."""
    p = Path(path)
    if p.suffix.lower() != ".npy":
        return load_image(p, mode="keep")
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    try:
        arr = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{p}: not a readable .npy array ({exc})") from None
    if arr.dtype.kind not in "fiu" or arr.ndim not in (2, 3) or arr.size == 0:
        raise DataError(f"{p}: expected a non-empty (H, W) or (C, H, W) numeric array, got "
                        f"{arr.dtype} {arr.shape}")
    if not np.isfinite(arr).all():
        raise DataError(f"{p}: the array has non-finite values")
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    return t[None] if t.dim() == 2 else t


def takes_noise(model: torch.nn.Module) -> bool:
    """Whether ``model`` uses the noise std a call's physics carries (a DE-ADMM with a noise
    rule, or a net on a Wiener deconvolution)."""
    return getattr(model, "noise_ref", None) is not None or getattr(model, "init", "") == "wiener"


def solve_under(model: torch.nn.Module, y: torch.Tensor, op: LinearOperator,
                sigma: float) -> tuple[torch.Tensor, Any]:
    """(x_hat, stats) of ``y`` under the operator ``op`` and noise std ``sigma``, passed with the
    call (the model is not changed); the noise only for a model that takes it. ``stats``: the
    solve's :class:`jfb.deq.SolverStats`, None for a feedforward model."""
    return model.solve(y, call_physics(model, op, sigma))


def call_physics(model: torch.nn.Module, op: LinearOperator, sigma: float) -> Physics:
    """The physics of a call: ``op``, and the noise std ``sigma`` (the same for every sample of
    the batch) for a model that takes it."""
    return Physics(op, float(sigma) if takes_noise(model) else None)


#: The smallest noise std ``noise="auto"`` gives a model (a clean, smooth image reads 0, which
#: would switch the prior off).
NOISE_FLOOR = 1e-3

#: Context pixels each tile gets beyond its core when the operator has no kernel (denoising,
#: super-resolution, masks), and the least any gets (:data:`jfb.restore.MIN_MARGIN`).
DEFAULT_MARGIN = MIN_MARGIN

def memory_per_pixel(model: torch.nn.Module) -> float:
    """Bytes of working memory per output pixel of an inference solve, an upper estimate: float32
    state (channels x 2 for DE-ADMM's (z, u)) times the copies a solve holds at its peak (the
    2 m slots of Anderson's history with memory m, plus 14 for the iterate, T(x), the next
    iterate and the temporaries of T, its x-update and the initial estimate: 576 bytes for the
    default model, whose peak RSS grew by 570 bytes per pixel from 1 to 4 megapixels), plus 6
    feature maps of the net's widest layer unless the net runs in pieces (a DnCNN on the CPU,
    whose feature maps stay under its ``chunk_bytes`` whatever the image)."""
    state = CHANNELS * (2 if hasattr(model, "rho") else 1)
    solver = getattr(model, "solver", None)
    copies = 2 * getattr(solver, "m", 0) + 14 if solver is not None else 2
    width = max((mod.out_channels for mod in model.modules()
                 if isinstance(mod, torch.nn.Conv2d)), default=CHANNELS)
    net = getattr(model, "net", None)
    on_cpu = next(iter(model.parameters()), torch.empty(0)).device.type == "cpu"
    in_pieces = on_cpu and bool(getattr(net, "chunk_bytes", 0))
    return 4.0 * (state * copies + (0 if in_pieces else 6 * width))


def default_memory_budget(device: torch.device) -> float:
    """Half the memory available now: free GPU memory on CUDA, MemAvailable on Linux, else
    4 GiB."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free / 2
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 / 2
    except OSError:
        pass
    return 4 * 2**30


def _scale_of(op: LinearOperator, y: torch.Tensor) -> int:
    """Image pixels per measurement pixel along each side (1 but for super-resolution)."""
    return op.image_shape((1, *y.shape))[-1] // y.shape[-1]


def tileable(op: LinearOperator) -> bool:
    """Whether a measurement by ``op`` can be cut into tiles: translation-invariant operators
    (blur, denoising, super-resolution); masks and tomography depend on the whole image."""
    return isinstance(op, (Blur, Identity, Downsample))


@torch.no_grad()
def restore_tensor(
    model: torch.nn.Module,
    cfg: Config,
    y: torch.Tensor,
    *,
    op: LinearOperator | None = None,
    noise: float | str | None = None,
    mask: torch.Tensor | None = None,
    max_memory: float | None = None,
    tile: int | None = None,
    margin: int | None = None,
    report: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
    progress: bool = False,
    on_tile: Callable[[int, int], None] | None = None,
    jpeg_quality: float | None = None,
) -> torch.Tensor:
    """x_hat for the measurement y (C, H, W), C = 1 or 3, with a model loaded by
    :func:`jfb.pipeline.load_model` (trained under ``cfg``); returns (C, H, W) in [0, 1].

    ``op``: the operator of the measurement (default: the model's own, the one it was loaded
    with). ``noise``, the input's noise std, goes with the physics of the call to a model that
    takes it (:func:`takes_noise`: DE-ADMM's rho rule, a Wiener initial estimate);
    ``"auto"`` estimates it (:func:`jfb.physics.estimate_noise_std` through the model's blur,
    with the rounding of 8- and 16-bit values taken out; blur and denoising only), and for a
    JPEG of ``jpeg_quality`` (:attr:`jfb.data.Photo.jpeg_quality`) adds its compression error as
    noise (:func:`jfb.diagnose.input_noise`).
    ``mask`` (1, H, W), nonzero = observed, gives an inpainting model the pixels actually
    missing. Blur, denoising, super-resolution and given masks are solved on the whole image
    when its working memory (:func:`memory_per_pixel`) fits ``max_memory`` bytes (default: half
    the free memory), else in tiles (:func:`jfb.restore.restore_tiled`) of ``tile`` pixels
    (default: the largest that fits) with ``margin`` pixels of context, whose borders assume
    nothing about the outside. Masks with a fixed pattern and tomography take the whole
    measurement. One-channel measurements are replicated to RGB for the model and the result is
    averaged back. ``report`` receives one-line notes; ``warn`` one-line warnings that the result
    may not be trusted (:func:`jfb.diagnose.trust_warnings`; default: Python warnings of
    category :class:`jfb.errors.TrustWarning`); ``progress`` shows a progress bar; ``on_tile``
    is told (tiles done, tiles in all) after each piece solved (1 for the whole image).
    ``margin`` defaults to :func:`jfb.margins.margin_for` (from the blur's kernel and the
    model); the tiles of a circular blur wrap around the image.
    """
    if y.dim() != 3 or y.shape[0] not in (1, CHANNELS):
        raise DataError(f"expected a (1 or {CHANNELS}, H, W) measurement, got {tuple(y.shape)}")
    dev = next(iter(model.parameters())).device
    op = op if op is not None else model.op
    if op is None:
        raise DataError(NO_BLUR)
    if mask is not None and not isinstance(op, MaskOperator):
        raise DataError(f"--mask applies to inpainting models; this one measures with "
                        f"{type(op).__name__}")
    if mask is not None and mask.shape[-2:] != y.shape[-2:]:
        raise DataError(f"the mask is {mask.shape[-1]}x{mask.shape[-2]}, the input "
                        f"{y.shape[-1]}x{y.shape[-2]}")
    if isinstance(op, Blur) and op.padding == "valid":
        raise DataError("padding 'valid' changes the image size; use zeros, circular or reflect")
    if isinstance(op, Blur) and max(op.kernel_size) > min(y.shape[-2:]):
        kh, kw = op.kernel_size
        raise DataError(f"the {kw}x{kh} kernel is larger than the {y.shape[-1]}x{y.shape[-2]} "
                        "image")
    step = quantisation_step(y)
    told = noise is not None
    sigma, seen = _noise_level(model, cfg, op, y, noise, step, jpeg_quality, report)
    grey = y.shape[0] == 1
    y = (y.expand(CHANNELS, -1, -1) if grey else y).to(dev)[None]
    observed = None if mask is None else (mask.reshape(1, 1, *y.shape[-2:]) != 0).to(y)
    if observed is None and not tileable(op):
        try:
            op.image_shape(y.shape)
        except ValueError as exc:
            raise DataError(str(exc)) from None
        x, stats = solve_under(model, y, op, sigma)
        solves, reach = [stats], 0
    else:
        if min(y.shape[-2:]) < 8:
            raise DataError(f"the input is too small ({y.shape[-1]}x{y.shape[-2]} pixels)")
        scale = 1 if observed is not None else _scale_of(op, y[0])
        reach = operator_reach(op.A, scale=scale) if observed is None else 0
        if margin is None:
            margin = margin_for(model, call_physics(model, op, sigma), reach)
        solves = []
        x = _solve_in_pieces(model, y, op, sigma, observed, scale=scale, guard=reach,
                             tile=tile, margin=margin, max_memory=max_memory, report=report,
                             progress=progress, on_tile=on_tile, solves=solves)
    x = x.clamp(0, 1)
    measured = op if observed is None else Mask(observed)
    for line in trust_warnings(measured, x, y, sigma=sigma, step=step, border=reach,
                               noise_told=told, can_adapt=takes_noise(model),
                               jpeg_quality=jpeg_quality, seen=seen,
                               solves=[s for s in solves if s is not None]):
        if warn is not None:
            warn(line)
        else:
            warnings.warn(line, TrustWarning, stacklevel=3)
    x = x[0].cpu()
    return x.mean(dim=0, keepdim=True) if grey else x


def _noise_level(model: torch.nn.Module, cfg: Config, op: LinearOperator, y: torch.Tensor,
                 noise: float | str | None, step: float, jpeg_quality: float | None,
                 report: Callable[[str], None] | None) -> tuple[float, float | None]:
    """(the noise std the model is to assume, the input's noise as read or None): ``noise``,
    estimated for ``"auto"`` (a JPEG's compression error included,
    :func:`jfb.diagnose.input_noise`), else the one it was trained at or told when loaded (a
    model trained across noise levels is told the estimate unless given one)."""
    if noise is None and get_task(cfg.task).is_family:
        noise = "auto"
    if noise == "auto":
        if not noise_estimable(op):
            raise DataError(f"--noise auto estimates the noise of blurred or noisy images; this "
                            f"model measures with {type(op).__name__}: give the value")
        seen = input_noise(op, y[None], step)  # one estimate (an FFT of the whole image)
        read = seen if jpeg_quality is None else jpeg_noise_std(seen, jpeg_quality)
        noise = max(read, NOISE_FLOOR)
        if report is not None:
            rounding = {1 / 255: " (8-bit rounding taken out)",
                        1 / 65535: " (16-bit rounding taken out)"}.get(step, "")
            if jpeg_quality is not None:
                rounding = (f" for a JPEG of quality {jpeg_quality:.0f}: its compression error "
                            f"counted as noise (the noise alone reads "
                            f"{max(seen, NOISE_FLOOR):.3g}{rounding})")
            report(f"estimated noise std: {noise:.4g}{rounding}")
        return _noise_told(model, cfg, noise), read
    if noise is None:  # what it was trained at, or was told when loaded (rho_factor = ratio^2)
        return (get_task(cfg.task).noise_sigma * math.sqrt(getattr(model, "rho_factor", 1.0)),
                None)
    return _noise_told(model, cfg, noise), None


def _noise_told(model: torch.nn.Module, cfg: Config, noise: float | str) -> float:
    """``noise``, checked: a positive number (or 0 for a model with a noise floor), for a
    model that can be told it."""
    if isinstance(noise, str):
        raise DataError(f"noise must be a number or 'auto', got {noise!r}")
    if not noise > 0 and not float(getattr(model, "noise_floor", lambda: 0.0)()) > 0:
        raise DataError(f"noise must be a positive number for this model (it has no noise "
                        f"floor), got {noise!r}")
    if not takes_noise(model):
        raise DataError(f"the noise level applies to DE-ADMM models (their rho follows "
                        f"sigma^2) and nets on a Wiener estimate; this one is {cfg.model.kind}")
    return float(noise)


def _solve_in_pieces(
    model: torch.nn.Module,
    y: torch.Tensor,
    op: LinearOperator,
    sigma: float,
    observed: torch.Tensor | None,
    *,
    scale: int,
    guard: int,
    tile: int | None,
    margin: int,
    max_memory: float | None,
    report: Callable[[str], None] | None,
    progress: bool,
    on_tile: Callable[[int, int], None] | None,
    solves: list,
) -> torch.Tensor:
    """The model's x_hat of y (1, C, H, W) (a tileable operator, or a mask ``observed``), on
    the whole image when it fits the memory budget, else in tiles (see :func:`restore_tensor`);
    the statistics of every solve (one per call of the model) are appended to ``solves``."""
    if tile is None:
        budget = default_memory_budget(y.device) if max_memory is None else max_memory
        try:
            tile = tile_for_budget(*y.shape[-2:], bytes_per_pixel=memory_per_pixel(model),
                                   budget=budget, margin=margin, scale=scale)
        except ValueError as exc:
            raise DataError(str(exc)) from None
    if tile is None or tile >= max(y.shape[-2:]):  # the whole image at once
        with progress_bar(1, "restoring the whole image", unit="image", enabled=progress) as bar:
            if observed is None:
                x, stats = solve_under(model, y, op, sigma)
            else:
                x, stats = solve_under(model, y * observed, Mask(observed), sigma)
            solves.append(stats)
            bar.update()
        if on_tile is not None:
            on_tile(1, 1)
        return x

    def solve(tiles: torch.Tensor, window: torch.Tensor, masks: torch.Tensor | None):
        inner = op if masks is None else Mask(masks)
        x, stats = solve_under(model, tiles if masks is None else tiles * masks,
                               Composed(Mask(window), inner), sigma)
        solves.append(stats)
        return x

    # circular padding measures each border from the opposite one: the tiles wrap around
    periodic = observed is None and getattr(op, "padding", None) == "circular"
    boxes = plan_tiles(*y.shape[-2:], tile, margin, periodic=periodic)
    n = len(boxes)
    if report is not None:
        h, w = max(b.r1 - b.r0 for b in boxes), max(b.c1 - b.c0 for b in boxes)
        report(f"restoring in {n} tiles of up to {h}x{w} pixels (+{margin} of context)")
    done = 0
    with progress_bar(n, "restoring", unit="tile", enabled=progress) as bar:

        def tiles_done(k: int) -> None:
            nonlocal done
            done += k
            bar.update(k)
            if on_tile is not None:
                on_tile(done, n)

        return restore_tiled(solve, y, tile=tile, margin=margin, guard=guard, aux=observed,
                             on_tile=tiles_done, periodic=periodic)


def restore_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    op: LinearOperator | Callable[[Task], LinearOperator] | None = None,
    kernel: str | None = None,
    padding: str | None = None,
    mask: str | os.PathLike[str] | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
    noise: float | str | None = None,
    max_memory: float | None = None,
    tile: int | None = None,
    margin: int | None = None,
    device: str = "auto",
    force: bool = False,
    report: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
    progress: bool = False,
) -> Path:
    """Read the measurement ``input_path``, reconstruct the image (:func:`restore_tensor`), write
    it atomically and return the path written.

    The output path is checked before any work (:func:`jfb.data.resolve_output`: a name without
    a suffix takes the input's; never the input itself; an existing file only with ``force``).
    The result keeps the input file's bit depth, grey or colour, alpha plane (untouched) and
    colour profile where the output format can hold them (:func:`jfb.data.write_photo`); a
    ``.npy`` measurement gives an 8-bit image. The forward model is the checkpoint task's
    operator, or ``op`` (the models are physics-aware: their map uses A explicitly), which may be
    a function of the checkpoint's task (see :func:`jfb.pipeline.load_model`), or the task's blur
    with another ``kernel`` and/or ``padding`` (:func:`blur_operator`). ``mask`` is an
    image or .npy of the input's size, nonzero = observed. A palette image restored without
    ``noise`` gets ``noise="auto"``: its colour quantisation (and dithering) is noise that the
    model was not trained for. ``report``, ``warn`` and ``progress`` as for
    :func:`restore_tensor`.
    """
    say = report if report is not None else (lambda _msg: None)
    src = Path(input_path)
    dst = resolve_output(src, output_path, force=force)
    if dst != Path(output_path):
        say(f"output: {dst}")
    photo, y = read_measurement(src, dst, say)
    observed = read_mask(mask)
    loaded = load_restorer(checkpoint, op=blur_operator(kernel, padding, op=op),
                           max_iter=max_iter, tol=tol, device=device)
    restore_to_file(loaded, src, photo, y, dst, noise=noise, mask=observed, say=say,
                    max_memory=max_memory, tile=tile, margin=margin, report=report, warn=warn,
                    progress=progress)
    return dst


def blur_operator(
    kernel: str | None,
    padding: str | None,
    *,
    op: LinearOperator | Callable[[Task], LinearOperator] | None = None,
) -> LinearOperator | Callable[[Task], LinearOperator] | None:
    """The ``op`` of :func:`jfb.pipeline.load_model`: the checkpoint task's blur with another
    ``kernel`` and/or ``padding`` (:func:`jfb.pipeline.replace_blur`) when one is given, else
    ``op`` as it is; ConfigError when both are."""
    if kernel is None and padding is None:
        return op
    if op is not None:
        raise ConfigError("give either an operator or a blur kernel/padding, not both")
    return replace_blur(kernel, padding)


def read_measurement(src: Path, dst: Path,
                     say: Callable[[str], None]) -> tuple[Photo | None, torch.Tensor]:
    """The measurement (C, H, W) in the file ``src`` and the photo it came from (None for a
    ``.npy`` array); what the photo has and what ``dst`` cannot keep of it said by ``say``."""
    photo = None if src.suffix.lower() == ".npy" else read_photo(src)
    for note in (photo.notes if photo is not None else ()) + output_notes(photo, dst):
        say(f"{src.name}: {note}")
    y = photo.pixels if photo is not None else load_measurement(src)
    if y.shape[0] not in (1, CHANNELS):
        raise DataError(f"{src}: expected 1 or {CHANNELS} channels, got {y.shape[0]}")
    return photo, y


def read_mask(path: str | os.PathLike[str] | None) -> torch.Tensor | None:
    """The mask file ``path`` (image or .npy) as (1, H, W), 1 = observed (nonzero in any
    channel); None for None."""
    if path is None:
        return None
    return (load_measurement(path).abs().sum(dim=0, keepdim=True) > 0).float()


def load_restorer(
    checkpoint: str | os.PathLike[str] | None,
    *,
    op: LinearOperator | Callable[[Task], LinearOperator] | None,
    max_iter: int | None,
    tol: float | None,
    device: str,
) -> LoadedModel:
    """The model of ``checkpoint`` (default: the shipped one) for restoring files, on ``device``
    (``"auto"``: CUDA when there is one), with ``op`` and the test-time budget given; a
    DataError when it has no operator (a model trained across blurs, not told one)."""
    from jfb.device import resolve_device

    ckpt = checkpoint_path(checkpoint)
    loaded = load_model(ckpt, device=resolve_device(device), eval_max_iter=max_iter,
                        eval_tol=tol, op=op)
    if loaded.model.op is None:  # said once, before any file is read
        raise DataError(NO_BLUR)
    return loaded


def restore_to_file(
    loaded: LoadedModel,
    src: Path,
    photo: Photo | None,
    y: torch.Tensor,
    dst: Path,
    *,
    noise: float | str | None,
    mask: torch.Tensor | None,
    say: Callable[[str], None],
    **solve,
) -> None:
    """Restore the measurement ``y`` read from ``src`` (:func:`read_measurement`) with ``loaded``
    and write it atomically to ``dst``, like ``photo``; a palette photo without ``noise`` gets
    ``"auto"`` (see :func:`restore_file`). ``solve``: the other keywords of
    :func:`restore_tensor`; ``say`` receives the notes on the files."""
    model, cfg, _ = loaded
    if (noise is None and photo is not None and photo.source_mode.startswith("P")
            and model.op is not None and noise_estimable(model.op) and takes_noise(model)):
        noise = "auto"
        say(f"{src.name}: a palette image: estimating its noise (pass --noise to set it)")
    try:
        x = restore_tensor(model, cfg, y, noise=noise, mask=mask,
                           jpeg_quality=None if photo is None else photo.jpeg_quality, **solve)
    except DataError as exc:
        raise DataError(f"{src}: {exc}") from None
    written = write_photo(x, dst, like=photo)
    for note in written[len(output_notes(photo, dst)):]:
        say(f"{dst.name}: {note}")


def deblur_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    kernel: str | None = None,
    padding: str | None = None,
    **kwargs,
) -> Path:
    """:func:`restore_file` for blur models, whose ``kernel``/``padding`` replace the checkpoint
    task's blur (see ``jfb.tasks`` for kernel specs)."""
    return restore_file(input_path, output_path, kernel=kernel, padding=padding, **kwargs)


def degrade_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    task: Task,
    *,
    seed: int = 0,
    force: bool = False,
) -> Path:
    """Write y = A x + n for the clean image ``input_path`` under ``task`` (noise seeded by
    ``seed``) and return the path written (checked first as :func:`restore_file` does): an
    image file when y is image-like (same-size operators, super-resolution; values clamped to
    [0, 1] by the format), a ``.npy`` array otherwise (tomography), which the output suffix
    must then be."""
    src = Path(input_path)
    image_like = task.op_kind != "radon"
    if not image_like and Path(output_path).suffix.lower() not in ("", ".npy"):
        raise DataError(f"op={task.op} measures sinograms, not images: write a .npy file")
    dst = resolve_output(src, output_path, force=force,
                         suffixes=(*IMAGE_SUFFIXES, ".npy") if image_like else (".npy",))
    x = load_image(src, mode="rgb")
    op = task.operator()
    try:
        op.out_shape((1, *x.shape))
    except ValueError as exc:
        raise DataError(f"{src} cannot be measured by {task.name}: {exc}") from None
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        y = task.noise()(op.A(x[None]), generator=gen)[0]
    if dst.suffix.lower() == ".npy":
        with atomic_path(dst) as tmp:
            np.save(tmp, y.numpy())
    else:
        save_image(y, dst)
    return dst
