"""Spectral normalisation of convolutions *as linear operators*.

For a convolution layer the linear map is ``A: x -> conv2d(x, W)`` (bias excluded, with the layer's
stride, padding, dilation, groups and padding mode).  Its operator norm
``sigma(W) = max ||A x|| / ||x||`` is what bounds the layer's Lipschitz constant; it is *not* the
largest singular value of ``W`` reshaped to a ``C_out x (C_in k k)`` matrix (which is what
``torch.nn.utils.spectral_norm`` normalises).  ``sigma`` is estimated by power iteration
``u <- A^T A u / ||A^T A u||`` on a persistent vector ``u`` of shape ``(1, C_in, h, w)``, with
``A^T`` applied by ``conv_transpose2d`` (or, for non-zero padding modes and string paddings, by the
exact vector-Jacobian product of ``A``).

Design choices:

* Implemented as a ``torch.nn.utils.parametrize`` parametrisation of ``weight``: the layer stays a
  plain ``nn.Conv2d`` / ``nn.ConvTranspose2d`` (``isinstance`` checks and module walks keep
  working, ``conv.weight`` is the weight actually used), and ``state_dict`` holds the original
  weight (``parametrizations.weight.original``) and the power-iteration vector
  (``parametrizations.weight.0.u``), so a reload reproduces outputs exactly.
* The weight used is ``W * min(1, target / sigma)`` (``mode="clip"``, only scales down) or
  ``W * target / sigma`` (``mode="normalize"``), with ``sigma = <v, A u>``, ``v = A u / ||A u||``.
  As in ``torch.nn.utils.parametrizations.spectral_norm``, ``u`` and ``v`` are treated as
  constants and autograd differentiates through ``sigma`` as a function of ``W``
  (``d sigma / d W`` is the rank-one ``v u^T`` term of the top singular pair).
* One power step (``n_power_iterations``, configurable) is taken each time the weight is read in
  training mode, none in eval mode.  A parametrisation recomputes the weight at *every* access,
  so inside a fixed-point solve each call of the net would advance ``u`` and change the map
  slightly; wrap the solve in :func:`frozen_spectral_norm` (after one explicit
  :func:`spectral_norm_power_step`) to keep the map fixed during the solve.
* ``sigma`` is estimated on ``h x w`` inputs (default 32 x 32).  With zero padding the operator
  norm grows (slowly) with the image size towards ``sup_w ||W_hat(w)||``, so for images much
  larger than ``h x w`` the normalised layer's norm can exceed ``target`` by a small margin.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from jfb.errors import ConfigError, check_choice, check_int, check_positive

__all__ = [
    "SpectralConvNorm",
    "apply_spectral_norm",
    "conv_operator_norm",
    "frozen_spectral_norm",
    "spectral_norm_conv",
    "spectral_norm_power_step",
]

_EPS = 1e-12
_MODES = ("clip", "normalize")


# ----------------------------------------------------------------------------- validation
def _check_size(name: str, value: object) -> tuple[int, int]:
    """An input size given as an int n (n x n) or a pair (h, w) of ints >= 1."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ConfigError(f"{name} must be an int or a pair (h, w), got {value!r}")
        return (check_int(f"{name}[0]", value[0], minimum=1, error=ConfigError),
                check_int(f"{name}[1]", value[1], minimum=1, error=ConfigError))
    n = check_int(name, value, minimum=1, error=ConfigError)
    return (n, n)


# ----------------------------------------------------------------------------- conv geometry
class _ConvGeometry:
    """The linear part of a conv layer: ``apply(x, W)`` and its exact adjoint ``adjoint(z, W)``."""

    def __init__(self, conv: nn.Module) -> None:
        if isinstance(conv, nn.ConvTranspose2d):
            self.transposed = True
            self.in_channels = conv.in_channels
        elif isinstance(conv, nn.Conv2d):
            self.transposed = False
            self.in_channels = conv.in_channels
        else:
            raise TypeError(
                f"expected nn.Conv2d or nn.ConvTranspose2d, got {type(conv).__name__}"
            )
        self.stride = conv.stride
        self.padding = conv.padding
        self.dilation = conv.dilation
        self.groups = conv.groups
        self.padding_mode = conv.padding_mode
        self.output_padding = getattr(conv, "output_padding", (0, 0))
        self.reversed_padding = tuple(getattr(conv, "_reversed_padding_repeated_twice", ()))

    def apply(self, x: Tensor, w: Tensor) -> Tensor:
        """``A x``: the layer's convolution without bias."""
        if self.transposed:
            return F.conv_transpose2d(
                x, w, None, self.stride, self.padding, self.output_padding, self.groups,
                self.dilation,
            )
        if self.padding_mode != "zeros":
            x = F.pad(x, self.reversed_padding, mode=self.padding_mode)
            return F.conv2d(x, w, None, self.stride, 0, self.dilation, self.groups)
        return F.conv2d(x, w, None, self.stride, self.padding, self.dilation, self.groups)

    def adjoint(self, z: Tensor, w: Tensor, in_shape: torch.Size) -> Tensor:
        """``A^T z`` for ``A`` acting on inputs of shape ``in_shape``."""
        out = None
        if self.transposed:
            out = F.conv2d(z, w, None, self.stride, self.padding, self.dilation, self.groups)
        elif self.padding_mode == "zeros" and not isinstance(self.padding, str):
            k = w.shape[-2:]
            op = []
            for i in range(2):
                base = ((z.shape[2 + i] - 1) * self.stride[i] - 2 * self.padding[i]
                        + self.dilation[i] * (k[i] - 1) + 1)
                op.append(in_shape[2 + i] - base)
            limits = [max(s, d) for s, d in zip(self.stride, self.dilation, strict=True)]
            if all(0 <= p < lim for p, lim in zip(op, limits, strict=True)):
                out = F.conv_transpose2d(
                    z, w, None, self.stride, self.padding, tuple(op), self.groups, self.dilation
                )
        if out is None or out.shape != in_shape:
            # Exact adjoint of any padding mode: the vector-Jacobian product of the linear map.
            with torch.enable_grad():
                x = torch.zeros(in_shape, dtype=z.dtype, device=z.device, requires_grad=True)
                (out,) = torch.autograd.grad(self.apply(x, w.detach()), x, grad_outputs=z)
        return out


