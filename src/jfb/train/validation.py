"""Validation: mean PSNR and solver statistics over the validation set, sharded over ranks.

PSNR is computed per image on outputs clamped to [0, 1] and averaged over every image of every
rank; solver iterations and the converged fraction are averaged per sample, when the model
reports them (``last_stats``). Validation runs in eval mode without gradients and leaves the
global RNG states as they were, so it never shifts the training randomness.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from jfb.metrics import psnr
from jfb.train.distributed import all_reduce_sum

__all__ = ["validate"]


@torch.no_grad()
def validate(
    model: nn.Module,
    batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]],
    output: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
    *,
    device: torch.device,
    solver_stats: bool = True,
) -> dict[str, Any]:
    """``{"psnr", "n", "seconds"}`` (and ``"iters"``, ``"converged"`` when ``solver_stats`` and
    the model reports them) of ``x_hat = output(x, y, i)`` for the batches ``(x, y)`` on
    ``device`` that ``batches()`` gives, summed over ranks. ``batches`` is called inside the RNG
    fork: starting a DataLoader draws its base seed from the global RNG."""
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    acc = torch.zeros(5, dtype=torch.float64, device=device)
    cuda_devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda_devices):
            for i, (x, y, *cond) in enumerate(batches()):
                x_hat = output(x, y, i, *cond)
                p = psnr(x_hat.float().clamp(0, 1), x.float())
                acc[0] += p.sum().double()
                acc[1] += p.numel()
                stats = getattr(model, "last_stats", None) if solver_stats else None
                if stats is not None and getattr(stats, "iterations", None) is not None:
                    acc[2] += stats.iterations.double().sum()
                    acc[3] += stats.iterations.numel()
                    conv = getattr(stats, "converged", None)
                    if conv is not None:
                        acc[4] += conv.double().sum()
    finally:
        model.train(was_training)
    all_reduce_sum(acc)
    s, n, it, nit, conv = acc.tolist()
    out = {"psnr": s / max(n, 1), "n": int(n), "seconds": time.perf_counter() - t0}
    if nit > 0:
        out["iters"] = it / nit
        out["converged"] = conv / nit
    return out
