"""`jfb compare` with plug-and-play methods driven by a trained denoiser checkpoint."""

from __future__ import annotations

import math

import pytest
import torch

from jfb.baselines.pnp import DenoiserWrapper
from jfb.cli import main
from jfb.compare import PNP_GRIDS, compare, pnp_method, tune_weight, tuning_pairs
from jfb.errors import ConfigError
from jfb.evaluate import evaluate
from jfb.physics import Downsample
from jfb.pipeline import load_model
from jfb.tasks import parse_task

TINY = [
    "model.kind=feedforward", "model.net.depth=3", "model.net.width=4", "data.batch_size=2",
    "data.patch_size=32", "data.max_val_images=1", "train.steps=2", "train.val_every=2",
    "train.device=cpu",
]
DATA = "train=natural:patches:32,val=natural:crops:32"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A tiny denoiser (op=denoise, noise 0.05) and a tiny deblurrer, each trained 2 steps."""
    out = {}
    for kind, op in {"denoise": "op=denoise,noise=0.05", "blur": "op=blur,noise=0.01"}.items():
        d = tmp_path_factory.mktemp(kind)
        args = ["train", "--quiet", "--out", str(d), "--set", f"task={op},{DATA},name=t"]
        for kv in TINY:
            args += ["--set", kv]
        assert main(args) == 0
        out[kind] = str(d / "best.safetensors")
    return out


def blur_task():
    return parse_task(f"op=blur,kernel=gaussian:5:1.0,noise=0.01,{DATA},name=b")


def test_pnp_rows_use_the_trained_denoiser_with_tuned_weights(checkpoints):
    specs = [f"pnp-admm:{checkpoints['denoise']}", f"pnp-pgd:{checkpoints['denoise']}"]
    task = blur_task()
    op = task.operator()
    out = compare(task, specs, max_images=1, tune_images=2)
    names = [r.result.method for r in out["rows"]]
    assert names[0].startswith("PnP-ADMM (trained dncnn 3x4 denoiser, sigma 0.05; rho ")
    assert names[1].startswith("PnP-PGD (trained dncnn 3x4 denoiser, sigma 0.05; step ")
    for spec, name, row in zip(specs, ("pnp-admm", "pnp-pgd"), out["rows"], strict=True):
        assert math.isfinite(float(row.result.psnr.mean()))
        assert row.info["checkpoint"] == checkpoints["denoise"] and row.info["params"] > 0
        tuned = out["tuning"][spec]
        tried = [t["weight"] for t in tuned["tried"]]
        # ||A||^2 ~ 1 for a blur: the grid as is (the PGD step divided by ||A||^2 = 0.98)
        assert tried == pytest.approx(PNP_GRIDS[name], rel=0.05)
        psnrs = [t["psnr"] for t in tuned["tried"]]
        assert tuned["best"] == tried[psnrs.index(max(psnrs))]
        assert len(set(psnrs)) > 1  # the weight takes effect
        assert f"{tuned['best']:g})" in row.result.method
        # the tries are PnP with this denoiser on the training pairs (first weight, recomputed)
        net = DenoiserWrapper(load_model(checkpoints["denoise"])[0])
        res = evaluate(pnp_method(name, op, net, tried[0]), tuning_pairs(task, 2))
        assert float(res.psnr.mean()) == pytest.approx(psnrs[0], abs=1e-3)


def test_the_pgd_step_grid_is_in_units_of_one_over_the_operator_norm():
    op = Downsample(2)
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    pairs = [(x, op.A(x[None])[0])]
    _, tried = tune_weight("pnp-pgd", op, pairs, method=lambda w: lambda y: op.A_adjoint(y))
    assert tried[-1]["weight"] == pytest.approx(1.9 / 0.336, rel=0.05)  # ||A||^2 ~ 0.336
    _, tried = tune_weight("pnp-admm", op, pairs, method=lambda w: lambda y: op.A_adjoint(y))
    assert tried[-1]["weight"] == pytest.approx(3.0 * 0.336, rel=0.05)


def test_other_checkpoints_and_unknown_specs_are_refused_before_any_work(
    checkpoints, monkeypatch, tmp_path
):
    import jfb.compare

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the methods were checked")

    monkeypatch.setattr(jfb.compare, "evaluate", no_work)
    task = blur_task()
    cases = [
        (f"pnp-admm:{checkpoints['blur']}", r"denoising task \(op=denoise\).*op=blur"),
        (f"pnp-pgd:{tmp_path / 'missing.safetensors'}", "not found"),
        (f"pnp-admm:{tmp_path / 'net.pt'}", ".safetensors checkpoint of a denoiser"),
        (f"pnp-foo:{checkpoints['denoise']}", "unknown method.*pnp-admm:PATH"),
        ("pnp-admm", "unknown method"),
    ]
    for spec, match in cases:
        with pytest.raises(ConfigError, match=match):
            compare(task, ["tikhonov", spec], max_images=1, tune_images=2)


def test_model_names_describe_the_net_and_the_penalty():
    from jfb.compare import _model_name
    from jfb.config import Config

    unet = Config.from_dict({"model": {"kind": "feedforward", "net": {
        "name": "unet", "base": 16, "levels": 3, "spectral_norm": False}}})
    assert _model_name(unet) == "feedforward (unet 3 levels, base 16)"
    jac = Config.from_dict({"model": {"net": {"depth": 7, "width": 32, "spectral_norm": False}},
                            "train": {"jacobian_penalty": 1e-3}})
    assert _model_name(jac) == "degrad + jfb (dncnn 7x32, Jacobian penalty 0.001)"
    warm = Config.from_dict({"model": {"kind": "deadmm", "net": {"spectral_norm": False}},
                             "train": {"init_net": "runs/denoiser/best.safetensors"}})
    assert _model_name(warm) == "deadmm + jfb (dncnn 17x64, R from denoiser)"
    pre = Config.from_dict({"model": {"kind": "deprox", "net": {"spectral_norm": False}},
                            "train": {"pretrain_steps": 50, "pretrain": "denoise"}})
    assert _model_name(pre) == "deprox + jfb (dncnn 17x64, R pre-trained as a denoiser (50 steps))"
