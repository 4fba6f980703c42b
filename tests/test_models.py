"""Implicit and feedforward models: the maps, the gradients through them, every option."""

from __future__ import annotations

import pytest
import torch

from jfb.deq import IFT, JFB, Anderson, Neumann, Picard, Unrolled
from jfb.errors import ConfigError
from jfb.models import DEADMM, DEGrad, DEProx, Feedforward, build_model
from jfb.nets import DnCNN
from jfb.physics import Blur, LinearOperator, kernels

DT = torch.float64


def make_op(padding: str = "zeros") -> Blur:
    k = kernels.motion(5, seed=3).to(DT)
    return Blur(k, padding=padding).to(DT)


def tiny_net(**kw) -> DnCNN:
    """R(x) = x - N(x) (the RED form): with it DE-GRAD contracts from the first step."""
    torch.manual_seed(0)
    return DnCNN(in_channels=2, depth=3, width=4, **{"residual": True, **kw}).to(DT)


def batch(n=2, h=8, w=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 2, h, w, generator=g, dtype=DT)


def test_degrad_and_deprox_maps_are_the_documented_formulas():
    op, y, x = make_op(), batch(seed=1), batch(seed=2)
    net = tiny_net()
    m = DEGrad(op, net, eta=0.3)
    expected = x - 0.3 * (op.A_adjoint(op.A(x) - y) + net(x))
    assert torch.allclose(m.T(x, y), expected, atol=1e-12)
    p = DEProx(op, net, eta=0.3)
    assert torch.allclose(p.T(x, y), net(x - 0.3 * op.A_adjoint(op.A(x) - y)), atol=1e-12)


def test_output_is_the_fixed_point_and_stats_are_kept():
    op, y = make_op(), batch()
    m = DEGrad(op, tiny_net(), solver=Anderson(tol=1e-10, max_iter=500), eta=0.5).eval()
    with torch.no_grad():
        x = m(y)
        assert m.last_stats.all_converged
        assert torch.allclose(m.T(x, y), x, atol=1e-8)
    assert x.shape == y.shape and m.last_stats.batch_size == 2


@pytest.mark.parametrize("backward", [JFB(), Neumann(3), IFT(tol=1e-10), Unrolled()])
def test_gradients_reach_every_parameter(backward):
    m = DEGrad(
        make_op(),
        tiny_net(spectral_norm=True),
        backward=backward,
        solver=Picard(tol=1e-8, max_iter=300),
        eta=0.5,
    )
    m.train()
    m(batch()).square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_ift_through_the_model_equals_unrolled_autograd_with_spectral_norm_in_training():
    """If T changed during the solve (power iteration advancing at every call of the net),
    the fixed point of the solve and the map differentiated would disagree and so would these."""

    def grads(backward):
        torch.manual_seed(0)
        m = DEGrad(
            make_op(),
            tiny_net(spectral_norm=True),
            backward=backward,
            solver=Picard(tol=1e-13, max_iter=3000),
            eta=0.5,
        ).train()
        m(batch()).square().sum().backward()
        return torch.cat([p.grad.flatten() for p in m.parameters()])

    g_ift, g_unr = grads(IFT(tol=1e-12, max_iter=500)), grads(Unrolled())
    assert float((g_ift - g_unr).norm() / g_unr.norm()) < 1e-7


def test_jfb_gradient_is_the_gradient_of_one_application_at_the_fixed_point():
    op, y = make_op(), batch()
    m = DEGrad(op, tiny_net(), solver=Picard(tol=1e-12, max_iter=2000), eta=0.5).train()
    m(y).sum().backward()
    g_model = torch.cat([p.grad.flatten() for p in m.parameters()])
    with torch.no_grad():
        x_star = m(y)
    m.zero_grad()
    m.T(x_star, y).sum().backward()
    g_manual = torch.cat([p.grad.flatten() for p in m.parameters()])
    assert torch.allclose(g_model, g_manual, rtol=1e-9, atol=1e-12)


