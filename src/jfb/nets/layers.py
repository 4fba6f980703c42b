"""Building blocks the nets share: activations with their Lipschitz constants, the initialisation
of hidden and final convolutions, and the check of a net's input batch."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from jfb.errors import ConfigError, check_choice

__all__ = ["ACTIVATIONS", "check_input", "init_final", "init_hidden", "make_activation"]

# name -> (factory, Lipschitz constant sup |f'|); gelu/silu constants are rounded up.
ACTIVATIONS: dict[str, tuple[type[nn.Module], float]] = {
    "relu": (nn.ReLU, 1.0),
    "leaky_relu": (nn.LeakyReLU, 1.0),
    "elu": (nn.ELU, 1.0),
    "tanh": (nn.Tanh, 1.0),
    "softplus": (nn.Softplus, 1.0),
    "gelu": (nn.GELU, 1.12891),
    "silu": (nn.SiLU, 1.09984),
}


def make_activation(name: str) -> tuple[nn.Module, float]:
    """Return ``(activation module, its Lipschitz constant)`` for ``name``."""
    check_choice("activation", name, tuple(ACTIVATIONS), error=ConfigError)
    factory, lip = ACTIVATIONS[name]
    return factory(), lip


def init_hidden(conv: nn.Conv2d) -> None:
    """Kaiming-normal (fan_in, ReLU gain) weights, zero bias."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def init_final(conv: nn.Conv2d, scale: float) -> None:
    """Kaiming-normal (fan_in, linear gain) weights times ``scale``, zero bias."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="linear")
    with torch.no_grad():
        conv.weight.mul_(scale)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def check_input(x: Tensor, in_channels: int, name: str) -> None:
    """``x`` must be a 4-D batch (N, C, H, W) with the ``in_channels`` the net ``name`` was
    built for."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} expects a 4-D batch (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != in_channels:
        raise ValueError(
            f"{name} was built for {in_channels} input channels, got {x.shape[1]} "
            f"(input shape {tuple(x.shape)})"
        )
