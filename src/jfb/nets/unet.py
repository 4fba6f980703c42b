"""A small U-Net for any image size.

Encoder: ``block(C_in -> b)``, then per level ``avg_pool2 -> block(b 2^(l-1) -> b 2^l)``.
Decoder: per level ``up -> concat(skip) -> block(. -> b 2^(l-1))``, then a 1x1 conv to the output
channels.  A block is ``[conv3x3 (+BN) + act] x 2``.  The input is padded (reflect, or replicate)
to a multiple of ``2**levels`` and the output cropped back, so any ``H x W`` works.  Output is
``net(x)`` or ``x - net(x)`` (``residual``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jfb.errors import (
    ConfigError,
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_positive,
)
from jfb.nets.layers import check_input, init_final, init_hidden, make_activation
from jfb.nets.spectral import apply_spectral_norm

__all__ = ["UNet"]


def _block(c_in: int, c_out: int, activation: str, batch_norm: bool, bias: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c in (c_in, c_out):
        conv = nn.Conv2d(c, c_out, 3, padding=1, bias=bias)
        init_hidden(conv)
        layers.append(conv)
        if batch_norm:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(make_activation(activation)[0])
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """U-Net with ``levels`` poolings, channels ``base * 2**l`` at level ``l``.

    ``up="bilinear"`` upsamples by bilinear interpolation (channels kept), ``"transpose"`` by a
    2x2 stride-2 transposed conv (halving channels).  ``pad_mode`` pads the input up to a
    multiple of ``2**levels`` (``"reflect"`` falls back to ``"replicate"`` on a side where the
    image is too small to reflect).  No BatchNorm by default, so the net acts on each sample
    alone.  ``spectral_norm=True`` caps the operator norm of every conv (and transposed conv) at
    ``sn_target``.  The last 1x1 conv is initialised ``final_scale_init`` times Kaiming.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        base: int = 32,
        levels: int = 2,
        residual: bool = False,
        up: Literal["bilinear", "transpose"] = "bilinear",
        pad_mode: Literal["reflect", "replicate"] = "reflect",
        activation: str = "relu",
        batch_norm: bool = False,
        bias: bool = True,
        spectral_norm: bool = False,
        sn_target: float = 1.0,
        sn_mode: Literal["clip", "normalize"] = "clip",
        final_scale_init: float = 0.1,
    ) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, minimum=1, error=ConfigError)
        out_channels = in_channels if out_channels is None else out_channels
        self.out_channels = check_int("out_channels", out_channels, minimum=1, error=ConfigError)
        self.base = check_int("base", base, minimum=1, error=ConfigError)
        self.levels = check_int("levels", levels, minimum=1, error=ConfigError)
        self.residual = check_bool("residual", residual, error=ConfigError)
        self.up = check_choice("up", up, ("bilinear", "transpose"), error=ConfigError)
        self.pad_mode = check_choice("pad_mode", pad_mode, ("reflect", "replicate"),
                                     error=ConfigError)
        make_activation(activation)
        self.batch_norm = check_bool("batch_norm", batch_norm, error=ConfigError)
        check_bool("bias", bias, error=ConfigError)
        self.spectral_norm = check_bool("spectral_norm", spectral_norm, error=ConfigError)
        sn_target = check_positive("sn_target", sn_target, error=ConfigError)
        check_choice("sn_mode", sn_mode, ("clip", "normalize"), error=ConfigError)
        final_scale_init = check_number("final_scale_init", final_scale_init, low=0,
                                        error=ConfigError)
        if residual and self.out_channels != self.in_channels:
            raise ConfigError(
                f"residual=True needs out_channels == in_channels, got {self.out_channels} "
                f"and {self.in_channels}"
            )

        ch = [base * 2**level for level in range(levels + 1)]
        self.inc = _block(in_channels, ch[0], activation, batch_norm, bias)
        self.downs = nn.ModuleList(
            _block(ch[level - 1], ch[level], activation, batch_norm, bias)
            for level in range(1, levels + 1)
        )
        self.upconvs = nn.ModuleList()
        self.ups = nn.ModuleList()
        for level in range(levels, 0, -1):
            if up == "transpose":
                upconv = nn.ConvTranspose2d(ch[level], ch[level - 1], 2, stride=2, bias=bias)
                nn.init.kaiming_normal_(upconv.weight, mode="fan_in", nonlinearity="linear")
                if upconv.bias is not None:
                    nn.init.zeros_(upconv.bias)
                self.upconvs.append(upconv)
                c_up = ch[level - 1]
            else:
                c_up = ch[level]
            c_out = ch[level - 1]
            self.ups.append(_block(c_up + c_out, c_out, activation, batch_norm, bias))
        self.outc = nn.Conv2d(ch[0], self.out_channels, 1, bias=bias)
        init_final(self.outc, final_scale_init)
        if spectral_norm:
            apply_spectral_norm(self, sn_target, mode=sn_mode)

    def _pad(self, x: Tensor) -> tuple[Tensor, tuple[int, int, int, int]]:
        m = 2**self.levels
        h, w = x.shape[-2:]
        ph, pw = (-h) % m, (-w) % m
        pads = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)  # left, right, top, bottom
        if ph == 0 and pw == 0:
            return x, pads
        # F.pad takes (left, right) first; pad W then H so each can pick its mode.
        for dim_pads, size, spec in (
            (pads[0:2], w, lambda a, b: (a, b, 0, 0)),
            (pads[2:4], h, lambda a, b: (0, 0, a, b)),
        ):
            if max(dim_pads) == 0:
                continue
            mode = self.pad_mode if max(dim_pads) < size else "replicate"
            x = F.pad(x, spec(*dim_pads), mode=mode)
        return x, pads

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.in_channels, "UNet")
        h, w = x.shape[-2:]
        z, (left, _, top, _) = self._pad(x)
        z = self.inc(z)
        skips = [z]
        for block in self.downs:
            z = block(F.avg_pool2d(z, 2))
            skips.append(z)
        skips.pop()
        for i, block in enumerate(self.ups):
            skip = skips.pop()
            if self.up == "transpose":
                z = self.upconvs[i](z)
            else:
                z = F.interpolate(z, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            z = block(torch.cat([z, skip], dim=1))
        out = self.outc(z)[..., top : top + h, left : left + w]
        return x - out if self.residual else out
