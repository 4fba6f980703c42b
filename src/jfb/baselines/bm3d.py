"""BM3D deblurring (Dabov et al.; Makinen, Azzari and Foi's ``bm3d`` package), an optional extra.

x = BM3D-deb(y, sigma, k): a regularised inverse in Fourier, BM3D hard thresholding of it with
its coloured noise spectrum, a regularised Wiener inverse guided by that estimate, and BM3D
Wiener filtering (``bm3d.bm3d_deblurring``, profile "np"), each colour channel on its own. The
package models y = k (*) x + n with circular convolution, the same as ``Blur(k, "circular")``
(checked to 1e-15 in ``tests/test_baselines_bm3d.py``).

``bm3d`` (PyPI, 4.0.3) has a non-commercial licence, so it is never a dependency of this
project: ``pip install bm3d==4.0.3`` to use it. Its ``bm4d`` dependency calls ``np.trapz``,
which numpy 2.4 removed: the alias ``np.trapezoid`` is put back for it when missing.
"""

from __future__ import annotations

import numpy as np
import torch

from jfb.physics.blur import Blur

__all__ = ["INSTALL", "bm3d_deblur", "require_bm3d"]

INSTALL = ("BM3D is an optional extra with a non-commercial licence, not installed: "
           "pip install bm3d==4.0.3")


def require_bm3d():
    """The ``bm3d`` module; ImportError saying how to install it when it is not."""
    try:
        import bm3d  # noqa: PLC0415 (optional, imported on use)
    except ImportError as exc:
        raise ImportError(INSTALL) from exc
    if not hasattr(np, "trapz"):  # bm4d 4.2 calls np.trapz (removed in numpy 2.4)
        np.trapz = np.trapezoid  # noqa: NPY201 (put back for bm4d, said in the docstring)
    return bm3d


def bm3d_deblur(op: Blur, y: torch.Tensor, sigma: float) -> torch.Tensor:
    """BM3D deblurring of y (N, C, H, W) blurred by ``op`` (a circular :class:`Blur` with one
    kernel) with white noise of std ``sigma`` > 0; returns x_hat like y (float, not clamped)."""
    if not isinstance(op, Blur) or op.padding != "circular" or op.kernel.dim() != 2:
        raise ValueError("BM3D deblurring models a circular blur with one 2-D kernel")
    if not sigma > 0:
        raise ValueError(f"BM3D needs the noise std > 0, got {sigma!r}")
    bm3d = require_bm3d()
    psf = op.kernel.detach().cpu().double().numpy()
    out = torch.empty_like(y)
    for i in range(y.shape[0]):
        z = y[i].detach().cpu().double().permute(1, 2, 0).numpy()
        channels = [np.atleast_3d(bm3d.bm3d_deblurring(z[..., c : c + 1], float(sigma), psf))
                    for c in range(z.shape[-1])]
        x = torch.from_numpy(np.ascontiguousarray(np.concatenate(channels, axis=-1)))
        out[i] = x.permute(2, 0, 1).to(out)
    return out
