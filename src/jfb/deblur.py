"""Deblur an image file with a trained model: the body of `jfb deblur`."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import torch

from jfb.data import load_image, save_image
from jfb.errors import DataError
from jfb.pipeline import load_model
from jfb.restore import restore_tiled
from jfb.tasks import Task, get_task

#: The shipped default model (trained by the project; see its model card beside it).
DEFAULT_MODEL = "default.safetensors"


def default_checkpoint() -> Path:
    """Path of the default model shipped inside the package."""
    path = Path(str(resources.files("jfb") / "weights" / DEFAULT_MODEL))
    if not path.is_file():
        raise DataError(f"no default model shipped at {path}; pass --checkpoint")
    return path


def deblur_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    kernel: str | None = None,
    padding: str | None = None,
    max_iter: int | None = None,
    tile: int = 256,
    overlap: int = 32,
    device: str = "auto",
    force: bool = False,
) -> torch.Tensor:
    """Read ``input_path``, reconstruct it, write ``output_path`` atomically (format by suffix).

    The blur model is the checkpoint task's unless ``kernel``/``padding`` say otherwise (the
    model is physics-aware: its map uses A explicitly). Grey images are replicated to RGB for
    the model and averaged back. Refuses to overwrite an existing file without ``force``, and
    never overwrites the input.
    """
    from jfb.train.trainer import resolve_device

    src, dst = Path(input_path), Path(output_path)
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise DataError(f"output {dst} is the input file: choose another name")
    if dst.exists() and not force:
        raise DataError(f"output {dst} exists: pass --force to overwrite it")
    if dst.parent.exists() and not os.access(dst.parent, os.W_OK):
        raise DataError(f"output folder {dst.parent} is not writable")
    image = load_image(src, mode="keep")
    ckpt = Path(checkpoint) if checkpoint is not None else default_checkpoint()
    dev = resolve_device(device)
    model, cfg, _ = load_model(ckpt, device=dev, eval_max_iter=max_iter)
    if kernel is not None or padding is not None:
        base = get_task(cfg.task)
        task = Task(
            "custom", kernel=kernel or base.kernel, noise_sigma=0.0, padding=padding or base.padding
        )
        if task.padding == "valid":
            raise DataError(
                "padding 'valid' changes the image size; use zeros, circular or reflect"
            )
        model.op = task.operator().to(dev)
    grey = image.shape[0] == 1
    y = (image.expand(3, -1, -1) if grey else image).to(dev)
    if min(y.shape[-2:]) < 8:
        raise DataError(f"image {src} is too small ({y.shape[-1]}x{y.shape[-2]} pixels)")
    x = restore_tiled(model, y, tile=tile, overlap=overlap).clamp(0, 1).cpu()
    if grey:
        x = x.mean(dim=0, keepdim=True)
    save_image(x, dst)
    return x
