"""Image-quality metrics: PSNR and SSIM per image, and a mean/std summary.

Both metrics take batches ``(N, C, H, W)`` and return one value per image (a tensor of shape
``(N,)``) on the input's device and in the input's floating dtype (half precision is promoted to
float32). They do **not** clamp: the evaluation protocol clamps the reconstruction to
``[0, data_range]`` before scoring, and that is the caller's job (``x.clamp(0, 1)``), so that a
metric never hides an out-of-range output.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F

__all__ = ["gaussian_window", "psnr", "ssim", "summarize"]


def _check_pair(x: torch.Tensor, ref: torch.Tensor, name: str) -> torch.Tensor:
    """Validate two ``(N, C, H, W)`` floating tensors; return the common computation dtype."""
    if not isinstance(x, torch.Tensor) or not isinstance(ref, torch.Tensor):
        raise TypeError(f"{name}: x and ref must be torch tensors, got "
                        f"{type(x).__name__} and {type(ref).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name}: expected a batch (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape != ref.shape:
        raise ValueError(f"{name}: shapes differ: x {tuple(x.shape)} vs ref {tuple(ref.shape)}")
    if not (x.is_floating_point() and ref.is_floating_point()):
        raise TypeError(f"{name}: expected floating tensors scaled to [0, data_range], got "
                        f"{x.dtype} and {ref.dtype}")
    dtype = torch.promote_types(x.dtype, ref.dtype)
    if dtype in (torch.float16, torch.bfloat16):
        dtype = torch.float32
    return dtype


def _check_range(data_range: float, name: str) -> float:
    data_range = float(data_range)
    if not math.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"{name}: data_range must be a positive finite number, got {data_range}")
    return data_range


def psnr(x: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio of each image, in dB.

    ``PSNR_n = 10 log10(data_range^2 / MSE_n)`` with ``MSE_n`` the mean of ``(x - ref)^2`` over
    the channels and pixels of image ``n``. Identical images give ``+inf``. Inputs are not
    clamped (clamp ``x`` to ``[0, data_range]`` first, as the protocol does).

    Args:
        x: reconstruction, ``(N, C, H, W)``.
        ref: ground truth, same shape.
        data_range: the span of valid pixel values (1.0 for images in ``[0, 1]``).

    Returns:
        Tensor of shape ``(N,)``.
    """
    dtype = _check_pair(x, ref, "psnr")
    data_range = _check_range(data_range, "psnr")
    diff = x.to(dtype) - ref.to(dtype)
    mse = diff.pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)


def gaussian_window(win_size: int, sigma: float, *, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """1-D Gaussian window ``g_i ∝ exp(-i^2 / (2 sigma^2))``, ``|i| <= (win_size-1)/2``, sum 1."""
    if int(win_size) != win_size or win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"win_size must be a positive odd integer, got {win_size}")
    if not math.isfinite(float(sigma)) or sigma <= 0:
        raise ValueError(f"sigma must be a positive finite number, got {sigma}")
    r = (int(win_size) - 1) // 2
    i = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-(i**2) / (2.0 * float(sigma) ** 2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def ssim(
    x: torch.Tensor,
    ref: torch.Tensor,
    data_range: float = 1.0,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) of each image, averaged over channels and pixels.

    Per channel, with local Gaussian-weighted statistics ``mu``, ``var`` (population variance),
    ``cov``:
    ``SSIM = (2 mu_x mu_r + C1)(2 cov + C2) / ((mu_x^2 + mu_r^2 + C1)(var_x + var_r + C2))``,
    ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2``, ``L = data_range``. The map is evaluated only where the
    ``win_size x win_size`` window lies inside the image (a "valid" filtering, i.e. a border of
    ``(win_size-1)//2`` pixels is left out) and averaged over those pixels and the channels.

    This equals scikit-image's ``structural_similarity(x, ref, gaussian_weights=True,
    sigma=sigma, win_size=win_size, use_sample_covariance=False, data_range=L,
    channel_axis=...)`` whenever skimage's filter radius ``int(3.5 sigma + 0.5)`` equals
    ``(win_size-1)//2`` -- true for the protocol's defaults (11, 1.5): skimage filters with
    reflection at the border and then crops exactly that border away. Inputs are not clamped.

    Args:
        x: reconstruction, ``(N, C, H, W)`` with ``H, W >= win_size``.
        ref: ground truth, same shape.
        data_range: span of valid pixel values (``L``).
        win_size: odd side of the Gaussian window.
        sigma: standard deviation of the Gaussian window, in pixels.
        k1, k2: the stabilising constants of the luminance and contrast terms.

    Returns:
        Tensor of shape ``(N,)``.
    """
    dtype = _check_pair(x, ref, "ssim")
    data_range = _check_range(data_range, "ssim")
    for name, k in (("k1", k1), ("k2", k2)):
        if not math.isfinite(float(k)) or k < 0:
            raise ValueError(f"ssim: {name} must be a non-negative finite number, got {k}")
    n, c, h, w = x.shape
    if h < win_size or w < win_size:
        raise ValueError(f"ssim: images of size {h}x{w} are smaller than the {win_size}x{win_size} "
                         "window; pass a smaller odd win_size")
    g = gaussian_window(win_size, sigma, dtype=dtype, device=x.device)
    gh = g.view(1, 1, -1, 1)  # filters along H
    gw = g.view(1, 1, 1, -1)  # filters along W

    def blur(t: torch.Tensor) -> torch.Tensor:
        # Separable "valid" Gaussian filtering, each channel on its own.
        t = t.reshape(n * c, 1, h, w)
        return F.conv2d(F.conv2d(t, gh), gw)

    a = x.to(dtype)
    b = ref.to(dtype)
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a * mu_a
    var_b = blur(b * b) - mu_b * mu_b
    cov = blur(a * b) - mu_a * mu_b
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    smap = num / den
    return smap.reshape(n, -1).mean(dim=1)


def summarize(values: torch.Tensor | Iterable[float]) -> dict[str, float | int]:
    """Mean, standard deviation (population, ``ddof=0``) and count of per-image values.

    Accepts a 1-D tensor or any iterable of numbers (e.g. per-image PSNRs gathered over batches).
    Returns ``{"mean": float, "std": float, "n": int}``.
    """
    if isinstance(values, torch.Tensor):
        t = values.detach().to(device="cpu", dtype=torch.float64).flatten()
    else:
        items = []
        for v in values:
            if isinstance(v, torch.Tensor):
                items.extend(v.detach().to("cpu", torch.float64).flatten().tolist())
            else:
                items.append(float(v))
        t = torch.tensor(items, dtype=torch.float64)
    if t.numel() == 0:
        raise ValueError("summarize: no values to summarize")
    mean = t.mean()
    std = (t - mean).pow(2).mean().sqrt() if t.numel() > 1 else torch.zeros((), dtype=t.dtype)
    return {"mean": float(mean), "std": float(std), "n": int(t.numel())}
