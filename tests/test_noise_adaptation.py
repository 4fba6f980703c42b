"""Telling a DE-ADMM model the noise level of its measurements: rho scales as sigma^2
(plug-and-play's rule), in the model, in ``load_model`` and in ``jfb restore/deblur --noise``,
``jfb eval --adapt-noise`` and ``jfb compare --adapt-noise``."""

from __future__ import annotations

import json

import pytest
import torch

from jfb.baselines.pnp import admm_x_update
from jfb.cli import main
from jfb.compare import compare
from jfb.config import Config
from jfb.data import save_image
from jfb.errors import ConfigError
from jfb.models import DEADMM, build_model
from jfb.pipeline import load_model
from jfb.tasks import get_task
from jfb.train.checkpoint import save_checkpoint

SIGMA = 0.01


def _task(noise: float, op: str = "op=blur,kernel=gaussian:5:1.0") -> str:
    return f"{op},noise={noise},train=natural:patches:16,val=natural:crops:16,name=n{noise}"


def _checkpoint(tmp_path, kind: str = "deadmm", noise: float = SIGMA, op: str | None = None):
    """A ``kind`` model with a small random residual DnCNN, trained (saved) under noise
    ``noise`` (and operator ``op``, default a blur)."""
    task = _task(noise) if op is None else _task(noise, op)
    cfg = Config.from_dict({"task": task, "model": {
        "kind": kind, "rho": 0.05, "cg_iters": 5,
        "net": {"name": "dncnn", "depth": 2, "width": 4, "spectral_norm": False,
                "residual": True},
        "solver": {"max_iter": 6}}})
    torch.manual_seed(0)
    model = build_model(cfg.to_dict()["model"], get_task(cfg.task).operator(), channels=3)
    path = tmp_path / f"{kind}-{noise}-{op is None}.safetensors"
    save_checkpoint(path, model=model, step=0, config=cfg.to_dict(), rng=False)
    return path


# ------------------------------------------------------------------------------- the model
def test_adapt_noise_scales_rho_by_the_squared_noise_ratio_and_is_not_saved(tmp_path):
    model, _, _ = load_model(_checkpoint(tmp_path))
    rho = float(model.rho.detach())
    raw = model.rho_raw.detach().clone()
    assert model.adapt_noise(0.02, 0.01) == pytest.approx(4.0)
    assert float(model.rho.detach()) == pytest.approx(4 * rho, rel=1e-6)
    assert model.adapt_noise(0.005, 0.01) == pytest.approx(0.25)  # replaces, not compounds
    assert float(model.rho.detach()) == pytest.approx(rho / 4, rel=1e-6)
    assert torch.equal(model.rho_raw.detach(), raw)
    assert "rho_factor" not in "".join(model.state_dict())
    for bad in (0.0, -1.0, float("nan"), True):
        with pytest.raises(ValueError, match="positive number"):
            model.adapt_noise(bad, 0.01)
    with pytest.raises(ValueError, match="trained_sigma"):
        model.adapt_noise(0.01, 0.0)


def test_the_adapted_rho_is_the_one_the_x_update_uses(tmp_path):
    model, _, _ = load_model(_checkpoint(tmp_path))
    model.adapt_noise(0.03, 0.01)
    g = torch.Generator().manual_seed(1)
    y, z, u = (torch.rand(1, 3, 16, 16, generator=g) for _ in range(3))
    with torch.no_grad():
        x = model.x_update(z, u, y)
        want = admm_x_update(model.op, model.op.A_adjoint(y), z, u, 9 * 0.05, x0=z,
                             cg_iters=5, cg_tol=model.cg_tol)
    torch.testing.assert_close(x, want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------- load_model
def test_load_model_adapts_from_the_training_tasks_noise(tmp_path):
    plain, _, _ = load_model(_checkpoint(tmp_path))
    adapted, _, _ = load_model(_checkpoint(tmp_path), noise=0.02)
    assert isinstance(adapted, DEADMM) and adapted.rho_factor == pytest.approx(4.0)
    assert float(adapted.rho.detach()) == pytest.approx(4 * float(plain.rho.detach()), rel=1e-6)
    y = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert not torch.allclose(adapted(y), plain(y), atol=1e-4)


def test_load_model_refuses_noise_for_models_without_the_rule(tmp_path):
    with pytest.raises(ConfigError, match="applies to DE-ADMM models.*this one is degrad"):
        load_model(_checkpoint(tmp_path, kind="degrad"), noise=0.02)
    with pytest.raises(ConfigError, match="trained without noise"):
        load_model(_checkpoint(tmp_path, noise=0.0), noise=0.02)


# ------------------------------------------------------------------------------- commands
@pytest.fixture()
def measurement(tmp_path):
    y = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(3))
    path = tmp_path / "y.png"
    save_image(y, path)
    return path


def test_restore_and_deblur_noise_option_rebalances_the_model(tmp_path, measurement, capsys):
    ckpt = _checkpoint(tmp_path)
    outs = {}
    for cmd, noise in (("restore", None), ("restore", "0.03"), ("deblur", "0.03")):
        out = tmp_path / f"{cmd}-{noise}.png"
        argv = [cmd, str(measurement), "-o", str(out), "--checkpoint", str(ckpt),
                "--device", "cpu"]
        assert main(argv + ([] if noise is None else ["--noise", noise])) == 0
        outs[(cmd, noise)] = out.read_bytes()
    assert outs[("restore", "0.03")] == outs[("deblur", "0.03")]
    assert outs[("restore", "0.03")] != outs[("restore", None)]
    # The adapted output is the model's with rho x 9.
    from jfb.data import load_image

    model, _, _ = load_model(ckpt)
    model.adapt_noise(0.03, SIGMA)
    with torch.no_grad():
        want = model(load_image(measurement, mode="keep")[None])[0].clamp(0, 1)
    got = load_image(tmp_path / "restore-0.03.png", mode="keep")
    assert float((got - want).abs().max()) <= 1 / 255 + 1e-6
    capsys.readouterr()


