"""Blur operator y = k * x (true convolution, per channel) with exact adjoint.

Boundary handling ("padding"), for an image x of size H x W and a kernel of size kh x kw whose
centre is (kh // 2, kw // 2), i.e. y[i, j] = sum_{a, b} k[a, b] x~[i + kh//2 - a, j + kw//2 - b]:

- ``"zeros"``: x~ is x extended by zeros; y has the size of x (the protocol's model).
- ``"circular"``: x~ is the periodic extension of x; y has the size of x.
- ``"reflect"``: x~ is the half-sample symmetric extension of x (edge pixel repeated:
  ... x1 x0 | x0 x1 ... x_{H-1} | x_{H-1} x_{H-2} ..., like numpy's "symmetric" and scipy.ndimage's
  "reflect"); y has the size of x. A^T folds the reflected border contributions back.
- ``"valid"``: no extension; y[i, j] = sum k[a, b] x[i + kh - 1 - a, j + kw - 1 - b], of size
  (H - kh + 1) x (W - kw + 1).

Every mode is "extend x to a (H + kh - 1) x (W + kw - 1) signal P x, then valid convolution V":
A = V P and A^T = P^T V^T. V is computed either directly (``F.conv2d`` with the flipped kernel,
one depthwise convolution over all N*C planes) or by FFT (a circular convolution of a fast length
>= the padded size, of which the valid part is exact). For "circular" the FFT path diagonalises A
directly on the H x W grid. The same-size modes accept kernels larger than the image (the
extension wraps / reflects repeatedly); "valid" needs H >= kh and W >= kw.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from jfb.errors import check_choice, check_shape
from jfb.physics import kernels as _kernels
from jfb.physics.base import LinearOperator

__all__ = ["FFT_MIN_KERNEL_SIZE", "BatchBlur", "Blur", "gradient_symbol", "wiener_filter"]

PADDINGS = ("zeros", "circular", "reflect", "valid")
METHODS = ("auto", "direct", "fft")

#: ``method="auto"`` uses the FFT path when max(kh, kw) >= FFT_MIN_KERNEL_SIZE[padding]. Chosen
#: by timing A + A^T on a batch of 16 RGB 128 x 128 float32 images on one CPU thread (torch 2.13,
#: min of 15 interleaved runs): "circular" (FFT on the image grid, no padding) breaks even at
#: 7-9 and wins from 11 (13x13: 8.0 vs 5.5 ms); the padded modes (FFT of the padded signal, 4
#: transforms) break even at 25 (20 vs 20 ms) and win from 31 (31 vs 18 ms).
FFT_MIN_KERNEL_SIZE: dict[str, int] = {"zeros": 25, "reflect": 25, "valid": 25, "circular": 11}


# ----------------------------------------------------------------------------- valid convolution
def _depthwise_weight(k: torch.Tensor, n: int, c: int) -> torch.Tensor:
    """conv2d weight (n*c, 1, kh, kw) of the flipped kernel, one filter per (sample, channel)."""
    w = k.flip(-2, -1)
    return w.expand(n, c, *w.shape[-2:]).reshape(n * c, 1, *w.shape[-2:])


def _direct_valid(xp: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Valid convolution of (N, C, Hp, Wp) with k (kh, kw) or (C, kh, kw) via conv2d.

    Run as one depthwise convolution with groups = N*C on a (1, N*C, Hp, Wp) view: on CPU this
    is several times faster than a batch of N*C single-channel images or groups = C. Large
    planes go in strips (:func:`_in_strips`)."""
    n, c, hp, wp = xp.shape
    planes = xp.reshape(1, n * c, hp, wp)
    weight = _depthwise_weight(k, n, c)
    if _in_strips(planes):
        out = _strip_conv(planes, weight)
    else:
        out = F.conv2d(planes, weight, groups=n * c)
    return out.reshape(n, c, out.shape[-2], out.shape[-1])


