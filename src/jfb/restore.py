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

An operator with a periodic boundary (circular padding) measures the pixels next to one border
of the image from those next to the opposite border: the image is a torus. Its tiles are
``periodic``: the context of a core next to a border wraps around the image, and the tile holds
its pixels in the image's order (:meth:`Box.layout`): the image with the pixels between the
context's two ends left out. The image's border then stays at the tile's border, where the
tile's own periodic operator joins the two sides as the whole image's does and a network pads as
it pads the whole image, and the tile is open in its middle, where the left-out pixels were. A
dimension whose contexts would cover it is not cut (its context is all of it).

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

__all__ = ["MIN_MARGIN", "Box", "deconvolution_reach", "operator_reach", "plan_tiles",
           "restore_tiled", "tile_for_budget", "tile_margin", "window_for"]

#: A tile method: (y tiles (n, C, h, w), window (1, 1, h, w), aux tiles or None) -> outputs
#: (n, C', s h, s w). y is zero where the window is.
TileMethod = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


Positions = range | list[int]


@dataclass(frozen=True)
class Box:
    """One tile: its core [r0, r1) x [c0, c1) and its context [R0, R1) x [C0, C1) (measurement
    pixels, the context contains the core). ``wrap`` (rows, columns): the context wraps around
    the image along that dimension (periodic tiles: its bounds lie outside the image, pixel i
    being pixel i mod n; see :meth:`layout`)."""

    r0: int
    r1: int
    c0: int
    c1: int
    R0: int
    R1: int
    C0: int
    C1: int
    wrap: tuple[bool, bool] = (False, False)

    @property
    def context_shape(self) -> tuple[int, int]:
        return (self.R1 - self.R0, self.C1 - self.C0)

    def layout(self, h: int, w: int) -> tuple[Positions, Positions]:
        """The image rows and columns of the context, in the order the tile holds them
        (:func:`_context_positions`)."""
        return _context_positions(self.R0, self.R1, h), _context_positions(self.C0, self.C1, w)

    def open_cuts(self, h: int, w: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(rows, columns): where the context is open (:func:`_open_cuts`), e.g. ((), (W,)) for
        a context that ends inside the image on its right only."""
        rows, cols = self.layout(h, w)
        return _open_cuts(rows, h), _open_cuts(cols, w)


def _context_positions(start: int, end: int, length: int) -> Positions:
    """The image positions of a context [start, end) along a dimension of ``length`` pixels, in
    increasing order: [start, end) inside the image; for a context that wraps around it, its
    positions modulo ``length`` sorted: the image with the pixels between the context's two
    ends left out, so that the image's own border (which a periodic operator joins) stays at
    the context's border, and the context is open in its middle."""
    if 0 <= start and end <= length:
        return range(start, end)
    return sorted({i % length for i in range(start, end)})


def _open_cuts(positions: Positions, length: int) -> tuple[int, ...]:
    """Where a context laid out as ``positions`` is open: the indices i in [0, L] such that its
    pixels i - 1 and i are not neighbours in the image (i = 0 when it starts after the image's
    first pixel, i = L when it ends before its last, and every jump in between)."""
    n = len(positions)
    jumps = [] if isinstance(positions, range) else [
        i for i in range(1, n) if positions[i] != positions[i - 1] + 1]
    return (*([0] if positions[0] > 0 else []), *jumps,
            *([n] if positions[-1] < length - 1 else []))


def _cuts(length: int, tile: int) -> list[tuple[int, int]]:
    """[a, b) intervals of near-equal size (at most ``tile``) that partition [0, length)."""
    n = max(1, math.ceil(length / tile))
    edges = [round(i * length / n) for i in range(n + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _spans(length: int, tile: int, margin: int, periodic: bool
           ) -> tuple[list[tuple[int, int, int, int]], bool]:
    """([(core start, core end, context start, context end)], whether the contexts wrap) along
    one dimension (see :func:`plan_tiles`)."""
    cuts = _cuts(length, tile)
    if not periodic:
        return [(a, b, max(0, a - margin), min(length, b + margin)) for a, b in cuts], False
    if len(cuts) == 1 or max(b - a for a, b in cuts) + 2 * margin >= length:
        return [(0, length, 0, length)], False
    return [(a, b, a - margin, b + margin) for a, b in cuts], True


def plan_tiles(h: int, w: int, tile: int, margin: int, *, periodic: bool = False) -> list[Box]:
    """Cores of at most ``tile`` x ``tile`` pixels partitioning an h x w image, each with its
    context: the core widened by ``margin`` on every side, clipped to the image; or, with
    ``periodic``, wrapping around it (a dimension whose contexts would cover it is not cut)."""
    if tile < 1 or margin < 0:
        raise ValueError(f"need tile >= 1 and margin >= 0, got tile={tile}, margin={margin}")
    rows, wrap_rows = _spans(h, tile, margin, periodic)
    cols, wrap_cols = _spans(w, tile, margin, periodic)
    return [Box(r0, r1, c0, c1, R0, R1, C0, C1, wrap=(wrap_rows, wrap_cols))
            for r0, r1, R0, R1 in rows for c0, c1, C0, C1 in cols]


def _scaled(positions: Positions, scale: int) -> Positions:
    """The positions on a grid ``scale`` times finer (measurement pixel i: pixels s i .. s i +
    s - 1)."""
    if isinstance(positions, range):
        return range(scale * positions.start, scale * positions.stop)
    return [scale * p + k for p in positions for k in range(scale)]


def _index(rows: Positions, cols: Positions, device) -> tuple:
    """The index of the pixels rows x cols of a tensor (..., H, W): slices, or index tensors
    (rows (n, 1), columns (1, m))."""
    if isinstance(rows, range) and isinstance(cols, range):
        return (..., slice(rows.start, rows.stop), slice(cols.start, cols.stop))
    rows_t, cols_t = (torch.as_tensor(list(p), device=device) for p in (rows, cols))
    return (..., rows_t[:, None], cols_t[None, :])


def _window_1d(n: int, cuts: tuple[int, ...], guard: int, device, dtype) -> torch.Tensor:
    """1 over a context of n pixels but within ``guard`` pixels of its open ``cuts``."""
    wnd = torch.ones(n, device=device, dtype=dtype)
    for cut in cuts:
        wnd[max(0, cut - guard) : cut + guard] = 0
    return wnd


def window_for(box: Box, h: int, w: int, guard: int, *, device=None,
               dtype=torch.float32) -> torch.Tensor:
    """The (1, 1, H, W) 0/1 window of a context: 0 within ``guard`` pixels of where it is open
    (:meth:`Box.open_cuts`; those pixels are unobserved), 1 elsewhere."""
    (height, width), (rows, cols) = box.context_shape, box.open_cuts(h, w)
    return (_window_1d(height, rows, guard, device, dtype)[:, None]
            * _window_1d(width, cols, guard, device, dtype))[None, None]


def _blend_weight(positions: Positions, core: tuple[int, int], length: int, feather: int,
                  periodic: bool, device, dtype) -> torch.Tensor:
    """1-D weight of a context's pixels at image ``positions`` (a dimension of ``length``),
    core [a, b): 1 on the core, (1 - d / (feather + 1)) at distance d <= feather from it (on
    the circle of ``length`` pixels if ``periodic``), 0 further out."""
    p = torch.as_tensor(list(positions), device=device, dtype=dtype)
    a, b = core

    def distance(q: torch.Tensor) -> torch.Tensor:
        return (a - q).clamp(min=0) + (q - (b - 1)).clamp(min=0)

    d = distance(p)
    if periodic:
        d = torch.minimum(d, torch.minimum(distance(p - length), distance(p + length)))
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


#: The least margin (measurement pixels): what tiles get when the operator has no kernel to
#: measure (denoising, super-resolution, masks), and enough for the prior's own reach where it
#: has a small one (scripts/tile_reach.py: at most 16 pixels for 5x5 blurs).
MIN_MARGIN = 48


def tile_margin(guard: int, reach: int, prior: int = 0) -> int:
    """The margin a tile needs: max(:data:`MIN_MARGIN`, ceil(4/3 (guard + 2 reach + prior)))
    for an operator of reach ``guard`` (:func:`operator_reach`) whose ridge inverse reaches
    ``reach`` pixels (:func:`deconvolution_reach`), with a prior (a network) of receptive
    radius ``prior``. A border changed the solve by 1e-3 or more (a mean over a band of
    columns) up to about guard + 2 reach + prior pixels into the context, for Gaussian and
    motion blurs of 5 to 31 pixels and the shipped models (scripts/tile_reach.py,
    docs/BENCHMARKS.md "Tiles"); the blend uses the outputs up to a quarter of the margin
    outside each core, hence the 4/3."""
    if min(guard, reach, prior) < 0:
        raise ValueError(f"need guard, reach and prior >= 0, got {guard}, {reach}, {prior}")
    return max(MIN_MARGIN, math.ceil(4 * (guard + 2 * reach + prior) / 3))


@torch.no_grad()
def deconvolution_reach(kernel: torch.Tensor, rho: float, *, spill: float = 0.01,
                        largest: int = 2048) -> int:
    """How far one measured pixel reaches in the ridge inverse of a blur: the smallest R such
    that at most ``spill`` of sum |h| lies farther than R pixels (Chebyshev distance) from
    the centre, h = F^-1[conj(K) / (|K|^2 + rho)] the impulse response of (A^T A + rho I)^-1
    A^T for the ``kernel`` (kh, kw), or (C, kh, kw) per channel (the widest). Computed by FFT
    on periodic grids of at least 4 kernel widths, doubled until R is under a quarter of the
    grid (or the grid is ``largest`` pixels). Grows with the kernel's width and with how
    ill-posed it is (motion blurs reach far farther than Gaussians of the same size); shrinks
    as rho grows."""
    if not rho > 0:
        raise ValueError(f"rho must be positive, got {rho}")
    k = kernel.detach().to("cpu", torch.float64)
    k = k.reshape(-1, *k.shape[-2:])
    kh, kw = k.shape[-2:]
    n = 64
    while True:
        n *= 2
        if n < 4 * max(kh, kw) and n < largest:
            continue
        grid = k.new_zeros(k.shape[0], n, n)
        grid[:, :kh, :kw] = k
        spectrum = torch.fft.rfft2(grid.roll((-(kh // 2), -(kw // 2)), (-2, -1)))
        h = torch.fft.irfft2(spectrum.conj() / (spectrum.abs() ** 2 + rho), s=(n, n))
        h = h.roll((n // 2, n // 2), (-2, -1)).abs()  # the centre at (n/2, n/2)
        offset = (torch.arange(n) - n // 2).abs()
        distance = torch.maximum(offset[:, None], offset[None, :]).flatten()
        reach = 0
        for hc in h.flatten(1):
            mass = torch.bincount(distance, weights=hc, minlength=n // 2 + 1)
            beyond = mass.sum() - mass.cumsum(0)  # mass farther than each distance
            reach = max(reach, int((beyond <= spill * mass.sum()).nonzero()[0]))
        if reach < n // 4 or n >= largest:
            return reach


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
    periodic: bool = False,
) -> torch.Tensor:
    """x_hat of a measurement y (C, H, W) or (1, C, H, W), computed tile by tile (see module).

    ``method(y_tiles, window, aux_tiles)`` restores a batch of contexts that share one shape and
    one window; y is zero where the window is. Contexts are batched ``batch_size`` at a time, so
    memory is that of ``batch_size`` contexts of at most (tile + 2 margin)^2 pixels whatever
    the image size. ``feather`` (default margin // 4) is the width of the blend outside each
    core. ``on_tile(n)`` is told each time n more tiles are done. ``periodic``: contexts wrap
    around the image (:func:`plan_tiles`), for an operator with a periodic boundary.
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

    boxes = plan_tiles(h, w, tile, margin, periodic=periodic)
    groups: dict[tuple, list[Box]] = {}
    for box in boxes:  # one window per batch: group contexts by shape and open cuts
        groups.setdefault((box.context_shape, box.open_cuts(h, w)), []).append(box)
    acc = norm = None
    s = 0
    for chunk in (g[k : k + batch_size] for g in groups.values()
                  for k in range(0, len(g), batch_size)):
        wnd = window_for(chunk[0], h, w, guard, device=y.device, dtype=y.dtype)
        where = [_index(*b.layout(h, w), y.device) for b in chunk]
        tiles = torch.cat([y[i] for i in where]) * wnd
        aux_tiles = None if aux is None else torch.cat([aux[i] for i in where])
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
            rows, cols = (_scaled(p, s) for p in b.layout(h, w))
            weight = (
                _blend_weight(rows, (s * b.r0, s * b.r1), s * h, s * feather, b.wrap[0],
                              y.device, y.dtype)[:, None]
                * _blend_weight(cols, (s * b.c0, s * b.c1), s * w, s * feather, b.wrap[1],
                                y.device, y.dtype)
            )
            i = _index(rows, cols, y.device)
            acc[i] += weight * o
            norm[i] += weight
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
