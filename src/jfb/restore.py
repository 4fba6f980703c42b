"""Restore a measurement of any size in tiles whose borders assume nothing about the outside.

The image is cut into cores that partition it. Each core is solved inside a *context*: the core
widened by ``margin`` measurement pixels on every side that lies inside the image. On those
sides the outer ``guard`` pixels of the context are marked unobserved: the ``window`` w is 0
there, and the tile's forward model is y_tile = w . A(x_tile) (the ``valid`` data term). With
``guard`` at least the operator's reach (:func:`operator_reach`: how many measurement pixels
next to a border depend on the image beyond it), no measured pixel of the tile is explained by
pixels that the tile does not have, so nothing is assumed about the image outside it. What the
solve does near an open side (a prior that fills the unobserved frame, an implicit solve that
carries information across the tile) decays with distance, and the margin is chosen wider than
that reach (docs/RESULTS.md, "real photos"). At the image's own borders the context stops and
the operator's boundary condition applies, as in the whole-image solve.

Outputs are blended with weights that are 1 on the core and fall linearly to 0 over the first
``feather`` pixels of the margin, normalised, so a pixelwise method gives exactly its untiled
result. A method may upscale by an integer factor s (super-resolution): measurement pixel (i, j)
then maps to output pixels (s i, s j), and the blending happens on the output grid. An auxiliary
tensor of the measurement's size (e.g. an inpainting mask) is cut into the same contexts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["Box", "operator_reach", "plan_tiles", "restore_tiled", "tile_for_budget", "window_for"]

#: A tile method: (y tiles (n, C, h, w), window (1, 1, h, w), aux tiles or None) -> outputs
#: (n, C', s h, s w). y is zero where the window is.
TileMethod = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@dataclass(frozen=True)
class Box:
    """One tile: its core [r0, r1) x [c0, c1) and its context [R0, R1) x [C0, C1) (measurement
    pixels, the context contains the core)."""

    r0: int
    r1: int
    c0: int
    c1: int
    R0: int
    R1: int
    C0: int
    C1: int

    def open_sides(self, h: int, w: int) -> tuple[bool, bool, bool, bool]:
        """(top, bottom, left, right): whether the context ends inside the image there."""
        return (self.R0 > 0, self.R1 < h, self.C0 > 0, self.C1 < w)

    @property
    def context_shape(self) -> tuple[int, int]:
        return (self.R1 - self.R0, self.C1 - self.C0)


def _cuts(length: int, tile: int) -> list[tuple[int, int]]:
    """[a, b) intervals of near-equal size (at most ``tile``) that partition [0, length)."""
    n = max(1, math.ceil(length / tile))
    edges = [round(i * length / n) for i in range(n + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def plan_tiles(h: int, w: int, tile: int, margin: int) -> list[Box]:
    """Cores of at most ``tile`` x ``tile`` pixels partitioning an h x w image, each with its
    context: the core widened by ``margin`` on every side, clipped to the image."""
    if tile < 1 or margin < 0:
        raise ValueError(f"need tile >= 1 and margin >= 0, got tile={tile}, margin={margin}")
    return [
        Box(r0, r1, c0, c1, max(0, r0 - margin), min(h, r1 + margin),
            max(0, c0 - margin), min(w, c1 + margin))
        for r0, r1 in _cuts(h, tile) for c0, c1 in _cuts(w, tile)
    ]


def window_for(box: Box, h: int, w: int, guard: int, *, device=None,
               dtype=torch.float32) -> torch.Tensor:
    """The (1, 1, H, W) 0/1 window of a context: 0 on its outer ``guard`` pixels along every
    side that lies inside the image (those pixels are unobserved), 1 elsewhere."""
    wnd = torch.ones(1, 1, *box.context_shape, device=device, dtype=dtype)
    if guard > 0:
        top, bottom, left, right = box.open_sides(h, w)
        if top:
            wnd[..., :guard, :] = 0
        if bottom:
            wnd[..., -guard:, :] = 0
        if left:
            wnd[..., :, :guard] = 0
        if right:
            wnd[..., :, -guard:] = 0
    return wnd


def _blend_weight(n: int, before: int, after: int, feather: int, device, dtype) -> torch.Tensor:
    """1-D weight over a context of n pixels whose core starts ``before`` pixels in and ends
    ``after`` pixels before its end: 1 on the core, (1 - d / (feather + 1)) at d pixels outside
    it (d <= feather), 0 further out."""
    d = torch.zeros(n, device=device, dtype=dtype)
    idx = torch.arange(n, device=device, dtype=dtype)
    d = torch.maximum(d, before - idx)
    d = torch.maximum(d, idx - (n - 1 - after))
    return (1 - d / (feather + 1)).clamp(min=0)


@torch.no_grad()
def operator_reach(op: Callable[[torch.Tensor], torch.Tensor], *, channels: int = 3,
                   scale: int = 1, probe: int = 16, limit: int = 256) -> int:
    """How many measurement pixels next to a border of the measured region depend on the image
    beyond it: the smallest g such that A(x)[g:-g] computed from x alone equals A computed
    from a larger image, for a random x. 0 for pixelwise operators (denoising, masks); the
    kernel's half-width for a blur; ``scale`` is the image pixels per measurement pixel (SR).
    Raises ValueError if the reach exceeds ``limit`` (the operator is not local)."""
    gen = torch.Generator().manual_seed(0)
    while probe <= limit:
        n = 4 * probe  # measurement pixels of the large image; the crop drops `probe` per side
        x = torch.rand(1, channels, scale * n, scale * n, generator=gen, dtype=torch.float64)
        big = op(x.float()).double()[..., probe : n - probe, probe : n - probe]
        a, b = scale * probe, scale * (n - probe)
        small = op(x[..., a:b, a:b].float()).double()
        if small.shape != big.shape:
            raise ValueError(f"the operator measures {tuple(x[..., a:b, a:b].shape)} images as "
                             f"{tuple(small.shape)}, not as {tuple(big.shape)}")
        differs = ((small - big).abs() > 1e-5 * (big.abs().amax() + 1e-12)).any(dim=(0, 1))
        m = differs.shape[-1]
        dist = torch.minimum(
            torch.minimum(torch.arange(m)[:, None], torch.arange(m)[None, :]),
            torch.minimum(m - 1 - torch.arange(m)[:, None], m - 1 - torch.arange(m)[None, :]),
        )
        reach = int(dist[differs].max()) + 1 if bool(differs.any()) else 0
        if reach < probe:
            return reach
        probe *= 2
    raise ValueError(f"the operator's reach exceeds {limit} pixels: it cannot be tiled")


@torch.no_grad()
def restore_tiled(
    method: TileMethod,
    y: torch.Tensor,
    *,
    tile: int,
    margin: int,
    guard: int = 0,
    feather: int | None = None,
    batch_size: int = 1,
    aux: torch.Tensor | None = None,
    on_tile: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """x_hat of a measurement y (C, H, W) or (1, C, H, W), computed tile by tile (see module).

    ``method(y_tiles, window, aux_tiles)`` restores a batch of contexts that share one shape and
    one window; y is zero where the window is. Contexts are batched ``batch_size`` at a time, so
    memory is that of ``batch_size`` contexts of at most (tile + 2 margin)^2 pixels whatever
    the image size. ``feather`` (default margin // 4) is the width of the blend outside each
    core. ``on_tile(n)`` is told each time n more tiles are done.
    """
    if tile < 8:
        raise ValueError(f"tile must be >= 8 pixels, got {tile}")
    if margin < 0 or not 0 <= guard <= margin:
        raise ValueError(f"need 0 <= guard <= margin, got guard={guard}, margin={margin}")
    feather = margin // 4 if feather is None else feather
    if not 0 <= feather <= margin - guard:
        raise ValueError(f"feather must be in [0, margin - guard], got {feather}")
    squeeze = y.dim() == 3
    if squeeze:
        y = y[None]
    if y.dim() != 4 or y.shape[0] != 1:
        raise ValueError(f"expected one image (C, H, W) or (1, C, H, W), got {tuple(y.shape)}")
    _, _, h, w = y.shape
    if aux is not None and (aux.dim() != 4 or aux.shape[0] != 1 or aux.shape[-2:] != y.shape[-2:]):
        raise ValueError(f"aux must be (1, K, {h}, {w}), got {tuple(aux.shape)}")

    boxes = plan_tiles(h, w, tile, margin)
    groups: dict[tuple, list[Box]] = {}
    for box in boxes:  # one window per batch: group contexts by shape and open sides
        groups.setdefault((box.context_shape, box.open_sides(h, w)), []).append(box)
    acc = norm = None
    s = 0
    for chunk in (g[k : k + batch_size] for g in groups.values()
                  for k in range(0, len(g), batch_size)):
        wnd = window_for(chunk[0], h, w, guard, device=y.device, dtype=y.dtype)
        tiles = torch.cat([y[..., b.R0 : b.R1, b.C0 : b.C1] for b in chunk]) * wnd
        aux_tiles = (None if aux is None
                     else torch.cat([aux[..., b.R0 : b.R1, b.C0 : b.C1] for b in chunk]))
        out = method(tiles, wnd, aux_tiles)
        ch, cw = chunk[0].context_shape
        if acc is None:
            s = out.shape[-2] // ch
            acc = torch.zeros(1, out.shape[1], s * h, s * w, device=y.device, dtype=y.dtype)
            norm = torch.zeros(1, 1, s * h, s * w, device=y.device, dtype=y.dtype)
        if s < 1 or out.shape[0] != len(chunk) or out.shape[-2:] != (s * ch, s * cw):
            raise ValueError(
                f"tiled restoration needs a method that scales tiles by one integer factor; "
                f"got {tuple(out.shape)} for {len(chunk)} tiles of {ch}x{cw}"
            )
        for b, o in zip(chunk, out, strict=True):
            weight = (
                _blend_weight(s * ch, s * (b.r0 - b.R0), s * (b.R1 - b.r1), s * feather,
                              y.device, y.dtype)[:, None]
                * _blend_weight(s * cw, s * (b.c0 - b.C0), s * (b.C1 - b.c1), s * feather,
                                y.device, y.dtype)
            )
            acc[..., s * b.R0 : s * b.R1, s * b.C0 : s * b.C1] += weight * o
            norm[..., s * b.R0 : s * b.R1, s * b.C0 : s * b.C1] += weight
        if on_tile is not None:
            on_tile(len(chunk))
    out = acc / norm
    return out[0] if squeeze else out


def tile_for_budget(h: int, w: int, *, bytes_per_pixel: float, budget: float, margin: int,
                    scale: int = 1) -> int | None:
    """The core size to tile an h x w measurement with under ``budget`` bytes, or None when the
    whole image fits (``bytes_per_pixel`` of the method's output grid, ``scale`` its upscaling).
    Raises ValueError when not even a 64-pixel core fits."""
    per_measured = bytes_per_pixel * scale * scale
    if h * w * per_measured <= budget:
        return None
    side = int(math.sqrt(budget / per_measured)) - 2 * margin
    if side < 64:
        raise ValueError(
            f"a memory budget of {budget / 2**20:.0f} MiB is too small for tiles of 64 pixels "
            f"with a margin of {margin} (about {per_measured * (64 + 2 * margin) ** 2 / 2**20:.0f}"
            " MiB each)"
        )
    return side
