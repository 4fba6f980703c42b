"""A model trained across blurs (task family ``natural-anyblur``) on files: it must be told the
kernel (a spec or a PSF image), bad kernels get one line and no output, the noise goes with
each call's physics, and no call changes the model."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from jfb.cli import main
from jfb.config import Config
from jfb.data.builtin import natural_images
from jfb.deblur import restore_tensor
from jfb.models import build_model
from jfb.physics import Blur, Physics, kernels
from jfb.pipeline import load_model, replace_blur
from jfb.train.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def family_ckpt(tmp_path_factory):
    """A tiny DE-ADMM of the natural-anyblur family (no operator of its own)."""
    cfg = Config.from_dict({"task": "natural-anyblur", "model": {
        "kind": "deadmm", "init": "wiener", "rho": 0.1, "noise_ref": 0.01,
        "noise_floor": 0.005, "cg_iters": 2,
        "solver": {"name": "anderson", "tol": 1e-3, "max_iter": 20},
        "net": {"name": "dncnn", "depth": 3, "width": 8, "residual": True}}})
    torch.manual_seed(0)
    model = build_model(cfg.to_dict()["model"], None, channels=3)
    path = tmp_path_factory.mktemp("ckpt") / "anyblur.safetensors"
    save_checkpoint(path, model=model, step=0, config=cfg.to_dict(), rng=False)
    return str(path)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    x = natural_images(["coffee"])[0][1][:, 100:148, 200:264]
    y = Physics(Blur(kernels.motion(9, seed=2), padding="reflect"), 0.01).measure(
        x[None], generator=torch.Generator().manual_seed(0))[0].clamp(0, 1)
    path = tmp_path_factory.mktemp("photo") / "blurred.png"
    Image.fromarray((y.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)
    return path


def _run(argv, capsys):
    code = main(argv)
    _, err = capsys.readouterr()
    return code, err


def _psf(tmp_path, array, name="psf.png"):
    path = tmp_path / name
    if name.endswith(".npy"):
        np.save(path, array)
    else:
        Image.fromarray(array).save(path)
    return path


def test_a_model_for_any_blur_must_be_told_the_kernel(family_ckpt, photo, tmp_path, capsys):
    out = tmp_path / "out.png"
    code, err = _run(["deblur", str(photo), "-o", str(out), "--checkpoint", family_ckpt,
                      "--quiet"], capsys)
    assert code != 0 and "--kernel" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_psf_image_is_a_kernel(family_ckpt, photo, tmp_path, capsys):
    k = (kernels.motion(9, seed=2).numpy() * 255 / float(kernels.motion(9, seed=2).max()))
    psf = _psf(tmp_path, k.round().astype(np.uint8))
    out = tmp_path / "out.png"
    code, err = _run(["deblur", str(photo), "-o", str(out), "--checkpoint", family_ckpt,
                      "--kernel", str(psf), "--noise", "0.01", "--quiet"], capsys)
    assert code == 0, err
    assert np.asarray(Image.open(out)).shape == (48, 64, 3)


@pytest.mark.parametrize("array, name, needle", [
    (np.zeros((5, 5), np.uint8), "empty.png", "sum"),
    (-np.ones((3, 3)), "negative.npy", "negative"),
    (np.full((3, 3), np.nan), "nan.npy", "finite"),
    (np.ones((2, 3, 3)), "two.npy", "C = 1 or 3"),
    (np.ones((81, 81)), "huge.npy", "larger than"),
])
def test_a_bad_kernel_is_one_line_and_no_output(family_ckpt, photo, tmp_path, capsys, array,
                                                name, needle):
    psf = _psf(tmp_path, array, name)
    out = tmp_path / "out.png"
    code, err = _run(["deblur", str(photo), "-o", str(out), "--checkpoint", family_ckpt,
                      "--kernel", str(psf), "--quiet"], capsys)
    assert code != 0 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_a_deblur_call_changes_nothing_of_the_model(family_ckpt, photo):
    model, cfg, _ = load_model(family_ckpt, op=replace_blur("motion:9:2", "reflect"))
    state = copy.deepcopy(model.state_dict())
    attrs = {k: v for k, v in vars(model).items() if not k.startswith("_")}
    solver = model.solver
    y = torch.from_numpy(np.asarray(Image.open(photo), dtype=np.float32) / 255).permute(2, 0, 1)
    a = restore_tensor(model, cfg, y, noise=0.01, warn=[].append)
    b = restore_tensor(model, cfg, y, noise=0.05, warn=[].append)
    assert not torch.equal(a, b)  # the noise reached the solve ...
    assert model.solver is solver  # ... and nothing of the model changed
    assert {k: v for k, v in vars(model).items() if not k.startswith("_")} == attrs
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_the_shipped_natural_model_is_an_equilibrium_model():
    """At its shipped tolerance the natural model's output is within 0.1 dB of its fixed point
    (tol 1e-6), on a photo and a blur it never saw."""
    from jfb.deblur import shipped_checkpoint
    from jfb.metrics import psnr

    model, _, _ = load_model(shipped_checkpoint("natural"))
    x = natural_images(["astronaut"])[0][1][:, 40:104, 200:264][None]
    physics = Physics(Blur(kernels.motion(11, seed=5), padding="circular"), 0.02)
    y = physics.measure(x, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        shipped, st = model.solve(y, physics)
        fixed, st_fixed = model.solve(y, physics, tol=1e-6, max_iter=400)
    assert bool(st.converged.all()) and bool(st_fixed.converged.all())
    p_shipped = float(psnr(shipped.clamp(0, 1), x))
    p_fixed = float(psnr(fixed.clamp(0, 1), x))
    assert abs(p_shipped - p_fixed) <= 0.1, (p_shipped, p_fixed)
    assert p_shipped > float(psnr(y.clamp(0, 1), x)) + 2  # and it deblurs


def test_benchmark_measurements_are_seeded_and_hqs_runs():
    from jfb.baselines.pnp import pnp_hqs
    from jfb.benchmark import SETTINGS, measurements, resolve_methods

    x = natural_images(["coffee"])[0][1][:, :32, :32]
    a = measurements(SETTINGS["gauss-1.6"], [x, x], every_kernel=False)
    b = measurements(SETTINGS["gauss-1.6"], [x, x], every_kernel=False)
    assert torch.equal(a[0][2], b[0][2]) and not torch.equal(a[0][2], a[1][2])
    y, physics = a[0][2], a[0][3]
    z = pnp_hqs(physics.op, y, lambda v: v, sigma=0.01)  # identity denoiser: a ridge solve
    assert z.shape == y.shape and torch.isfinite(z).all()
    assert resolve_methods("n=natural,wiener")[1] == ("wiener", "wiener")
