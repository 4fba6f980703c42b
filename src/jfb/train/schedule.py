"""The learning-rate schedule: linear warm-up then cosine or constant, pre-training phase first.

lr(g) = peak lr x :func:`phase_lr_factor` (g) x the product of the rollbacks' reductions. The
``P`` pre-training steps ``[0, P)`` warm up over ``min(warmup_steps, P)`` steps and then hold
the peak; the main steps ``[P, P + steps)`` warm up again and follow ``schedule``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from jfb.errors import ConfigError

__all__ = ["lr_factor", "phase_lr_factor", "reset_lr"]


def lr_factor(step: int, *, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at 0-based ``step`` of ``total``.

    Linear warm-up ``(step + 1) / warmup`` for ``step < warmup``; then 1 (``"constant"``) or
    ``0.5 (1 + cos(pi t))`` with ``t = (step - warmup) / (total - warmup)`` (``"cosine"``).
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise ConfigError(f"train.schedule: unknown schedule {schedule!r}")
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(max(t, 0.0), 1.0)))


def phase_lr_factor(g: int, *, pretrain_steps: int, steps: int, warmup: int,
                    schedule: str) -> float:
    """Multiplier of the peak learning rate at global step ``g``: pre-training (``g <
    pretrain_steps``) warms up then holds; the main phase is :func:`lr_factor` of ``g - P``."""
    p = pretrain_steps
    if g < p:
        return lr_factor(g, total=p, warmup=min(warmup, p), schedule="constant")
    return lr_factor(g - p, total=steps, warmup=warmup, schedule=schedule)


def reset_lr(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR,
             lr_lambda: Callable[[int], float]) -> float:
    """Set every group's lr to its peak x ``lr_lambda`` at the scheduler's position (after the
    schedule itself changed, e.g. by a rollback's reduction); returns the first group's."""
    for group, base in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
        group["lr"] = base * lr_lambda(scheduler.last_epoch)
    return optimizer.param_groups[0]["lr"]
