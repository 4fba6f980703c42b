"""Adapters between jfb's linear operators and deepinv's linear physics (docs/DEEPINV.md).

- :func:`from_deepinv` wraps a ``deepinv.physics.LinearPhysics`` as a
  :class:`jfb.physics.LinearOperator` (:class:`DeepinvOperator`), so it can be the operator of a
  jfb model. Only the noiseless A and A^T are used: deepinv's noise and sensor models are dropped
  (:attr:`DeepinvOperator.gaussian_sigma` gives the sigma of a Gaussian noise model).
- :func:`to_deepinv` exposes a jfb operator as a deepinv ``LinearPhysics`` whose A and A^T are
  ours and whose noise model is deepinv's ``GaussianNoise(noise_sigma)`` (``ZeroNoise`` for 0).
  A plain :class:`jfb.physics.Blur` with an exact deepinv equivalent ("zeros", "circular",
  "valid") becomes deepinv's native ``deepinv.physics.Blur`` (:func:`blur_to_deepinv`).

deepinv is imported on first use only, so ``import jfb`` (and this module) never needs it.

Blur correspondence (checked to 1e-6 by tests/test_interop_deepinv.py): both libraries compute a
true convolution with the kernel centre at (kh // 2, kw // 2) for odd and even sizes alike, so our
``kernel`` k of shape (kh, kw) (or (C, kh, kw)) is deepinv's ``filter`` as it is, unflipped, of
shape (1, 1, kh, kw) (or (1, C, kh, kw)). Padding names: "zeros" -> "zeros" (deepinv's
"constant" is the same), "circular" -> "circular", "valid" -> "valid". Our "reflect" is the
half-sample symmetric extension (edge pixel repeated: x1 x0 | x0 x1 ...); deepinv's "reflect"
mirrors about the edge pixel (x2 x1 | x0 x1 ...) and its "replicate" repeats the edge pixel
(x0 x0 | x0 x1 ...), so it has no native equivalent and is wrapped generically instead.
"""

from __future__ import annotations

import functools
import importlib
import math
from typing import Any

import torch
from torch import nn

from jfb.errors import check_shape
from jfb.physics.base import LinearOperator
from jfb.physics.blur import Blur

__all__ = [
    "DEEPINV_PADDING",
    "DeepinvOperator",
    "blur_to_deepinv",
    "from_deepinv",
    "to_deepinv",
]

#: Our Blur padding -> deepinv's padding name, for the paddings with an exact native equivalent.
#: "reflect" has none (see the module docstring).
DEEPINV_PADDING: dict[str, str] = {"zeros": "zeros", "circular": "circular", "valid": "valid"}

_INSTALL_HINT = (
    "pip install --no-deps deepinv==0.5.0, then its pure-Python dependencies (einops, h5py, "
    "natsort, requests, torchmetrics) and a torchvision built for your torch; scripts/setup.sh "
    "installs all but torchvision (see docs/DEEPINV.md)"
)
_IMPORT_HINT = (
    "deepinv imports torchvision at import time and needs a torchvision build matching your "
    "torch (PyPI's Linux torchvision wheels are built for PyPI's CUDA torch and fail to import "
    "beside a CPU-only torch); see docs/DEEPINV.md"
)


def _import_deepinv() -> Any:
    """Import and return the ``deepinv`` package, or raise an ImportError saying how to get it."""
    try:
        return importlib.import_module("deepinv")
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] == "deepinv":
            raise ImportError(
                f"jfb.interop.deepinv needs deepinv, which is not installed: {_INSTALL_HINT}."
            ) from exc
        raise ImportError(
            f"deepinv is installed but `import deepinv` failed: {exc}. {_IMPORT_HINT}."
        ) from exc
    except Exception as exc:  # e.g. a torchvision whose C++ ops do not match this torch
        raise ImportError(
            f"deepinv is installed but `import deepinv` failed ({type(exc).__name__}: {exc}). "
            f"{_IMPORT_HINT}."
        ) from exc


def _check_sigma(noise_sigma: Any) -> float:
    if isinstance(noise_sigma, bool) or not isinstance(noise_sigma, (int, float)):
        raise TypeError(
            f"noise_sigma must be a number, got {type(noise_sigma).__name__} {noise_sigma!r}"
        )
    sigma = float(noise_sigma)
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"noise_sigma must be a finite number >= 0, got {sigma}")
    return sigma


def _noise_model(dinv: Any, sigma: float) -> Any:
    """deepinv's GaussianNoise(sigma), or a fresh ZeroNoise for sigma = 0."""
    if sigma == 0:
        return dinv.physics.ZeroNoise()
    return dinv.physics.GaussianNoise(sigma=sigma)


