"""DnCNN-style convolutional net: the learned regulariser ``R_theta`` of implicit models.

Architecture (Zhang et al. 2017): ``conv+act, (depth-2) x [conv(+norm)+act], conv``, all
``kernel_size x kernel_size`` with "same" zero padding.  ``residual=False`` returns ``net(x)``
(the ``R(x)`` term of ``T(x) = x - eta (A^T(Ax - y) + R(x))``); ``residual=True`` returns
``x - net(x)`` (a feedforward denoiser/deblurrer that predicts the residual). The optional norm
is BatchNorm (statistics over the batch) or GroupNorm (``GROUPS`` groups of channels, statistics
over each sample alone, so a per-sample map; but no longer a local one: an output pixel depends
on the whole image).

Without autograd on the CPU, a large input goes through the body in pieces (whole samples, else
spatial chunks widened by the receptive radius, so the result is the same up to rounding): no
feature map exceeds :attr:`DnCNN.chunk_bytes` (see :meth:`DnCNN.forward`), except that a net
with GroupNorm takes whole samples only.
"""

from __future__ import annotations

import contextlib
import math
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from jfb.errors import (
    ConfigError,
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_positive,
)
from jfb.nets.layers import ACTIVATIONS, check_input, init_final, init_hidden, make_activation
from jfb.nets.spectral import apply_spectral_norm, conv_operator_norm

# ACTIVATIONS and make_activation live in jfb.nets.layers; still importable from here.
__all__ = ["ACTIVATIONS", "DnCNN", "make_activation"]

#: The default :attr:`DnCNN.chunk_bytes`: the largest feature map of a no-grad CPU forward. Well
#: under glibc's 32 MiB mmap ceiling (larger blocks are fresh pages from the kernel at every
#: allocation, each faulted in and zeroed: 55% of a 1-megapixel forward's time was system time),
#: and near the 384 x 384 chunks of 32 channels that ran fastest (docs/BENCHMARKS.md, "Photos").
CHUNK_BYTES = 16 * 2**20
#: Channel groups of ``group_norm`` (fewer when the width is not a multiple).
GROUPS = 8


