"""DnCNN-style convolutional net: the learned regulariser ``R_theta`` of implicit models.

Architecture (Zhang et al. 2017): ``conv+act, (depth-2) x [conv(+BN)+act], conv``, all
``kernel_size x kernel_size`` with "same" zero padding.  ``residual=False`` returns ``net(x)``
(the ``R(x)`` term of ``T(x) = x - eta (A^T(Ax - y) + R(x))``); ``residual=True`` returns
``x - net(x)`` (a feedforward denoiser/deblurrer that predicts the residual).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

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
            layers.append(make_activation(activation)[0])
            channels = width
        final = nn.Conv2d(width, self.out_channels, kernel_size, padding=pad, bias=bias)
        init_final(final, final_scale_init)
        layers.append(final)
        self.body = nn.Sequential(*layers)
        if spectral_norm:
            apply_spectral_norm(self.body, sn_target, mode=sn_mode)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.in_channels, "DnCNN")
        out = self.body(x)
        return x - out if self.residual else out

    def lipschitz_bound(self, shape: tuple[int, int] = (32, 32), n_iter: int = 100) -> float:
        """Upper bound of the Lipschitz constant of ``net`` (``1 +`` that when ``residual``):
        ``prod_l ||conv_l|| * prod Lip(act) * prod_BN max_c |gamma_c| / sqrt(var_c + eps)``.

        Conv norms are :func:`conv_operator_norm` on ``shape`` inputs (zero padding: the norm on
        smaller images is no larger).  BatchNorm enters with its eval-mode (running-statistics)
        affine scale: in train mode BatchNorm is not a per-sample map and no such bound exists.
        """
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