@pytest.mark.parametrize("noise, needle", [("0.01", "applies to DE-ADMM models"),
                                           ("0", "positive number")])
def test_noise_option_errors_are_one_line(tmp_path, measurement, capsys, noise, needle):
    ckpt = _checkpoint(tmp_path, kind="degrad" if noise != "0" else "deadmm")
    argv = ["deblur", str(measurement), "-o", str(tmp_path / "o.png"), "--checkpoint", str(ckpt),
            "--noise", noise, "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


def test_eval_adapt_noise_reports_the_factor_and_changes_the_result(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path)
    rows = {}
    for flag in ([], ["--adapt-noise"]):
        out = tmp_path / f"eval{len(flag)}"
        argv = ["eval", str(ckpt), "--task", _task(0.02), "--max-images", "2", "--device",
                "cpu", "--out", str(out), *flag]
        assert main(argv) == 0
        rows[bool(flag)] = json.loads((out / "results.json").read_text())
    assert "rho_factor" not in rows[False]
    assert rows[True]["rho_factor"] == pytest.approx(4.0)
    assert rows[True]["psnr"] != rows[False]["psnr"]
    capsys.readouterr()


def test_compare_adapts_deadmm_rows_only_and_names_them(tmp_path):
    admm, grad = _checkpoint(tmp_path), _checkpoint(tmp_path, kind="degrad")
    task = get_task(_task(0.02))
    runs = {adapt: compare(task, [str(admm), str(grad)], max_images=2, device="cpu", keep=0,
                           adapt_rho=adapt)["rows"] for adapt in (False, True)}
    (a0, g0), (a1, g1) = runs[False], runs[True]
    assert "rho x4 for noise 0.02" in a1.result.method and "rho" not in a0.result.method
    assert g1.result.method == g0.result.method
    torch.testing.assert_close(g1.result.psnr, g0.result.psnr, rtol=0, atol=0)
    assert not torch.allclose(a1.result.psnr, a0.result.psnr)


# ------------------------------------------------------------------------------ estimation
def test_the_noise_estimate_finds_white_noise_and_the_noise_of_a_blurred_image():
    from jfb.data.builtin import natural_images
    from jfb.physics import Blur, estimate_noise_std, kernels

    g = torch.Generator().manual_seed(0)
    pure = estimate_noise_std(0.02 * torch.randn(3, 3, 64, 64, generator=g))
    torch.testing.assert_close(pure, torch.full((3,), 0.02), rtol=0.05, atol=0)
    x = torch.stack([im[:, :96, :96] for _, im in natural_images()[:3]])
    y = Blur(kernels.gaussian(5, 2.0)).A(x)
    for sigma in (0.005, 0.01, 0.03):
        est = estimate_noise_std(y + sigma * torch.randn(y.shape, generator=g))
        assert bool(((est / sigma - 1).abs() < 0.25).all()), (sigma, est)
    with pytest.raises(ValueError, match="images"):
        estimate_noise_std(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="2x2"):
        estimate_noise_std(torch.rand(1, 3, 1, 8))


def test_restore_noise_auto_uses_the_estimate_it_reports(tmp_path, measurement, capsys):
    from jfb.data import load_image
    from jfb.deblur import NOISE_FLOOR
    from jfb.physics import Blur, estimate_noise_std, quantisation_step

    ckpt = _checkpoint(tmp_path)
    base = ["restore", str(measurement), "--checkpoint", str(ckpt), "--device", "cpu"]
    assert main(base + ["-o", str(tmp_path / "auto.png"), "--noise", "auto"]) == 0
    printed = capsys.readouterr().out
    op = load_model(ckpt).model.op
    y = load_image(measurement, mode="keep")
    kernel = op.kernel if isinstance(op, Blur) else None
    want = max(float(estimate_noise_std(y[None], kernel, quantisation_step(y))[0]), NOISE_FLOOR)
    assert f"estimated noise std: {want:.4g} (8-bit rounding taken out)" in printed
    assert main(base + ["-o", str(tmp_path / "given.png"), "--noise", repr(want)]) == 0
    assert main(base + ["-o", str(tmp_path / "plain.png")]) == 0
    auto, given = (tmp_path / "auto.png").read_bytes(), (tmp_path / "given.png").read_bytes()
    assert auto == given and auto != (tmp_path / "plain.png").read_bytes()
    capsys.readouterr()


def test_noise_auto_is_refused_where_the_estimate_would_see_the_image(tmp_path, capsys):
    sr = _checkpoint(tmp_path, op="op=sr:2")
    y = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(5))
    save_image(y, tmp_path / "small.png")
    argv = ["restore", str(tmp_path / "small.png"), "-o", str(tmp_path / "big.png"),
            "--checkpoint", str(sr), "--noise", "auto", "--device", "cpu"]
    assert main(argv) == 2
    assert "--noise auto estimates the noise of blurred or noisy images" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(argv[:-4] + ["--noise", "loud"])