def test_spectral_norm_power_step_once_per_training_forward_and_never_in_eval():
    m = DEGrad(make_op(), tiny_net(spectral_norm=True), solver=Picard(tol=1e-6, max_iter=20))
    u_buffers = [b for n, b in m.named_buffers() if n.endswith(".u")]
    assert u_buffers, "spectral norm should keep power-iteration vectors"
    before = [b.clone() for b in u_buffers]
    m.eval()
    with torch.no_grad():
        m(batch())
    assert all(torch.equal(a, b) for a, b in zip(before, u_buffers, strict=True))
    m.train()
    m(batch())
    assert any(not torch.equal(a, b) for a, b in zip(before, u_buffers, strict=True))


def test_batch_norm_nets_are_refused_in_fixed_point_maps_but_allowed_feedforward():
    net = DnCNN(in_channels=2, depth=3, width=4, batch_norm=True)
    with pytest.raises(ValueError, match="BatchNorm"):
        DEGrad(make_op().float(), net)
    Feedforward(make_op().float(), net)


def test_initial_iterates():
    op, y = make_op(), batch()
    adj = DEGrad(op, tiny_net(), init="adjoint").initial(y)
    assert torch.allclose(adj, op.A_adjoint(y))
    assert torch.equal(DEGrad(op, tiny_net(), init="y").initial(y), y)
    tik = DEGrad(op, tiny_net(), init="tikhonov").initial(y)
    assert not torch.allclose(tik, adj) and not torch.allclose(tik, y)
    valid = make_op("valid")
    y_small = valid.A(batch())
    with pytest.raises(ValueError, match="init='y'"):
        DEGrad(valid, tiny_net(), init="y").initial(y_small)
    x = DEGrad(valid, tiny_net(), solver=Picard(max_iter=5)).eval()(y_small)
    assert x.shape == batch().shape  # reconstructs the full image from a 'valid' measurement
    with pytest.raises(ValueError, match="init"):
        DEGrad(op, tiny_net(), init="zeros")


def test_eta_is_positive_and_bounded_and_learned():
    m = DEGrad(make_op(), tiny_net(), eta=0.5, eta_max=2.0)
    assert abs(float(m.eta.detach()) - 0.5) < 1e-6
    with torch.no_grad():
        m.eta_raw.fill_(100.0)
    assert 0 < float(m.eta.detach()) <= 2.0
    with torch.no_grad():
        m.eta_raw.fill_(-100.0)
    assert float(m.eta.detach()) >= 0
    free = DEGrad(make_op(), tiny_net(), eta=3.0, eta_max=None)
    assert abs(float(free.eta.detach()) - 3.0) < 1e-5
    for bad in (dict(eta=0.0), dict(eta=2.0, eta_max=1.0), dict(eta=float("nan"))):
        with pytest.raises(ValueError):
            DEGrad(make_op(), tiny_net(), **bad)


def test_eval_mode_uses_the_eval_budget():
    solver = Picard(tol=1e-12, max_iter=3, eval_max_iter=11)
    m = DEGrad(make_op(), tiny_net(), solver=solver)
    m.train()
    m(batch())
    assert m.last_stats.max_iter == 3
    m.eval()
    with torch.no_grad():
        m(batch())
    assert m.last_stats.max_iter == 11


def test_each_sample_is_reconstructed_alone():
    m = DEGrad(make_op(), tiny_net(), solver=Anderson(tol=1e-9, max_iter=300)).eval()
    y = batch(n=3)
    with torch.no_grad():
        x = m(y)
        iters = m.last_stats.iterations.clone()
        for i in range(3):
            xi = m(y[i : i + 1])
            assert int(m.last_stats.iterations[0]) == int(iters[i])
            assert torch.allclose(x[i], xi[0], atol=1e-10)