def _normalize(t: Tensor) -> Tensor:
    return t / t.norm().clamp_min(_EPS)


def _power_iteration(geom: _ConvGeometry, w: Tensor, u: Tensor, n_steps: int) -> Tensor:
    """``n_steps`` of ``u <- A^T A u / ||A^T A u||`` (no autograd)."""
    with torch.no_grad():
        for _ in range(n_steps):
            v = _normalize(geom.apply(u, w))
            u = _normalize(geom.adjoint(v, w, u.shape))
    return u


# ----------------------------------------------------------------------------- parametrisation
class SpectralConvNorm(nn.Module):
    """Parametrisation ``W -> W * s(W)`` with ``s = min(1, target/sigma)`` or ``target/sigma``.

    ``sigma = <v, A u>`` is the power-iteration estimate of the operator norm of the layer's
    linear map ``A`` (``u`` a persistent buffer, ``v = A u / ||A u||``; both constants for
    autograd).  Register it with :func:`spectral_norm_conv` or :func:`apply_spectral_norm`.
    """

    u: Tensor

    def __init__(
        self,
        conv: nn.Module,
        *,
        target: float = 1.0,
        mode: Literal["clip", "normalize"] = "clip",
        input_size: int | tuple[int, int] = 32,
        n_power_iterations: int = 1,
        n_init_iter: int = 15,
    ) -> None:
        super().__init__()
        self.target = check_positive("target", target, error=ConfigError)
        self.mode = check_choice("mode", mode, _MODES, error=ConfigError)
        self.input_size = _check_size("input_size", input_size)
        self.n_power_iterations = check_int("n_power_iterations", n_power_iterations, minimum=0,
                                            error=ConfigError)
        n_init_iter = check_int("n_init_iter", n_init_iter, minimum=0, error=ConfigError)
        self.frozen = False
        self._geom = _ConvGeometry(conv)
        weight = conv.weight.detach()
        u = torch.randn(
            1, self._geom.in_channels, *self.input_size, dtype=weight.dtype, device=weight.device
        )
        try:
            self._geom.apply(u, weight)
        except RuntimeError as exc:
            raise ConfigError(
                f"spectral-norm input_size {self.input_size} is too small for {conv}: {exc}"
            ) from exc
        self.register_buffer("u", _power_iteration(self._geom, weight, _normalize(u), n_init_iter))

    def power_step(self, weight: Tensor, n_steps: int = 1) -> None:
        """Advance ``u`` by ``n_steps`` power-iteration steps for ``weight`` (in place)."""
        u = _power_iteration(self._geom, weight.detach(), self.u.to(weight.dtype), n_steps)
        with torch.no_grad():
            self.u.copy_(u)

    def sigma(self, weight: Tensor) -> Tensor:
        """Operator-norm estimate ``<v, A u>`` for ``weight``, differentiable in ``weight``."""
        # clone: a later in-place update of u must not invalidate this graph
        u = self.u.clone().to(weight.dtype)
        z = self._geom.apply(u, weight)
        v = _normalize(z.detach())
        return (v * z).sum()

    def forward(self, weight: Tensor) -> Tensor:
        if self.training and not self.frozen and self.n_power_iterations > 0:
            self.power_step(weight, self.n_power_iterations)
        sigma = self.sigma(weight).clamp_min(_EPS)
        scale = self.target / sigma
        if self.mode == "clip":
            scale = scale.clamp(max=1.0)
        return weight * scale

    def extra_repr(self) -> str:
        return (
            f"target={self.target}, mode={self.mode!r}, input_size={self.input_size}, "
            f"n_power_iterations={self.n_power_iterations}"
        )


