"""Tests of jfb.nets: operator-norm spectral normalisation, DnCNN, UNet, build_net."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from jfb.errors import ConfigError
from jfb.nets import (
    ACTIVATIONS,
    DnCNN,
    SpectralConvNorm,
    UNet,
    apply_spectral_norm,
    build_net,
    conv_operator_norm,
    frozen_spectral_norm,
    has_batch_norm,
    spectral_norm_conv,
    spectral_norm_power_step,
)
from jfb.nets.spectral import _ConvGeometry

DT = torch.float64


def _dense(conv: nn.Module, in_shape: tuple[int, ...]) -> np.ndarray:
    """Matrix of x -> conv(x) - conv(0) (the linear part) built column by column."""
    n = int(np.prod(in_shape))
    with torch.no_grad():
        zero = conv(torch.zeros(in_shape, dtype=DT))
        cols = []
        for j in range(n):
            e = torch.zeros(n, dtype=DT)
            e[j] = 1.0
            cols.append((conv(e.reshape(in_shape)) - zero).flatten())
    return torch.stack(cols, dim=1).numpy()


def _convs() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "zeros": nn.Conv2d(2, 3, 3, padding=1),
        "stride2": nn.Conv2d(2, 3, 3, stride=2, padding=1),
        "circular": nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular"),
        "reflect_dilated": nn.Conv2d(2, 2, 3, padding=2, dilation=2, padding_mode="reflect"),
        "same_even": nn.Conv2d(2, 3, 4, padding="same"),
        "groups": nn.Conv2d(2, 4, 3, padding=1, groups=2),
        "transpose": nn.ConvTranspose2d(2, 3, 2, stride=2),
    }


def _sn_params(net: nn.Module) -> list[SpectralConvNorm]:
    return [m for m in net.modules() if isinstance(m, SpectralConvNorm)]


def _convs_of(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


# ----------------------------------------------------------------------------- operator norms
@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("name", list(_convs()))
def test_conv_operator_norm_matches_dense_svd(name: str) -> None:
    conv = _convs()[name].to(DT)
    dense = _dense(conv, (1, 2, 6, 6))
    exact = np.linalg.svd(dense, compute_uv=False)[0]
    est = conv_operator_norm(conv, (6, 6), n_iter=500)
    assert est == pytest.approx(exact, rel=1e-4)
    # a single step from a random start is clearly below the converged value
    assert conv_operator_norm(conv, (6, 6), n_iter=1) < exact


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("name", list(_convs()))
def test_adjoint_identity(name: str) -> None:
    conv = _convs()[name].to(DT)
    geom = _ConvGeometry(conv)
    w = conv.weight.detach()
    u = torch.randn(1, 2, 7, 6, dtype=DT)
    au = geom.apply(u, w)
    z = torch.randn_like(au)
    lhs = (au * z).sum()
    rhs = (u * geom.adjoint(z, w, u.shape)).sum()
    assert float(lhs) == pytest.approx(float(rhs), rel=1e-10)


def test_operator_norm_is_not_reshaped_weight_norm() -> None:
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False).to(DT)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    reshaped = torch.linalg.matrix_norm(conv.weight.reshape(1, -1), ord=2).item()
    assert reshaped == pytest.approx(3.0)
    exact = (1 + 2 * np.cos(np.pi / 7)) ** 2  # T (x) T, T = tridiag(1,1,1) of size 6
    assert conv_operator_norm(conv, (6, 6), n_iter=500) == pytest.approx(exact, rel=1e-6)
    # torch's spectral_norm normalises the reshaped matrix: operator norm stays far above 1
    torch_sn = nn.utils.parametrizations.spectral_norm(
        nn.Conv2d(1, 1, 3, padding=1, bias=False).to(DT)
    )
    with torch.no_grad():
        torch_sn.parametrizations.weight.original.fill_(1.0)
        for _ in range(20):
            torch_sn(torch.zeros(1, 1, 6, 6, dtype=DT))
    torch_sn.eval()
    assert conv_operator_norm(torch_sn, (6, 6)) == pytest.approx(exact / 3.0, rel=1e-4)
    ours = spectral_norm_conv(conv, input_size=6, n_init_iter=200).eval()
    assert conv_operator_norm(ours, (6, 6)) == pytest.approx(1.0, abs=1e-6)


# ----------------------------------------------------------------------------- the parametrisation
def _scaled_dncnn(spectral_norm: bool, scale: float = 5.0, **kw) -> DnCNN:
    torch.manual_seed(1)
    net = DnCNN(in_channels=2, depth=4, width=6, final_scale_init=1.0, **kw)
    with torch.no_grad():
        for conv in _convs_of(net):
            conv.weight.mul_(scale)
    if spectral_norm:
        apply_spectral_norm(net, 1.0, input_size=16)
    return net


def test_spectral_norm_bounds_lipschitz() -> None:
    x = torch.rand(1, 2, 16, 16)
    net = _scaled_dncnn(True).train()
    for _ in range(150):
        net(x)
    for conv in _convs_of(net):
        assert conv_operator_norm(conv, (16, 16), n_iter=300) <= 1 + 2e-3
    net.eval()
    bound = net.lipschitz_bound((16, 16))
    assert 0.5 < bound <= 1 + 5e-3
    torch.manual_seed(2)
    a = torch.rand(8, 2, 16, 16)
    b = a + 1e-2 * torch.randn_like(a)
    with torch.no_grad():
        ratio = (net(a) - net(b)).flatten(1).norm(dim=1) / (a - b).flatten(1).norm(dim=1)
    assert float(ratio.max()) <= bound

    plain = _scaled_dncnn(False).eval()
    with torch.no_grad():
        ratio_plain = (plain(a) - plain(b)).flatten(1).norm(dim=1) / (a - b).flatten(1).norm(dim=1)
    assert float(ratio_plain.max()) > 1.0
    assert plain.lipschitz_bound((16, 16)) >= float(ratio_plain.max())


def test_dncnn_spectral_norm_option_and_target() -> None:
    net = DnCNN(in_channels=1, depth=3, width=4, spectral_norm=True, sn_target=0.5)
    net.train()
    for _ in range(150):
        net(torch.rand(1, 1, 8, 8))
    norms = [conv_operator_norm(c, n_iter=300) for c in _convs_of(net)]
    # Kaiming hidden convs have norm > 0.5, so they are clipped to 0.5; all are <= 0.5
    assert max(norms) <= 0.5 * (1 + 2e-3)
    assert norms[0] == pytest.approx(0.5, rel=2e-3)
    plain = DnCNN(in_channels=1, depth=3, width=4)
    assert conv_operator_norm(_convs_of(plain)[0]) > 0.6
    assert len(_sn_params(net)) == 3 and not _sn_params(plain)


def test_sn_mode_normalize_scales_up() -> None:
    torch.manual_seed(0)
    kw = dict(in_channels=1, depth=3, width=4, spectral_norm=True, sn_target=0.5,
              final_scale_init=0.01)
    clip = DnCNN(**kw)
    torch.manual_seed(0)
    norm = DnCNN(sn_mode="normalize", **kw)
    for net in (clip, norm):
        for _ in range(100):
            net(torch.rand(1, 1, 8, 8))
    final_clip = conv_operator_norm(_convs_of(clip)[-1], n_iter=300)
    final_norm = conv_operator_norm(_convs_of(norm)[-1], n_iter=300)
    assert final_clip < 0.1  # small final layer untouched by clipping
    assert final_norm == pytest.approx(0.5, rel=2e-3)


def test_eval_does_not_update_u_and_train_does() -> None:
    net = _scaled_dncnn(True)
    x = torch.rand(2, 2, 8, 8)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.eval()
    net(x)
    after = net.state_dict()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    net.train()
    net(x)
    changed = [k for k in before if k.endswith(".u") and not torch.equal(before[k], after[k])]
    assert len(changed) == 4


def test_power_iterations_per_forward_and_freezing() -> None:
    def make(n_steps: int) -> nn.Conv2d:
        torch.manual_seed(3)
        conv = nn.Conv2d(2, 3, 3, padding=1).to(DT)
        return spectral_norm_conv(conv, input_size=8, n_power_iterations=n_steps, n_init_iter=0)

    x = torch.rand(1, 2, 8, 8, dtype=DT)
    one, three, zero = make(1), make(3), make(0)
    u0 = one.parametrizations.weight[0].u.clone()
    for _ in range(3):
        one(x)
    three(x)
    zero(x)
    u1, u3 = one.parametrizations.weight[0].u, three.parametrizations.weight[0].u
    assert not torch.allclose(u1, u0)
    assert torch.allclose(u1, u3, atol=1e-12)
    assert torch.equal(zero.parametrizations.weight[0].u, u0)
    spectral_norm_power_step(zero, 3)  # explicit steps: same as three 1-step forwards
    assert torch.allclose(zero.parametrizations.weight[0].u, u1, atol=1e-12)

    # frozen: training forwards leave u alone; an explicit step still advances it
    with frozen_spectral_norm(one):
        u_before = one.parametrizations.weight[0].u.clone()
        one(x)
        assert torch.equal(one.parametrizations.weight[0].u, u_before)
        spectral_norm_power_step(one, 2)
        assert not torch.equal(one.parametrizations.weight[0].u, u_before)
    assert one.parametrizations.weight[0].frozen is False
    u_before = one.parametrizations.weight[0].u.clone()
    one(x)
    assert not torch.equal(one.parametrizations.weight[0].u, u_before)


def test_n_init_iter_and_input_size() -> None:
    torch.manual_seed(4)
    base = nn.Conv2d(3, 5, 3, padding=1).to(DT)
    exact = conv_operator_norm(base, (10, 12), n_iter=1000)
    rough = spectral_norm_conv(
        _clone_conv(base), input_size=(10, 12), n_power_iterations=0, n_init_iter=0
    )
    good = spectral_norm_conv(
        _clone_conv(base), input_size=(10, 12), n_power_iterations=0, n_init_iter=300
    )
    p_rough, p_good = rough.parametrizations.weight[0], good.parametrizations.weight[0]
    assert p_good.u.shape == (1, 3, 10, 12)
    w = base.weight.detach()
    assert float(p_good.sigma(w)) == pytest.approx(exact, rel=2e-3)
    assert float(p_rough.sigma(w)) < 0.9 * exact


def _clone_conv(conv: nn.Conv2d) -> nn.Conv2d:
    new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding)
    new = new.to(conv.weight.dtype)
    new.load_state_dict(conv.state_dict())
    return new


def test_sigma_is_differentiated_through() -> None:
    torch.manual_seed(5)
    conv = spectral_norm_conv(nn.Conv2d(2, 2, 3, padding=1).to(DT), input_size=5, n_init_iter=50)
    par = conv.parametrizations.weight[0]
    original = conv.parametrizations.weight.original.detach().clone().requires_grad_(True)
    assert float(par.sigma(original.detach())) > 1.0  # clip active
    with frozen_spectral_norm(conv):
        assert torch.autograd.gradcheck(par, (original,))
    # and the gradient is not that of a constant scale target/sigma
    with frozen_spectral_norm(conv):
        g = torch.randn_like(original)
        (grad,) = torch.autograd.grad((par(original) * g).sum(), original)
        const = g / par.sigma(original).detach()
    assert not torch.allclose(grad, const, atol=1e-6)


def test_backward_after_several_training_forwards() -> None:
    # u is updated in place by each forward; the graph of earlier forwards must stay valid
    net = DnCNN(in_channels=1, depth=3, width=4, spectral_norm=True).train()
    x = torch.rand(2, 1, 8, 8)
    loss = net(net(net(x))).square().sum()
    loss.backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_spectral_norm_follows_dtype() -> None:
    net = DnCNN(in_channels=1, depth=2, width=3, spectral_norm=True).to(DT)
    assert all(p.u.dtype == DT for p in _sn_params(net))
    assert net(torch.rand(1, 1, 5, 5, dtype=DT)).dtype == DT


def test_apply_spectral_norm_errors() -> None:
    with pytest.raises(ValueError, match="no Conv2d"):
        apply_spectral_norm(nn.Linear(2, 2))
    conv = spectral_norm_conv(nn.Conv2d(1, 1, 3))
    with pytest.raises(ValueError, match="already"):
        spectral_norm_conv(conv)
    with pytest.raises(TypeError, match="Linear"):
        conv_operator_norm(nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="mode"):
        apply_spectral_norm(nn.Conv2d(1, 1, 3), mode="max")
    with pytest.raises(ConfigError, match="target"):
        apply_spectral_norm(nn.Conv2d(1, 1, 3), target=0.0)
    with pytest.raises(ConfigError, match="input_size"):
        apply_spectral_norm(nn.Conv2d(1, 1, 5), input_size=2)
    with pytest.raises(ConfigError, match="n_power_iterations"):
        apply_spectral_norm(nn.Conv2d(1, 1, 3), n_power_iterations=-1)


# ----------------------------------------------------------------------------- DnCNN
def test_per_sample_independence_and_batch_norm() -> None:
    torch.manual_seed(6)
    x = torch.rand(3, 2, 8, 8)
    for net in (DnCNN(in_channels=2, depth=3, width=4), UNet(in_channels=2, base=4, levels=1)):
        net.train()
        assert not has_batch_norm(net)
        with torch.no_grad():
            full = net(x)
            for i in range(3):
                torch.testing.assert_close(full[i : i + 1], net(x[i : i + 1]))
    for net in (
        DnCNN(in_channels=2, depth=3, width=4, batch_norm=True),
        UNet(in_channels=2, base=4, levels=1, batch_norm=True),
    ):
        net.train()
        assert has_batch_norm(net)
        with torch.no_grad():
            assert not torch.allclose(net(x)[:1], net(x[:1]), atol=1e-4)


def test_group_norm_is_per_sample_but_sees_the_whole_image() -> None:
    torch.manual_seed(7)
    net = DnCNN(in_channels=2, depth=3, width=8, group_norm=True).eval()
    assert sum(isinstance(m, nn.GroupNorm) for m in net.modules()) == 1
    x = torch.rand(3, 2, 12, 12)
    with torch.no_grad():
        full = net(x)
        for i in range(3):  # per sample: the batch does not matter
            torch.testing.assert_close(full[i : i + 1], net(x[i : i + 1]))
        # not local: a change far beyond the receptive radius changes the output
        far = x.clone()
        far[:, :, -1, -1] += 1
        assert not torch.allclose(net(far)[:, :, 0, 0], full[:, :, 0, 0], atol=1e-6)
        big = torch.rand(2, 2, 48, 48)  # spatial chunks (16 px) would see part of the image
        whole = net(big)
        net.chunk_bytes = 64  # pieces take whole samples: the same as the whole batch
        torch.testing.assert_close(net(big), whole)
    with pytest.raises(ValueError, match="no Lipschitz bound"):
        net.lipschitz_bound()
    with pytest.raises(ConfigError, match="choose one"):
        DnCNN(in_channels=2, depth=3, width=8, group_norm=True, batch_norm=True)


def test_residual_flag() -> None:
    x = torch.rand(2, 2, 9, 9)
    for cls, kw in ((DnCNN, dict(depth=3, width=4)), (UNet, dict(base=4, levels=1))):
        plain = cls(in_channels=2, **kw)
        res = cls(in_channels=2, residual=True, **kw)
        res.load_state_dict(plain.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(res(x), x - plain(x))
            assert not torch.allclose(res(x), plain(x))


def test_architecture_options() -> None:
    net = DnCNN(in_channels=2, out_channels=5, depth=4, width=7, kernel_size=5)
    convs = _convs_of(net)
    assert len(convs) == 4
    assert [tuple(c.weight.shape) for c in convs] == [
        (7, 2, 5, 5), (7, 7, 5, 5), (7, 7, 5, 5), (5, 7, 5, 5),
    ]
    assert net(torch.rand(1, 2, 6, 7)).shape == (1, 5, 6, 7)
    bn = DnCNN(in_channels=1, depth=4, width=3, batch_norm=True)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) == 2  # none after the 1st conv


def test_bias_option() -> None:
    zero = torch.zeros(1, 1, 6, 6)
    no_bias = DnCNN(in_channels=1, depth=3, width=4, bias=False, final_scale_init=1.0)
    assert all(c.bias is None for c in _convs_of(no_bias))
    assert torch.equal(no_bias(zero), zero)
    with_bias = DnCNN(in_channels=1, depth=3, width=4, final_scale_init=1.0)
    with torch.no_grad():
        for c in _convs_of(with_bias):
            c.bias.fill_(0.1)
    assert with_bias(zero).abs().max() > 0


def test_final_scale_init() -> None:
    x = torch.rand(1, 1, 6, 6)
    assert torch.equal(DnCNN(in_channels=1, depth=3, width=4, final_scale_init=0.0)(x),
                       torch.zeros_like(x))
    torch.manual_seed(7)
    a = DnCNN(in_channels=1, depth=3, width=4, final_scale_init=1.0)
    torch.manual_seed(7)
    b = DnCNN(in_channels=1, depth=3, width=4, final_scale_init=0.25)
    torch.testing.assert_close(b.body[-1].weight, 0.25 * a.body[-1].weight)
    torch.testing.assert_close(b.body[0].weight, a.body[0].weight)
    torch.testing.assert_close(b(x), 0.25 * a(x))


def test_activation_option_and_constants() -> None:
    torch.manual_seed(8)
    relu = DnCNN(in_channels=1, depth=3, width=4, final_scale_init=1.0)
    gelu = DnCNN(in_channels=1, depth=3, width=4, final_scale_init=1.0, activation="gelu")
    gelu.load_state_dict(relu.state_dict())
    assert isinstance(gelu.body[1], nn.GELU)
    x = torch.randn(1, 1, 6, 6)
    assert not torch.allclose(relu(x), gelu(x))
    t = torch.linspace(-10, 10, 40001, dtype=DT, requires_grad=True)
    for name, (factory, lip) in ACTIVATIONS.items():
        (d,) = torch.autograd.grad(factory()(t).sum(), t)
        assert float(d.abs().max()) <= lip <= float(d.abs().max()) + 1e-4, name
    assert gelu.lipschitz_bound() == pytest.approx(relu.lipschitz_bound() * 1.12891**2)


def test_lipschitz_bound_batch_norm_and_residual() -> None:
    net = DnCNN(in_channels=1, depth=3, width=4, batch_norm=True).eval()
    bn = next(m for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    b1 = net.lipschitz_bound((8, 8))
    with torch.no_grad():
        bn.running_var.fill_(4.0 - bn.eps)
    assert net.lipschitz_bound((8, 8)) == pytest.approx(b1 / 2 * np.sqrt(1 + bn.eps), rel=1e-6)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, -3.0, 1.0, 2.0]))
    assert net.lipschitz_bound((8, 8)) == pytest.approx(b1 / 2 * 3 * np.sqrt(1 + bn.eps), rel=1e-6)
    # shape and n_iter take effect: zero-padded norms grow with the image; power iteration
    # increases towards the norm
    assert net.lipschitz_bound((3, 3)) < 0.99 * net.lipschitz_bound((16, 16))
    assert net.lipschitz_bound((8, 8), n_iter=1) < 0.99 * net.lipschitz_bound((8, 8))
    res = DnCNN(in_channels=1, depth=3, width=4, residual=True)
    plain = DnCNN(in_channels=1, depth=3, width=4)
    plain.load_state_dict(res.state_dict())
    assert res.lipschitz_bound((8, 8)) == pytest.approx(1 + plain.lipschitz_bound((8, 8)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(depth=1), "depth"),
        (dict(depth=2.0), "depth"),
        (dict(width=0), "width"),
        (dict(in_channels=0), "in_channels"),
        (dict(out_channels=0), "out_channels"),
        (dict(kernel_size=4), "kernel_size"),
        (dict(kernel_size=0), "kernel_size"),
        (dict(bias="yes"), "bias"),
        (dict(batch_norm=1), "batch_norm"),
        (dict(spectral_norm=None), "spectral_norm"),
        (dict(sn_target=-1.0), "sn_target"),
        (dict(sn_target=float("inf")), "sn_target"),
        (dict(sn_mode="max"), "sn_mode"),
        (dict(activation="swish"), "activation"),
        (dict(residual=True, out_channels=1), "residual"),
        (dict(final_scale_init=-0.1), "final_scale_init"),
    ],
)
def test_dncnn_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        DnCNN(**{"depth": 3, "width": 4, **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(base=0), "base"),
        (dict(levels=0), "levels"),
        (dict(up="nearest"), "up"),
        (dict(pad_mode="zeros"), "pad_mode"),
        (dict(activation="swish"), "activation"),
        (dict(residual=True, out_channels=1), "residual"),
        (dict(batch_norm="no"), "batch_norm"),
        (dict(bias=0), "bias"),
        (dict(spectral_norm=1), "spectral_norm"),
        (dict(sn_target=0), "sn_target"),
        (dict(sn_mode="x"), "sn_mode"),
        (dict(final_scale_init=-1), "final_scale_init"),
        (dict(in_channels=-1), "in_channels"),
        (dict(out_channels=0), "out_channels"),
    ],
)
def test_unet_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        UNet(**{"base": 2, "levels": 1, **kwargs})


def test_forward_input_errors() -> None:
    for net in (DnCNN(in_channels=3, depth=2, width=2), UNet(in_channels=3, base=2, levels=1)):
        with pytest.raises(ValueError, match="3 input channels, got 1"):
            net(torch.rand(1, 1, 8, 8))
        with pytest.raises(ValueError, match="4-D"):
            net(torch.rand(3, 8, 8))
        with pytest.raises(TypeError, match="Tensor"):
            net(np.zeros((1, 3, 8, 8)))


# ----------------------------------------------------------------------------- UNet
@pytest.mark.parametrize("size", [(13, 7), (1, 5), (16, 9), (3, 3)])
@pytest.mark.parametrize("up", ["bilinear", "transpose"])
def test_unet_any_size(size: tuple[int, int], up: str) -> None:
    net = UNet(in_channels=2, out_channels=3, base=3, levels=2, up=up)
    x = torch.rand(2, 2, *size)
    out = net(x)
    assert out.shape == (2, 3, *size)
    torch.testing.assert_close(out[1:], net(x[1:]))


def test_unet_pad_mode_and_up_options() -> None:
    torch.manual_seed(9)
    kw = dict(in_channels=1, base=3, levels=2, final_scale_init=1.0)
    refl = UNet(pad_mode="reflect", **kw)
    repl = UNet(pad_mode="replicate", **kw)
    repl.load_state_dict(refl.state_dict())
    odd = torch.rand(1, 1, 13, 10)
    assert not torch.allclose(refl(odd), repl(odd))
    even = torch.rand(1, 1, 12, 8)  # multiple of 2**levels: no padding at all
    torch.testing.assert_close(refl(even), repl(even))
    # 13 x 10 -> 16 x 12: pads (left, right, top, bottom) = (1, 1, 1, 2), then cropped back
    padded = torch.nn.functional.pad(odd, (1, 1, 1, 2), mode="reflect")
    torch.testing.assert_close(refl(odd), refl(padded)[..., 1:14, 1:11])

    bil = UNet(**kw)
    tr = UNet(up="transpose", **kw)
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in bil.modules())
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in tr.modules()) == 2
    deep = UNet(in_channels=1, base=3, levels=3)
    assert len(deep.downs) == 3 and deep.downs[-1][0].out_channels == 24
    assert UNet(in_channels=1, base=5, levels=1).inc[0].out_channels == 5


def test_unet_spectral_norm_includes_transposed_convs() -> None:
    net = UNet(in_channels=1, base=2, levels=1, up="transpose", spectral_norm=True, sn_target=0.7)
    net.train()
    for _ in range(150):
        net(torch.rand(1, 1, 8, 8))
    convs = _convs_of(net)
    assert len(_sn_params(net)) == len(convs)
    assert any(isinstance(c, nn.ConvTranspose2d) for c in convs)
    assert max(conv_operator_norm(c, n_iter=300) for c in convs) <= 0.7 * (1 + 5e-3)
    normalize = UNet(in_channels=1, base=2, levels=1, spectral_norm=True, sn_mode="normalize")
    for _ in range(100):
        normalize(torch.rand(1, 1, 8, 8))
    assert conv_operator_norm(normalize.outc, n_iter=300) == pytest.approx(1.0, rel=2e-3)


def test_unet_other_options() -> None:
    x = torch.rand(1, 1, 8, 8)
    zero = UNet(in_channels=1, base=2, levels=1, final_scale_init=0.0)
    assert torch.equal(zero(x), torch.zeros_like(x))
    assert all(c.bias is None for c in _convs_of(UNet(in_channels=1, base=2, bias=False)))
    gelu = UNet(in_channels=1, base=2, levels=1, activation="gelu")
    assert any(isinstance(m, nn.GELU) for m in gelu.modules())


# ----------------------------------------------------------------------------- state dict, builder
def test_state_dict_round_trip() -> None:
    x = torch.rand(2, 2, 9, 11)
    for make in (
        lambda: DnCNN(in_channels=2, depth=3, width=4, spectral_norm=True, batch_norm=True),
        lambda: UNet(in_channels=2, base=3, levels=2, up="transpose", spectral_norm=True),
    ):
        torch.manual_seed(10)
        net = make().train()
        for _ in range(3):
            net(torch.rand(2, 2, 9, 11))
        net.eval()
        torch.manual_seed(11)
        fresh = make().eval()
        assert not torch.allclose(fresh(x), net(x))
        fresh.load_state_dict(net.state_dict())
        assert any(k.endswith(".u") for k in net.state_dict())
        assert torch.equal(fresh(x), net(x))


def test_build_net() -> None:
    net = build_net("dncnn", in_channels=1, depth=3, width=5)
    assert isinstance(net, DnCNN) and net.depth == 3 and net.width == 5
    assert isinstance(build_net("UNet", base=2, levels=1), UNet)
    with pytest.raises(ConfigError, match="'resnet'"):
        build_net("resnet")
    with pytest.raises(ConfigError, match="'wdth'"):
        build_net("dncnn", wdth=3)
    with pytest.raises(ConfigError, match="'depth'"):
        build_net("unet", depth=3)


# ------------------------------------------------- DnCNN in pieces (no-grad CPU forwards)
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("kernel_size", [3, 5])
def test_dncnn_in_pieces_equals_whole(residual: bool, kernel_size: int) -> None:
    # spatial chunks widened by the receptive radius, and groups of whole samples, give the
    # whole forward's result (the chunks' borders are not the image's: the halo covers them)
    torch.manual_seed(0)
    net = DnCNN(in_channels=3, depth=4, width=6, kernel_size=kernel_size, residual=residual,
                final_scale_init=1.0)
    x = torch.rand(2, 3, 45, 61)
    with torch.no_grad():
        net.chunk_bytes = 0
        whole = net(x)
        assert net.receptive_radius == 4 * (kernel_size // 2)
        # spatial chunks (channels-last), one sample, then groups: equal up to rounding
        for limit in (6 * 4 * 20 * 20, 6 * 4 * 45 * 61, 6 * 4 * 45 * 61 * 2 - 1):
            net.chunk_bytes = limit
            assert net._in_pieces(x)
            torch.testing.assert_close(net(x), whole, rtol=0, atol=1e-6)
        net.chunk_bytes = 6 * 4 * 45 * 61 * 2  # the whole batch fits: one body call
        assert not net._in_pieces(x)
    net.chunk_bytes = 1
    assert not net._in_pieces(x)  # autograd on: the whole graph, never pieces
    assert torch.equal(net(x).detach(), whole)


def test_dncnn_in_pieces_spectral_norm_steps_once() -> None:
    # in training mode a forward advances each layer's power iteration once, in pieces too
    torch.manual_seed(0)
    a = DnCNN(in_channels=1, depth=3, width=4, spectral_norm=True, final_scale_init=1.0).train()
    b = copy.deepcopy(a)
    x = torch.rand(1, 1, 40, 40)
    b.chunk_bytes = 4 * 4 * 12 * 12
    with torch.no_grad():
        a.chunk_bytes = 0
        torch.testing.assert_close(b(x), a(x), rtol=0, atol=1e-6)
    for pa, pb in zip(_sn_params(a), _sn_params(b), strict=True):
        assert torch.equal(pa.u, pb.u)
