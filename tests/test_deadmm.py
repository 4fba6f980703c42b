"""DE-ADMM: the x-update, the fixed point against closed forms, gradients, training, checkpoints."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from jfb.baselines.pnp import admm_x_update
from jfb.config import Config, load_config
from jfb.deq import IFT, JFB, Anderson, Neumann, Picard, Unrolled
from jfb.models import DEADMM, build_model
from jfb.nets import DnCNN
from jfb.physics import Blur, kernels

DT = torch.float64


def make_op() -> Blur:
    return Blur(kernels.motion(5, seed=3).to(DT), padding="zeros").to(DT)


def images(n=2, c=2, h=6, w=7, seed=0):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=DT)


def dense_normal(op, shape, rho):
    """The matrix of A^T A + rho I on images of ``shape`` (C, H, W), built column by column."""
    m = math.prod(shape)
    eye = torch.eye(m, dtype=DT).reshape(m, *shape)
    return op.normal(eye).reshape(m, m).T + rho * torch.eye(m, dtype=DT)


def dense_solve(op, b, rho):
    """x with (A^T A + rho I) x = b, by dense linear algebra (independent of CG)."""
    mat = dense_normal(op, b.shape[1:], rho)
    return torch.linalg.solve(mat, b.flatten(1).T).T.reshape(b.shape)


class Shrink(nn.Module):
    """R(v) = v / (1 + c) + a tanh(v): for a = 0 the prox of (c rho)/2 ||.||^2 with ADMM
    penalty rho (a linear R whose ADMM fixed point is a Tikhonov solution)."""

    def __init__(self, c: float, a: float = 0.0) -> None:
        super().__init__()
        self.c = nn.Parameter(torch.tensor(c, dtype=DT))
        self.a = nn.Parameter(torch.tensor(a, dtype=DT))

    def forward(self, v):
        return v / (1 + self.c) + self.a * torch.tanh(v)


def model(net=None, **kw) -> DEADMM:
    kw = {"rho": 0.7, "cg_iters": 200, "cg_tol": 1e-13,
          "solver": Anderson(tol=1e-12, max_iter=400), **kw}
    return DEADMM(make_op(), Shrink(0.5) if net is None else net, **kw).to(DT)


# ---------------------------------------------------------------------- the x-update
def test_x_update_solves_its_normal_equations():
    m = model()
    z, u, y = images(seed=1), images(seed=2), images(seed=3)
    rho = float(m.rho.detach())
    assert rho == pytest.approx(0.7)
    exact = dense_solve(m.op, m.op.A_adjoint(y) + rho * (z - u), rho)
    torch.testing.assert_close(m.x_update(z, u, y), exact, rtol=0, atol=1e-10)
    # the default budget (20 CG steps) is enough on this well-conditioned system
    with torch.no_grad():
        short = model(cg_iters=20, cg_tol=1e-6).x_update(z, u, y)
    assert float((short - exact).norm() / exact.norm()) < 1e-5


def test_x_update_gradients_are_those_of_the_exact_solve():
    """gradcheck/gradgradcheck of the implicit differentiation of the CG solve, in b (through
    A^T y, z, u) and rho, including a warm start at the solution (where CG takes no step)."""
    op = make_op()
    aty, z, u = (images(n=1, c=1, h=3, w=4, seed=s).requires_grad_(True) for s in (4, 5, 6))
    rho = torch.tensor(0.4, dtype=DT, requires_grad=True)

    def f(aty, z, u, rho):
        return admm_x_update(op, aty, z, u, rho, cg_iters=100, cg_tol=1e-14)

    assert torch.autograd.gradcheck(f, (aty, z, u, rho))
    assert torch.autograd.gradgradcheck(f, (aty, z, u, rho))
    x = f(aty, z, u, rho).detach()

    def warm(aty, z, u, rho):
        return admm_x_update(op, aty, z, u, rho, x0=x, cg_iters=100, cg_tol=1e-12)

    g = torch.rand_like(x)
    (gw,) = torch.autograd.grad(warm(aty, z, u, rho), z, g)
    (gc,) = torch.autograd.grad(f(aty, z, u, rho), z, g)
    torch.testing.assert_close(gw, gc, rtol=0, atol=1e-10)


# ---------------------------------------------------------------------- the fixed point
def test_map_initial_output_and_pretrain():
    m = model()
    y, z, u = images(), images(seed=1), images(seed=2)
    s = torch.cat([z, u], 1)
    x = m.x_update(z, u, y)
    z_new = m.net(x + u)
    torch.testing.assert_close(m.T(s, y), torch.cat([z_new, u + x - z_new], 1))
    x0 = m.op.A_adjoint(y)
    torch.testing.assert_close(m.initial(y), torch.cat([x0, torch.zeros_like(x0)], 1))
    torch.testing.assert_close(m.output(s), z)
    torch.testing.assert_close(m.pretrain_forward(y), m.net(x0))


def test_fixed_point_with_a_shrinkage_denoiser_is_the_tikhonov_solution():
    """R(v) = v / (1 + lam / rho) is the prox of lam/2 ||.||^2 with penalty rho: z* =
    argmin ||A x - y||^2 / 2 + lam/2 ||x||^2 = (A^T A + lam I)^{-1} A^T y."""
    lam, rho = 0.3, 0.7
    y = images()
    m = model(Shrink(lam / rho), rho=rho).eval()
    with torch.no_grad():
        z = m(y)
    assert m.last_stats.all_converged
    torch.testing.assert_close(z, dense_solve(m.op, m.op.A_adjoint(y), lam), rtol=0, atol=1e-9)
    # state_at rebuilds the fixed point (z*, u*) from z*: T leaves it unchanged
    s = m.state_at(z, y)
    torch.testing.assert_close(m.T(s, y), s, rtol=0, atol=1e-9)
    # rho takes effect: the same R with another rho is another Tikhonov weight
    with torch.no_grad():
        m.rho_raw.fill_(math.log(math.expm1(1.4)))
        torch.testing.assert_close(m(y), dense_solve(m.op, m.op.A_adjoint(y), lam * 2),
                                   rtol=0, atol=1e-9)


def test_over_relaxation_keeps_the_fixed_point_and_changes_the_path():
    """relax = alpha: x_a = alpha x + (1 - alpha) z feeds the denoiser and the dual. The map
    differs away from the fixed point, the fixed point (the Tikhonov solution, as above) does
    not, and alpha outside (0, 2) is refused."""
    lam, rho = 0.3, 0.7
    y, z, u = images(), images(seed=1), images(seed=2)
    s = torch.cat([z, u], 1)
    plain, relaxed = model(Shrink(lam / rho), rho=rho), model(Shrink(lam / rho), rho=rho,
                                                                relax=1.7)
    x = relaxed.x_update(z, u, y)
    x_a = 1.7 * x + (1 - 1.7) * z
    z_new = relaxed.net(x_a + u)
    torch.testing.assert_close(relaxed.T(s, y), torch.cat([z_new, u + x_a - z_new], 1))
    assert (relaxed.T(s, y) - plain.T(s, y)).abs().max() > 1e-2
    relaxed.eval()
    with torch.no_grad():
        z_star = relaxed(y)
    assert relaxed.last_stats.all_converged
    torch.testing.assert_close(z_star, dense_solve(relaxed.op, relaxed.op.A_adjoint(y), lam),
                               rtol=0, atol=1e-9)
    for bad in (0.0, 2.0, -1.0):
        with pytest.raises(ValueError, match="relax"):
            model(relax=bad)


def test_rho_is_learned_positive_and_scaled_by_the_operator_norm():
    m = model(rho=2.5, eta_scale="operator", solver=Picard(max_iter=2))
    assert torch.isnan(m.rho)
    m(images())  # estimates L = ||A^T A||
    assert float(m.rho.detach()) == pytest.approx(2.5 * float(m.ata_norm), rel=1e-6)
    assert "eta_raw" not in m.state_dict() and {"rho_raw", "ata_norm"} <= set(m.state_dict())
    with torch.no_grad():
        m.rho_raw.fill_(-50.0)
    assert float(m.rho.detach()) > 0
    for bad in (dict(rho=0.0), dict(rho=float("nan")), dict(cg_iters=0), dict(cg_tol=-1.0)):
        with pytest.raises(ValueError):
            model(**bad)


# ---------------------------------------------------------------------- gradients
def test_ift_gradient_matches_finite_differences():
    """d/d(c, a, rho, y) of <w, z*(y)> on a tiny float64 problem with a nonlinear R."""
    y, w = images(n=1, h=4, w=5, seed=7), images(n=1, h=4, w=5, seed=8)
    m = model(Shrink(0.4, 0.1), backward=IFT(tol=1e-12, max_iter=300)).train()
    y.requires_grad_(True)
    (m(y) * w).sum().backward()
    params = dict(m.named_parameters())
    assert set(params) == {"net.c", "net.a", "rho_raw"}
    analytic = {k: float(p.grad) for k, p in params.items()}
    direction = images(n=1, h=4, w=5, seed=9)
    analytic["y"] = float((y.grad * direction).sum())

    def loss(name, h):
        with torch.no_grad():
            if name == "y":
                return float((m(y + h * direction) * w).sum())
            params[name].add_(h)
            out = float((m(y) * w).sum())
            params[name].sub_(h)
            return out

    h = 1e-6
    for name, g in analytic.items():
        fd = (loss(name, h) - loss(name, -h)) / (2 * h)
        assert g == pytest.approx(fd, rel=1e-6, abs=1e-9), name


@pytest.mark.parametrize("backward", [JFB(), Neumann(2), IFT(tol=1e-8), Unrolled()])
def test_gradients_reach_every_parameter(backward):
    torch.manual_seed(0)
    net = DnCNN(in_channels=2, depth=3, width=4, residual=True, spectral_norm=True).to(DT)
    m = model(net, backward=backward, cg_iters=20, cg_tol=1e-8,
              solver=Anderson(tol=1e-6, max_iter=60)).train()
    m(images()).square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and math.isfinite(float(p.grad.abs().sum())), name
        assert float(p.grad.abs().sum()) > 0, name


def test_stability_diagnostics_take_the_output(assert_penalty_grad_matches_fd):
    """contraction and jacobian_frobenius rebuild the (z, u) state from z*; the Jacobian penalty
    is differentiable in rho at that (detached) state: double backward through the CG solve."""
    m = model(Shrink(0.4, 0.1), cg_tol=1e-14)
    y = images(n=1, h=4, w=5)
    with torch.no_grad():
        z = m.eval()(y)
    assert m.contraction(z, y, n_iter=20).shape == (1,)
    s = m.state_at(z, y).detach()
    m.state_at = lambda x_hat, y, physics=None: s  # hold the state fixed while rho moves
    assert_penalty_grad_matches_fd(m, m.rho_raw, z, y)


# ---------------------------------------------------------------------- config and training
def test_config_keys_reach_the_model():
    cfg = load_config(None, ["model.kind=deadmm", "model.rho=0.3", "model.cg_iters=7",
                             "model.net.depth=3", "model.net.width=4"])
    m = build_model(cfg.to_dict()["model"], make_op().float())
    assert isinstance(m, DEADMM) and m.cg_iters == 7
    assert float(m.rho.detach()) == pytest.approx(0.3, rel=1e-6)
    with pytest.raises(Exception, match="model.rho"):
        load_config(None, ["model.rho=0"])


class Pairs(Dataset):
    """(x, A x + noise) with fixed noise: 16 x 16 smooth grey images."""

    def __init__(self, op, n=4):
        g = torch.Generator().manual_seed(0)
        x = torch.rand(n, 1, 16, 16, generator=g).cumsum(-1).cumsum(-2)
        self.x = x / x.amax(dim=(2, 3), keepdim=True)
        self.y = op.A(self.x) + 0.01 * torch.randn(self.x.shape, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def test_a_tiny_deadmm_trains_through_the_trainer(tmp_path):
    from jfb.train import Trainer

    op = Blur(kernels.gaussian(5, 1.5))
    cfg = Config.from_dict({
        "model": {"kind": "deadmm", "cg_iters": 10, "net": {"depth": 3, "width": 8},
                  "solver": {"max_iter": 15, "tol": 1e-3}},
        "data": {"batch_size": 4},
        "train": {"steps": 8, "lr": 1e-2, "schedule": "constant", "val_every": 100,
                  "log_every": 1, "device": "cpu", "grad_clip": "none"},
    })
    torch.manual_seed(0)
    m = build_model(cfg.to_dict()["model"], op, channels=1)
    Trainer(m, Pairs(op), None, cfg, out_dir=tmp_path, progress=False).fit()
    with open(tmp_path / "metrics.jsonl") as fh:
        losses = [r["loss"] for r in map(json.loads, fh) if r["kind"] == "train"]
    assert len(losses) == 8 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.7 * losses[0]


def test_checkpoint_round_trips_through_load_model(tmp_path):
    from jfb.cli import main
    from jfb.pipeline import load_model
    from jfb.train.checkpoint import load_weights

    task = "op=blur,kernel=gaussian:5:1.0,noise=0.01,train=natural:patches:16," \
           "val=natural:crops:16,name=t"
    sets = [f"task={task}", "model.kind=deadmm", "model.rho=0.5", "model.cg_iters=5",
            "model.net.depth=2", "model.net.width=4", "model.solver.max_iter=4",
            "data.batch_size=2", "data.patch_size=16", "data.max_val_images=1",
            "train.steps=2", "train.val_every=2", "train.device=cpu"]
    args = ["train", "--quiet", "--out", str(tmp_path)]
    for kv in sets:
        args += ["--set", kv]
    assert main(args) == 0
    ckpt = tmp_path / "best.safetensors"
    m, cfg, _ = load_model(ckpt)
    assert isinstance(m, DEADMM) and cfg.model.kind == "deadmm" and m.cg_iters == 5
    saved, _ = load_weights(ckpt)
    assert torch.equal(m.rho_raw.detach(), saved["rho_raw"])
    with torch.no_grad():
        x = m(torch.rand(1, 3, 16, 16))
    assert x.shape == (1, 3, 16, 16) and bool(torch.isfinite(x).all())
