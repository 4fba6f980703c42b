"""Additive measurement noise models."""

from __future__ import annotations

import math

import torch

from jfb.errors import check_number

__all__ = ["JPEG_NOISE", "STOPBAND", "GaussianNoise", "estimate_noise_std", "jpeg_noise_std",
           "quantisation_step"]


class GaussianNoise:
    """Additive white Gaussian noise: y_noisy = y + sigma * n with n ~ N(0, I).

    ``sigma`` is the standard deviation in the units of y (pixels in [0, 1]: the protocol's
    0.005 for ``celeba-gauss5``).
    """

    def __init__(self, sigma: float) -> None:
        self.sigma = check_number("sigma", sigma, low=0, type_error=TypeError)

    def __repr__(self) -> str:
        return f"GaussianNoise(sigma={self.sigma})"

    def __call__(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Return y + sigma * n, n ~ N(0, 1) i.i.d. with y's shape, device and dtype.

        With a ``generator`` the draw is reproducible: n is drawn on the generator's device (a CPU
        generator gives the same noise whatever device y is on) and then moved to y's device.
        ``sigma = 0`` returns a copy of y. Not in-place.
        """
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
        if not y.is_floating_point():
            raise TypeError(f"y must be a floating tensor, got dtype {y.dtype}")
        if self.sigma == 0:
            return y.clone()
        device = generator.device if generator is not None else y.device
        n = torch.randn(y.shape, generator=generator, device=device, dtype=y.dtype)
        return y + self.sigma * n.to(y.device)


#: median(|n|) / sigma for n ~ N(0, sigma^2): the MAD-to-std factor.
_MAD_TO_STD = 0.6744897501960817


#: Frequencies where the blur's transfer function is at most this fraction of its peak carry
#: (almost) only noise: the blurred image keeps less than 1/2500 of its power there.
STOPBAND = 0.02
#: The spectral estimate needs at least this many stop-band frequencies per image, else the
#: Haar estimate is used.
_MIN_STOPBAND = 256


def quantisation_step(y: torch.Tensor) -> float:
    """The step q of the lattice all values of y lie on: 1/255 for 8-bit, 1/65535 for 16-bit
    images in [0, 1], 0 for values on neither (floats from a simulation, .npy files). A value
    counts as on the lattice within 1% of a step (float32 holds k / 65535 to 0.4% of a step)."""
    for levels in (255, 65535):
        scaled = y.double() * levels
        if bool(((scaled - scaled.round()).abs() < 1e-2).all()):
            return 1.0 / levels
    return 0.0


#: (c, a, b) of :func:`jpeg_noise_std`: the rule that told the natural model the noise it restored
#: best with, fitted on BSDS training crops by ``scripts/jpeg_noise.py`` (docs/RESULTS.md,
#: "JPEG inputs").
JPEG_NOISE = (1.9, 0.0035, 0.60)


def jpeg_noise_std(sigma: float, quality: float) -> float:
    """The noise std to tell a restoring model for a JPEG of ``quality`` (IJG scale, 1-100) whose
    noise reads ``sigma`` (:func:`estimate_noise_std`): sqrt((c sigma)^2 + (a (100 - Q)^b)^2),
    (c, a, b) = :data:`JPEG_NOISE`.

    Why: JPEG zeroes the quantised high frequencies where the estimate looks (noise 0.01 under
    quality 75 reads 0.004: hence c) and adds its own error where the image lives, in 8x8 blocks
    and in colour planes at half resolution, structured rather than white (hence a (100 - Q)^b,
    about twice the error's std). Fitted for the shipped natural model.
    """
    q = check_number("quality", quality, low=1, high=100, type_error=TypeError)
    s = check_number("sigma", sigma, low=0, type_error=TypeError)
    c, a, b = JPEG_NOISE
    return math.hypot(c * s, a * (100.0 - q) ** b)


def estimate_noise_std(y: torch.Tensor, kernel: torch.Tensor | None = None,
                       step: float = 0.0) -> torch.Tensor:
    """Per-sample std of additive white Gaussian noise in images y (N, C, H, W) -> Tensor[N].

    With the blur ``kernel`` (kh, kw) or (C, kh, kw) that y was measured through: the power
    spectrum of the Hann-windowed y is pure noise where the kernel's transfer function is below
    ``STOPBAND`` of its peak, and there |Y(w)|^2 is exponential with mean sigma^2 sum(window^2),
    so sigma^2 = median |Y(w)|^2 / (ln 2 sum(window^2)). Image content does not leak in, so
    textured photos read right (within 2.3% on every built-in photo, 8-bit, sigma 0.005 and
    0.01, docs/RESULTS.md). Without a kernel (or too few such frequencies): the Donoho-Johnstone
    estimate median |HH| / 0.6745, HH = (a - b - c + d) / 2 the finest diagonal Haar coefficient
    of every 2x2 block [[a, b], [c, d]], which edges and texture push up.

    ``step``, the quantisation step of the file (:func:`quantisation_step`), is taken out: the
    rounding error is uniform, white, of variance step^2 / 12, and adds to sigma^2.
    """
    if not isinstance(y, torch.Tensor) or not y.is_floating_point() or y.dim() != 4:
        raise ValueError("y must be a floating tensor of images (N, C, H, W)")
    h, w = (y.shape[-2] // 2) * 2, (y.shape[-1] // 2) * 2
    if h == 0 or w == 0:
        raise ValueError(f"images of at least 2x2 pixels are needed, got {tuple(y.shape[-2:])}")
    var = None
    if kernel is not None:
        var = _stopband_variance(y, kernel)
    if var is None:
        v = y[..., :h, :w]
        hh = (v[..., 0::2, 0::2] - v[..., 0::2, 1::2] - v[..., 1::2, 0::2] + v[..., 1::2, 1::2]) / 2
        var = (_median_abs(hh.flatten(1), step / 2) / _MAD_TO_STD) ** 2
    return (var - step * step / 12).clamp(min=0).sqrt()


def _median_abs(values: torch.Tensor, lattice: float) -> torch.Tensor:
    """Per-row median of |values|; values on a lattice of spacing ``lattice`` > 0 (the Haar
    coefficients of rounded pixels) get the median of the continuous spread that each lattice
    point k stands for ([k - 1/2, k + 1/2) lattice steps), so the estimate does not jump from one
    lattice point to the next."""
    a = values.abs()
    if lattice <= 0:
        return a.median(dim=1).values
    k = (a.double() / lattice).round()
    n = a.shape[1]
    out = torch.empty(a.shape[0], dtype=torch.float64)
    for i, row in enumerate(k):
        counts = torch.bincount(row.long())
        below = torch.cumsum(counts, 0) - counts  # samples under each lattice point
        j = int(torch.searchsorted(torch.cumsum(counts, 0), torch.tensor(n / 2)))
        low, width = (0.0, 0.5) if j == 0 else (j - 0.5, 1.0)
        out[i] = (low + width * (n / 2 - below[j]) / counts[j]) * lattice
    return out.to(values.dtype)


def _stopband_variance(y: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor | None:
    """sigma^2 from the frequencies the kernel stops (see :func:`estimate_noise_std`), or None
    when there are fewer than ``_MIN_STOPBAND`` of them."""
    _, _, h, w = y.shape
    k = kernel.to(dtype=torch.float64, device="cpu")
    k = k[None] if k.dim() == 2 else k
    kh, kw = k.shape[-2:]
    if kh > h or kw > w:
        return None
    padded = torch.zeros(k.shape[0], h, w, dtype=torch.float64)
    padded[:, :kh, :kw] = k
    gain = torch.fft.fft2(padded).abs().amax(dim=0)  # every channel's kernel must stop it
    stop = gain <= STOPBAND * gain.max()
    if int(stop.sum()) < _MIN_STOPBAND:
        return None
    window = (torch.hann_window(h, periodic=False, dtype=torch.float64)[:, None]
              * torch.hann_window(w, periodic=False, dtype=torch.float64)[None])
    centred = y.double() - y.double().mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(centred * window.to(y.device)).abs().square()[..., stop.to(y.device)]
    var = power.flatten(1).median(dim=1).values / (math.log(2) * window.square().sum())
    return var.to(y.dtype)
