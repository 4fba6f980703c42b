"""Two training runs with the same config and seed give the same weights (same machine, same
number of threads): the initial weights are drawn from ``train.seed``, not from whatever state
the global RNG is in when the model is built."""

import torch

from jfb.config import load_config
from jfb.pipeline import build_run, initial_model
from jfb.train.trainer import Trainer

TINY = [
    "task=demo",
    "model.net.depth=3",
    "model.net.width=4",
    "model.solver.max_iter=6",
    "data.batch_size=2",
    "data.patch_size=24",
    "data.max_val_images=1",
    "train.steps=3",
    "train.pretrain_steps=1",
    "train.val_every=3",
    "train.log_every=1",
    "train.device=cpu",
]


def _train(out, *overrides):
    cfg = load_config(None, [*TINY, *overrides])
    run = build_run(cfg)
    Trainer(run.model, run.train_pairs, run.val_pairs, cfg, out_dir=out, progress=False).fit()
    return {k: v.detach().clone() for k, v in run.model.state_dict().items()}


def test_two_runs_with_the_same_config_and_seed_end_with_the_same_weights(tmp_path):
    first = _train(tmp_path / "a")
    torch.rand(7)  # whatever ran before in the process must not matter
    second = _train(tmp_path / "b")
    assert first.keys() == second.keys()
    assert [k for k in first if not torch.equal(first[k], second[k])] == []


def test_the_initial_weights_follow_the_seed_and_leave_the_global_rng_alone():
    cfg = load_config(None, TINY)
    state = torch.get_rng_state()
    a = initial_model(cfg).state_dict()
    assert torch.equal(torch.get_rng_state(), state)
    b = initial_model(cfg).state_dict()
    c = initial_model(load_config(None, [*TINY, "train.seed=1"])).state_dict()
    learned = [k for k, v in a.items() if v.is_floating_point() and v.numel() > 1]
    assert learned and all(torch.equal(a[k], b[k]) for k in learned)
    assert not any(torch.equal(a[k], c[k]) for k in learned if "weight" in k)
