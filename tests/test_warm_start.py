"""Starting R from a trained net (``train.init_net``) and pre-training it as a denoiser."""

from __future__ import annotations

import pytest
import torch

from jfb.config import Config
from jfb.errors import CheckpointError
from jfb.models import build_model
from jfb.physics import Identity
from jfb.pipeline import build_run, init_net
from jfb.train.checkpoint import save_checkpoint
from jfb.train.trainer import Trainer

DATA = "train=natural:patches:32,val=natural:crops:32"
NET = {"name": "dncnn", "depth": 3, "width": 4, "spectral_norm": False}


def _model(kind: str, **net):
    cfg = Config.from_dict({"model": {"kind": kind, "net": {**NET, **net}}})
    return build_model(cfg.to_dict()["model"], Identity(), channels=3), cfg


@pytest.fixture()
def denoiser(tmp_path):
    """A feedforward residual DnCNN D(x) = x - N(x) with random weights, saved as a checkpoint."""
    torch.manual_seed(0)
    model, cfg = _model("feedforward", residual=True)
    with torch.no_grad():
        for p in model.net.parameters():
            p.normal_(0, 0.3)
    path = tmp_path / "denoiser.safetensors"
    save_checkpoint(path, model=model, step=0, config=cfg.to_dict(), rng=False)
    return model.net, path


def test_deadmm_and_deprox_start_from_the_denoiser(denoiser):
    net, path = denoiser
    x = torch.rand(2, 3, 16, 16)
    for kind in ("deadmm", "deprox"):
        model, _ = _model(kind, residual=True)
        assert not torch.allclose(model.net(x), net(x))
        assert init_net(model, path) == len(net.state_dict())
        torch.testing.assert_close(model.net(x), net(x), rtol=0, atol=0)