def test_feedforward_and_pretrain_forward():
    op, y = make_op(), batch()
    net = tiny_net()
    ff = Feedforward(op, net, init="adjoint")
    assert torch.allclose(ff(y), net(op.A_adjoint(y)))
    assert ff.last_stats is None
    dg = DEGrad(op, net)
    x0 = op.A_adjoint(y)
    assert torch.allclose(dg.pretrain_forward(y), x0 - net(x0))
    assert torch.allclose(DEProx(op, net).pretrain_forward(y), net(x0))


def test_build_model_from_config_dicts():
    op = make_op().float()
    cfg = {
        "kind": "degrad",
        "net": {"name": "dncnn", "depth": 3, "width": 4},
        "solver": {"name": "picard", "tol": 1e-3, "max_iter": 7, "damping": 0.5},
        "backward": {"name": "ift", "solver": "gmres", "tol": 1e-5, "max_iter": 9},
        "init": "y",
        "eta": 0.25,
        "eta_max": 1.0,
    }
    m = build_model(cfg, op, channels=3)
    assert isinstance(m, DEGrad) and m.init == "y" and abs(float(m.eta.detach()) - 0.25) < 1e-6
    assert isinstance(m.solver, Picard) and m.solver.damping == 0.5 and m.solver.max_iter == 7
    assert m.backward == IFT(solver="gmres", tol=1e-5, max_iter=9)
    assert len(m.net.body) > 0 if hasattr(m.net, "body") else True
    m2 = build_model(
        {
            **cfg,
            "kind": "deprox",
            "backward": {"name": "neumann", "k": 4},
            "solver": {"name": "anderson", "m": 3},
        },
        op,
    )
    assert isinstance(m2, DEProx) and m2.backward == Neumann(4) and m2.solver.m == 3
    ff = build_model({"kind": "feedforward", "net": {"name": "unet", "base": 4, "levels": 1}}, op)
    assert isinstance(ff, Feedforward)
    assert build_model({**cfg, "backward": {"name": "jfb", "k": 2}}, op).backward == JFB(2)
    assert isinstance(build_model({**cfg, "backward": {"name": "unrolled"}}, op).backward, Unrolled)
    for bad in (
        {"kind": "magic"},
        {"solver": {"name": "newton"}},
        {"backward": {"name": "adjoint"}},
        {"net": {"name": "resnet"}},
    ):
        with pytest.raises(ConfigError):
            build_model({**cfg, **bad}, op)


def test_a_few_jfb_steps_learn_to_deblur():
    """Training signal check: 40 Adam steps of JFB on one image batch beat the initial A^T y."""
    torch.manual_seed(0)
    op = Blur(kernels.gaussian(5, 2.0))
    x = torch.rand(4, 1, 16, 16).cumsum(-1).cumsum(-2)
    x = x / x.amax(dim=(2, 3), keepdim=True)  # smooth images
    y = op.A(x) + 0.01 * torch.randn_like(x)
    m = DEGrad(
        op,
        DnCNN(in_channels=1, depth=3, width=8, residual=True),
        solver=Anderson(tol=1e-3, max_iter=30),
        eta=0.9,
    )
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    start = float((op.A_adjoint(y) - x).square().mean())
    for _ in range(40):
        opt.zero_grad()
        loss = (m(y) - x).square().mean()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * start


