"""Forward differences D of (N, C, H, W) images (Neumann boundary) and their adjoint D^T: the
gradient that Tikhonov's smoothness penalty and total variation are built on."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["gradient", "gradient_adjoint"]


def gradient(x: torch.Tensor) -> torch.Tensor:
    """Forward differences of (N, C, H, W) images, Neumann boundary (last difference = 0):
    D x = stack(x[i+1, j] - x[i, j], x[i, j+1] - x[i, j]) of shape (N, C, 2, H, W)."""
    if torch.is_grad_enabled() and x.requires_grad:
        dv = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
        dh = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1))
        return torch.stack((dv, dh), dim=-3)
    # the same values written into one tensor (no padded copies: a photo's Tikhonov start)
    out = x.new_zeros(*x.shape[:-2], 2, *x.shape[-2:])
    torch.sub(x[..., 1:, :], x[..., :-1, :], out=out[..., 0, :-1, :])
    torch.sub(x[..., :, 1:], x[..., :, :-1], out=out[..., 1, :, :-1])
    return out


def gradient_adjoint(g: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`gradient` (minus the divergence): D^T g for g of shape (N, C, 2, H, W)."""
    gv = g[..., 0, :-1, :]
    gh = g[..., 1, :, :-1]
    if torch.is_grad_enabled() and g.requires_grad:
        return (
            F.pad(gv, (0, 0, 1, 0)) - F.pad(gv, (0, 0, 0, 1))
            + F.pad(gh, (1, 0)) - F.pad(gh, (0, 1))
        )
    # in place, in the same order ((0 + a) - b + c) - d, so the same values bit for bit
    out = g.new_zeros(*g.shape[:-3], *g.shape[-2:])
    out[..., 1:, :] += gv
    out[..., :-1, :] -= gv
    out[..., :, 1:] += gh
    out[..., :, :-1] -= gh
    return out
