"""BM3D deblurring, an optional extra (``bm3d`` on PyPI, non-commercial licence): one line
naming the install when it is missing; when installed, its blur model is ``Blur(k, circular)``
and it deblurs."""

from __future__ import annotations

import builtins

import numpy as np
import pytest
import torch

from jfb.baselines import bm3d as bm3d_mod
from jfb.benchmark import make_method
from jfb.errors import ConfigError
from jfb.metrics import psnr
from jfb.physics import Blur, Physics, kernels


def test_a_missing_bm3d_is_one_line_naming_the_install(monkeypatch):
    real = builtins.__import__

    def no_bm3d(name, *args, **kwargs):
        if name == "bm3d":
            raise ImportError("No module named 'bm3d'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bm3d)
    with pytest.raises(ConfigError, match="pip install bm3d==4.0.3"):
        make_method("bm3d", tol=None, max_iter=None)
    op = Blur(kernels.gaussian(5, 1.0), padding="circular")
    with pytest.raises(ImportError, match="non-commercial"):
        bm3d_mod.bm3d_deblur(op, torch.zeros(1, 3, 16, 16), 0.01)


def test_bm3d_refuses_what_it_does_not_model():
    with pytest.raises(ValueError, match="circular"):
        bm3d_mod.bm3d_deblur(Blur(kernels.gaussian(5, 1.0), padding="reflect"),
                             torch.zeros(1, 3, 16, 16), 0.01)
    with pytest.raises(ValueError, match="noise std"):
        bm3d_mod.bm3d_deblur(Blur(kernels.gaussian(5, 1.0), padding="circular"),
                             torch.zeros(1, 3, 16, 16), 0.0)


def test_the_packages_blur_is_our_circular_blur_and_bm3d_deblurs():
    bm3d = pytest.importorskip("bm3d")
    from numpy.fft import fft2, ifft2

    k = kernels.motion(9, seed=2).double()
    x = torch.rand(1, 1, 40, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    big = np.zeros((40, 50))
    big[:9, :9] = k.numpy()
    big = np.roll(big, (-4, -4), axis=(0, 1))  # bm3d_deblurring's centring of the PSF
    theirs = np.real(ifft2(fft2(x[0, 0].numpy()) * fft2(big)))
    ours = Blur(k, padding="circular").A(x)[0, 0].numpy()
    assert np.abs(theirs - ours).max() < 1e-12
    assert bm3d is bm3d_mod.require_bm3d()

    from jfb.data.builtin import natural_images

    clean = natural_images(["astronaut"])[0][1][:, 100:164, 180:244][None]
    op = Blur(kernels.gaussian(9, 1.6), padding="circular")
    y = Physics(op, 0.01).measure(clean, generator=torch.Generator().manual_seed(0))
    x_hat = bm3d_mod.bm3d_deblur(op, y, 0.01)
    assert float(psnr(x_hat.clamp(0, 1), clean)) > float(psnr(y.clamp(0, 1), clean)) + 1.0
