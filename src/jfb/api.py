"""The main job from Python: load a trained model, restore an image held in memory.

    import jfb
    loaded = jfb.load_pretrained(kernel="gaussian:25:1.6")  # the shipped model, told the blur
    sharp = jfb.restore_image(blurred, model=loaded)        # same shape and dtype as ``blurred``
    done = jfb.restore_images(["a.png", "photos/"], "sharp/", kernel="motion:15:3")  # files

Images are numpy arrays (H, W) or (H, W, C), or torch tensors (H, W) or (C, H, W), C = 1 or 3,
of uint8 or uint16 (full range) or floats (nominally in [0, 1]). The conversion to and from
the float (C, H, W) tensor that :func:`jfb.deblur.restore_tensor` works on happens in
:func:`as_measurement` and :meth:`Layout.restore` only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from jfb.batch import restore_images
from jfb.errors import ConfigError, DataError, JFBError
from jfb.pipeline import LoadedModel

__all__ = ["Layout", "LoadedModel", "as_measurement", "load_pretrained", "restore_image",
           "restore_images"]

#: Full-scale value of each integer type an image may have; floats are taken as they are.
_FULL_SCALE = {"uint8": 255, "uint16": 65535}


def load_pretrained(
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device = "cpu",
    noise: float | None = None,
    kernel: str | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
) -> LoadedModel:
    """The shipped default model (trained across blurs: it must be told the kernel; its model
    card: ``src/jfb/weights/natural.md``), another shipped model by name (``"faces"``), or the
    jfb checkpoint ``checkpoint``, in eval mode on ``device`` (``"auto"``: CUDA when there is one),
    as a :class:`jfb.pipeline.LoadedModel` ``(model, config, info)``.

    ``kernel``, a blur spec such as ``"gaussian:5:5.0"`` (the specs of ``jfb deblur --kernel``),
    replaces a blur model's kernel; ``noise``, the std of the measurements' noise, re-balances a
    DE-ADMM model (:func:`jfb.pipeline.adapt_noise`); ``max_iter`` and ``tol`` are the test-time
    iteration budget and relative-residual tolerance of an implicit model.
    """
    from jfb.deblur import checkpoint_path
    from jfb.device import resolve_device
    from jfb.pipeline import load_model, replace_blur

    if isinstance(noise, str):
        raise ConfigError(f"noise must be a number here, got {noise!r} (restore_image takes "
                          "noise='auto', which needs the image)")
    path = checkpoint_path(checkpoint)
    try:
        return load_model(path, op=None if kernel is None else replace_blur(kernel),
                          device=resolve_device(device), eval_max_iter=max_iter, eval_tol=tol,
                          noise=noise)
    except JFBError:
        raise
    except ValueError as exc:  # a bad max_iter, tol or noise value
        raise ConfigError(str(exc)) from None


def restore_image(
    image: np.ndarray | torch.Tensor,
    *,
    model: LoadedModel | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    kernel: str | None = None,
    noise: float | str | None = None,
    mask: np.ndarray | torch.Tensor | None = None,
    device: str | torch.device = "cpu",
    max_memory: float | None = None,
    report: Callable[[str], None] | None = None,
    jpeg_quality: float | None = None,
) -> np.ndarray | torch.Tensor:
    """The image restored from the measurement ``image``, in the same type, shape and dtype (and
    for a tensor, on the same device), without gradients.

    ``model`` is what :func:`load_pretrained` returns (load once, restore many); without it,
    ``checkpoint``, ``kernel`` and ``device`` are passed to :func:`load_pretrained` (a given
    model stays on its device). ``noise`` is the input's noise std, or ``"auto"`` to estimate it
    (blur and denoising models), for this call only (a DE-ADMM ``model`` keeps the noise level it
    was loaded with; ``load_pretrained(noise=...)`` sets that). ``mask``
    (the image's H x W, nonzero = observed) gives an inpainting model the missing pixels;
    ``max_memory`` (bytes) bounds the working memory, beyond which the image is restored in
    tiles; ``jpeg_quality``, the quality of the JPEG the image was read from
    (``jfb.data.read_photo(path).jpeg_quality``), makes ``"auto"`` count its compression error
    as noise; ``report`` receives one-line notes (such as the estimated noise). A result that should
    not be trusted as it is (its data misfit or the input's noise far from what the model
    assumes) comes with a :class:`jfb.errors.TrustWarning` through Python's ``warnings``. See
    :func:`jfb.deblur.restore_tensor`.
    """
    from jfb.deblur import restore_tensor

    if model is None:
        model = load_pretrained(checkpoint, device=device, kernel=kernel)
    elif checkpoint is not None or kernel is not None:
        raise ConfigError("checkpoint and kernel choose the model to load: with model=, give "
                          "them to load_pretrained instead")
    elif not isinstance(model, LoadedModel):
        raise ConfigError(f"model must be what jfb.load_pretrained returns, got "
                          f"{type(model).__name__}")
    y, layout = as_measurement(image)
    observed = None if mask is None else _as_mask(mask, layout)
    x = restore_tensor(model.model, model.config, y, noise=noise, mask=observed,
                       max_memory=max_memory, report=report, jpeg_quality=jpeg_quality)
    return layout.restore(x)


@dataclass(frozen=True)
class Layout:
    """How an image was given (container, dtype, shape, device), to give the result back so."""

    is_numpy: bool
    dtype: Any
    shape: tuple[int, ...]
    device: torch.device

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return self.shape[:2] if self.is_numpy else self.shape[-2:]

    def restore(self, x: torch.Tensor) -> np.ndarray | torch.Tensor:
        """The float (C, H, W) tensor ``x`` in [0, 1] as an image of this layout."""
        x = x.detach().float().cpu()
        if self.is_numpy:
            x = x.permute(1, 2, 0)
        x = x.reshape(self.shape)
        name = str(self.dtype).removeprefix("torch.")
        if name in _FULL_SCALE:
            x = (x.clamp(0, 1) * _FULL_SCALE[name]).round()
            if self.is_numpy:
                return x.numpy().astype(self.dtype)
            return x.to(torch.int32).to(self.dtype).to(self.device)
        if self.is_numpy:
            return x.numpy().astype(self.dtype)
        return x.to(self.dtype).to(self.device)


def as_measurement(image: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, Layout]:
    """``image`` as a float32 CPU tensor (C, H, W) with values in [0, 1] for integer images, and
    the :class:`Layout` that turns a result back into its form. DataError for anything else."""
    if isinstance(image, np.ndarray):
        layout = Layout(True, image.dtype, image.shape, torch.device("cpu"))
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
            raise DataError(f"a numpy image is (H, W) or (H, W, C) with C = 1 or 3 (channels "
                            f"last), got shape {image.shape}")
        name = image.dtype.name
        t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        t = t[None] if t.dim() == 2 else t.permute(2, 0, 1)
    elif isinstance(image, torch.Tensor):
        layout = Layout(False, image.dtype, tuple(image.shape), image.device)
        if image.dim() not in (2, 3) or (image.dim() == 3 and image.shape[0] not in (1, 3)):
            raise DataError(f"a torch image is (H, W) or (C, H, W) with C = 1 or 3 (channels "
                            f"first), got shape {tuple(image.shape)}")
        name = str(image.dtype).removeprefix("torch.")
        t = image.detach().to("cpu", torch.float32)
        t = t[None] if t.dim() == 2 else t
    else:
        raise DataError(f"an image is a numpy array or a torch tensor, got {type(image).__name__}")
    floating = name.startswith(("float", "bfloat"))
    if name not in _FULL_SCALE and not floating:
        raise DataError(f"image dtype {name} is not supported: use uint8, uint16 or float "
                        "(values in [0, 1])")
    if t.numel() == 0:
        raise DataError(f"the image is empty (shape {layout.shape})")
    if floating and not torch.isfinite(t).all():
        raise DataError("the image has non-finite values")
    return (t if floating else t / _FULL_SCALE[name]).contiguous(), layout


def _as_mask(mask: np.ndarray | torch.Tensor, layout: Layout) -> torch.Tensor:
    """``mask`` (H, W), or that with one channel axis, as a (1, H, W) float tensor of 0 (missing)
    and 1 (observed), the size of the image of ``layout``."""
    m = torch.from_numpy(np.asarray(mask)) if isinstance(mask, np.ndarray) else mask
    if not isinstance(m, torch.Tensor):
        raise DataError(f"a mask is a numpy array or a torch tensor, got {type(mask).__name__}")
    m = m.detach().cpu()
    if m.dim() == 3 and 1 in (m.shape[0], m.shape[-1]):
        m = m.squeeze(0 if m.shape[0] == 1 else -1)
    if tuple(m.shape) != tuple(layout.size):
        raise DataError(f"the mask must be the image's size {tuple(layout.size)} (H, W), got "
                        f"shape {tuple(mask.shape)}")
    return (m != 0).float()[None]
