"""Blur kernels: Gaussian, random camera-shake motion, uniform disk, from arrays or files.

Every constructor returns a finite float32 CPU tensor of shape (kh, kw) with non-negative
entries summing to 1 (``from_array(..., normalize=False)`` keeps the given scale), or raises
(ValueError/TypeError for bad arguments, :class:`jfb.errors.DataError` for bad files). The
parametric kernels (:func:`gaussian`, :func:`motion`, :func:`disk`) are at most
:data:`MAX_SIZE` x :data:`MAX_SIZE` pixels (255; for a disk, a radius of at most
:data:`MAX_DISK_RADIUS` = 127.5): a larger one is refused with a ValueError naming the limit,
before anything is allocated. Degenerate parameters give the mathematical limit, never NaN: a
Gaussian whose sigma is so small that 2 sigma^2 underflows to 0 is the centred delta, and a
disk of radius <= 1/2 is the 1 x 1 delta. :func:`validate` checks a user kernel: 2-D (kh, kw),
or 3-D (C, kh, kw) for one kernel per channel; kernels from arrays and files have no size limit
(their size is that of the data given).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch

from jfb.errors import DataError, check_bool, check_int, check_number, check_positive

__all__ = [
    "MAX_DISK_RADIUS",
    "MAX_SIZE",
    "SAMPLE_KINDS",
    "anisotropic_gaussian",
    "centre_pad",
    "disk",
    "from_array",
    "from_file",
    "gaussian",
    "motion",
    "sample",
    "validate",
]

#: Largest side, in pixels, of a kernel built by :func:`gaussian`, :func:`motion` or :func:`disk`.
MAX_SIZE = 255
#: Largest radius accepted by :func:`disk`: its kernel then has side 2 ceil(r - 1/2) + 1 = 255.
MAX_DISK_RADIUS = (MAX_SIZE - 1) / 2 + 0.5


def _check_size(what: str, size: int) -> None:
    if size > MAX_SIZE:
        raise ValueError(f"{what} kernel size must be <= {MAX_SIZE} (the maximum kernel size, "
                         f"jfb.physics.kernels.MAX_SIZE), got {size}")


def _normalised(k: torch.Tensor, what: str) -> torch.Tensor:
    """``k / k.sum()`` as float32, after checking that this is a finite kernel summing to 1."""
    total = float(k.sum())
    if not (math.isfinite(total) and total > 0 and bool(torch.isfinite(k).all())):
        raise ValueError(f"{what}: the kernel is not finite or sums to {total} (a bug: please "
                         "report the arguments)")
    return (k / total).to(torch.float32)


def validate(kernel: Any) -> torch.Tensor:
    """Check a blur kernel and return it as a real floating tensor (same device).

    Accepts a tensor or array-like of shape (kh, kw), or (C, kh, kw) for one kernel per channel.
    Integer/bool input is converted to float32; floating input keeps its dtype. Raises
    :class:`jfb.errors.DataError` (a ValueError) if the kernel is not 2-D/3-D, empty, complex,
    non-finite, has a negative entry, or sums to zero (for 3-D: any channel sums to zero).
    """
    try:
        k = torch.as_tensor(kernel)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"kernel cannot be converted to a tensor: {exc}") from exc
    if k.is_complex():
        raise DataError("kernel must be real, got a complex tensor")
    if not k.is_floating_point():
        k = k.to(torch.float32)
    if k.dim() not in (2, 3):
        raise DataError(
            f"kernel must be 2-D (kh, kw) or 3-D (C, kh, kw), got {k.dim()}-D shape "
            f"{tuple(k.shape)}"
        )
    if k.numel() == 0:
        raise DataError(f"kernel is empty: shape {tuple(k.shape)}")
    if not bool(torch.isfinite(k).all()):
        raise DataError("kernel has non-finite entries (NaN or Inf)")
    if bool((k < 0).any()):
        raise DataError(f"kernel has negative entries (min {float(k.min()):.3g})")
    sums = k.sum(dim=(-2, -1))
    if bool((sums <= 0).any()):
        if k.dim() == 3:
            bad = [int(i) for i in torch.nonzero(sums <= 0).flatten()]
            raise DataError(f"kernel sums to zero in channel(s) {bad}")
        raise DataError("kernel sums to zero")
    return k


def from_array(array: Any, normalize: bool = True) -> torch.Tensor:
    """Kernel from a numpy array, torch tensor or nested list, validated (see :func:`validate`).

    With ``normalize`` the kernel is divided by its sum (per channel for a 3-D kernel), so blur
    preserves the mean intensity. Returns a float32 CPU tensor (a new one, never a view).
    """
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu()
    k = validate(array).to(device="cpu", dtype=torch.float32).clone()
    if normalize:
        k = k / k.sum(dim=(-2, -1), keepdim=True)
    return k


def gaussian(size: int, sigma: float) -> torch.Tensor:
    """Isotropic Gaussian kernel k[i, j] ∝ exp(-((i-c)^2 + (j-c)^2) / (2 sigma^2)), c = size//2.

    ``size`` is an odd int in [1, :data:`MAX_SIZE`] and ``sigma`` a finite number > 0; the
    kernel is normalised to sum 1. A sigma so small that 2 sigma^2 underflows to 0 (below about
    1.6e-162) gives the limit sigma -> 0: the size x size delta, 1 at the centre (which is also
    what any sigma below about 0.07 gives in float32). A sigma whose square overflows gives the
    limit sigma -> inf: the uniform (box) kernel.
    """
    size = check_int("size", size, minimum=1, type_error=TypeError)
    if size % 2 == 0:
        raise ValueError(f"gaussian kernel size must be odd, got {size}")
    _check_size("gaussian", size)
    sigma = check_positive("sigma", sigma, type_error=TypeError)
    try:
        denom = 2.0 * sigma**2
    except OverflowError:  # Python floats raise rather than give inf
        denom = math.inf
    if denom == 0.0:  # 0/0 at the centre otherwise; the limit sigma -> 0 is the delta
        k = torch.zeros(size, size, dtype=torch.float64)
        k[size // 2, size // 2] = 1.0
        return k.to(torch.float32)
    t = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(t**2) / denom)
    k = g[:, None] * g[None, :]
    return _normalised(k, f"gaussian({size}, {sigma!r})")


def disk(radius: float, antialias: bool = True) -> torch.Tensor:
    """Uniform disk (out-of-focus) kernel of the given radius in pixels, normalised to sum 1.

    Without anti-aliasing, k[i, j] = 1 if i^2 + j^2 <= radius^2 (offsets from the centre), on a
    (2 floor(radius) + 1)^2 grid. With anti-aliasing, k[i, j] is the area of the pixel square
    [i-1/2, i+1/2] x [j-1/2, j+1/2] inside the disk (estimated on a 16 x 16 sub-pixel grid), on a
    (2 ceil(radius - 1/2) + 1)^2 grid. A radius of at most 1/2 gives the 1 x 1 identity kernel
    (with anti-aliasing: the whole disk lies in the centre pixel, even when it is too small to
    hold a sub-pixel centre). ``radius`` is a finite number in (0, :data:`MAX_DISK_RADIUS`]
    (127.5: a 255 x 255 kernel).
    """
    radius = check_positive("radius", radius, type_error=TypeError)
    check_bool("antialias", antialias)
    if radius > MAX_DISK_RADIUS:
        raise ValueError(f"disk radius must be <= {MAX_DISK_RADIUS} (a {MAX_SIZE} x {MAX_SIZE} "
                         f"kernel, the maximum kernel size), got {radius}")
    if antialias:
        half = max(math.ceil(radius - 0.5), 0)
        if half == 0:
            return torch.ones(1, 1, dtype=torch.float32)
        sub = 16
        offsets = (torch.arange(sub, dtype=torch.float64) + 0.5) / sub - 0.5
        t = torch.arange(-half, half + 1, dtype=torch.float64)
        pos = (t[:, None] + offsets[None, :]).reshape(-1)  # sub-pixel centres
        n = 2 * half + 1
        # one row of pixels at a time (memory O(n sub^2), not O((n sub)^2)), in numpy: many small
        # torch ops would each start the intra-op thread pool; the counts are exact either way
        pos2 = pos.numpy() ** 2
        k = torch.from_numpy(np.stack([
            (pos2[i * sub:(i + 1) * sub, None] + pos2[None, :] <= radius**2)
            .reshape(sub, n, sub).sum(axis=(0, 2)).astype(np.float64)
            for i in range(n)
        ]))
    else:
        half = math.floor(radius)
        t = torch.arange(-half, half + 1, dtype=torch.float64)
        k = (t[:, None] ** 2 + t[None, :] ** 2 <= radius**2).to(torch.float64)
    return _normalised(k, f"disk({radius!r}, antialias={antialias})")


def motion(
    size: int, seed: int = 0, intensity: float = 0.5, n_steps: int = 64
) -> torch.Tensor:
    """Random camera-shake motion-blur kernel (in the spirit of Boracchi & Foi, 2012).

    A trajectory z_t in the plane is simulated for ``n_steps`` steps at constant speed: the
    velocity gets a random Gaussian jerk, a pull back towards the origin, and (with a random
    small probability) an impulsive reversal, all scaled by ``intensity`` in [0, 1] (0: a straight
    line). The trajectory is scaled so that its larger extent spans size - 1 pixels, centred on
    the grid, and rasterised with bilinear weights along densely resampled segments (so that the
    exposure per unit length is constant), then normalised to sum 1. The same ``seed`` gives
    the same kernel on every machine (numpy PCG64); kernels are not symmetric in general.
    ``size`` is an int in [1, :data:`MAX_SIZE`].
    """
    size = check_int("size", size, minimum=1, type_error=TypeError)
    _check_size("motion", size)
    seed = check_int("seed", seed, minimum=0, type_error=TypeError)
    n_steps = check_int("n_steps", n_steps, minimum=2, type_error=TypeError)
    intensity = check_number("intensity", intensity, low=0, high=1, type_error=TypeError)
    if size == 1:
        return torch.ones(1, 1, dtype=torch.float32)

    rng = np.random.default_rng(seed)
    centripetal = 0.7 * rng.uniform()
    p_big_shake = 0.2 * rng.uniform()
    jitter = 10.0 * rng.uniform()
    angle = 2.0 * math.pi * rng.uniform()
    speed = 1.0 / (n_steps - 1)
    v = complex(math.cos(angle), math.sin(angle)) * speed
    z = np.zeros(n_steps, dtype=np.complex128)
    for t in range(n_steps - 1):
        big = p_big_shake * intensity > rng.uniform()
        shake = -2.0 * v if big else 0.0
        noise = complex(rng.standard_normal(), rng.standard_normal())
        dv = shake + intensity * (jitter * noise - centripetal * z[t]) * speed
        v = v + dv
        v = v / max(abs(v), 1e-12) * speed
        z[t + 1] = z[t] + v
    return _rasterise(z, size)


def _rasterise(z: np.ndarray, size: int) -> torch.Tensor:
    """Scale a complex trajectory to span size-1 pixels, centre it, splat it bilinearly."""
    xs, ys = z.real.copy(), z.imag.copy()
    extent = max(np.ptp(xs), np.ptp(ys))
    scale = (size - 1) / extent if extent > 0 else 0.0
    xs = (xs - (xs.max() + xs.min()) / 2) * scale + (size - 1) / 2
    ys = (ys - (ys.max() + ys.min()) / 2) * scale + (size - 1) / 2
    # resample every segment at <= 0.1 px steps; weight each point by its share of path length
    px, py, w = [], [], []
    for i in range(len(xs) - 1):
        seg = math.hypot(xs[i + 1] - xs[i], ys[i + 1] - ys[i])
        n = max(int(math.ceil(seg / 0.1)), 1)
        s = (np.arange(n) + 0.5) / n
        px.append(xs[i] + s * (xs[i + 1] - xs[i]))
        py.append(ys[i] + s * (ys[i + 1] - ys[i]))
        w.append(np.full(n, seg / n if seg > 0 else 1e-12))
    px, py, w = np.concatenate(px), np.concatenate(py), np.concatenate(w)
    k = np.zeros((size, size), dtype=np.float64)
    x0 = np.clip(np.floor(px).astype(np.int64), 0, size - 1)
    y0 = np.clip(np.floor(py).astype(np.int64), 0, size - 1)
    fx, fy = px - x0, py - y0
    x1, y1 = np.minimum(x0 + 1, size - 1), np.minimum(y0 + 1, size - 1)
    np.add.at(k, (y0, x0), w * (1 - fx) * (1 - fy))
    np.add.at(k, (y0, x1), w * fx * (1 - fy))
    np.add.at(k, (y1, x0), w * (1 - fx) * fy)
    np.add.at(k, (y1, x1), w * fx * fy)
    total = float(k.sum())
    if not (math.isfinite(total) and total > 0):
        raise ValueError(f"motion kernel of size {size}: the trajectory has weight {total} (a bug: "
                         "please report the arguments)")
    return torch.from_numpy(k / k.sum()).to(torch.float32)


def from_file(path: str | os.PathLike[str]) -> torch.Tensor:
    """Load a kernel from a ``.npy`` array or a grey-level image file, normalised to sum 1.

    Images are read with PIL; colour images are converted to grey as 0.299 R + 0.587 G +
    0.114 B on the float values (alpha ignored). Raises :class:`jfb.errors.DataError` if the
    file is missing, unreadable (empty or truncated included), or not a valid kernel.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"kernel file not found: {path}")
    if path.lower().endswith(".npy"):
        try:
            arr = np.load(path, allow_pickle=False)
        except EOFError as exc:  # numpy's answer to an empty file
            raise DataError(f"cannot read kernel file {path}: the file is empty or truncated "
                            f"({exc or 'EOFError'})") from exc
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read kernel file {path}: {exc}") from exc
    else:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as img:
                img.load()
                if img.mode in ("1", "L", "I", "F") or img.mode.startswith("I;"):
                    arr = np.asarray(img, dtype=np.float64)
                else:
                    rgb = np.asarray(img.convert("RGB"), dtype=np.float64)
                    arr = rgb @ np.array([0.299, 0.587, 0.114])
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise DataError(f"cannot read kernel image {path}: {exc}") from exc
    try:
        return from_array(arr, normalize=True)
    except DataError as exc:
        raise DataError(f"invalid kernel in {path}: {exc}") from exc