def _spectral_parametrizations(module: nn.Module) -> Iterator[tuple[nn.Module, SpectralConvNorm]]:
    """Yield ``(conv, parametrisation)`` for every spectrally normalised conv in ``module``."""
    for m in module.modules():
        if parametrize.is_parametrized(m, "weight"):
            for p in m.parametrizations.weight:
                if isinstance(p, SpectralConvNorm):
                    yield m, p


def spectral_norm_conv(
    conv: nn.Module,
    *,
    target: float = 1.0,
    mode: Literal["clip", "normalize"] = "clip",
    input_size: int | tuple[int, int] = 32,
    n_power_iterations: int = 1,
    n_init_iter: int = 15,
) -> nn.Module:
    """Register :class:`SpectralConvNorm` on one ``nn.Conv2d`` / ``nn.ConvTranspose2d``.

    ``n_init_iter`` power steps are run at registration so ``sigma`` starts accurate.
    Returns ``conv`` (modified in place).
    """
    if not isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)):
        raise TypeError(f"expected nn.Conv2d or nn.ConvTranspose2d, got {type(conv).__name__}")
    if any(True for _ in _spectral_parametrizations(conv)):
        raise ValueError(f"{conv} already has spectral normalisation")
    par = SpectralConvNorm(
        conv,
        target=target,
        mode=mode,
        input_size=input_size,
        n_power_iterations=n_power_iterations,
        n_init_iter=n_init_iter,
    )
    par.train(conv.training)
    # The registration check evaluates the parametrisation once: keep it from stepping u.
    par.frozen = True
    parametrize.register_parametrization(conv, "weight", par)
    par.frozen = False
    return conv


def apply_spectral_norm(
    module: nn.Module,
    target: float = 1.0,
    *,
    mode: Literal["clip", "normalize"] = "clip",
    input_size: int | tuple[int, int] = 32,
    n_power_iterations: int = 1,
    n_init_iter: int = 15,
) -> nn.Module:
    """Spectrally normalise every ``Conv2d`` / ``ConvTranspose2d`` of ``module`` (in place).

    Each layer's weight becomes ``W * min(1, target/sigma(W))`` (``mode="clip"``) or
    ``W * target/sigma(W)`` (``mode="normalize"``), ``sigma`` its operator norm on
    ``input_size`` inputs.  Returns ``module``.
    """
    convs = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    if not convs:
        raise ValueError(f"{type(module).__name__} has no Conv2d/ConvTranspose2d to normalise")
    for conv in convs:
        spectral_norm_conv(
            conv,
            target=target,
            mode=mode,
            input_size=input_size,
            n_power_iterations=n_power_iterations,
            n_init_iter=n_init_iter,
        )
    return module


def spectral_norm_power_step(module: nn.Module, n_steps: int = 1) -> None:
    """Advance ``u`` of every spectrally normalised conv in ``module`` by ``n_steps`` steps.

    Works in any mode (also inside :func:`frozen_spectral_norm`); no autograd graph is built.
    """
    n_steps = check_int("n_steps", n_steps, minimum=1, error=ConfigError)
    for conv, par in _spectral_parametrizations(module):
        plist = conv.parametrizations.weight
        with torch.no_grad():
            w = plist.original
            for q in plist:  # the input of `par` is the output of the parametrisations before it
                if q is par:
                    break
                w = q(w)
        par.power_step(w, n_steps)


@contextlib.contextmanager
def frozen_spectral_norm(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block, no forward of ``module`` advances any power iteration (even in training).

    Use around a fixed-point solve so that the map ``T`` does not change between iterations;
    weights stay differentiable (``sigma`` is still computed from the current ``u``).
    """
    pars = [p for _, p in _spectral_parametrizations(module)]
    previous = [p.frozen for p in pars]
    for p in pars:
        p.frozen = True
    try:
        yield module
    finally:
        for p, f in zip(pars, previous, strict=True):
            p.frozen = f


# ----------------------------------------------------------------------------- reporting helper
def conv_operator_norm(
    conv: nn.Module, shape: tuple[int, int] = (32, 32), n_iter: int = 100
) -> float:
    """Operator norm ``max ||A x|| / ||x||`` of the conv's linear map on ``(C_in, *shape)`` inputs.

    Power iteration (``n_iter`` steps from a seeded random start) on the weight the layer actually
    uses (after any spectral normalisation); bias excluded.  A lower estimate that converges to
    the norm.  Reading the weight here never advances a layer's own power iteration.
    """
    if not isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)):
        raise TypeError(f"expected nn.Conv2d or nn.ConvTranspose2d, got {type(conv).__name__}")
    shape = _check_size("shape", shape)
    n_iter = check_int("n_iter", n_iter, minimum=1, error=ConfigError)
    geom = _ConvGeometry(conv)
    with torch.no_grad(), frozen_spectral_norm(conv):
        w = conv.weight.detach()
        if w.dtype in (torch.float16, torch.bfloat16):
            w = w.float()
        gen = torch.Generator(device=w.device).manual_seed(0)
        u = torch.randn(
            1, geom.in_channels, *shape, generator=gen, dtype=w.dtype, device=w.device
        )
        u = _power_iteration(geom, w, _normalize(u), n_iter)
        return float(geom.apply(u, w).norm())
