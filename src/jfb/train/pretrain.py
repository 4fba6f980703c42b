"""Pre-training of R before the fixed-point phase: which models can, and what is fitted to x.

``pretrain="deblur"`` fits ``model.pretrain_forward(y)`` (R applied once to the initial
estimate x0(y)) to x; ``pretrain="denoise"`` fits ``model.feedforward(x + sigma n)``, a blind
denoiser, with sigma ~ U[0, ``pretrain_noise``] per sample. The noise of a training step is drawn
for the whole global batch from (seed, step) and sliced by rank, so it does not depend on the
number of processes; validation noise (sigma = ``pretrain_noise / 2``) is the same at every
validation. Models are duck-typed: no model class is imported here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from jfb.train.seeding import mix_seed, step_generator

__all__ = ["can_pretrain", "pretrain_output"]

# Salts of the pre-training noise streams (training steps; validation batches).
_SALT_PRETRAIN, _SALT_PRETRAIN_VAL = 0xDE015E, 0xDE0FA1


def can_pretrain(model: nn.Module, mode: str) -> bool:
    """Whether ``model`` has what pre-training in ``mode`` calls: ``pretrain_forward(y)``
    ("deblur") or ``feedforward(v)`` ("denoise"), and does not declare ``feedforward = None``
    (an implicit model without a feedforward R, whose ``pretrain_forward`` would need one)."""
    name = "pretrain_forward" if mode == "deblur" else "feedforward"
    return callable(getattr(model, name, None)) and getattr(model, "feedforward", ...) is not None


def pretrain_output(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, cond: tuple[Any, ...] = (), *,
    mode: str, noise: float, seed: int,
    step: int, rank: int = 0, world_size: int = 1, val_batch: int | None = None,
) -> torch.Tensor:
    """What pre-training fits to x at global ``step``: ``pretrain_forward(y)`` (``"deblur"``),
    or ``feedforward(x + sigma n)`` (``"denoise"``) with sigma ~ U[0, ``noise``] per sample in
    training and ``noise / 2`` in validation (batch ``val_batch`` of this rank's shard).
    ``cond``: what the batch carries besides (x, y), such as its physics."""
    if mode == "deblur":
        return model.pretrain_forward(y, *cond)
    if val_batch is not None:
        g = torch.Generator().manual_seed(mix_seed(seed, _SALT_PRETRAIN_VAL, rank, val_batch))
        draw = torch.randn(x.shape, generator=g, dtype=torch.float32)
        sigma = torch.full((x.shape[0],), noise / 2)
    else:
        g = step_generator(seed, step, _SALT_PRETRAIN)
        n = x.shape[0]
        mine = slice(rank * n, (rank + 1) * n)
        draw = torch.randn((n * world_size, *x.shape[1:]), generator=g, dtype=torch.float32)[mine]
        sigma = (torch.rand(n * world_size, generator=g) * noise)[mine]
    draw = draw.mul_(sigma.view(-1, 1, 1, 1)).to(device=x.device, dtype=x.dtype)
    return model.feedforward(x + draw)