def anisotropic_gaussian(size: int, sigma_x: float, sigma_y: float, angle: float) -> torch.Tensor:
    """Gaussian kernel with covariance R diag(sigma_x^2, sigma_y^2) R^T, R the rotation by
    ``angle`` radians: k[i, j] ∝ exp(-p^T C^{-1} p / 2), p the offset from the centre; odd
    ``size``, normalised to sum 1 (``sigma_x = sigma_y`` is :func:`gaussian`)."""
    size = check_int("size", size, minimum=1, type_error=TypeError)
    if size % 2 == 0:
        raise ValueError(f"gaussian kernel size must be odd, got {size}")
    _check_size("gaussian", size)
    sx = check_positive("sigma_x", sigma_x, type_error=TypeError)
    sy = check_positive("sigma_y", sigma_y, type_error=TypeError)
    angle = check_number("angle", angle, type_error=TypeError)
    t = torch.arange(size, dtype=torch.float64) - size // 2
    r, c = torch.meshgrid(t, t, indexing="ij")
    cos, sin = math.cos(angle), math.sin(angle)
    u, v = cos * c + sin * r, -sin * c + cos * r  # coordinates along the two axes
    k = torch.exp(-(u**2) / (2 * sx**2) - (v**2) / (2 * sy**2))
    return _normalised(k, f"anisotropic_gaussian({size}, {sx!r}, {sy!r}, {angle!r})")


