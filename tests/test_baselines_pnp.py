"""Plug-and-play ADMM / PGD with denoisers whose answer is known, and the net wrapper."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from jfb.baselines.pnp import DenoiserWrapper, pnp_admm, pnp_pgd
from jfb.baselines.wiener import wiener
from jfb.metrics import psnr
from jfb.physics import Blur, GaussianNoise, kernels

# Non-symmetric, well-posed kernel: |symbol| >= 0.6, so A^T A >= 0.36 I.
KERNEL = torch.tensor([[0.0, 0.05, 0.0], [0.02, 0.8, 0.08], [0.0, 0.05, 0.0]],
                      dtype=torch.float64)



def _identity(v):
    return v


def _images(n=2, c=1, h=12, w=12, seed=0):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed),
                      dtype=torch.float64)


def _smooth(n=2, h=32, w=32):
    """Smooth test images: sums of low-frequency cosines in [0.1, 0.9]."""
    i = torch.arange(h, dtype=torch.float64)[:, None] / h
    j = torch.arange(w, dtype=torch.float64)[None, :] / w
    two_pi = 2 * torch.pi
    imgs = [0.5 + 0.2 * torch.cos(two_pi * (i + 0.3 * k)) * torch.cos(two_pi * j * (k + 1))
            + 0.15 * torch.sin(two_pi * (2 * i + j)) for k in range(n)]
    return torch.stack(imgs)[:, None]


@pytest.mark.parametrize("padding", ["zeros", "reflect"])
def test_identity_denoiser_gives_least_squares(padding):
    op = Blur(KERNEL, padding=padding)
    x_true = _images()
    y = op.A(x_true)  # noise-free, A invertible: least squares recovers x_true
    x_pgd = pnp_pgd(op, y, _identity, step=1.0, max_iter=400, tol=1e-13)
    torch.testing.assert_close(x_pgd, x_true, rtol=0, atol=1e-8)
    x_admm = pnp_admm(op, y, _identity, rho=0.5, max_iter=300, tol=1e-13, cg_iters=30,
                      cg_tol=1e-13)
    torch.testing.assert_close(x_admm, x_true, rtol=0, atol=1e-8)


def test_linear_shrinkage_fixed_points_are_tikhonov_solutions():
    """D(v) = c v: PGD's fixed point solves (A^T A + (1-c)/(c step) I) x = A^T y, ADMM's
    (A^T A + rho (1-c)/c I) x = A^T y; both are exact Wiener solutions on a circular blur."""
    op = Blur(kernels.motion(5, seed=0).double(), padding="circular")
    y = _images(seed=1)
    c, step, rho = 0.9, 1.0, 0.5

    def shrink(v):
        return c * v

    x_pgd = pnp_pgd(op, y, shrink, step=step, max_iter=1000, tol=1e-13)
    torch.testing.assert_close(x_pgd, wiener(op, y, (1 - c) / (c * step)), rtol=0, atol=1e-9)
    kw = {"max_iter": 1000, "tol": 1e-13, "cg_iters": 50, "cg_tol": 1e-13}
    x_admm = pnp_admm(op, y, shrink, rho=rho, **kw)
    torch.testing.assert_close(x_admm, wiener(op, y, rho * (1 - c) / c), rtol=0, atol=1e-9)
    # rho and step take effect: other values give other fixed points
    x_pgd2 = pnp_pgd(op, y, shrink, step=0.5, max_iter=1000, tol=1e-13)
    torch.testing.assert_close(x_pgd2, wiener(op, y, (1 - c) / (c * 0.5)), rtol=0, atol=1e-9)
    x_admm2 = pnp_admm(op, y, shrink, rho=2.0, **kw)
    torch.testing.assert_close(x_admm2, wiener(op, y, 2.0 * (1 - c) / c), rtol=0, atol=1e-9)


def test_gaussian_smoothing_denoiser_improves_psnr():
    op = Blur(kernels.gaussian(5, 1.5).double(), padding="zeros")
    x_true = _smooth()
    y = GaussianNoise(0.05)(op.A(x_true), generator=torch.Generator().manual_seed(2))
    smoother = Blur(kernels.gaussian(5, 1.0).double(), padding="reflect")
    base = psnr(y.clamp(0, 1), x_true)
    x_pgd = pnp_pgd(op, y, smoother.A, step=1.0, max_iter=50)
    x_admm = pnp_admm(op, y, smoother.A, rho=1.0, max_iter=30)
    for x in (x_pgd, x_admm):
        gain = psnr(x.clamp(0, 1), x_true) - base
        assert bool((gain > 2.0).all()), gain


def test_sigma_is_passed_to_the_denoiser_only_when_given():
    calls = []

    def denoiser(v, *args):
        calls.append(args)
        return v

    op = Blur(KERNEL, padding="zeros")
    y = _images(n=1)
    pnp_pgd(op, y, denoiser, step=1.0, max_iter=2, tol=0)
    pnp_admm(op, y, denoiser, rho=1.0, max_iter=2, tol=0)
    assert calls == [(), (), (), ()]
    calls.clear()
    pnp_pgd(op, y, denoiser, step=1.0, max_iter=2, tol=0, sigma=0.03)
    pnp_admm(op, y, denoiser, rho=1.0, max_iter=2, tol=0, sigma=0.04)
    assert calls == [(0.03,), (0.03,), (0.04,), (0.04,)]


def test_cg_iters_controls_the_x_update():
    """After one ADMM iteration from x0 with u = 0 and D = identity, z = x solves
    (A^T A + rho I) x = A^T y + rho x0 exactly only with enough CG iterations."""
    op = Blur(kernels.gaussian(5, 2.0).double(), padding="zeros")
    y, x0 = _images(seed=3), _images(seed=4)
    rho = 0.01
    exact = _dense_solve(op, op.A_adjoint(y) + rho * x0, rho)
    z_many = pnp_admm(op, y, _identity, rho=rho, max_iter=1, cg_iters=500, cg_tol=1e-14, x0=x0)
    torch.testing.assert_close(z_many, exact, rtol=0, atol=1e-9)
    z_one = pnp_admm(op, y, _identity, rho=rho, max_iter=1, cg_iters=1, cg_tol=1e-14, x0=x0)
    assert float((z_one - z_many).abs().max()) > 1e-2
    # cg_tol: a loose tolerance stops CG early, and the x-update is only that accurate
    z_loose = pnp_admm(op, y, _identity, rho=rho, max_iter=1, cg_iters=500, cg_tol=1e-3, x0=x0)
    assert 1e-7 < float((z_loose - z_many).abs().max()) < 0.5


def _dense_solve(op, b, rho):
    """x with (A^T A + rho I) x = b, by dense linear algebra (independent of CG)."""
    n, c, h, w = b.shape
    m = c * h * w
    eye = torch.eye(m, dtype=b.dtype).reshape(m, c, h, w)
    mat = op.normal(eye).reshape(m, m).T + rho * torch.eye(m, dtype=b.dtype)
    return torch.linalg.solve(mat, b.reshape(n, m).T).T.reshape(b.shape)


@pytest.mark.parametrize("algo", ["pgd", "admm"])
def test_per_sample_stopping_matches_solving_each_sample_alone(algo):
    op = Blur(kernels.gaussian(5, 1.5).double(), padding="zeros")
    y = GaussianNoise(0.02)(op.A(_smooth(n=2, h=16, w=16)),
                            generator=torch.Generator().manual_seed(6))
    # sample 1 starts far away, so it needs more iterations than sample 0
    x0 = torch.cat([op.A_adjoint(y[:1]), 3 * _images(n=1, h=16, w=16, seed=5)])
    smoother = Blur(kernels.gaussian(3, 0.7).double(), padding="reflect")
    sizes: list[int] = []

    def denoiser(v):
        sizes.append(v.shape[0])
        return smoother.A(v)

    def run(sl, tol):
        if algo == "pgd":
            return pnp_pgd(op, y[sl], denoiser, step=1.0, max_iter=300, tol=tol, x0=x0[sl])
        return pnp_admm(op, y[sl], denoiser, rho=0.3, max_iter=300, tol=tol, x0=x0[sl])

    batch = run(slice(0, 2), 1e-3)
    assert sizes[0] == 2 and sizes[-1] == 1  # sample 0 was frozen first
    for i in range(2):
        torch.testing.assert_close(batch[i : i + 1], run(slice(i, i + 1), 1e-3), rtol=0,
                                   atol=1e-12)
    assert float((run(slice(0, 2), 0.0) - batch).abs().max()) > 1e-4  # tol is honoured


def test_x0_and_errors():
    op = Blur(KERNEL, padding="valid")
    y = _images(h=10, w=10)
    x0 = _images(h=12, w=12, seed=9)
    assert torch.equal(pnp_pgd(op, y, _identity, step=1.0, max_iter=0, x0=x0), x0)
    assert torch.equal(pnp_admm(op, y, _identity, rho=1.0, max_iter=0, x0=x0), x0)
    assert torch.equal(pnp_pgd(op, y, _identity, step=1.0, max_iter=0), op.A_adjoint(y))
    with pytest.raises(ValueError, match="x0"):
        pnp_pgd(op, y, _identity, step=1.0, x0=y)
    with pytest.raises(ValueError, match="shape"):
        pnp_pgd(op, y, lambda v: v[..., 1:, :], step=1.0)
    with pytest.raises(ValueError, match="rho"):
        pnp_admm(op, y, _identity, rho=0.0)
    with pytest.raises(ValueError, match="tol"):
        pnp_admm(op, y, _identity, rho=1.0, cg_tol=-1.0)
    with pytest.raises(ValueError, match="cg_iters"):
        pnp_admm(op, y, _identity, rho=1.0, cg_iters=0)


# ------------------------------------------------------------------------------ DenoiserWrapper
class _NoiseAware(nn.Module):
    """Tiny conv net on C + 1 channels (image + noise map) -> C channels, with dropout."""

    def __init__(self, c: int = 3, p: float = 0.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c + 1, c, 3, padding=1)
        self.drop = nn.Dropout(p)

    def forward(self, x):
        return self.drop(self.conv(x))


def test_wrapper_appends_a_noise_level_channel():
    torch.manual_seed(0)
    net = _NoiseAware(3)
    v = torch.rand(2, 3, 8, 8)
    d = DenoiserWrapper(net, sigma_in=0.1)
    expected = net(torch.cat([v, torch.full((2, 1, 8, 8), 0.1)], dim=1)).detach()
    out = d(v)
    torch.testing.assert_close(out, expected)
    assert not out.requires_grad
    # the call's sigma overrides sigma_in, and the level changes the output
    out2 = d(v, 0.3)
    torch.testing.assert_close(out2, net(torch.cat([v, torch.full((2, 1, 8, 8), 0.3)], 1)).detach())
    assert float((out2 - out).abs().max()) > 1e-4
    with pytest.raises(ValueError, match="sigma"):
        DenoiserWrapper(net)(v)
    with pytest.raises(ValueError, match="channels"):
        d(torch.rand(1, 1, 8, 8))


def test_wrapper_plain_net_eval_mode_and_in_channels_override():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Dropout(0.5))
    net.train()
    d = DenoiserWrapper(net, sigma_in=0.2)  # C-channel net: sigma is not fed
    v = torch.rand(1, 1, 8, 8)
    out = d(v, 0.7)
    torch.testing.assert_close(out, net[0](v).detach())  # eval: dropout off, deterministic
    assert net.training  # mode restored

    class NoConv(nn.Module):
        def forward(self, x):
            return x[:, :-1] * (1.0 + x[:, -1:])

    with pytest.raises(ValueError, match="in_channels"):
        DenoiserWrapper(NoConv())
    v3 = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(DenoiserWrapper(NoConv(), 0.5, in_channels=4)(v3), 1.5 * v3)
    with pytest.raises(ValueError, match="channels"):
        DenoiserWrapper(NoConv(), 0.5, in_channels=3)(v3[:, :1])


def test_wrapper_drives_pnp():
    torch.manual_seed(2)
    net = _NoiseAware(1)
    with torch.no_grad():
        net.conv.weight.zero_()
        net.conv.weight[0, 0, 1, 1] = 1.0  # identity on the image channel
        net.conv.weight[0, 1, 1, 1] = 0.0
        net.conv.bias.zero_()
    op = Blur(KERNEL, padding="zeros")
    x_true = _images(n=1, h=8, w=8).float()
    x = pnp_pgd(op, op.A(x_true), DenoiserWrapper(net, 0.05), step=1.0, max_iter=300, tol=1e-9)
    torch.testing.assert_close(x, x_true, rtol=0, atol=1e-4)
