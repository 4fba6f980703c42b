"""Parallel-beam Radon transform (tomography) y = A x, as a sparse system matrix with its exact
adjoint (back-projection).

Geometry, that of ``skimage.transform.radon(image, theta, circle=True)`` (whose output, of shape
(n_detectors, n_angles), is the transpose of one channel of ours): the x axis runs along the
columns (to the right), the y axis against the rows (upwards), and the origin is the centre of
pixel (row H // 2, column W // 2) -- the image centre for odd sizes, half a pixel past it (down
and right) for even ones. The projection at angle th (degrees, counter-clockwise from the x axis)
is the set of line integrals along the lines x cos th + y sin th = s,

    y[th, s] = integral over t of x(s (cos th, sin th) + t (-sin th, cos th)) dt,

sampled at the detector bins s_j = j - D // 2, j = 0 .. D - 1 (spacing 1 pixel, bin D // 2 on the
origin). By default D is the image side, for square images: the object is assumed inside the
inscribed circle, as with ``circle=True`` (content outside it can miss the detector). Hence at
th = 0 bin j is the sum of column j + W // 2 - D // 2, and at th = 90 the sum of row
H // 2 + D // 2 - j (rows read from the bottom up), zero where that is outside the image.

Discretisation (ray-driven, as skimage): the image is the bilinear interpolant of its values at
the pixel centres, zero outside the image, and each integral is the sum of that interpolant at
the points t = k (k integer, |t| up to the farthest reach of the image) spaced 1 pixel along the
ray. For square images whose content lies in the inscribed circle this is exactly skimage's
result (which rotates the image by bilinear interpolation and sums its columns), up to rounding.

All the weights form a sparse system matrix M (rows: angle-major (angle, detector) pairs; columns:
row-major pixels), built once per image shape, device and dtype (vectorised over detectors and
samples, in chunks of angles) and cached, with its transpose, in a small per-module dict (not in
the ``state_dict``, so the operator works on any image size): A x = M x and A^T y = M^T y with the
very same entries, so the adjoint is exact to rounding. Both are differentiable to any order with
respect to their input.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from jfb.errors import check_int, check_shape
from jfb.physics.base import LinearOperator

__all__ = ["Radon"]

#: Number of system matrices (shape, device, dtype) kept per operator; the oldest is dropped.
#: (128 x 128 images, 180 angles: 6.1M non-zeros, about 100 MB in float32 with the transpose.)
CACHE_SIZE = 4
#: Approximate number of candidate matrix entries processed per chunk of angles while building.
_CHUNK_ENTRIES = 1 << 21


# ------------------------------------------------------------------------------- validation
def _validate_angles(angles: Any) -> tuple[float, ...]:
    """An int n (n angles 180 * i / n, i < n) or a non-empty sequence of finite degrees."""
    if isinstance(angles, bool):
        raise TypeError("Radon: angles must be an int or a sequence of angles in degrees, not bool")
    if isinstance(angles, numbers.Integral):
        n = check_int("Radon: the number of angles", angles, minimum=1)
        return tuple(180.0 * i / n for i in range(n))
    kind = "an int or a sequence of angles in degrees"
    if isinstance(angles, (str, bytes)):
        raise TypeError(f"Radon: angles must be {kind}, got {type(angles).__name__}")
    ndim = getattr(angles, "ndim", 1)  # tensors and arrays
    if ndim != 1:
        raise ValueError(f"Radon: angles must be {kind} (1-D), got {ndim} dimensions")
    try:
        items = list(angles)
    except TypeError as exc:
        raise TypeError(f"Radon: angles must be {kind}, got {type(angles).__name__}") from exc
    values = []
    for a in items:
        if isinstance(a, torch.Tensor):
            a = a.item()
        if isinstance(a, (bool, str, bytes)) or not isinstance(a, numbers.Real):
            raise TypeError(f"Radon: each angle must be a real number of degrees, got {a!r}")
        values.append(float(a))
    if not values:
        raise ValueError("Radon: angles must not be empty")
    bad = [a for a in values if not math.isfinite(a)]
    if bad:
        raise ValueError(f"Radon: angles must be finite, got {bad[0]!r}")
    return tuple(values)


def _validate_detectors(detectors: Any) -> int | None:
    if detectors is None:
        return None
    return check_int("Radon: detectors", detectors, minimum=1, type_error=TypeError)


def _validate_image_size(image_size: Any) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, numbers.Integral) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    try:
        size = tuple(image_size)
    except TypeError:
        size = ()
    if len(size) != 2 or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in size
    ):
        raise ValueError(
            f"Radon: image_size must be an int >= 1 or a pair (H, W) of them, got {image_size!r}"
        )
    return int(size[0]), int(size[1])


def _cos_sin(degrees: float) -> tuple[float, float]:
    """cos and sin of an angle in degrees, exact (0, +-1) for multiples of 90 degrees."""
    if degrees % 90.0 == 0.0:
        quarter = int(degrees // 90.0) % 4
        return ((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))[quarter]
    rad = math.radians(degrees)
    return math.cos(rad), math.sin(rad)


# ----------------------------------------------------------------------------- system matrix
def _system_matrix(
    h: int,
    w: int,
    angles: Sequence[float],
    n_det: int,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Radon system matrix M (n_angles * n_det, h * w) and its transpose, as CSR tensors.

    M[a * n_det + j, r * w + c] = sum over the samples k of ray (a, j) of the bilinear weight
    (1 - |row_k - r|)+ (1 - |col_k - c|)+ of pixel (r, c) (see the module docstring).
    Coordinates and weights are computed in float64 on ``device``, cast to ``dtype`` once summed.

    No sort is needed to sum duplicates: two samples touching the same pixel lie in an open
    2 x 2 square, so they are at most 2 apart along the ray; each of the 4 bilinear entries of
    sample k is matched arithmetically against the cells of samples k - 1 and k - 2 and added
    into its first occurrence. The entries (ray-major, each pixel once per ray) are then put in
    CSR order by two stable sorts on small-range keys: by pixel (the order of M^T), then by ray.
    """
    n_ang = len(angles)
    n_rows, n_pix = n_ang * n_det, h * w
    f64, i64 = torch.float64, torch.int64
    c_row, c_col = h // 2, w // 2  # the origin: the centre of pixel (h // 2, w // 2)
    # A sample touches a pixel only within sqrt(2) of its centre: |t| < farthest centre + sqrt(2).
    k0 = math.floor(math.hypot(c_row, c_col) + math.sqrt(2.0))
    n_t = 2 * k0 + 1
    t = torch.arange(-k0, k0 + 1, device=device, dtype=f64)  # (K,)
    s = torch.arange(n_det, device=device, dtype=f64).view(-1, 1) - n_det // 2  # (D, 1)
    cs = torch.tensor([_cos_sin(a) for a in angles], device=device, dtype=f64)  # (A, 2)
    dr = torch.tensor([0, 0, 1, 1], device=device)  # entry i = 2 dr + dc of a sample's cell
    dc = torch.tensor([0, 1, 0, 1], device=device)

    chunk = max(1, _CHUNK_ENTRIES // (4 * n_det * n_t))
    flat_idx = torch.int32 if chunk * 4 * n_det * n_t < 2**31 else i64  # indices in a chunk
    rays, pixels, values = [], [], []
    for a0 in range(0, n_ang, chunk):
        cos = cs[a0 : a0 + chunk, 0].view(-1, 1, 1)
        sin = cs[a0 : a0 + chunk, 1].view(-1, 1, 1)
        col = c_col + s * cos - t * sin  # (a, D, K)
        row = c_row - s * sin - t * cos
        r0f, c0f = torch.floor(row), torch.floor(col)
        fr, fc = row - r0f, col - c0f
        r0, c0 = r0f.to(i64), c0f.to(i64)
        # Weights of the rows r0, r0 + 1 and columns c0, c0 + 1, zero outside the image.
        wr0 = torch.where((r0 >= 0) & (r0 < h), 1.0 - fr, 0.0)
        wr1 = torch.where((r0 >= -1) & (r0 < h - 1), fr, 0.0)
        wc0 = torch.where((c0 >= 0) & (c0 < w), 1.0 - fc, 0.0)
        wc1 = torch.where((c0 >= -1) & (c0 < w - 1), fc, 0.0)
        wgt = _cell(wr0, wr1, wc0, wc1, torch.mul).flatten()  # entries (a, D, K, 4)
        flat = torch.arange(wgt.numel(), device=device, dtype=flat_idx).view(*r0.shape, 4)
        target = flat.clone()
        for lag in (1, 2):  # lag 2 last: the earliest occurrence wins (n_t >= 3)
            # Entry (dr, dc) of sample k is entry (dr + dR, dc + dC) of sample k - lag when
            # both are 0 or 1 (then the same pixel), dR, dC the shift of the cell's corner.
            d_r = r0[..., lag:] - r0[..., :-lag]  # (a, D, K - lag)
            d_c = c0[..., lag:] - c0[..., :-lag]
            r_ok0, r_ok1 = (d_r == 0) | (d_r == 1), (d_r == 0) | (d_r == -1)
            c_ok0, c_ok1 = (d_c == 0) | (d_c == 1), (d_c == 0) | (d_c == -1)
            same = _cell(r_ok0, r_ok1, c_ok0, c_ok1, torch.logical_and)  # (a, D, K - lag, 4)
            shift = (2 * d_r + d_c - 4 * lag).to(flat_idx).unsqueeze(-1)  # flat offset to the match
            target[..., lag:, :] = torch.where(same, flat[..., lag:, :] + shift,
                                               target[..., lag:, :])
        target = target.flatten()
        total = torch.zeros_like(wgt).index_add_(0, target, wgt)
        keep = ((target == flat.flatten()) & (total != 0)).nonzero().squeeze(1)
        sample, entry = torch.div(keep, 4, rounding_mode="floor"), keep % 4
        rays.append(torch.div(sample, n_t, rounding_mode="floor") + a0 * n_det)
        pixels.append((r0 * w + c0).flatten()[sample] + (dr * w + dc)[entry])
        values.append(total[keep])
    ray, pix, val = torch.cat(rays), torch.cat(pixels), torch.cat(values).to(dtype)
    idx = torch.int32 if max(n_rows, n_pix, ray.numel()) < 2**31 - 1 else i64
    ray, pix = ray.to(idx), pix.to(idx)
    # Ray-major list -> stable sort by pixel: pixel-major, rays ascending (CSR of M^T) ->
    # stable sort by ray: ray-major, pixels ascending (CSR of M).
    pix_t, perm = torch.sort(pix, stable=True)
    ray_t, val_t = ray[perm], val[perm]
    ray_m, perm = torch.sort(ray_t, stable=True)
    pix_m, val_m = pix_t[perm], val_t[perm]
    mat = _csr(ray_m, pix_m, val_m, n_rows, n_pix)
    mat_t = _csr(pix_t, ray_t, val_t, n_pix, n_rows)
    return mat, mat_t


def _cell(r0: torch.Tensor, r1: torch.Tensor, c0: torch.Tensor, c1: torch.Tensor, op: Any):
    """Stack op(r, c) over the 4 entries (r0, c0), (r0, c1), (r1, c0), (r1, c1) of a cell
    (last dim; elementwise products rather than a broadcast outer product: faster on CPU)."""
    return torch.stack([op(r0, c0), op(r0, c1), op(r1, c0), op(r1, c1)], dim=-1)


def _csr(
    rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n_rows: int, n_cols: int
) -> torch.Tensor:
    """CSR tensor from row-major sorted, duplicate-free (row, col, value) triplets."""
    crow = torch.zeros(n_rows + 1, device=vals.device, dtype=cols.dtype)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=n_rows), 0)
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            crow, cols, vals, (n_rows, n_cols), check_invariants=False
        )