#: Kernel kinds drawn by :func:`sample` and their probabilities.
SAMPLE_KINDS = {"gaussian": 0.25, "anisotropic": 0.25, "motion": 0.35, "disk": 0.15}


def sample(rng: np.random.Generator, max_size: int = 31) -> torch.Tensor:
    """A random blur kernel of odd side at most ``max_size`` (>= 3), for training across blurs:
    an isotropic Gaussian (sigma in [0.3, max_size / 6]), an anisotropic one (each sigma in
    [0.3, max_size / 6], any angle), a camera-shake trajectory (:func:`motion`, side uniform in
    [3, max_size], intensity in [0, 1]) or a defocus disk (radius in [0.6, max_size / 2]), with
    the probabilities of :data:`SAMPLE_KINDS`. Gaussians take the side 2 ceil(3 sigma_max) + 1
    (at most ``max_size``). Reproducible from ``rng`` alone."""
    max_size = check_int("max_size", max_size, minimum=3, type_error=TypeError)
    if max_size % 2 == 0:
        raise ValueError(f"max_size must be odd, got {max_size}")
    _check_size("sampled", max_size)
    kind = rng.choice(list(SAMPLE_KINDS), p=list(SAMPLE_KINDS.values()))
    top = max_size / 6

    def side(sigma: float) -> int:
        return min(2 * math.ceil(3 * sigma) + 1, max_size)

    if kind == "gaussian":
        s = float(rng.uniform(0.3, top))
        return gaussian(side(s), s)
    if kind == "anisotropic":
        sx, sy = (float(v) for v in rng.uniform(0.3, top, size=2))
        return anisotropic_gaussian(side(max(sx, sy)), sx, sy, float(rng.uniform(0, math.pi)))
    if kind == "motion":
        size = int(rng.integers(1, max_size // 2 + 1)) * 2 + 1
        return motion(size, seed=int(rng.integers(2**31)), intensity=float(rng.uniform()))
    return disk(float(rng.uniform(0.6, max_size / 2)))


def centre_pad(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """``kernel`` (kh, kw) zero-padded to (size, size) so that its centre (kh // 2, kw // 2)
    lands on (size // 2, size // 2): the same blur, as a larger kernel (size >= kh, kw)."""
    kh, kw = kernel.shape[-2:]
    if size < kh or size < kw:
        raise ValueError(f"cannot pad a {kh}x{kw} kernel to {size}x{size}")
    top, left = size // 2 - kh // 2, size // 2 - kw // 2
    out = kernel.new_zeros(*kernel.shape[:-2], size, size)
    out[..., top:top + kh, left:left + kw] = kernel
    return out
