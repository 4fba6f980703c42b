"""Stability diagnostics of an implicit model in training: its contraction factor and Jacobian.

Every ``log_every`` steps the ``train`` record of an implicit model (one with
``contraction(x*, y)``) holds ``contraction`` / ``contraction_max``: ||J_T(x*)||_2 of the first
``CONTRACTION_SAMPLES`` samples of the batch, by ``CONTRACTION_ITERS`` power iterations at the
detached fixed point, before the update (``train.log_contraction``). ``train.jacobian_penalty``
= gamma > 0 adds gamma * mean_i ||J_T(x*_i)||_F^2 / d (Hutchinson, one probe;
``model.jacobian_frobenius``) to the loss; its mean over the log window is logged as
``jacobian``. Both draw from generators seeded by (seed, step), never from the global RNGs, so
measuring changes nothing else in training.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from jfb.train.seeding import step_generator

__all__ = ["CONTRACTION_ITERS", "CONTRACTION_SAMPLES", "contraction_factor", "jacobian_penalty"]

#: The logged contraction factor: this many samples of the batch, this many power iterations.
CONTRACTION_SAMPLES, CONTRACTION_ITERS = 2, 5
# Salts of the generators of the diagnostics (kept apart from every other stream).
_SALT_CONTRACTION, _SALT_JACOBIAN = 0xC0417, 0x7AC0B


def contraction_factor(model: nn.Module, x_hat: torch.Tensor, y: torch.Tensor,
                       cond: tuple[Any, ...] = (), *, seed: int, step: int,
                       samples: int = CONTRACTION_SAMPLES, n_iter: int = CONTRACTION_ITERS,
                       method: str = "power") -> torch.Tensor:
    """||J_T(x*)||_2 of the first ``samples`` samples at the fixed point ``x_hat`` (detached; no
    gradient; ``n_iter`` steps of ``method``, power iteration or Lanczos), one value per sample;
    ``cond``: the batch's physics, if any."""
    k = min(samples, x_hat.shape[0])
    if cond and k < x_hat.shape[0]:  # the physics of those samples
        cond = (cond[0].select(torch.arange(k, device=x_hat.device)), *cond[1:])
    return model.contraction(
        x_hat.detach()[:k].to(y.dtype),
        y[:k],
        *cond,
        n_iter=n_iter,
        method=method,
        generator=step_generator(seed, step, _SALT_CONTRACTION),
    )


def jacobian_penalty(model: nn.Module, x_hat: torch.Tensor, y: torch.Tensor,
                     cond: tuple[Any, ...] = (), *, seed: int, step: int) -> torch.Tensor:
    """mean_i ||J_T(x*_i)||_F^2 / d at the detached fixed point ``x_hat`` (one Hutchinson
    probe): a 0-d tensor with a graph into the model's parameters."""
    return model.jacobian_frobenius(
        x_hat.detach(), y, *cond, generator=step_generator(seed, step, _SALT_JACOBIAN)
    ).mean()