def test_degrad_takes_the_denoisers_residual_as_its_regulariser_gradient(denoiser):
    net, path = denoiser
    model, _ = _model("degrad", residual=False)
    init_net(model, path)
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(model.net(x), x - net(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("net", [{"width": 8}, {"depth": 4}, {"spectral_norm": True}])
def test_a_net_of_another_shape_is_refused_naming_the_tensors(denoiser, net):
    _, path = denoiser
    model, _ = _model("degrad", **net)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="does not fit this model's net"):
        init_net(model, path)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_build_run_applies_train_init_net(denoiser):
    net, path = denoiser
    cfg = Config.from_dict({
        "task": f"op=denoise,noise=0.05,{DATA},name=t",
        "model": {"kind": "deadmm", "net": {**NET, "residual": True}},
        "data": {"max_val_images": 1},
        "train": {"init_net": str(path)},
    })
    x = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(build_run(cfg).model.net(x), net(x), rtol=0, atol=0)
    cold = cfg.with_overrides(["train.init_net=none"])
    assert not torch.allclose(build_run(cold).model.net(x), net(x))


# ---------------------------------------------------------------------- denoising pre-training
class Pairs(torch.utils.data.Dataset):
    """n pairs (x, y = x / 2) of the same flat grey image x = 0.5."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        x = torch.full((1, 6, 6), 0.5)
        return x, 0.5 * x


class Recorder(torch.nn.Module):
    """Its feedforward map records what it is given; deblurring pre-training is an error."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, y):
        return 2 * self.w * y

    def pretrain_forward(self, y):
        raise AssertionError("denoising pre-training must not call pretrain_forward")

    def feedforward(self, v):
        self.seen.append(v.detach().clone())
        return self.w * v


def _trainer(tmp_path, model, **train):
    cfg = Config.from_dict({
        "data": {"batch_size": 2},
        "train": {"steps": 1, "pretrain_steps": 3, "pretrain": "denoise", "pretrain_noise": 0.2,
                  "val_every": 1, "log_every": 1, "device": "cpu", **train},
    })
    return Trainer(model, Pairs(8), Pairs(2), cfg, out_dir=tmp_path, progress=False)


def test_denoising_pretraining_fits_the_feedforward_map_to_noisy_images(tmp_path):
    model = Recorder()
    _trainer(tmp_path / "a", model).fit()
    train_inputs, val_input = model.seen[:3], model.seen[3]
    assert len(model.seen) == 4  # 3 pre-training steps, then one feedforward validation
    for v in train_inputs:  # x + sigma n with sigma ~ U[0, 0.2] per sample: never y = x / 2
        std = (v - 0.5).flatten(1).std(1)
        assert (std > 0).all() and (std < 0.2 * 1.3).all()
    assert not torch.equal(train_inputs[0], train_inputs[1])
    assert (val_input - 0.5).std().item() == pytest.approx(0.1, rel=0.2)  # pretrain_noise / 2
    again = Recorder()
    _trainer(tmp_path / "b", again).fit()
    for a, b in zip(model.seen, again.seen, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_denoising_pretraining_noise_does_not_depend_on_the_number_of_processes(tmp_path):
    from jfb.train.distributed import DistInfo

    trainer = _trainer(tmp_path, Recorder())
    x = torch.rand(4, 1, 6, 6)
    whole = trainer._pretrain_output(x, x)
    parts = []
    for rank in range(2):
        trainer.dist = DistInfo(rank, 2, rank, "gloo")
        parts.append(trainer._pretrain_output(x[2 * rank: 2 * rank + 2], x))
    torch.testing.assert_close(torch.cat(parts), whole, rtol=0, atol=0)


def test_a_model_without_a_feedforward_map_skips_denoising_pretraining(tmp_path):
    class NoFeedforward(Recorder):
        feedforward = None

    trainer = _trainer(tmp_path, NoFeedforward())
    assert trainer.pretrain_steps == 0
    assert any("no feedforward(v)" in n for n in trainer.notes)


# ---------------------------------------------------------------------- jfb eval --config
def _eval(tmp_path, capsys, *args):
    from jfb.cli import main

    code = main(["eval", *args, "--max-images", "2", "--device", "cpu"])
    return code, capsys.readouterr()


def test_eval_config_scores_the_model_training_would_start_from(denoiser, tmp_path, capsys):
    """`jfb eval --config` scores the untrained model a config builds: with train.init_net
    it is the model with the denoiser as R (the same number as that model built by hand), and
    without it, another (random) R."""
    import json

    from jfb.evaluate import evaluate
    from jfb.tasks import parse_task

    net, path = denoiser
    task = f"op=denoise,noise=0.05,{DATA},name=t"
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'task = "{task}"\n[model]\nkind = "deprox"\ninit = "y"\n[model.net]\n'
                   'depth = 3\nwidth = 4\nspectral_norm = false\nresidual = true\n')
    scores = {}
    for name, sets in {"warm": ["--set", f"train.init_net={path}"], "cold": []}.items():
        out = tmp_path / name
        code, (_, err) = _eval(tmp_path, capsys, "--config", str(cfg), *sets, "--out", str(out))
        assert code == 0, err
        scores[name] = json.loads((out / "results.json").read_text())
    assert scores["warm"]["step"] == 0
    assert scores["warm"]["psnr"] != pytest.approx(scores["cold"]["psnr"], abs=1e-3)
    # the same number as evaluating the model built by hand
    model, _ = _model("deprox", residual=True)
    model.op = parse_task(task).operator()
    model.init = "y"
    init_net(model, path)
    ref = evaluate(model.eval(), parse_task(task).val_pairs(seed=0, limit=2), name="r")
    assert scores["warm"]["psnr"] == pytest.approx(float(ref.psnr.mean()), abs=1e-3)


@pytest.mark.parametrize("args, needle", [
    ([], "either a checkpoint or --config"),
    (["x.safetensors", "--config", "c.toml"], "either a checkpoint or --config"),
    (["x.safetensors", "--set", "train.steps=2"], "--set applies to --config only"),
])
def test_eval_takes_a_checkpoint_or_a_config(tmp_path, capsys, args, needle):
    code, (_, err) = _eval(tmp_path, capsys, *args)
    assert code == 2 and needle in err
