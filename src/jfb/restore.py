"""Apply a reconstruction method to images of any size in overlapping tiles (bounded memory).

Each tile is reconstructed alone, as if the image ended at its border; the errors that this makes
near tile borders are confined to a few kernel widths, and the ``overlap`` region blends
neighbouring tiles with linear ramps, so the stitched image has no seams. The weights are
normalised, so a method that acts pixelwise gives exactly its untiled result. Methods may
upscale by an integer factor s (super-resolution): a measurement tile at (i, j) then gives the
output tile at (s i, s j), and the blending happens on the output grid. An auxiliary tensor of
the measurement's size (e.g. an inpainting mask) can be cut into the same tiles and passed along.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


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
    method: Callable[..., torch.Tensor],
    y: torch.Tensor,
    *,
    tile: int = 256,
    overlap: int = 32,
    batch_size: int = 4,
    aux: torch.Tensor | None = None,
) -> torch.Tensor:
    """x_hat of a measurement y (C, H, W) or (1, C, H, W), computed tile by tile.

    Memory is that of ``batch_size`` tiles of ``tile`` x ``tile`` measurement pixels, whatever
    the image size. The method maps (n, C, th, tw) tiles to (n, C', s th, s w) with one integer
    s for all tiles (same-size operators: s = 1). With ``aux`` (shape (1, K, H, W)), the method
    is called as ``method(tiles, aux_tiles)``.
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
    _, _, h, w = y.shape
    if aux is not None and (aux.dim() != 4 or aux.shape[0] != 1 or aux.shape[-2:] != y.shape[-2:]):
        raise ValueError(f"aux must be (1, K, {h}, {w}), got {tuple(aux.shape)}")

    def run(sl: list[tuple[slice, slice]]) -> torch.Tensor:
        tiles = torch.cat([y[..., a, b] for a, b in sl])
        if aux is None:
            return method(tiles)
        return method(tiles, torch.cat([aux[..., a, b] for a, b in sl]))

    if h <= tile and w <= tile:
        out = run([(slice(None), slice(None))])
        return out[0] if squeeze else out
    th, tw = min(tile, h), min(tile, w)
    boxes = [(i, j) for i in tile_starts(h, th, overlap) for j in tile_starts(w, tw, overlap)]
    acc = norm = weight = None
    s = 0
    for k in range(0, len(boxes), batch_size):
        chunk = boxes[k : k + batch_size]
        out = run([(slice(i, i + th), slice(j, j + tw)) for i, j in chunk])
        if acc is None:
            s = out.shape[-2] // th
            if s < 1 or out.shape[-2:] != (s * th, s * tw) or out.shape[0] != len(chunk):
                raise ValueError(
                    f"tiled restoration needs a method that scales tiles by one integer factor; "
                    f"got {tuple(out.shape)} for {len(chunk)} tiles of {th}x{tw}"
                )
            weight = (_ramp(s * th, s * overlap, y.device, y.dtype)[:, None]
                      * _ramp(s * tw, s * overlap, y.device, y.dtype))
            acc = torch.zeros(1, out.shape[1], s * h, s * w, device=y.device, dtype=y.dtype)
            norm = torch.zeros(1, 1, s * h, s * w, device=y.device, dtype=y.dtype)
        elif out.shape[-2:] != (s * th, s * tw):
            raise ValueError(f"the method changed its output size to {tuple(out.shape)}")
        for (i, j), o in zip(chunk, out, strict=True):
            acc[..., s * i : s * (i + th), s * j : s * (j + tw)] += weight * o
            norm[..., s * i : s * (i + th), s * j : s * (j + tw)] += weight
    out = acc / norm
    return out[0] if squeeze else out
