"""Preconditioned CG and the operators' ridge preconditioners P ~ (A^T A + rho I)^{-1}: PCG
solves what CG solves, P is symmetric positive definite (and exact where it says so), the ADMM
x-update and its gradient with P, and ``model.precondition`` from the config to the model."""

from __future__ import annotations

import math

import pytest
import torch

from jfb.config import Config, ModelConfig, load_config
from jfb.linalg import admm_x_update, batch_dot, conjugate_gradient
from jfb.models import DEADMM, build_model
from jfb.physics import Blur, Downsample, Identity, Mask, RandomMask, kernels
from jfb.physics.compose import Composed

DT = torch.float64
RHO = 0.03  # the shipped default model's order of magnitude: A^T A + rho I is ill-conditioned


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


def random_spd(n: int, d: int, seed: int) -> torch.Tensor:
    """n symmetric positive definite d x d matrices with eigenvalues spread over [0.01, 10]."""
    q, _ = torch.linalg.qr(rand(n, d, d, seed=seed))
    eig = torch.logspace(-2, 1, d, dtype=DT)
    return q @ torch.diag_embed(eig.expand(n, d)) @ q.transpose(1, 2)


def matvec(mats: torch.Tensor):
    return lambda v: (mats @ v[..., None])[..., 0]


def blur(padding: str, per_channel: bool = False) -> Blur:
    """A non-symmetric 5x5 motion blur (or one per channel, 3 channels), float64."""
    if per_channel:
        k = torch.stack([kernels.motion(5, seed=s) for s in range(3)])
    else:
        k = kernels.motion(5, seed=3)
    return Blur(k.to(DT), padding=padding).to(DT)


def dense(fn, shape: tuple[int, ...]) -> torch.Tensor:
    """The matrix of the linear map ``fn`` on one image of ``shape`` (C, H, W), by columns."""
    m = math.prod(shape)
    eye = torch.eye(m, dtype=DT).reshape(m, *shape)
    return fn(eye).reshape(m, m).T


def ridge_matrix(op, shape, rho):
    return dense(op.normal, shape) + rho * torch.eye(math.prod(shape), dtype=DT)


OPERATORS = {
    "blur-zeros": lambda: blur("zeros"),
    "blur-reflect": lambda: blur("reflect"),
    "blur-valid": lambda: blur("valid"),
    "blur-circular": lambda: blur("circular"),
    "blur-circular-fft": lambda: Blur(kernels.motion(5, seed=3).to(DT), "circular", "fft"),
    "blur-per-channel": lambda: blur("zeros", per_channel=True),
    "blur-larger-than-image": lambda: Blur(kernels.gaussian(9, 2.0).to(DT), "zeros").to(DT),
    "mask": lambda: Mask((rand(7, 9, seed=8) > 0).to(DT)),
    "random-mask": lambda: RandomMask(0.5, seed=1),
    "identity": Identity,
}
#: Those whose P is the exact inverse of A^T A + rho I.
EXACT = ("blur-circular", "blur-circular-fft", "mask", "random-mask", "identity")


def image_shape(name: str) -> tuple[int, int, int]:
    """(C, H, W) of the images: odd, non-square sizes (the FFT's odd lengths), 3 channels for
    the per-channel blur, smaller than the 9x9 kernel for the large one."""
    if name == "blur-per-channel":
        return 3, 7, 9
    if name == "blur-larger-than-image":
        return 1, 6, 7
    return 2, 7, 9


# ------------------------------------------------------------------------------------- PCG
def test_pcg_with_the_exact_inverse_converges_in_one_step():
    mats = random_spd(3, 20, seed=1)
    inverse = torch.linalg.inv(mats)
    b = rand(3, 20, seed=2)
    x, n_iter = conjugate_gradient(matvec(mats), b, max_iter=50, tol=1e-10,
                                   precondition=matvec(inverse))
    assert n_iter.tolist() == [1, 1, 1]
    torch.testing.assert_close(x, torch.linalg.solve(mats, b), rtol=1e-9, atol=1e-12)


