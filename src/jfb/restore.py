"""Apply a reconstruction method to images of any size in overlapping tiles (bounded memory).

Each tile is reconstructed alone, as if the image ended at its border; the errors that this makes
near tile borders are confined to a few kernel widths, and the ``overlap`` region blends
neighbouring tiles with linear ramps, so the stitched image has no seams. The weights are
normalised, so a method that acts pixelwise gives exactly its untiled result.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Method = Callable[[torch.Tensor], torch.Tensor]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering [0, length) with at least ``overlap``."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def _ramp(n: int, overlap: int, device, dtype) -> torch.Tensor:
    """1-D blending weight: rises linearly over ``overlap`` pixels at both ends, 1 inside."""
    w = torch.ones(n, device=device, dtype=dtype)
    if overlap > 0 and n > 2 * overlap:
        r = torch.arange(1, overlap + 1, device=device, dtype=dtype) / (overlap + 1)
        w[:overlap] = r
        w[-overlap:] = r.flip(0)
    return w


@torch.no_grad()
def restore_tiled(
    method: Method, y: torch.Tensor, *, tile: int = 256, overlap: int = 32, batch_size: int = 4
) -> torch.Tensor:
    """x_hat of a measurement y (C, H, W) or (1, C, H, W), computed tile by tile.

    Memory is that of ``batch_size`` tiles of ``tile`` x ``tile`` pixels, whatever the image size.
    The method must keep the spatial size (same-size operators: zeros, circular, reflect).
    """
    if tile < 8:
        raise ValueError(f"tile must be >= 8 pixels, got {tile}")
    if not 0 <= overlap < tile // 2:
        raise ValueError(f"overlap must be in [0, tile/2), got {overlap} for tile {tile}")
    squeeze = y.dim() == 3
    if squeeze:
        y = y[None]
    if y.dim() != 4 or y.shape[0] != 1:
        raise ValueError(f"expected one image (C, H, W) or (1, C, H, W), got {tuple(y.shape)}")
    _, c, h, w = y.shape
    if h <= tile and w <= tile:
        out = method(y)
        return out[0] if squeeze else out
    th, tw = min(tile, h), min(tile, w)
    boxes = [(i, j) for i in tile_starts(h, th, overlap) for j in tile_starts(w, tw, overlap)]
    weight = _ramp(th, overlap, y.device, y.dtype)[:, None] * _ramp(tw, overlap, y.device, y.dtype)
    acc = torch.zeros(1, c, h, w, device=y.device, dtype=y.dtype)
    norm = torch.zeros(1, 1, h, w, device=y.device, dtype=y.dtype)
    for k in range(0, len(boxes), batch_size):
        chunk = boxes[k : k + batch_size]
        tiles = torch.cat([y[..., i : i + th, j : j + tw] for i, j in chunk])
        out = method(tiles)
        if out.shape != tiles.shape:
            raise ValueError(
                f"tiled restoration needs a size-preserving method; got {tuple(out.shape)} "
                f"for tiles {tuple(tiles.shape)}"
            )
        for (i, j), o in zip(chunk, out, strict=True):
            acc[..., i : i + th, j : j + tw] += weight * o
            norm[..., i : i + th, j : j + tw] += weight
    out = acc / norm
    return out[0] if squeeze else out