@pytest.mark.parametrize(
    ("override", "check"),
    [
        ("model.kind=deprox", lambda m: isinstance(m, DEProx)),
        ("model.kind=deadmm", lambda m: isinstance(m, DEADMM) and not hasattr(m, "eta_raw")),
        ("model.kind=feedforward", lambda m: isinstance(m, Feedforward)),
        ("model.init=y", lambda m: m.init == "y"),
        ("model.eta=0.3", lambda m: abs(float(m.eta.detach()) - 0.3) < 1e-6),
        ("model.eta_max=5.0", lambda m: m.eta_max == 5.0),
        ("model.eta_scale=operator", lambda m: m.eta_scale == "operator"),
        (
            "model.net.depth=4",
            lambda m: sum(isinstance(c, torch.nn.Conv2d) for c in m.net.modules()) == 4,
        ),
        ("model.net.width=6", lambda m: m.net.body[0].out_channels == 6),
        (
            "model.net.spectral_norm=false",
            lambda m: not any(n.endswith(".u") for n, _ in m.named_buffers()),
        ),
        ("model.net.residual=true", lambda m: m.net.residual),
        (
            "model.net.sn_target=0.5",
            lambda m: any(getattr(p, "target", None) == 0.5 for p in m.net.modules()),
        ),
        ("model.net.name=unet", lambda m: type(m.net).__name__ == "UNet"),
        ("model.solver.name=picard", lambda m: isinstance(m.solver, Picard)),
        ("model.solver.tol=0.01", lambda m: m.solver.tol == 0.01),
        ("model.solver.max_iter=7", lambda m: m.solver.max_iter == 7),
        ("model.solver.eval_max_iter=70", lambda m: m.solver.eval_max_iter == 70),
        ("model.solver.eval_tol=1e-6", lambda m: m.solver.eval_tol == 1e-6),
        ("model.solver.m=3", lambda m: m.solver.m == 3),
        ("model.solver.lam=0.1", lambda m: m.solver.lam == 0.1),
        ("model.solver.beta=0.5", lambda m: m.solver.beta == 0.5),
        ("model.solver.check_every=4", lambda m: m.solver.check_every == 4),
        ("model.backward.name=unrolled", lambda m: isinstance(m.backward, Unrolled)),
        ("model.backward.k=3", lambda m: m.backward == JFB(3)),
        (
            "model.backward.name=ift",
            lambda m: m.backward == IFT(solver="anderson", tol=1e-4, max_iter=50),
        ),
    ],
)
def test_every_model_config_key_reaches_the_model(override, check):
    from jfb.config import load_config

    cfg = load_config(None, ["model.net.depth=3", "model.net.width=4", override])
    model = build_model(cfg.to_dict()["model"], make_op().float())
    assert check(model), override


def test_config_backward_variants_reach_the_strategy():
    from jfb.config import load_config

    for sets, expected in (
        (
            [
                "model.backward.name=ift",
                "model.backward.solver=gmres",
                "model.backward.tol=1e-7",
                "model.backward.max_iter=9",
            ],
            IFT(solver="gmres", tol=1e-7, max_iter=9),
        ),
        (
            ["model.backward.name=ift", "model.backward.solver=picard"],
            IFT(solver="fixed_point", tol=1e-4, max_iter=50),
        ),
        (["model.backward.name=neumann", "model.backward.k=6"], Neumann(6)),
    ):
        cfg = load_config(None, ["model.net.depth=3", "model.net.width=4", *sets])
        assert build_model(cfg.to_dict()["model"], make_op().float()).backward == expected
    cfg = load_config(
        None, ["model.solver.name=picard", "model.solver.damping=0.3", "model.net.depth=3"]
    )
    assert build_model(cfg.to_dict()["model"], make_op().float()).solver.damping == 0.3


