"""PSNR/SSIM against scikit-image on real photos, per-image batching, options, summarize."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from jfb.metrics import gaussian_window, psnr, ssim, summarize


def _photo(name: str, size: int = 96) -> np.ndarray:
    """A centre crop of a scikit-image photo as float64 in [0, 1], (H, W) or (H, W, 3)."""
    a = getattr(skdata, name)().astype(np.float64) / 255.0
    h, w = a.shape[:2]
    t, l = (h - size) // 2, (w - size) // 2
    return a[t : t + size, l : l + size]


def _degrade(a: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "noise":
        b = a + 0.08 * rng.standard_normal(a.shape)
    else:  # blur (per channel) + light noise
        sig = (1.5, 1.5, 0) if a.ndim == 3 else 1.5
        b = gaussian_filter(a, sig) + 0.01 * rng.standard_normal(a.shape)
    return np.clip(b, 0.0, 1.0)


def _to_t(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a))
    t = t[None, None] if a.ndim == 2 else t.permute(2, 0, 1)[None]
    return t.to(dtype)


def _sk_ssim(b: np.ndarray, a: np.ndarray, **kw) -> float:
    return structural_similarity(b, a, gaussian_weights=True, use_sample_covariance=False,
                                 data_range=1.0, channel_axis=-1 if a.ndim == 3 else None, **kw)


CASES = [(n, k) for n in ("astronaut", "camera", "coffee", "chelsea") for k in ("noise", "blur")]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("name", "kind"), CASES)
def test_psnr_ssim_match_skimage(name: str, kind: str, dtype: torch.dtype) -> None:
    a = _photo(name)
    b = _degrade(a, kind)
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    a_, b_ = a.astype(np_dtype), b.astype(np_dtype)
    ref_psnr = peak_signal_noise_ratio(a_, b_, data_range=1.0)
    ref_ssim = _sk_ssim(b_, a_, sigma=1.5)
    got_psnr = psnr(_to_t(b_, dtype), _to_t(a_, dtype))
    got_ssim = ssim(_to_t(b_, dtype), _to_t(a_, dtype))
    assert got_psnr.shape == (1,) and got_psnr.dtype == dtype
    assert got_ssim.shape == (1,) and got_ssim.dtype == dtype
    assert abs(got_psnr.item() - ref_psnr) < 1e-3
    assert abs(got_ssim.item() - ref_ssim) < 1e-4
    # the degradation is real: SSIM clearly below 1
    assert got_ssim.item() < 0.95


def test_batch_gives_one_value_per_image() -> None:
    imgs = [_photo(n) for n in ("astronaut", "coffee", "chelsea")]
    clean = torch.cat([_to_t(a, torch.float64) for a in imgs])
    noisy = torch.cat([_to_t(_degrade(a, "noise", seed=i), torch.float64)
                       for i, a in enumerate(imgs)])
    p, s = psnr(noisy, clean), ssim(noisy, clean)
    assert p.shape == s.shape == (3,)
    for i in range(3):
        assert p[i].item() == pytest.approx(psnr(noisy[i : i + 1], clean[i : i + 1]).item())
        assert s[i].item() == pytest.approx(ssim(noisy[i : i + 1], clean[i : i + 1]).item())
    assert len({round(v, 6) for v in s.tolist()}) == 3


@pytest.mark.parametrize(("win_size", "sigma"), [(7, 0.9), (9, 1.0), (11, 1.5), (15, 2.0)])
def test_window_options_match_skimage(win_size: int, sigma: float) -> None:
    # skimage's filter radius is int(3.5 sigma + 0.5); these pairs make it (win_size - 1) / 2
    assert int(3.5 * sigma + 0.5) == (win_size - 1) // 2
    a = _photo("astronaut", 64)
    b = _degrade(a, "blur")
    ref = _sk_ssim(b, a, sigma=sigma, win_size=win_size)
    got = ssim(_to_t(b, torch.float64), _to_t(a, torch.float64), win_size=win_size, sigma=sigma)
    assert abs(got.item() - ref) < 1e-10


def test_options_change_the_value() -> None:
    a = _photo("camera", 64)
    b = _degrade(a, "noise")
    x, r = _to_t(b, torch.float64), _to_t(a, torch.float64)
    base = ssim(x, r).item()
    assert ssim(x, r, sigma=3.0).item() != pytest.approx(base, abs=1e-4)
    assert ssim(x, r, win_size=7).item() != pytest.approx(base, abs=1e-4)
    assert ssim(x, r, k1=0.1).item() != pytest.approx(base, abs=1e-4)
    assert ssim(x, r, k2=0.3).item() != pytest.approx(base, abs=1e-4)
    # data_range: same images scaled by 255 with data_range=255 give the same numbers
    assert ssim(x * 255, r * 255, data_range=255).item() == pytest.approx(base, abs=1e-10)
    assert psnr(x * 255, r * 255, data_range=255).item() == pytest.approx(psnr(x, r).item())
    assert psnr(x, r, data_range=2.0).item() == pytest.approx(
        psnr(x, r).item() + 20 * math.log10(2.0))
    ref_k = _sk_ssim(b, a, sigma=1.5, K1=0.05, K2=0.1)
    assert ssim(x, r, k1=0.05, k2=0.1).item() == pytest.approx(ref_k, abs=1e-10)


def test_psnr_known_value_and_no_clamping() -> None:
    ref = torch.zeros(2, 1, 4, 4)
    x = torch.full((2, 1, 4, 4), 0.1)
    x[1] = 0.01
    assert psnr(x, ref).tolist() == pytest.approx([20.0, 40.0], abs=1e-4)
    # out-of-range values are scored as they are (callers clamp)
    assert psnr(torch.full((1, 1, 4, 4), 1.5), torch.ones(1, 1, 4, 4)).item() == pytest.approx(
        20 * math.log10(2.0), abs=1e-4)
    assert math.isinf(psnr(ref, ref)[0].item())


def test_identical_images_have_ssim_one() -> None:
    a = _to_t(_photo("coffee", 48), torch.float32)
    assert ssim(a, a).item() == pytest.approx(1.0, abs=1e-6)


def test_device_and_half_precision() -> None:
    a = _to_t(_photo("coffee", 48), torch.float32)
    b = (a + 0.05).clamp(0, 1)
    ref = ssim(b, a).item()
    got = ssim(b.bfloat16(), a.bfloat16())
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(ref, abs=5e-3)


def test_bad_inputs() -> None:
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(x, torch.rand(1, 3, 16, 15))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        ssim(x[0], x[0])
    with pytest.raises(ValueError, match="smaller than"):
        ssim(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="odd"):
        ssim(x, x, win_size=10)
    with pytest.raises(ValueError, match="data_range"):
        psnr(x, x, data_range=0)
    with pytest.raises(TypeError, match="floating"):
        psnr((x * 255).to(torch.uint8), (x * 255).to(torch.uint8))


def test_gaussian_window() -> None:
    g = gaussian_window(11, 1.5, dtype=torch.float64)
    assert g.sum().item() == pytest.approx(1.0)
    assert torch.equal(g, g.flip(0))
    assert (g[5] / g[6]).item() == pytest.approx(math.exp(1 / (2 * 1.5**2)))


def test_summarize() -> None:
    out = summarize(torch.tensor([1.0, 2.0, 3.0, 6.0]))
    assert out == {"mean": 3.0, "std": pytest.approx(math.sqrt(3.5)), "n": 4}
    # lists of per-batch tensors and plain numbers
    out2 = summarize([torch.tensor([1.0, 2.0]), torch.tensor([3.0]), 6.0])
    assert out2["mean"] == 3.0 and out2["n"] == 4 and out2["std"] == pytest.approx(math.sqrt(3.5))
    assert summarize([5.0]) == {"mean": 5.0, "std": 0.0, "n": 1}
    with pytest.raises(ValueError, match="no values"):
        summarize([])
