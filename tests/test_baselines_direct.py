"""Direct inverses: bicubic upsampling, filtered back-projection, and their dispatch."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import skimage.transform
import torch

from jfb.baselines.direct import (
    bicubic_upsample,
    direct_inverse,
    filtered_backprojection,
    ramp_filter,
)
from jfb.metrics import psnr
from jfb.physics import Blur, Downsample, Identity, RandomMask, kernels
from jfb.physics.radon import Radon


def _phantom(n: int) -> torch.Tensor:
    img = skimage.transform.resize(skimage.data.shepp_logan_phantom(), (n, n))
    return torch.tensor(img, dtype=torch.float64)[None, None]


def test_ramp_filter_is_ram_lak():
    h = ramp_filter(256)
    f = torch.fft.rfftfreq(256, dtype=torch.float64)
    # |f| away from DC (the band-limited form differs from |f| by less than 1/n there),
    # and not zero at DC (which would bias the mean, unlike the naive |f| filter)
    assert torch.allclose(h[8:100], f[8:100], atol=0.01)
    assert 0 < float(h[0]) < 0.01


@pytest.mark.parametrize("angles", [60, 180])
def test_fbp_reconstructs_a_phantom(angles):
    x = _phantom(64)
    op = Radon(angles)
    rec = filtered_backprojection(op, op.A(x))
    assert float(psnr(rec.clamp(0, 1), x)) > 24
    # the scale is right: the best rescaling of the reconstruction is within 5% of 1
    assert abs(float((rec * x).sum() / (rec * rec).sum()) - 1) < 0.05
    bp = op.A_adjoint(op.A(x))  # unfiltered back-projection, at its best scale
    bp = bp * (bp * x).sum() / (bp * bp).sum()
    assert float(psnr(rec.clamp(0, 1), x)) > float(psnr(bp.clamp(0, 1), x)) + 5


def test_bicubic_upsample_interpolates_smooth_images():
    t = torch.linspace(0, 1, 64, dtype=torch.float64)
    x = (torch.sin(3 * t)[:, None] * torch.cos(2 * t)[None, :])[None, None]
    op = Downsample(2, "box")
    up = bicubic_upsample(op.A(x), 2)
    assert up.shape == x.shape
    assert float(psnr(up[..., 2:-2, 2:-2], x[..., 2:-2, 2:-2])) > 45


def test_direct_inverse_dispatch():
    y = torch.rand(1, 3, 16, 16)
    assert direct_inverse(Identity(), y) is y
    assert direct_inverse(RandomMask(0.5), y) is y
    assert direct_inverse(Blur(kernels.gaussian(3, 1.0)), y) is y
    assert direct_inverse(Downsample(4), y).shape == (1, 3, 64, 64)
    assert direct_inverse(Radon(8), torch.rand(1, 3, 8, 16)).shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="no direct inverse"):
        direct_inverse(Blur(kernels.gaussian(3, 1.0), "valid"), y)
    with pytest.raises(TypeError, match="Radon"):
        filtered_backprojection(Identity(), y)
    with pytest.raises(ValueError):
        bicubic_upsample(torch.rand(3, 4, 4), 2)
    assert np.isfinite(direct_inverse(Downsample(2), y).numpy()).all()