# ---------------------------------------------------------------------- stability options
class Scaled(LinearOperator):
    """A x = c x: ||A^T A|| = c^2."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = c

    def A(self, x):
        return self.c * x

    def A_adjoint(self, y):
        return self.c * y


def test_eta_scale_operator_divides_eta_by_the_norm_of_ata_and_is_saved():
    net, y = tiny_net(), batch()
    m = DEGrad(Scaled(5.0), net, eta=1.0, eta_max=2.0, eta_scale="operator",
               solver=Picard(max_iter=3)).to(DT)
    assert torch.isnan(m.ata_norm) and "ata_norm" in m.state_dict()
    m(y)  # the first forward estimates L = ||A^T A|| = 25
    assert float(m.ata_norm) == pytest.approx(25.0, rel=1e-6)
    assert float(m.eta.detach()) == pytest.approx(1.0 / 25, rel=1e-6)
    x = batch(seed=4)
    expected = x - (1.0 / 25) * (25 * x - 5 * y + net(x))
    assert torch.allclose(m.T(x, y), expected, atol=1e-10)
    # a checkpoint restores the same step, with no new estimate (even for another operator)
    fresh = DEGrad(Scaled(3.0), tiny_net(), eta=1.0, eta_max=2.0, eta_scale="operator",
                   solver=Picard(max_iter=3)).to(DT)
    fresh.load_state_dict(m.state_dict(), strict=True)
    fresh(y)
    assert float(fresh.eta.detach()) == pytest.approx(1.0 / 25, rel=1e-6)
    # "none" (the default): no buffer, eta as given, the state dict of before
    plain = DEGrad(Scaled(5.0), tiny_net(), eta=1.0, eta_max=2.0).to(DT)
    assert "ata_norm" not in plain.state_dict() and float(plain.eta.detach()) == pytest.approx(1.0)
    assert set(plain.state_dict()) == set(m.state_dict()) - {"ata_norm"}
    with pytest.raises(ValueError, match="eta_scale"):
        DEGrad(Scaled(5.0), tiny_net(), eta_scale="adaptive")
    with pytest.raises(RuntimeError, match="calibrate"):
        plain.calibrate((2, 8, 9))


def test_eta_scale_reaches_the_model_from_the_config_and_keeps_old_checkpoints():
    from jfb.config import load_config

    cfg = load_config(None, ["model.net.depth=3", "model.net.width=4"]).to_dict()["model"]
    old = dict(cfg)
    del old["eta_scale"]  # a model section written before the key existed
    assert build_model(old, make_op().float()).eta_scale == "none"
    scaled = build_model({**cfg, "eta_scale": "operator"}, Scaled(2.0), channels=3)
    scaled(torch.rand(1, 3, 6, 6))
    assert float(scaled.eta.detach()) == pytest.approx(1.0 / 4, rel=1e-5)


def test_contraction_method_is_the_spectral_norm_of_the_jacobian_at_x_star():
    """T is affine in x when R is linear: compare with the SVD of the dense Jacobian."""
    torch.manual_seed(0)
    net = torch.nn.Conv2d(2, 2, 3, padding=1, bias=False).to(DT)
    m = DEGrad(make_op(), net, eta=0.7, solver=Picard(max_iter=2)).to(DT)
    y = batch(n=1, h=5, w=6)
    x = batch(n=1, h=5, w=6, seed=3)
    jac = torch.autograd.functional.jacobian(lambda z: m.T(z, y), x).reshape(60, 60)
    exact = float(torch.linalg.matrix_norm(jac, ord=2))
    g = torch.Generator().manual_seed(0)
    est = m.contraction(x, y, n_iter=300, generator=g)
    # power iteration approaches ||J|| from below, slowly where singular values cluster (blurs)
    assert est.shape == (1,) and exact * (1 - 5e-3) < float(est) <= exact * (1 + 1e-9)


def test_contraction_and_jacobian_do_not_advance_spectral_norm():
    m = DEGrad(make_op(), tiny_net(spectral_norm=True)).train()
    u = [b.clone() for n, b in m.named_buffers() if n.endswith(".u")]
    x, y = batch(seed=5), batch()
    m.contraction(x, y)
    m.jacobian_frobenius(x, y).sum().backward()
    assert all(torch.equal(a, b) for a, b in
               zip(u, [b for n, b in m.named_buffers() if n.endswith(".u")], strict=True))


def test_jacobian_frobenius_is_unbiased_and_differentiable(assert_penalty_grad_matches_fd):
    """Mean of the Hutchinson estimates over many probes = ||J||_F^2 / d of the dense Jacobian;
    its gradient w.r.t. eta matches a finite difference at a fixed probe."""
    torch.manual_seed(0)
    m = DEGrad(make_op(), tiny_net(), eta=0.6).to(DT)
    y1, x1 = batch(n=1, h=4, w=5), batch(n=1, h=4, w=5, seed=7)
    d = x1.numel()
    jac = torch.autograd.functional.jacobian(lambda z: m.T(z, y1), x1).reshape(d, d)
    exact = float(jac.square().sum()) / d
    n = 4000  # copies of the sample: one independent probe each
    est = m.jacobian_frobenius(x1.expand(n, -1, -1, -1), y1.expand(n, -1, -1, -1),
                               generator=torch.Generator().manual_seed(1)).detach()
    assert est.shape == (n,)
    assert abs(float(est.mean()) - exact) < 4 * float(est.std()) / n**0.5
    assert_penalty_grad_matches_fd(m, m.eta_raw, x1, y1)


# ---------------------------------------------------------------------- test-time budgets
def test_test_time_budgets_go_through_the_solvers_constructor():
    """set_eval_budget and compare's budget curve give the model a validated copy of its
    solver (dataclasses.replace) and never write the attributes of the one it has."""
    from torch.utils.data import TensorDataset

    from jfb.compare import _budget_curve
    from jfb.pipeline import set_eval_budget

    solver = Picard(tol=1e-3, max_iter=3, eval_max_iter=5)
    m = DEGrad(make_op(), tiny_net(), solver=solver).to(DT).eval()
    set_eval_budget(m, max_iter=9)
    assert m.solver.eval_max_iter == 9 and m.solver == Picard(tol=1e-3, max_iter=3,
                                                              eval_max_iter=9)
    assert solver.eval_max_iter == 5  # the old solver object is left as it was
    for bad in (0, -2, True, 2.5):
        with pytest.raises(ValueError, match="eval_max_iter"):
            set_eval_budget(m, max_iter=bad)
    assert m.solver.eval_max_iter == 9
    set_eval_budget(m, tol=2e-3)  # the budget given stays
    assert m.solver == Picard(tol=1e-3, max_iter=3, eval_max_iter=9, eval_tol=2e-3)
    for bad in (0, -1e-3, float("nan")):
        with pytest.raises((ValueError, TypeError), match="eval_tol"):
            set_eval_budget(m, tol=bad)
    with pytest.raises(ValueError, match="implicit"):
        set_eval_budget(Feedforward(make_op(), tiny_net()), max_iter=3)
    set_eval_budget(Feedforward(make_op(), tiny_net()))  # nothing given: nothing to refuse
    kept = m.solver
    set_eval_budget(m)
    assert m.solver is kept
    pairs = TensorDataset(batch(n=2, h=12, w=12).float(), batch(n=2, h=12, w=12, seed=3).float())
    before = m.solver
    curve = _budget_curve(m.float(), pairs, [1, 2], 2, "cpu")
    assert [p["iterations"] for p in curve] == [1, 2] and m.solver is before
    assert before == Picard(tol=1e-3, max_iter=3, eval_max_iter=9, eval_tol=2e-3)


def test_a_unet_honours_batch_norm_and_sn_target_from_the_config():
    from jfb.config import load_config
    from jfb.nets import SpectralConvNorm, has_batch_norm

    cfg = load_config(None, ["model.kind=feedforward", "model.net.name=unet", "model.net.base=2",
                             "model.net.levels=1", "model.net.batch_norm=true",
                             "model.net.sn_target=0.5"])
    net = build_model(cfg.model, make_op().float()).net
    assert has_batch_norm(net)
    assert {m.target for m in net.modules() if isinstance(m, SpectralConvNorm)} == {0.5}
    with pytest.raises(ConfigError, match="model.net.batch_norm"):
        build_model(load_config(None, ["model.net.batch_norm=true"]).model, make_op().float())
