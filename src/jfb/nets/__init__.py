"""Learned nets ``R_theta`` for implicit (and feedforward) reconstructors, with Lipschitz control.

``DnCNN`` and ``UNet`` act on each sample alone unless built with ``batch_norm=True``;
``has_batch_norm`` lets a model refuse BatchNorm inside a fixed-point map.  Spectral normalisation
of convolutions as operators lives in :mod:`jfb.nets.spectral`.
"""

from __future__ import annotations

import inspect

from torch import nn

from jfb.errors import ConfigError
from jfb.nets.dncnn import DnCNN
from jfb.nets.layers import ACTIVATIONS
from jfb.nets.spectral import (
    SpectralConvNorm,
    apply_spectral_norm,
    conv_operator_norm,
    frozen_spectral_norm,
    spectral_norm_conv,
    spectral_norm_power_step,
)
from jfb.nets.unet import UNet

__all__ = [
    "ACTIVATIONS",
    "NETS",
    "DnCNN",
    "SpectralConvNorm",
    "UNet",
    "apply_spectral_norm",
    "build_net",
    "conv_operator_norm",
    "frozen_spectral_norm",
    "has_batch_norm",
    "spectral_norm_conv",
    "spectral_norm_power_step",
]

NETS: dict[str, type[nn.Module]] = {"dncnn": DnCNN, "unet": UNet}


def has_batch_norm(module: nn.Module) -> bool:
    """True if ``module`` contains any BatchNorm layer (statistics shared across the batch)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def build_net(name: str, **kwargs: object) -> nn.Module:
    """Build the net called ``name`` (``"dncnn"``, ``"unet"``; case-insensitive) from ``kwargs``.

    Unknown names or keyword arguments raise :class:`jfb.errors.ConfigError` naming them.
    """
    if not isinstance(name, str) or name.lower() not in NETS:
        raise ConfigError(f"unknown net {name!r}; choose one of: {', '.join(NETS)}")
    cls = NETS[name.lower()]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(k for k in kwargs if k not in allowed)
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for net {name.lower()!r}; "
            f"valid options: {', '.join(allowed)}"
        )
    return cls(**kwargs)
