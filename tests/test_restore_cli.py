"""`jfb degrade` and `jfb restore` for every kind of operator, on the built-in photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jfb.cli import main
from jfb.data import load_image, save_image
from jfb.deblur import load_measurement
from jfb.metrics import psnr
from jfb.pipeline import load_model

TINY = [
    "model.net.depth=3", "model.net.width=4", "model.solver.max_iter=6", "data.batch_size=2",
    "data.patch_size=32", "data.max_val_images=1", "train.steps=2", "train.val_every=2",
    "train.device=cpu", "model.init=adjoint", "model.eta_scale=operator",
]
OPS = {"sr": "op=sr:2", "inpaint": "op=inpaint:random:0.5:3", "denoise": "op=denoise",
       "radon": "op=radon:12"}


def _task(op: str) -> str:
    return f"{op},noise=0.01,train=natural:patches:32,val=natural:crops:32,name=t"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = {}
    for kind, op in OPS.items():
        d = tmp_path_factory.mktemp(kind)
        args = ["train", "--quiet", "--out", str(d), "--set", f"task={_task(op)}"]
        for kv in TINY:
            args += ["--set", kv]
        assert main(args) == 0
        out[kind] = d / "best.safetensors"
    return out


@pytest.fixture()
def clean(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 1, generator=g) * torch.linspace(0, 1, 48)[None, None, :]
    x = (x + 0.1 * torch.rand(3, 48, 48, generator=g)).clamp(0, 1)
    path = tmp_path / "clean.png"
    save_image(x, path)
    return path


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, err


@pytest.mark.parametrize("kind", list(OPS))
def test_degrade_then_restore_matches_the_model_on_the_whole_image(kind, models, clean, tmp_path,
                                                                   capsys):
    ckpt = models[kind]
    meas = tmp_path / ("y.npy" if kind == "radon" else "y.png")
    code, err = _run(["degrade", str(clean), "-o", str(meas), "--task", _task(OPS[kind])], capsys)
    assert code == 0, err
    y = load_measurement(meas)
    expect = {"sr": (3, 24, 24), "radon": (3, 12, 48)}.get(kind, (3, 48, 48))
    assert tuple(y.shape) == expect
    out = tmp_path / "x.png"
    code, err = _run(["restore", str(meas), "-o", str(out), "--checkpoint", str(ckpt),
                      "--tile", "16", "--margin", "8", "--device", "cpu"], capsys)
    assert code == 0, err
    x = load_image(out)
    assert x.shape == (3, 48, 48)
    model, _, _ = load_model(ckpt)
    with torch.no_grad():
        whole = model(y[None])[0].clamp(0, 1)
    # tiles (blur-like operators) or one piece (masks, tomography) agree with the whole image
    # up to 8-bit quantisation and tile borders
    assert float(psnr(x[None], whole[None])) > 30


def test_restore_options_take_effect(models, clean, tmp_path, capsys):
    lr = tmp_path / "lr.png"
    assert main(["degrade", str(clean), "-o", str(lr), "--task", _task("op=sr:4")]) == 0
    code, err = _run(["restore", str(lr), "-o", str(tmp_path / "a.png"), "--checkpoint",
                      str(models["sr"]), "--task", "op=sr:4"], capsys)
    assert code == 0, err
    assert load_image(tmp_path / "a.png").shape == (3, 48, 48)  # x4 of 12, not x2
    masked = tmp_path / "m.png"
    save_image(torch.rand(3, 48, 48), masked)
    outs = []
    for i, frac in enumerate((0.2, 0.8)):
        m = (torch.rand(48, 48, generator=torch.Generator().manual_seed(i)) > frac).float()
        np.save(tmp_path / f"mask{i}.npy", m.numpy())
        code, err = _run(["restore", str(masked), "-o", str(tmp_path / f"r{i}.png"),
                          "--checkpoint", str(models["inpaint"]), "--mask",
                          str(tmp_path / f"mask{i}.npy"), "--tile", "16", "--margin", "8"],
                         capsys)
        assert code == 0, err
        outs.append(load_image(tmp_path / f"r{i}.png"))
    assert float((outs[0] - outs[1]).abs().mean()) > 1e-3
    solved = []  # --tol (the shipped face model): a loose tolerance stops the solve early
    for name, tol in (("loose", "0.5"), ("tight", "1e-5")):
        code, err = _run(["deblur", str(clean), "-o", str(tmp_path / f"{name}.png"), "--tol", tol,
                          "--checkpoint", "faces"], capsys)
        assert code == 0, err
        solved.append(load_image(tmp_path / f"{name}.png"))
    assert float((solved[0] - solved[1]).abs().mean()) > 1e-3


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["degrade", "{clean}", "-o", "{tmp}/s.png", "--task", "op=radon:8"], "write a .npy"),
        (["degrade", "{clean}", "-o", "{tmp}/s.png", "--task", "op=sr:5"], "divisible"),
        (["degrade", "{clean}", "-o", "{clean}", "--task", "op=denoise"], "is the input"),
        (["restore", "{clean}", "-o", "{tmp}/o.png", "--checkpoint", "{sr}", "--mask",
          "{clean}"], "--mask applies to inpainting"),
        (["restore", "{tmp}/bad.npy", "-o", "{tmp}/o.png", "--checkpoint", "{radon}"],
         "non-finite"),
        (["restore", "{tmp}/sino.npy", "-o", "{tmp}/o.png", "--checkpoint", "{radon}"],
         "angles"),
        (["deblur", "{clean}", "-o", "{tmp}/o.png", "--checkpoint", "{sr}", "--kernel",
          "gaussian:3:1.0"], "apply to blur models"),
        (["restore", "{clean}", "-o", "{tmp}/o.png", "--checkpoint", "{sr}", "--tol", "0"],
         "eval_tol"),
    ],
)
def test_restore_and_degrade_errors_are_one_line(argv, needle, models, clean, tmp_path, capsys):
    np.save(tmp_path / "bad.npy", np.full((12, 48), np.nan))
    np.save(tmp_path / "sino.npy", np.ones((5, 48)))
    subs = {"{clean}": str(clean), "{tmp}": str(tmp_path), "{sr}": str(models["sr"]),
            "{radon}": str(models["radon"])}
    args = []
    for a in argv:
        for k, v in subs.items():
            a = a.replace(k, v)
        args.append(a)
    code, err = _run(args, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and needle in lines[0], err
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "s.png").exists()


def test_compare_on_super_resolution_scales_the_grid_and_names_the_input_row(models):
    from jfb.compare import compare, grid_scale
    from jfb.physics import Downsample
    from jfb.tasks import parse_task

    assert grid_scale(Downsample(2), (3, 32, 32)) == pytest.approx(0.336, abs=0.01)
    assert grid_scale(Downsample(1, "box"), (3, 32, 32)) == 1.0
    task = parse_task(_task("op=sr:2"))
    out = compare(task, ["input", "tikhonov", str(models["sr"])], max_images=1, tune_images=2)
    names = [r.result.method for r in out["rows"]]
    assert names[0] == "bicubic upsampling of y" and names[1].startswith("tikhonov (")
    assert out["tuning"]["tikhonov"]["tried"][0]["weight"] == pytest.approx(0.336e-4, rel=0.05)
    psnrs = [float(r.result.psnr.mean()) for r in out["rows"]]
    assert psnrs[1] > psnrs[0] - 1  # tuned Tikhonov is about as good as bicubic or better
    with pytest.raises(Exception, match="wiener.*blur tasks only"):
        compare(task, ["wiener"], max_images=1)
