"""Per-sample inner products, broadcasting and weights on batches (first dimension = the batch).
Knows nothing of images. (The per-sample norm and the engine's relative residual are
:func:`jfb.deq.per_sample_norm` and :func:`jfb.deq.relative_residual`.)"""

from __future__ import annotations

import torch

__all__ = ["batch_dot", "batch_view", "batch_weight"]


def batch_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample inner products <a_i, b_i> over all non-batch dimensions -> Tensor[N]."""
    return torch.sum((a * b).reshape(a.shape[0], -1), dim=1)


def batch_view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-sample vector (N,) reshaped to (N, 1, ..., 1), to broadcast against ``like``."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def batch_weight(lam: float | torch.Tensor, like: torch.Tensor, name: str = "lam") -> torch.Tensor:
    """A weight >= 0 given as a number or one value per sample, as an (N, 1, ..., 1) tensor
    broadcasting against ``like`` (same device and dtype)."""
    n = like.shape[0]
    if isinstance(lam, torch.Tensor):
        t = lam.detach().to(device=like.device, dtype=like.dtype).reshape(-1)
        if t.numel() not in (1, n):
            raise ValueError(f"{name} must be a number or hold one value per sample ({n}), "
                             f"got {lam.numel()} values")
    elif isinstance(lam, bool) or not isinstance(lam, (int, float)):
        raise TypeError(f"{name} must be a number or a tensor, got {type(lam).__name__}")
    else:
        t = torch.tensor([float(lam)], device=like.device, dtype=like.dtype)
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise ValueError(f"{name} must be finite and >= 0, got {lam}")
    return batch_view(t.expand(n).clone(), like)
