"""Image files in and out: restore a measurement with a trained model (`jfb restore`,
`jfb deblur`), or simulate one from a clean image (`jfb degrade`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from jfb.atomic import atomic_path
from jfb.data import load_image, save_image
from jfb.errors import DataError
from jfb.physics import Blur, Downsample, Identity, LinearOperator, Mask, estimate_noise_std
from jfb.physics.mask import _MaskBase
from jfb.pipeline import CHANNELS, adapt_noise, load_model
from jfb.restore import restore_tiled
from jfb.tasks import Task

#: The shipped default model (trained by the project; see its model card beside it).
DEFAULT_MODEL = "default.safetensors"


def default_checkpoint() -> Path:
    """Path of the default model shipped inside the package."""
    path = Path(str(resources.files("jfb") / "weights" / DEFAULT_MODEL))
    if not path.is_file():
        raise DataError(f"no default model shipped at {path}; pass --checkpoint")
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


def _check_output(src: Path, dst: Path, force: bool) -> None:
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise DataError(f"output {dst} is the input file: choose another name")
    if dst.exists() and not force:
        raise DataError(f"output {dst} exists: pass --force to overwrite it")
    if dst.parent.exists() and not os.access(dst.parent, os.W_OK):
        raise DataError(f"output folder {dst.parent} is not writable")


@contextlib.contextmanager
def _operator(model: torch.nn.Module, op: LinearOperator) -> Iterator[None]:
    """Let ``model`` use ``op`` inside the block."""
    saved = model.op
    model.op = op
    try:
        yield
    finally:
        model.op = saved


def restore_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    op: LinearOperator | Callable[[Task], LinearOperator] | None = None,
    mask: str | os.PathLike[str] | None = None,
    max_iter: int | None = None,
    noise: float | str | None = None,
    tile: int = 256,
    overlap: int = 32,
    device: str = "auto",
    force: bool = False,
    report: Callable[[str], None] | None = None,
) -> torch.Tensor:
    """Read the measurement ``input_path``, reconstruct the image, write ``output_path``
    atomically (format by suffix).

    The forward model is the checkpoint task's operator, or ``op`` (the models are
    physics-aware: their map uses A explicitly), which may be a function of the checkpoint's
    task (see :func:`jfb.pipeline.load_model`). ``noise``, the input's noise std, re-balances
    a DE-ADMM model (:func:`jfb.pipeline.adapt_noise`); ``"auto"`` estimates it from the input
    (:func:`jfb.physics.estimate_noise_std`; blur and denoising only, where the image's finest
    details are gone or are the noise) and tells ``report``. ``mask`` (an image or .npy of the
    input's size, nonzero = observed) gives an inpainting model the pixels actually missing.
    Translation-invariant operators (blur, denoising, super-resolution) and given masks are
    processed in overlapping tiles (bounded memory); fixed-pattern masks and tomography take
    the whole measurement. One-channel measurements are replicated to RGB for the model and the
    result is averaged back. Refuses to overwrite an existing file without ``force``, and never
    overwrites the input.
    """
    from jfb.train.trainer import resolve_device

    src, dst = Path(input_path), Path(output_path)
    _check_output(src, dst, force)
    y = load_measurement(src)
    if y.shape[0] not in (1, CHANNELS):
        raise DataError(f"{src}: expected 1 or {CHANNELS} channels, got {y.shape[0]}")
    ckpt = Path(checkpoint) if checkpoint is not None else default_checkpoint()
    dev = resolve_device(device)
    model, cfg, _ = load_model(ckpt, device=dev, eval_max_iter=max_iter, op=op)
    op = model.op
    if noise == "auto":
        if not isinstance(op, (Blur, Identity)):
            raise DataError(f"--noise auto estimates the noise of blurred or noisy images; this "
                            f"model measures with {type(op).__name__}: give the value")
        noise = float(estimate_noise_std(y[None])[0])
        if report is not None:
            report(f"estimated noise std of {src.name}: {noise:.4g}")
    if noise is not None:
        if isinstance(noise, str):
            raise DataError(f"noise must be a number or 'auto', got {noise!r}")
        adapt_noise(model, cfg, noise)
    grey = y.shape[0] == 1
    y = (y.expand(CHANNELS, -1, -1) if grey else y).to(dev)
    translation_invariant = isinstance(op, (Blur, Identity, Downsample))
    if (mask is not None or translation_invariant) and min(y.shape[-2:]) < 8:
        raise DataError(f"{src} is too small ({y.shape[-1]}x{y.shape[-2]} pixels)")
    if mask is not None:
        if not isinstance(op, _MaskBase):
            raise DataError(f"--mask applies to inpainting models; this one measures with "
                            f"{type(op).__name__}")
        m = (load_measurement(mask).abs().sum(dim=0, keepdim=True) > 0).float()
        if m.shape[-2:] != y.shape[-2:]:
            raise DataError(f"mask {mask} is {m.shape[-1]}x{m.shape[-2]}, the input "
                            f"{y.shape[-1]}x{y.shape[-2]}")

        def masked(tiles: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
            with _operator(model, Mask(masks).to(dev)):
                return model(tiles * masks)

        x = restore_tiled(masked, y, tile=tile, overlap=overlap, aux=m[None].to(dev))
    elif translation_invariant:
        if isinstance(op, Blur) and op.padding == "valid":
            raise DataError("padding 'valid' changes the image size; use zeros, circular or "
                            "reflect")
        x = restore_tiled(model, y, tile=tile, overlap=overlap)
    else:
        try:
            op.image_shape((1, *y.shape))
        except ValueError as exc:
            raise DataError(f"{src}: {exc}") from None
        with torch.no_grad():
            x = model(y[None])[0]
    x = x.clamp(0, 1).cpu()
    if grey:
        x = x.mean(dim=0, keepdim=True)
    save_image(x, dst)
    return x


def deblur_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    kernel: str | None = None,
    padding: str | None = None,
    **kwargs,
) -> torch.Tensor:
    """:func:`restore_file` for blur models; ``kernel``/``padding`` replace the checkpoint
    task's blur (see ``jfb.tasks`` for kernel specs)."""

    def blur_for(base: Task) -> LinearOperator:
        if base.op_kind != "blur":
            raise DataError(f"--kernel/--padding apply to blur models; this one is op={base.op}")
        return Task("custom", kernel=kernel or base.kernel, noise_sigma=0.0,
                    padding=padding or base.padding).operator()

    op = blur_for if kernel is not None or padding is not None else None
    return restore_file(input_path, output_path, checkpoint=checkpoint, op=op, **kwargs)


def degrade_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    task: Task,
    *,
    seed: int = 0,
    force: bool = False,
) -> torch.Tensor:
    """Write y = A x + n for the clean image ``input_path`` under ``task`` (noise seeded by
    ``seed``): an image file when y is image-like (same-size operators, super-resolution; values
    clamped to [0, 1] by the format), a ``.npy`` array otherwise (tomography), which the output
    suffix must then be."""
    src, dst = Path(input_path), Path(output_path)
    _check_output(src, dst, force)
    x = load_image(src, mode="rgb")
    op = task.operator()
    try:
        op.out_shape((1, *x.shape))
    except ValueError as exc:
        raise DataError(f"{src} cannot be measured by {task.name}: {exc}") from None
    image_like = task.op_kind != "radon"
    if not image_like and dst.suffix.lower() != ".npy":
        raise DataError(f"op={task.op} measures sinograms, not images: write a .npy file")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        y = task.noise()(op.A(x[None]), generator=gen)[0]
    if dst.suffix.lower() == ".npy":
        with atomic_path(dst) as tmp:
            np.save(tmp, y.numpy())
    else:
        save_image(y, dst)
    return y