def _direct_valid_adjoint(y: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`_direct_valid`: conv_transpose2d, output (Ho + kh - 1, Wo + kw - 1);
    for large planes the same as a valid convolution of y padded by (kh - 1, kw - 1) zeros with
    the unflipped kernel, in strips (:func:`_in_strips`; equal up to rounding)."""
    n, c, ho, wo = y.shape
    w = _depthwise_weight(k, n, c)
    planes = y.reshape(1, n * c, ho, wo)
    if _in_strips(planes):
        kh, kw = w.shape[-2:]
        out = _strip_conv(F.pad(planes, (kw - 1, kw - 1, kh - 1, kh - 1)), w.flip(-2, -1))
    else:
        out = F.conv_transpose2d(planes, w, groups=n * c)
    return out.reshape(n, c, out.shape[-2], out.shape[-1])


#: Planes of more bytes than this are convolved in strips of about ``_STRIP_BYTES`` (CPU, no
#: autograd). PyTorch's depthwise conv2d on large contiguous planes ran at 2 GFLOP/s on this
#: project's CPU (a 5x5 blur of a 3 x 3000 x 4000 image: 1.0-1.4 s; a 3 x 866 x 1155 one: 83 ms);
#: on channels-last strips of about 1 MiB it takes 0.2 s and 14 ms, with the very same result
#: (docs/BENCHMARKS.md, "Photos").
_STRIPS_ABOVE = 4 * 2**20
_STRIP_BYTES = 2**20


def _in_strips(planes: torch.Tensor) -> bool:
    return (planes.device.type == "cpu" and not torch.is_grad_enabled()
            and planes.numel() * planes.element_size() > _STRIPS_ABOVE)


def _strip_conv(xp: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Valid depthwise conv2d of (1, P, Hp, Wp) planes by (P, 1, kh, kw) ``weight``, computed on
    strips of rows (each widened by kh - 1 rows, so every output row is computed as in the
    whole), each made channels-last: the layout whose depthwise kernel is fast on CPU."""
    p, hp, wp = xp.shape[1:]
    kh, kw = weight.shape[-2:]
    h, w = hp - kh + 1, wp - kw + 1
    out = xp.new_empty(1, p, h, w)
    rows = max(kh, _STRIP_BYTES // (p * wp * xp.element_size()))
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        strip = xp[..., r0 : r1 + kh - 1, :].contiguous(memory_format=torch.channels_last)
        out[..., r0:r1, :] = F.conv2d(strip, weight, groups=p)
    return out


def _fast_size(n: int) -> int:
    """Smallest 3-smooth integer (2^a 3^b) >= n: an FFT length that pocketFFT/cuFFT handle fast
    (on CPU, lengths with factors 5 or larger primes timed up to 2x slower)."""
    best = 1 << max(n - 1, 0).bit_length()
    p3 = 1
    while p3 < best:
        m = p3
        while m < n:
            m *= 2
        best = min(best, m)
        p3 *= 3
    return best


def _fft_valid(xp: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Valid convolution via FFT: the circular convolution of any length L >= Hp (zero-padded xp)
    is exact on the indices [kh-1, Hp), which are the valid part; L is a fast FFT length."""
    hp, wp = xp.shape[-2:]
    kh, kw = k.shape[-2:]
    s = (_fast_size(hp), _fast_size(wp))
    kf = torch.fft.rfft2(k, s=s)
    y = torch.fft.irfft2(torch.fft.rfft2(xp, s=s) * kf, s=s)
    return y[..., kh - 1 : hp, kw - 1 : wp]


def _fft_valid_adjoint(y: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`_fft_valid`: embed y at offset (kh-1, kw-1) in zeros, circular
    correlation with k (conjugate transfer function), keep the first (Hp, Wp)."""
    kh, kw = k.shape[-2:]
    hp, wp = y.shape[-2] + kh - 1, y.shape[-1] + kw - 1
    s = (_fast_size(hp), _fast_size(wp))
    g = F.pad(y, (kw - 1, s[1] - wp, kh - 1, s[0] - hp))
    kf = torch.fft.rfft2(k, s=s)
    return torch.fft.irfft2(torch.fft.rfft2(g) * kf.conj(), s=s)[..., :hp, :wp]


# ------------------------------------------------------------------------------ circular via FFT
def _circulant_kernel(k: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Fold k onto the h x w torus so that circular mode is y = IFFT(FFT(x) FFT(kc)):
    kc[(a - kh//2) mod h, (b - kw//2) mod w] += k[a, b] (kernels larger than the image wrap)."""
    kh, kw = k.shape[-2:]
    rows = (torch.arange(kh, device=k.device) - kh // 2) % h
    cols = (torch.arange(kw, device=k.device) - kw // 2) % w
    tmp = k.new_zeros(*k.shape[:-2], h, kw).index_add(-2, rows, k)
    return k.new_zeros(*k.shape[:-2], h, w).index_add(-1, cols, tmp)


def _fft_circular(x: torch.Tensor, k: torch.Tensor, adjoint: bool) -> torch.Tensor:
    """Circular-mode A (or A^T, using the conjugate transfer function) on the image grid."""
    h, w = x.shape[-2:]
    kf = torch.fft.rfft2(_circulant_kernel(k, h, w))
    if adjoint:
        kf = kf.conj()
    return torch.fft.irfft2(torch.fft.rfft2(x) * kf, s=(h, w))


def _power_spectrum(k: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """|K|^2 on the rfft2 grid of h x w images: the eigenvalues of circular-mode A^T A."""
    kf = torch.fft.rfft2(_circulant_kernel(k, h, w))
    return kf.real**2 + kf.imag**2


def gradient_symbol(h: int, w: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """|L|^2 = 4 sin^2(pi u / h) + 4 sin^2(pi v / w) on the rfft2 grid (h, w // 2 + 1): the symbol
    of D^T D for periodic forward differences D."""
    u = torch.arange(h, dtype=dtype, device=device)
    v = torch.arange(w // 2 + 1, dtype=dtype, device=device)
    su = 4.0 * torch.sin(math.pi * u / h) ** 2
    sv = 4.0 * torch.sin(math.pi * v / w) ** 2
    return su[:, None] + sv[None, :]


def _fourier_multiply(x: torch.Tensor, multiplier: torch.Tensor) -> torch.Tensor:
    """IFFT(multiplier . FFT(x)) on x's h x w grid, ``multiplier`` on the rfft2 grid."""
    return torch.fft.irfft2(torch.fft.rfft2(x) * multiplier, s=x.shape[-2:])


def _fft_circular_normal(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Circular-mode A^T A x = IFFT(|K|^2 FFT(x))."""
    return _fourier_multiply(x, _power_spectrum(k, *x.shape[-2:]))


# ------------------------------------------------------------------------------------- extension
def _extension_index(n: int, before: int, after: int, mode: str, device: torch.device):
    """Source index in [0, n) of each position of the extended signal (length n + before + after)
    for periodic ("circular") or half-sample symmetric ("reflect") extension."""
    s = torch.arange(-before, n + after, device=device)
    if mode == "circular":
        return s % n
    m = s % (2 * n)
    return torch.where(m < n, m, 2 * n - 1 - m)


class Blur(LinearOperator):
    """Per-channel blur y = k * x on (N, C, H, W) batches, with exact adjoint.

    Args:
        kernel: (kh, kw) kernel shared by all channels, or (C, kh, kw) one kernel per channel
            (then inputs must have C channels). Validated by :func:`jfb.physics.kernels.validate`
            (non-negative, finite, non-zero sum; not renormalised), stored as the buffer
            ``kernel`` (moves with ``.to``) and cast to the input's dtype/device when applied.
        padding: "zeros" | "circular" | "reflect" | "valid" (see the module docstring).
        method: "direct" (conv2d), "fft", or "auto" (FFT when max(kh, kw) >=
            ``FFT_MIN_KERNEL_SIZE[padding]``: 11 for "circular", 25 otherwise).
            Both paths give the same A and A^T up to rounding.
    """

    SHARED_ACROSS_BATCH = True

    kernel: torch.Tensor

    def __init__(self, kernel: Any, padding: str = "zeros", method: str = "auto") -> None:
        super().__init__()
        check_choice("padding", padding, PADDINGS)
        check_choice("method", method, METHODS)
        k = _kernels.validate(kernel)
        self.register_buffer("kernel", k.detach().clone())
        self.padding = padding
        self.method = method

    # ------------------------------------------------------------------ properties and checks
    @property
    def kernel_size(self) -> tuple[int, int]:
        """(kh, kw)."""
        return int(self.kernel.shape[-2]), int(self.kernel.shape[-1])

    @property
    def path(self) -> str:
        """The computational path used: "direct" or "fft" (``method="auto"`` resolved)."""
        if self.method != "auto":
            return self.method
        big = max(self.kernel_size) >= FFT_MIN_KERNEL_SIZE[self.padding]
        return "fft" if big else "direct"

    def extra_repr(self) -> str:
        kh, kw = self.kernel_size
        per_channel = f", channels={self.kernel.shape[0]}" if self.kernel.dim() == 3 else ""
        return (
            f"kernel_size=({kh}, {kw}){per_channel}, padding={self.padding!r}, "
            f"method={self.method!r} (path={self.path!r})"
        )

    def _check(self, t: torch.Tensor, name: str) -> None:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"Blur: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(
                f"Blur: {name} must be a 4-D (N, C, H, W) tensor, got shape {tuple(t.shape)}"
            )
        if not t.is_floating_point():
            raise TypeError(f"Blur: {name} must be a floating tensor, got dtype {t.dtype}")
        if self.kernel.dim() == 3 and t.shape[1] != self.kernel.shape[0]:
            raise ValueError(
                f"Blur: {name} has {t.shape[1]} channels but the per-channel kernel has "
                f"{self.kernel.shape[0]}"
            )

    def _kernel_like(self, t: torch.Tensor) -> torch.Tensor:
        return self.kernel.to(device=t.device, dtype=t.dtype)

    def out_shape(self, in_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of A x: unchanged, except (H - kh + 1, W - kw + 1) in "valid" mode."""
        shape = check_shape(in_shape)
        if len(shape) < 2:
            raise ValueError(f"Blur: in_shape needs at least 2 (spatial) dims, got {shape}")
        if self.padding != "valid":
            return shape
        kh, kw = self.kernel_size
        h, w = shape[-2] - kh + 1, shape[-1] - kw + 1
        if h < 1 or w < 1:
            raise ValueError(
                f"Blur: image {shape[-2]}x{shape[-1]} is smaller than the {kh}x{kw} kernel "
                f"(padding='valid' needs H >= kh and W >= kw)"
            )
        return (*shape[:-2], h, w)

    # --------------------------------------------------------------------------- extension P
    def _pads(self) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) extension sizes: ((kh-1)//2, kh//2, (kw-1)//2, kw//2)."""
        kh, kw = self.kernel_size
        return (kh - 1) // 2, kh // 2, (kw - 1) // 2, kw // 2

    def _extend(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == "valid":
            return x
        top, bottom, left, right = self._pads()
        if self.padding == "zeros":
            return F.pad(x, (left, right, top, bottom))
        h, w = x.shape[-2:]
        rows = _extension_index(h, top, bottom, self.padding, x.device)
        cols = _extension_index(w, left, right, self.padding, x.device)
        return x.index_select(-2, rows).index_select(-1, cols)

    def _extend_adjoint(self, g: torch.Tensor, h: int, w: int) -> torch.Tensor:
        if self.padding == "valid":
            return g
        top, bottom, left, right = self._pads()
        if self.padding == "zeros":
            return g[..., top : top + h, left : left + w]
        rows = _extension_index(h, top, bottom, self.padding, g.device)
        cols = _extension_index(w, left, right, self.padding, g.device)
        tmp = g.new_zeros(*g.shape[:-2], h, g.shape[-1]).index_add(-2, rows, g)
        return g.new_zeros(*g.shape[:-2], h, w).index_add(-1, cols, tmp)

    # ------------------------------------------------------------------------------- operator
    def A(self, x: torch.Tensor) -> torch.Tensor:
        """y = k * x per channel, with the boundary handling of ``padding``."""
        self._check(x, "x")
        self.out_shape(x.shape)  # raises if the image is too small for "valid"
        k = self._kernel_like(x)
        x, k, dtype = _fft_dtype(x, k, self.path)
        if self.path == "fft" and self.padding == "circular":
            return _fft_circular(x, k, adjoint=False).to(dtype)
        xp = self._extend(x)
        y = _fft_valid(xp, k) if self.path == "fft" else _direct_valid(xp, k)
        return y.to(dtype)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """x = A^T y: correlation with k (conv_transpose), then the extension folded back."""
        self._check(y, "y")
        k = self._kernel_like(y)
        kh, kw = self.kernel_size
        if self.padding == "valid":
            h, w = y.shape[-2] + kh - 1, y.shape[-1] + kw - 1
        else:
            h, w = y.shape[-2:]
        y, k, dtype = _fft_dtype(y, k, self.path)
        if self.path == "fft" and self.padding == "circular":
            return _fft_circular(y, k, adjoint=True).to(dtype)
        g = _fft_valid_adjoint(y, k) if self.path == "fft" else _direct_valid_adjoint(y, k)
        return self._extend_adjoint(g, h, w).to(dtype)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """A^T A x (for "circular" with the FFT path: one multiplication by |K|^2)."""
        if self.path == "fft" and self.padding == "circular":
            self._check(x, "x")
            k = self._kernel_like(x)
            x, k, dtype = _fft_dtype(x, k, self.path)
            return _fft_circular_normal(x, k).to(dtype)
        return self.A_adjoint(self.A(x))

    def ridge_preconditioner(
        self, rho: float | torch.Tensor
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """The circulant approximation P = F^{-1} diag(1 / (|K|^2 + rho)) F of
        (A^T A + rho I)^{-1} on the image grid (K the kernel's transfer function there), applied
        by FFT (two transforms: on CPU about one to two A^T A of a 5x5 kernel). Exact for
        "circular" padding; for the other modes A^T A differs from its circulant version within a
        kernel's reach of the border, so it helps on images much larger than the kernel (5x5
        Gaussian, zero padding, rho = 0.03, 128 x 128: 21 steps to 1e-6 instead of 40) and can
        take more steps than plain CG on small images or with "reflect" padding of an asymmetric
        kernel. Symmetric positive definite for rho > 0; |K|^2 is computed once per image size
        and kept by the operator (:meth:`_power_spectrum_for`), 1 / (|K|^2 + rho) once per
        call."""
        inverses: dict[tuple[int, int, torch.dtype, torch.device], torch.Tensor] = {}

        def apply(v: torch.Tensor) -> torch.Tensor:
            self._check(v, "v")
            v, _, dtype = _fft_dtype(v, self.kernel, "fft")
            key = (*v.shape[-2:], v.dtype, v.device)
            if key not in inverses:
                inverses[key] = 1 / (self._power_spectrum_for(v) + rho)
            return _fourier_multiply(v, inverses[key]).to(dtype)

        return apply

    def _power_spectrum_for(self, v: torch.Tensor) -> torch.Tensor:
        """|K|^2 on the rfft2 grid of v's size, dtype and device, cached (without autograd;
        the kernel's version is in the key, so an in-place change of it is seen): DE-ADMM asks
        for a preconditioner at every x-update, and on a 12-megapixel image the kernel's
        transform costs as much as a third of one application of the preconditioner."""
        if torch.is_grad_enabled() and self.kernel.requires_grad:
            return _power_spectrum(self._kernel_like(v), *v.shape[-2:])
        cache = self.__dict__.setdefault("_spectra", {})
        key = (*v.shape[-2:], v.dtype, v.device, self.kernel._version, self.kernel.data_ptr())
        if key not in cache:
            if len(cache) >= 4:
                cache.clear()
            with torch.no_grad():
                cache[key] = _power_spectrum(self._kernel_like(v), *v.shape[-2:])
        return cache[key]


def wiener_filter(op: Blur, y: torch.Tensor, lam: torch.Tensor, *, gradient: bool = True
                  ) -> torch.Tensor:
    """x = F^-1[conj(K) Y / (|K|^2 + lam |L|^2)] for a circular ``op`` (a :class:`Blur` or
    :class:`BatchBlur`): argmin ||A x - y||^2 + lam ||L x||^2 with L the periodic gradient
    (``gradient``) or I; ``lam`` a number or (N, 1, 1, 1) per sample. Frequencies where the
    denominator is 0 give 0 (the minimum-norm solution). No autograd; y's dtype (half precision
    computed in float32)."""
    if op.padding != "circular":
        raise ValueError(f"the Wiener filter needs a circular blur, got padding {op.padding!r}")
    with torch.no_grad():
        yc, k, dtype = _fft_dtype(y, op._kernel_like(y), "fft")
        h, w = yc.shape[-2:]
        kf = torch.fft.rfft2(_circulant_kernel(k, h, w))
        reg = (gradient_symbol(h, w, dtype=yc.dtype, device=yc.device) if gradient
               else torch.ones((h, w // 2 + 1), dtype=yc.dtype, device=yc.device))
        den = kf.real**2 + kf.imag**2 + lam * reg
        num = kf.conj() * torch.fft.rfft2(yc)
        safe = torch.where(den > 0, den, torch.ones_like(den))
        xf = torch.where(den > 0, num / safe, torch.zeros_like(num))
        return torch.fft.irfft2(xf, s=(h, w)).to(dtype)


def _fft_dtype(
    x: torch.Tensor, k: torch.Tensor, path: str
) -> tuple[torch.Tensor, torch.Tensor, torch.dtype]:
    """Half-precision FFTs are restricted (CPU: none; CUDA: power-of-two sizes only), so the
    FFT path computes float16/bfloat16 inputs in float32 and casts the result back."""
    dtype = x.dtype
    if path == "fft" and dtype in (torch.float16, torch.bfloat16):
        return x.float(), k.float(), dtype
    return x, k, dtype


class BatchBlur(Blur):
    """A blur with one kernel per sample: y_i = k_i * x_i per channel, on batches of exactly
    N samples (N kernels), with the boundary handling and paths of :class:`Blur`.

    Args:
        kernels: (N, kh, kw) tensor, or a sequence of (kh_i, kw_i) kernels of odd sides, which
            are zero-padded about their centres to the largest side (the same blurs).
        padding, method: as :class:`Blur` (``method="auto"`` decides on the common side).

    A(x[idx]) with the kernels ``select(idx)`` equals A(x)[idx]: a solver may apply a model's
    T to the unfinished samples only.
    """

    SHARED_ACROSS_BATCH = False

    def __init__(self, kernels: Any, padding: str = "zeros", method: str = "auto") -> None:
        if not isinstance(kernels, torch.Tensor):
            kernels = list(kernels)
            if not kernels:
                raise ValueError("BatchBlur needs at least one kernel")
            ks = [_kernels.validate(k) for k in kernels]
            for k in ks:
                if k.dim() != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
                    raise ValueError("BatchBlur: kernels given as a list must be 2-D with odd "
                                     f"sides, got shape {tuple(k.shape)}")
            side = max(max(k.shape) for k in ks)
            kernels = torch.stack([_kernels.centre_pad(k.to(ks[0].dtype), side) for k in ks])
        if kernels.dim() != 3:
            raise ValueError(f"BatchBlur: kernels must be (N, kh, kw), got shape "
                             f"{tuple(kernels.shape)}")
        for i, k in enumerate(kernels):  # one check per kernel (a zero sum is per sample)
            try:
                _kernels.validate(k)
            except (ValueError, TypeError) as exc:
                raise type(exc)(f"BatchBlur: kernel {i}: {exc}") from None
        super().__init__(kernels[0], padding=padding, method=method)
        self.kernel = kernels.detach().clone()

    @property
    def batch_size(self) -> int:
        """N, the number of kernels (and of samples the operator takes)."""
        return int(self.kernel.shape[0])

    def select(self, idx: torch.Tensor) -> BatchBlur:
        """The blur of samples ``idx`` (a 1-D index tensor): kernels ``kernel[idx]``."""
        return BatchBlur(self.kernel.index_select(0, idx.to(self.kernel.device)),
                         padding=self.padding, method=self.method)

    def extra_repr(self) -> str:
        kh, kw = self.kernel_size
        return (f"batch={self.batch_size}, kernel_size=({kh}, {kw}), padding={self.padding!r}, "
                f"method={self.method!r} (path={self.path!r})")

    def _check(self, t: torch.Tensor, name: str) -> None:
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            super()._check(t, name)
        if t.shape[0] != self.batch_size:
            raise ValueError(f"BatchBlur: {name} has {t.shape[0]} samples but the operator has "
                             f"{self.batch_size} kernels")
        if not t.is_floating_point():
            raise TypeError(f"Blur: {name} must be a floating tensor, got dtype {t.dtype}")

    def _kernel_like(self, t: torch.Tensor) -> torch.Tensor:
        """(N, 1, kh, kw): broadcast over the channels."""
        return self.kernel.to(device=t.device, dtype=t.dtype)[:, None]

    def norm_estimate(self, in_shape: Sequence[int], **kwargs: Any) -> float:
        """||A||_2 over the batch (the largest of the samples'): ``in_shape``'s batch dimension
        is replaced by N."""
        shape = check_shape(in_shape)
        return super().norm_estimate((self.batch_size, *shape[1:]), **kwargs)