class DnCNN(nn.Module):
    """``net = conv_L o act o (BN o) conv_{L-1} o ... o act o conv_1``; output ``net(x)`` or
    ``x - net(x)`` (``residual``).

    Hidden convs use Kaiming-normal init; the last conv is Kaiming (linear gain) times
    ``final_scale_init`` with zero bias, so ``net(x)`` starts near 0 (exactly 0 when
    ``final_scale_init=0``).  ``spectral_norm=True`` caps every conv's operator norm at
    ``sn_target`` (see :mod:`jfb.nets.spectral`); then, without BatchNorm and up to the
    power-iteration lag, ``net`` is ``sn_target**depth * Lip(act)**(depth-1)``-Lipschitz
    (see :meth:`lipschitz_bound`).  Keep ``batch_norm=False`` inside fixed-point maps: BatchNorm
    in train mode couples the samples of a batch.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        depth: int = 17,
        width: int = 64,
        kernel_size: int = 3,
        bias: bool = True,
        batch_norm: bool = False,
        group_norm: bool = False,
        spectral_norm: bool = False,
        sn_target: float = 1.0,
        sn_mode: Literal["clip", "normalize"] = "clip",
        activation: str = "relu",
        residual: bool = False,
        final_scale_init: float = 0.1,
    ) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, minimum=1, error=ConfigError)
        out_channels = in_channels if out_channels is None else out_channels
        self.out_channels = check_int("out_channels", out_channels, minimum=1, error=ConfigError)
        self.depth = check_int("depth", depth, minimum=2, error=ConfigError)
        self.width = check_int("width", width, minimum=1, error=ConfigError)
        self.kernel_size = check_int("kernel_size", kernel_size, minimum=1, error=ConfigError)
        if kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size must be odd (for 'same' padding), got {kernel_size}")
        check_bool("bias", bias, error=ConfigError)
        self.batch_norm = check_bool("batch_norm", batch_norm, error=ConfigError)
        self.group_norm = check_bool("group_norm", group_norm, error=ConfigError)
        if batch_norm and group_norm:
            raise ConfigError("batch_norm and group_norm: choose one normalisation")
        self.spectral_norm = check_bool("spectral_norm", spectral_norm, error=ConfigError)
        sn_target = check_positive("sn_target", sn_target, error=ConfigError)
        check_choice("sn_mode", sn_mode, ("clip", "normalize"), error=ConfigError)
        self.residual = check_bool("residual", residual, error=ConfigError)
        final_scale_init = check_number("final_scale_init", final_scale_init, low=0,
                                        error=ConfigError)
        self.activation = activation
        _, self._act_lip = make_activation(activation)
        if residual and self.out_channels != self.in_channels:
            raise ConfigError(
                f"residual=True needs out_channels == in_channels, got {self.out_channels} "
                f"and {self.in_channels}"
            )

        pad = kernel_size // 2
        layers: list[nn.Module] = []
        channels = self.in_channels
        for i in range(depth - 1):
            conv = nn.Conv2d(channels, width, kernel_size, padding=pad, bias=bias)
            init_hidden(conv)
            layers.append(conv)
            if batch_norm and i > 0:
                layers.append(nn.BatchNorm2d(width))
            if group_norm and i > 0:
                layers.append(nn.GroupNorm(math.gcd(GROUPS, width), width))
            layers.append(make_activation(activation)[0])
            channels = width
        final = nn.Conv2d(width, self.out_channels, kernel_size, padding=pad, bias=bias)
        init_final(final, final_scale_init)
        layers.append(final)
        self.body = nn.Sequential(*layers)
        #: Bytes of the largest feature map a no-grad CPU forward may allocate (0: no limit).
        self.chunk_bytes = CHUNK_BYTES
        if spectral_norm:
            apply_spectral_norm(self.body, sn_target, mode=sn_mode)

    @property
    def receptive_radius(self) -> int:
        """How many pixels away an output pixel sees: depth x (kernel_size // 2) (with
        ``group_norm``, the statistics see the whole image besides)."""
        return self.depth * (self.kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        """``net(x)``, or ``x - net(x)`` with ``residual``.

        Without autograd, on the CPU, when a feature map of the whole batch would exceed
        ``chunk_bytes``, the body runs on pieces (:meth:`_forward_in_pieces`): groups of whole
        samples, or, when one sample is too large, spatial chunks widened by the receptive
        radius on every side inside the image (the zero padding at the image's border is the
        body's own), in channels-last layout. Pieces give the whole batch's result up to
        rounding (the convolution's algorithm may depend on the batch and layout), with memory
        and cache traffic bounded by the chunk whatever the image size."""
        check_input(x, self.in_channels, "DnCNN")
        if self._in_pieces(x):
            return self._forward_in_pieces(x)
        out = self.body(x)
        return x - out if self.residual else out

    def _in_pieces(self, x: Tensor) -> bool:
        if (not self.chunk_bytes or torch.is_grad_enabled() or x.device.type != "cpu"
                or (self.batch_norm and self.training)):
            return False
        return self._map_bytes(x) * x.shape[0] * x.shape[-2] * x.shape[-1] > self.chunk_bytes

    def _map_bytes(self, x: Tensor) -> int:
        """Bytes per pixel of the widest feature map."""
        return x.element_size() * max(self.width, self.in_channels, self.out_channels)

    def _body_in_place(self, v: Tensor, channels_last: bool = False) -> Tensor:
        """The body without autograd, its ReLUs in place (one feature map fewer per layer),
        optionally on channels-last feature maps."""
        if channels_last:
            v = v.contiguous(memory_format=torch.channels_last)
        for module in self.body:
            v = v.relu_() if isinstance(module, nn.ReLU) else module(v)
        return v

    def _forward_in_pieces(self, x: Tensor) -> Tensor:
        # Spectrally normalised weights are computed (and their power iteration advanced, in
        # training) once for all the pieces, as for a single forward.
        with parametrize.cached() if self.spectral_norm else contextlib.nullcontext():
            return self._pieces(x)

    def _pieces(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        out = x.new_empty(n, self.out_channels, h, w)
        per_sample = self._map_bytes(x) * h * w
        if per_sample <= self.chunk_bytes or self.group_norm:  # groups of whole samples
            k = max(1, self.chunk_bytes // per_sample)
            for i in range(0, n, k):
                v = self._body_in_place(x[i : i + k])
                out[i : i + k] = x[i : i + k] - v if self.residual else v
            return out
        halo = self.receptive_radius
        side = max(16, math.isqrt(self.chunk_bytes // (n * self._map_bytes(x))) - 2 * halo)
        for r0, r1 in _cuts(h, side):
            R0, R1 = max(0, r0 - halo), min(h, r1 + halo)
            for c0, c1 in _cuts(w, side):
                C0, C1 = max(0, c0 - halo), min(w, c1 + halo)
                # channels-last: 12% faster than NCHW on 384 x 384 chunks of 32 channels
                # (docs/BENCHMARKS.md, "Photos"); equal up to rounding
                v = self._body_in_place(x[..., R0:R1, C0:C1], channels_last=True)
                v = v[..., r0 - R0 : r1 - R0, c0 - C0 : c1 - C0]
                out[..., r0:r1, c0:c1] = x[..., r0:r1, c0:c1] - v if self.residual else v
        return out

    def lipschitz_bound(self, shape: tuple[int, int] = (32, 32), n_iter: int = 100) -> float:
        """Upper bound of the Lipschitz constant of ``net`` (``1 +`` that when ``residual``):
        ``prod_l ||conv_l|| * prod Lip(act) * prod_BN max_c |gamma_c| / sqrt(var_c + eps)``.

        Conv norms are :func:`conv_operator_norm` on ``shape`` inputs (zero padding: the norm on
        smaller images is no larger).  BatchNorm enters with its eval-mode (running-statistics)
        affine scale: in train mode BatchNorm is not a per-sample map and no such bound exists.
        GroupNorm divides by its input's statistics: no bound exists (ValueError).
        """
        if self.group_norm:
            raise ValueError("a DnCNN with group_norm has no Lipschitz bound (GroupNorm divides "
                             "by its input's standard deviation)")
        bound = 1.0
        for m in self.body:
            if isinstance(m, nn.Conv2d):
                bound *= conv_operator_norm(m, shape, n_iter)
            elif isinstance(m, nn.BatchNorm2d):
                scale = torch.rsqrt(m.running_var.detach().double() + m.eps)
                if m.weight is not None:
                    scale = scale * m.weight.detach().double().abs()
                bound *= float(scale.max())
            else:
                bound *= self._act_lip
        if not math.isfinite(bound):
            raise ValueError("Lipschitz bound is not finite (weights contain NaN/Inf)")
        return 1.0 + bound if self.residual else bound


def _cuts(length: int, size: int) -> list[tuple[int, int]]:
    """[a, b) intervals of near-equal length (at most ``size``) that partition [0, length)."""
    n = -(-length // size)
    edges = [i * length // n for i in range(n + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))