class _SparseMatmul(torch.autograd.Function):
    """out = mat @ x for a constant sparse mat; the backward is the same Function with mat^T, so
    derivatives of any order are available (the matrix gets no gradient)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, mat: torch.Tensor, mat_t: torch.Tensor) -> torch.Tensor:
        ctx.mat, ctx.mat_t = mat, mat_t
        return mat @ x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return _SparseMatmul.apply(grad, ctx.mat_t, ctx.mat), None, None


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Sparse matmul has no half-precision kernels: float16/bfloat16 are computed in float32."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class Radon(LinearOperator):
    """Parallel-beam Radon transform y[th, s] = integral x(s e_th + t e_th^perp) dt, per channel.

    Maps (N, C, H, W) images to (N, C, n_angles, n_detectors) sinograms, with the exact adjoint
    (back-projection) A^T y = M^T y; see the module docstring for the geometry and discretisation.

    Args:
        angles: number n of equally spaced angles 180 * i / n degrees (i = 0 .. n - 1), or a
            non-empty sequence of angles in degrees (finite, any order, repeats allowed).
        detectors: number D of detector bins (spacing 1 pixel; bin D // 2 on the centre of
            pixel (H // 2, W // 2)), or None: the image side, which then requires square images.
        image_size: optional (H, W) (or an int for H = W) fixing the image size: A then accepts
            only such images. Needed by A^T when ``detectors`` is given, since the sinogram
            alone does not determine the image size then.

    The operator holds no parameters or buffers (empty ``state_dict``): it works on any image
    size, building the system matrix for each (H, W, device, dtype) on first use and caching it.
    """

    SHARED_ACROSS_BATCH = True

    def __init__(
        self,
        angles: int | Sequence[float] = 180,
        detectors: int | None = None,
        *,
        image_size: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.angles: tuple[float, ...] = _validate_angles(angles)
        self.detectors: int | None = _validate_detectors(detectors)
        self.image_size: tuple[int, int] | None = _validate_image_size(image_size)
        if self.image_size is not None:
            self._n_det(*self.image_size)  # detectors=None needs a square image_size
        self._cache: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    # ------------------------------------------------------------------ properties and checks
    @property
    def n_angles(self) -> int:
        """Number of projection angles."""
        return len(self.angles)

    def extra_repr(self) -> str:
        size = "" if self.image_size is None else f", image_size={self.image_size}"
        return f"n_angles={self.n_angles}, detectors={self.detectors}{size}"

    def __getstate__(self) -> dict[str, Any]:
        """Pickle / deepcopy without the cached matrices (rebuilt on demand)."""
        state = super().__getstate__()
        state["_cache"] = {}
        return state

    def _n_det(self, h: int, w: int) -> int:
        if self.detectors is not None:
            return self.detectors
        if h != w:
            raise ValueError(
                f"Radon: detectors=None (one bin per pixel of the image side) needs a square "
                f"image, got {h}x{w}; pass detectors=... for non-square images"
            )
        return h

    @staticmethod
    def _check(t: Any, name: str) -> None:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"Radon: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            dims = "(N, C, H, W)" if name == "x" else "(N, C, n_angles, n_detectors)"
            raise ValueError(
                f"Radon: {name} must be a 4-D {dims} tensor, got shape {tuple(t.shape)}"
            )
        if not t.is_floating_point():
            raise TypeError(f"Radon: {name} must be a floating tensor, got dtype {t.dtype}")

    def out_shape(self, in_shape: Sequence[int]) -> tuple[int, ...]:
        """Sinogram shape (N, C, n_angles, n_detectors) for images of shape (N, C, H, W)."""
        shape = check_shape(in_shape)
        if len(shape) != 4:
            raise ValueError(f"Radon: in_shape must be 4-D (N, C, H, W), got {shape}")
        if self.image_size is not None and shape[2:] != self.image_size:
            h, w = self.image_size
            raise ValueError(
                f"Radon: the operator was built for {h}x{w} images (image_size), got "
                f"{shape[2]}x{shape[3]}"
            )
        return (*shape[:2], self.n_angles, self._n_det(shape[2], shape[3]))

    def image_shape(self, out_shape: Sequence[int]) -> tuple[int, ...]:
        """Image shape (N, C, H, W) whose sinogram has shape (N, C, n_angles, D): (H, W) =
        ``image_size`` if given, else (D, D) when ``detectors`` is None (square images with one
        bin per pixel); otherwise the sinogram does not determine it (ValueError)."""
        shape = check_shape(out_shape)
        if len(shape) != 4:
            raise ValueError(
                f"Radon: out_shape must be 4-D (N, C, n_angles, n_detectors), got {shape}"
            )
        if shape[2] != self.n_angles:
            raise ValueError(
                f"Radon: the sinogram has {shape[2]} angles (dim -2), the operator has "
                f"{self.n_angles}"
            )
        n_det = shape[3] if self.detectors is None else self.detectors
        if shape[3] != n_det:
            raise ValueError(
                f"Radon: the sinogram has {shape[3]} detector bins (dim -1), the operator has "
                f"{n_det}"
            )
        if self.image_size is not None:
            return (*shape[:2], *self.image_size)
        if self.detectors is not None:
            raise ValueError(
                f"Radon: with detectors={self.detectors} the image size is not determined by the "
                "sinogram; pass image_size=(H, W) to the operator (or use detectors=None)"
            )
        return (*shape[:2], n_det, n_det)

    # ------------------------------------------------------------------------- system matrix
    def matrices(
        self, h: int, w: int, device: torch.device | str, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The (cached) CSR system matrix M (n_angles * n_det, h * w) and its transpose M^T for
        images of size h x w on ``device`` (float16/bfloat16 are served in float32)."""
        n_det = self._n_det(h, w)
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        dtype = _compute_dtype(dtype)
        key = (h, w, n_det, device, dtype)
        found = self._cache.get(key)
        if found is None:
            found = _system_matrix(h, w, self.angles, n_det, device, dtype)
            while len(self._cache) >= CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = found
        return found

    def clear_cache(self) -> None:
        """Drop the cached system matrices (they are rebuilt on demand)."""
        self._cache.clear()

    # ------------------------------------------------------------------------------- operator
    def A(self, x: torch.Tensor) -> torch.Tensor:
        """Sinogram y = M x: y[n, c, a, j] = sum of the image along ray j at angle a."""
        self._check(x, "x")
        n, c, h, w = x.shape
        out = self.out_shape(x.shape)
        if x.device.type == "meta":
            return x.new_empty(out)
        mat, mat_t = self.matrices(h, w, x.device, x.dtype)
        cols = x.reshape(n * c, h * w).to(mat.dtype).t()  # (H*W, N*C)
        y = _SparseMatmul.apply(cols, mat, mat_t)  # (n_angles * n_det, N*C)
        return y.t().reshape(out).to(x.dtype).contiguous()

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Back-projection x = M^T y: each pixel gathers the sinogram values of the rays through
        it, with the same bilinear weights as A."""
        self._check(y, "y")
        n, c, n_ang, n_det = y.shape
        h, w = self.image_shape(y.shape)[2:]
        if y.device.type == "meta":
            return y.new_empty(n, c, h, w)
        mat, mat_t = self.matrices(h, w, y.device, y.dtype)
        rows = y.reshape(n * c, n_ang * n_det).to(mat.dtype).t()
        x = _SparseMatmul.apply(rows, mat_t, mat)  # (H*W, N*C)
        return x.t().reshape(n, c, h, w).to(y.dtype).contiguous()
