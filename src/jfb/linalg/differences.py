"""Forward differences D of (N, C, H, W) images (Neumann boundary) and their adjoint D^T: the
gradient that Tikhonov's smoothness penalty and total variation are built on."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["gradient", "gradient_adjoint"]


def gradient(x: torch.Tensor) -> torch.Tensor:
    """Forward differences of (N, C, H, W) images, Neumann boundary (last difference = 0):
    D x = stack(x[i+1, j] - x[i, j], x[i, j+1] - x[i, j]) of shape (N, C, 2, H, W)."""
    dv = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    dh = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1))
    return torch.stack((dv, dh), dim=-3)


def gradient_adjoint(g: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`gradient` (minus the divergence): D^T g for g of shape (N, C, 2, H, W)."""
    gv = g[..., 0, :-1, :]
    gh = g[..., 1, :, :-1]
    return (
        F.pad(gv, (0, 0, 1, 0)) - F.pad(gv, (0, 0, 0, 1))
        + F.pad(gh, (1, 0)) - F.pad(gh, (0, 1))
    )