def test_pcg_solves_what_cg_solves_per_sample():
    """A random SPD preconditioner: the same solution as plain CG and as a dense solve; a zero
    right-hand side takes no step; every sample stops on its own true residual."""
    mats = random_spd(4, 30, seed=3)
    b = rand(4, 30, seed=4)
    b[2] = 0
    precond = random_spd(4, 30, seed=5)
    x_pcg, it_pcg = conjugate_gradient(matvec(mats), b, max_iter=200, tol=1e-12,
                                       precondition=matvec(precond))
    x_cg, _ = conjugate_gradient(matvec(mats), b, max_iter=200, tol=1e-12)
    exact = torch.linalg.solve(mats, b)
    torch.testing.assert_close(x_pcg, exact, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(x_pcg, x_cg, rtol=1e-8, atol=1e-10)
    assert it_pcg[2] == 0 and bool((it_pcg[[0, 1, 3]] > 0).all())
    residual = (matvec(mats)(x_pcg) - b).norm(dim=1)
    assert bool((residual <= 1e-12 * b.norm(dim=1) + 1e-300).all())


def test_pcg_with_the_identity_is_plain_cg_bit_for_bit():
    """P = I runs the very same arithmetic as no preconditioner (<r, P r> = <r, r>)."""
    mats, b, x0 = random_spd(3, 25, seed=6), rand(3, 25, seed=7), rand(3, 25, seed=8)
    for max_iter in (1, 4, 100):
        plain = conjugate_gradient(matvec(mats), b, x0, max_iter=max_iter, tol=1e-9)
        ident = conjugate_gradient(matvec(mats), b, x0, max_iter=max_iter, tol=1e-9,
                                   precondition=lambda r: r)
        assert torch.equal(plain[0], ident[0]) and torch.equal(plain[1], ident[1])


@pytest.mark.parametrize("name", ["blur-zeros", "blur-reflect", "blur-valid", "blur-circular"])
def test_pcg_on_the_blur_normal_equations_reaches_the_dense_solution(name):
    op = OPERATORS[name]()
    shape = (2, 9, 11)
    b = rand(3, *shape, seed=9)
    mat = ridge_matrix(op, shape, RHO)
    exact = torch.linalg.solve(mat, b.flatten(1).T).T.reshape(b.shape)
    apply = lambda v: op.normal(v) + RHO * v  # noqa: E731
    x_pcg, it_pcg = conjugate_gradient(apply, b, max_iter=500, tol=1e-12,
                                       precondition=op.ridge_preconditioner(RHO))
    x_cg, it_cg = conjugate_gradient(apply, b, max_iter=500, tol=1e-12)
    torch.testing.assert_close(x_pcg, exact, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(x_cg, exact, rtol=1e-8, atol=1e-9)
    assert bool((it_pcg > 0).all()) and bool((it_cg > 0).all())


def test_pcg_takes_about_half_the_steps_on_the_default_task_blur():
    """celeba-gauss5's blur (5x5 Gaussian, sigma 5, zero padding) at rho = 0.03 on 64 x 64
    images: 40 plain CG steps to 1e-6, 21 preconditioned (a wide margin either way)."""
    op = Blur(kernels.gaussian(5, 5.0).to(DT), "zeros").to(DT)
    b = rand(2, 3, 64, 64, seed=22)
    apply = lambda v: op.normal(v) + RHO * v  # noqa: E731
    _, it_cg = conjugate_gradient(apply, b, max_iter=200, tol=1e-6)
    _, it_pcg = conjugate_gradient(apply, b, max_iter=200, tol=1e-6,
                                   precondition=op.ridge_preconditioner(RHO))
    assert int(it_cg.min()) >= 30 and int(it_pcg.max()) <= 25


# ----------------------------------------------------------------------- the preconditioners
@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_ridge_preconditioner_is_symmetric_positive_definite(name):
    """<P a, b> = <a, P b> on random images, and the dense matrix of P is symmetric with
    positive eigenvalues."""
    op = OPERATORS[name]()
    shape = image_shape(name)
    precond = op.ridge_preconditioner(RHO)
    a, b = rand(4, *shape, seed=10), rand(4, *shape, seed=11)
    torch.testing.assert_close(batch_dot(precond(a), b), batch_dot(a, precond(b)),
                               rtol=1e-12, atol=1e-12)
    assert bool((batch_dot(precond(a), a) > 0).all())
    mat = dense(precond, shape)
    torch.testing.assert_close(mat, mat.T, rtol=0, atol=1e-12)
    assert float(torch.linalg.eigvalsh(mat).min()) > 0


@pytest.mark.parametrize("name", EXACT)
def test_ridge_preconditioner_is_exact_where_it_says_so(name):
    """P (A^T A + rho I) v = v: circular blur, masks, identity; PCG then takes one step."""
    op = OPERATORS[name]()
    shape = image_shape(name)
    v = rand(3, *shape, seed=12)
    precond = op.ridge_preconditioner(RHO)
    torch.testing.assert_close(precond(op.normal(v) + RHO * v), v, rtol=1e-10, atol=1e-10)
    _, n_iter = conjugate_gradient(lambda x: op.normal(x) + RHO * x, v, max_iter=50,
                                   tol=1e-9, precondition=precond)
    assert n_iter.tolist() == [1, 1, 1]


def test_blur_preconditioner_takes_a_tensor_rho_and_half_precision():
    op = Blur(kernels.gaussian(5, 5.0), "zeros")
    v = rand(2, 3, 16, 16, seed=13).float()
    by_number = op.ridge_preconditioner(RHO)(v)
    torch.testing.assert_close(op.ridge_preconditioner(torch.tensor(RHO))(v), by_number)
    half = op.ridge_preconditioner(RHO)(v.bfloat16())  # computed in float32, rounded back
    assert half.dtype == torch.bfloat16
    want = op.ridge_preconditioner(RHO)(v.bfloat16().float())
    torch.testing.assert_close(half.float(), want, rtol=1e-2, atol=1e-2 * float(want.abs().max()))


def test_operators_without_a_preconditioner_say_none():
    assert Composed(blur("zeros"), Mask(torch.ones(8, 8))).ridge_preconditioner(RHO) is None
    assert Composed(Downsample(2), blur("zeros")).ridge_preconditioner(RHO) is None
    assert Downsample(2).ridge_preconditioner(RHO) is None


def test_a_tile_window_takes_the_inner_preconditioner():
    # a tile's operator, Mask(window) after the blur: the blur's P, and PCG solves the masked
    # system exactly (P need only be symmetric positive definite)
    op = blur("zeros")
    window = torch.ones(1, 1, 20, 24, dtype=DT)
    window[..., :2, :] = 0
    window[..., :, -2:] = 0
    tile = Composed(Mask(window), op)
    v = rand(2, 3, 20, 24, seed=3)
    torch.testing.assert_close(tile.ridge_preconditioner(RHO)(v), op.ridge_preconditioner(RHO)(v))
    aty, z, u = (rand(2, 3, 20, 24, seed=s) for s in (4, 5, 6))
    exact, pcg = (admm_x_update(tile, aty, z, u, RHO, x0=z, cg_iters=400, cg_tol=1e-12,
                                precondition=p) for p in (False, True))
    torch.testing.assert_close(pcg, exact, rtol=0, atol=1e-8)


# ------------------------------------------------------------------------- the x-update
def test_x_update_without_preconditioning_is_plain_cg():
    """precondition=False: exactly CG on (A^T A + rho I) x = A^T y + rho (z - u) from x0, as
    before the option existed; precondition=True changes the truncated iterates."""
    op = Blur(kernels.gaussian(5, 5.0), "zeros")
    aty, z, u = (rand(2, 3, 16, 16, seed=s).float() for s in (14, 15, 16))
    b = aty + RHO * (z - u)
    for cg_iters in (2, 20):
        plain, _ = conjugate_gradient(lambda v: op.normal(v) + RHO * v, b, z,
                                      max_iter=cg_iters, tol=1e-6)
        off = admm_x_update(op, aty, z, u, RHO, x0=z, cg_iters=cg_iters, precondition=False)
        assert torch.equal(off, plain)
    on = admm_x_update(op, aty, z, u, RHO, x0=z, cg_iters=2)
    assert not torch.allclose(on, off)


@pytest.mark.parametrize("name", ["blur-zeros", "random-mask"])
def test_x_update_gradients_with_preconditioning_match_the_dense_solve(name):
    """d/d(A^T y, z, u, rho) of <w, x> through the preconditioned solve and its preconditioned
    backward equal autograd through torch.linalg.solve on the dense A^T A + rho I."""
    op = OPERATORS[name]()
    shape = (1, 8, 8)
    aty, z, u, w = (rand(1, *shape, seed=s) for s in (17, 18, 19, 20))
    leaves = [t.clone().requires_grad_(True) for t in (aty, z, u, torch.tensor(RHO, dtype=DT))]
    x = admm_x_update(op, *leaves, cg_iters=200, cg_tol=1e-14, precondition=True)
    got = torch.autograd.grad((w * x).sum(), leaves)

    ata = dense(op.normal, shape)
    ref_leaves = [t.clone().requires_grad_(True) for t in (aty, z, u, torch.tensor(RHO, dtype=DT))]
    a, zz, uu, rho = ref_leaves
    rhs = (a + rho * (zz - uu)).flatten()
    x_ref = torch.linalg.solve(ata + rho * torch.eye(ata.shape[0], dtype=DT), rhs)
    want = torch.autograd.grad((w.flatten() * x_ref).sum(), ref_leaves)
    torch.testing.assert_close(x.detach().flatten(), x_ref.detach(), rtol=1e-9, atol=1e-11)
    for g, r in zip(got, want, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-7, atol=1e-9)


# --------------------------------------------------------------------------- the model
def test_config_key_reaches_the_x_update():
    """model.precondition decides whether the model's x-update asks its operator for P (a spy
    counts the requests), and the default is the config's."""
    asked = []

    class Spy(Blur):
        def ridge_preconditioner(self, rho):
            asked.append(float(rho))
            return super().ridge_preconditioner(rho)

    op = Spy(kernels.gaussian(5, 1.5))
    z = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(21))
    for value, expected in (("false", False), ("true", True)):
        cfg = load_config(None, ["model.kind=deadmm", "model.net.depth=2", "model.net.width=4",
                                 f"model.precondition={value}"])
        m = build_model(cfg.to_dict()["model"], op)
        assert isinstance(m, DEADMM) and m.precondition is expected
        asked.clear()
        with torch.no_grad():
            m.x_update(z, torch.zeros_like(z), op.A(z))
        assert bool(asked) is expected
    default = build_model(Config().to_dict()["model"] | {"kind": "deadmm"}, op)
    assert default.precondition is ModelConfig().precondition


def test_a_config_without_the_key_takes_the_default(tmp_path):
    """Checkpoints store their config; one written before the key existed loads with the
    default."""
    from jfb.pipeline import initial_model, load_model
    from jfb.train.checkpoint import save_checkpoint

    old = Config().to_dict()["model"]
    del old["precondition"]
    assert ModelConfig.from_dict(old).precondition is ModelConfig().precondition
    config = Config.from_dict({"model": {"kind": "deadmm", "net": {"depth": 2, "width": 4}}})
    written = config.to_dict()
    del written["model"]["precondition"]
    save_checkpoint(tmp_path / "old.safetensors", model=initial_model(config), step=0,
                    config=written, rng=False)
    m, cfg, info = load_model(tmp_path / "old.safetensors")
    assert "precondition" not in info["config"]["model"]
    assert m.precondition is cfg.model.precondition is ModelConfig().precondition