def _device_of(module: nn.Module) -> torch.device:
    for t in list(module.buffers()) + list(module.parameters()):
        return t.device
    return torch.device("cpu")


# ------------------------------------------------------------------------- deepinv -> jfb
class DeepinvOperator(LinearOperator):
    """A deepinv ``LinearPhysics`` seen as a :class:`jfb.physics.LinearOperator`.

    ``A(x) = physics.A(x)`` and ``A_adjoint(y) = physics.A_adjoint(y)``: the noiseless operator.
    deepinv's noise model (and sensor model) is not applied, as jfb operators are noiseless; see
    :attr:`gaussian_sigma`. The physics is a submodule (``self.physics``), so ``.to(device)`` /
    ``.to(dtype)`` move its buffers (e.g. a blur filter). Build it with :func:`from_deepinv`.
    """

    def __init__(self, physics: nn.Module) -> None:
        super().__init__()
        self.physics = physics

    def _tensor(self, out: Any, what: str) -> torch.Tensor:
        if not isinstance(out, torch.Tensor):
            raise TypeError(
                f"DeepinvOperator: physics.{what} returned {type(out).__name__}, not a "
                f"torch.Tensor (stacked physics with TensorList outputs are not supported)"
            )
        return out

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """``physics.A(x)``: the forward operator without noise."""
        return self._tensor(self.physics.A(x), "A")

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``physics.A_adjoint(y)``."""
        return self._tensor(self.physics.A_adjoint(y), "A_adjoint")

    def out_shape(self, in_shape) -> tuple[int, ...]:
        """Shape of A(x): run on a "meta" tensor if the physics allows it, else on zeros."""
        shape = check_shape(in_shape)
        try:
            return super().out_shape(shape)
        except (RuntimeError, NotImplementedError, ValueError):
            device, dtype = self._default_device_dtype()
            with torch.no_grad():
                return tuple(self.A(torch.zeros(shape, device=device, dtype=dtype)).shape)

    @property
    def gaussian_sigma(self) -> float | None:
        """The dropped noise model's sigma: 0.0 for deepinv's ``ZeroNoise``, sigma for a
        ``GaussianNoise`` with one (scalar) sigma, None for any other noise model."""
        dinv = _import_deepinv()
        noise = getattr(self.physics, "noise_model", None)
        if noise is None or isinstance(noise, dinv.physics.ZeroNoise):
            return 0.0
        if type(noise) is dinv.physics.GaussianNoise:
            sigma = torch.as_tensor(noise.sigma)
            if sigma.numel() == 1:
                return float(sigma)
        return None

    def extra_repr(self) -> str:
        return "noise model dropped (noiseless A, A^T)"


def from_deepinv(physics: Any) -> DeepinvOperator:
    """Wrap a deepinv ``LinearPhysics`` as a jfb operator (noise dropped; see
    :class:`DeepinvOperator`), e.g. to build ``jfb.models.DEGrad(from_deepinv(physics), net)``.

    Raises TypeError if ``physics`` is not a ``deepinv.physics.LinearPhysics`` (a jfb operator,
    a non-linear deepinv ``Physics``, anything else), ImportError if deepinv cannot be imported.
    """
    if isinstance(physics, LinearOperator):
        raise TypeError(
            f"from_deepinv: {type(physics).__name__} is already a jfb LinearOperator "
            f"(from_deepinv takes a deepinv.physics.LinearPhysics)"
        )
    if not isinstance(physics, nn.Module):
        raise TypeError(
            f"from_deepinv: expected a deepinv.physics.LinearPhysics, got "
            f"{type(physics).__name__}"
        )
    dinv = _import_deepinv()
    if not isinstance(physics, dinv.physics.LinearPhysics):
        raise TypeError(
            f"from_deepinv: expected a deepinv.physics.LinearPhysics (a linear operator with "
            f"A_adjoint), got {type(physics).__name__}"
        )
    return DeepinvOperator(physics)


# ------------------------------------------------------------------------- jfb -> deepinv
@functools.cache
def _jfb_physics_class() -> type:
    """The deepinv ``LinearPhysics`` subclass wrapping a jfb operator (built on first use, once
    deepinv is importable; exposed as ``jfb.interop.deepinv.JFBPhysics``)."""
    dinv = _import_deepinv()

    class JFBPhysics(dinv.physics.LinearPhysics):
        """A jfb :class:`~jfb.physics.LinearOperator` as a deepinv ``LinearPhysics``.

        ``A`` and ``A_adjoint`` call the wrapped operator ``self.op`` (a submodule: ``.to``
        moves its buffers); ``forward`` adds the noise model as in any deepinv physics. Extra
        keyword arguments that deepinv passes along (e.g. noise parameters) are ignored, as for
        deepinv's own physics built from callables. Build it with :func:`to_deepinv`.
        """

        def __init__(self, op: LinearOperator, noise_model: Any = None, **kwargs: Any) -> None:
            if not isinstance(op, LinearOperator):
                raise TypeError(
                    f"JFBPhysics: op must be a jfb.physics.LinearOperator, got "
                    f"{type(op).__name__}"
                )
            if noise_model is None:
                noise_model = dinv.physics.ZeroNoise()
            kwargs.setdefault("device", _device_of(op))
            super().__init__(noise_model=noise_model, **kwargs)
            self.op = op

        def A(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            return self.op.A(x)

        def A_adjoint(self, y: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            return self.op.A_adjoint(y)

        def A_adjoint_A(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            return self.op.normal(x)

    JFBPhysics.__module__ = __name__
    JFBPhysics.__qualname__ = "JFBPhysics"
    return JFBPhysics


def __getattr__(name: str) -> Any:
    if name == "JFBPhysics":
        return _jfb_physics_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def blur_to_deepinv(blur: Blur, noise_sigma: float = 0.0, *, use_fft: bool = False) -> Any:
    """deepinv's native ``deepinv.physics.Blur`` with the same A and A^T as our ``blur``.

    The filter is our kernel unflipped, shaped (1, 1, kh, kw) (or (1, C, kh, kw) for a
    per-channel kernel), with the same dtype and device; the padding is mapped by
    :data:`DEEPINV_PADDING`. Our "reflect" has no deepinv equivalent: ValueError (use
    :func:`to_deepinv`, which wraps it generically). deepinv's Blur does not cast its filter to the
    input's dtype as ours does: inputs must have the filter's dtype (``physics.to(dtype)``).

    ``use_fft`` picks deepinv's FFT convolution. Its "circular" mode differs from ours (and from
    deepinv's direct one) when the kernel is larger than the image, where deepinv's direct
    "circular" raises instead; the default direct path matches ours wherever deepinv accepts
    the sizes. ``noise_sigma``: deepinv's GaussianNoise sigma (0: ZeroNoise).
    """
    if not isinstance(blur, Blur):
        raise TypeError(f"blur_to_deepinv: expected a jfb.physics.Blur, got {type(blur).__name__}")
    if not isinstance(use_fft, bool):
        raise TypeError(f"use_fft must be a bool, got {type(use_fft).__name__}")
    sigma = _check_sigma(noise_sigma)
    if blur.padding not in DEEPINV_PADDING:
        raise ValueError(
            f"blur_to_deepinv: padding {blur.padding!r} has no exact deepinv equivalent "
            f"(ours is the half-sample symmetric extension; deepinv's 'reflect' and 'replicate' "
            f"differ); use to_deepinv(blur), which wraps our operator instead"
        )
    dinv = _import_deepinv()
    k = blur.kernel.detach().clone()
    filt = k[None, None] if k.dim() == 2 else k[None]
    return dinv.physics.Blur(
        filter=filt,
        padding=DEEPINV_PADDING[blur.padding],
        use_fft=use_fft,
        noise_model=_noise_model(dinv, sigma),
        device=k.device,
    )


def to_deepinv(op: LinearOperator, noise_sigma: float = 0.0, *, native: bool = True) -> Any:
    """Expose a jfb operator as a deepinv ``LinearPhysics`` with Gaussian noise ``noise_sigma``.

    With ``native=True`` (default) a plain :class:`jfb.physics.Blur` (not a subclass) whose
    padding has an exact deepinv equivalent becomes deepinv's own ``Blur``
    (:func:`blur_to_deepinv`); every other operator, and any with ``native=False``, becomes a
    ``JFBPhysics`` whose ``A``/``A_adjoint`` are the operator's own. Noise: deepinv's
    ``GaussianNoise(sigma=noise_sigma)``, or ``ZeroNoise`` for 0.
    """
    if not isinstance(op, LinearOperator):
        raise TypeError(
            f"to_deepinv: expected a jfb.physics.LinearOperator, got {type(op).__name__}"
        )
    if not isinstance(native, bool):
        raise TypeError(f"native must be a bool, got {type(native).__name__}")
    sigma = _check_sigma(noise_sigma)
    if native and type(op) is Blur and op.padding in DEEPINV_PADDING:
        return blur_to_deepinv(op, sigma)
    dinv = _import_deepinv()
    return _jfb_physics_class()(op, noise_model=_noise_model(dinv, sigma))
