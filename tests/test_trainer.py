"""jfb.train (the trainer and its parts) and jfb.device: the loop, its options, exact resume,
signals, divergence, logs."""

from __future__ import annotations

import io
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from jfb.config import Config
from jfb.device import amp_dtype, resolve_device, use_channels_last
from jfb.errors import CheckpointError, ConfigError, DataError
from jfb.train import log as logmod
from jfb.train.checkpoint import load_checkpoint, load_weights
from jfb.train.guard import TrainingDivergedError
from jfb.train.loading import SeededItems
from jfb.train.log import MetricLogger, Progress, format_metrics
from jfb.train.schedule import lr_factor
from jfb.train.seeding import epoch_permutation, mix_seed
from jfb.train.trainer import Trainer

N_TRAIN, N_VAL, SIZE = 12, 5, 8


# ---------------------------------------------------------------------- tiny fixtures
class NoisyPairs(Dataset):
    """(x, y = x/2 + noise): training noise from the global RNGs (torch, numpy, python) unless
    ``fixed``; optionally records the indices it serves and the process that read them."""

    def __init__(self, n: int, *, fixed: bool = False, seed: int = 1, record: Path | None = None):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand(n, 1, SIZE, SIZE, generator=g)
        self.fixed = fixed
        self.record = record
        self.seen: list[int] = []

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        x = self.x[i]
        self.seen.append(int(i))
        if self.record is not None:
            with open(self.record, "a") as fh:
                fh.write(f"{os.getpid()} {i}\n")
        if self.fixed:
            g = torch.Generator().manual_seed(1000 + i)
            return x, 0.5 * x + 0.05 * torch.randn(x.shape, generator=g)
        shift = 0.01 * random.random() + 0.01 * float(np.random.rand())  # noqa: NPY002
        return x, 0.5 * x + 0.05 * torch.randn(x.shape) + shift


class Tiny(nn.Module):
    """y -> x_hat with dropout (global RNG), fake solver stats and a pre-training path."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.2), nn.Conv2d(4, 1, 3, padding=1)
        )
        self.scale = nn.Parameter(torch.tensor(2.0))
        self.last_stats = None
        self.calls = {"forward": 0, "pretrain": 0}
        self.batch_sizes: list[int] = []

    def forward(self, y):
        self.calls["forward"] += 1
        self.batch_sizes.append(y.shape[0])
        n = y.shape[0]
        self.last_stats = SimpleNamespace(
            iterations=torch.full((n,), 3, dtype=torch.long), converged=torch.arange(n) % 2 == 0
        )
        return self.scale * y + self.body(y)

    def pretrain_forward(self, y):
        self.calls["pretrain"] += 1
        return self.body(y)


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, y):
        return self.conv(y)


def make_cfg(**sections) -> Config:
    base = {
        "data": {"batch_size": 4},
        "train": {
            "steps": 6,
            "pretrain_steps": 3,
            "lr": 1e-2,
            "val_every": 2,
            "log_every": 1,
            "device": "cpu",
            "warmup_steps": 2,
        },
    }
    for sec, vals in sections.items():
        base.setdefault(sec, {}).update(vals)
    return Config.from_dict(base)


def make(out_dir, model_seed: int = 0, model_cls=Tiny, train_set=None, val_set=None, **sections):
    torch.manual_seed(model_seed)
    model = model_cls()
    train = train_set if train_set is not None else NoisyPairs(N_TRAIN)
    val = val_set if val_set is not None else NoisyPairs(N_VAL, fixed=True, seed=2)
    return Trainer(model, train, val, make_cfg(**sections), out_dir=out_dir, progress=False)


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def records(out_dir, kind):
    with open(Path(out_dir) / "metrics.jsonl") as fh:
        return [r for r in map(json.loads, fh) if r["kind"] == kind]


# ---------------------------------------------------------------------- pure helpers
def test_lr_factor_warmup_cosine_constant():
    assert [lr_factor(s, total=10, warmup=4, schedule="cosine") for s in range(4)] == [
        0.25,
        0.5,
        0.75,
        1.0,
    ]
    assert lr_factor(4, total=10, warmup=4, schedule="cosine") == pytest.approx(1.0)
    assert lr_factor(7, total=10, warmup=4, schedule="cosine") == pytest.approx(0.5)
    assert lr_factor(10, total=10, warmup=4, schedule="cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(9, total=10, warmup=0, schedule="cosine") > 0
    assert lr_factor(9, total=10, warmup=0, schedule="constant") == 1.0
    assert lr_factor(0, total=10, warmup=2, schedule="constant") == 0.5
    with pytest.raises(ConfigError):
        lr_factor(0, total=1, warmup=0, schedule="linear")


def test_epoch_permutation_is_a_function_of_seed_and_epoch():
    p = epoch_permutation(50, 3, 0)
    assert sorted(p) == list(range(50))
    assert p == epoch_permutation(50, 3, 0)
    assert p != epoch_permutation(50, 3, 1)
    assert p != epoch_permutation(50, 4, 0)
    assert mix_seed(1, 2) != mix_seed(2, 1) and 0 <= mix_seed(1, 2) < 2**63


def test_seeded_items_draws_are_a_function_of_the_seed():
    ds = SeededItems(NoisyPairs(3))
    torch.manual_seed(0)
    a = ds[(1, 77)][1]
    state = torch.get_rng_state()
    b = ds[(1, 77)][1]
    assert torch.equal(a, b)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left as it was
    assert not torch.equal(a, ds[(1, 78)][1])


def test_device_and_precision_helpers():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = torch.device("cuda", 0)
    assert amp_dtype(cuda, "bf16") is torch.bfloat16
    assert amp_dtype(cuda, "none") is None
    assert amp_dtype(torch.device("cpu"), "bf16") is None
    assert use_channels_last(cuda, True) and not use_channels_last(cuda, False)
    assert not use_channels_last(torch.device("cpu"), True)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
        with pytest.raises(ConfigError, match="CUDA is not available"):
            Trainer(
                Plain(),
                NoisyPairs(8),
                None,
                make_cfg(train={"device": "cuda"}),
                out_dir="unused",
                progress=False,
            )


# ---------------------------------------------------------------------- the loop
def test_fit_writes_logs_checkpoints_and_summary(tmp_path):
    t = make(tmp_path / "run")
    s = t.fit()
    out = tmp_path / "run"
    assert {
        "metrics.jsonl",
        "train.csv",
        "val.csv",
        "config.json",
        "last.safetensors",
        "best.safetensors",
    } <= {p.name for p in out.iterdir()}
    assert s["steps"] == 6 and s["pretrain_steps"] == 3 and s["global_step"] == 9
    assert s["stopped"] == "completed" and s["skipped_steps"] == 0
    assert s["mean_solver_iters"] == pytest.approx(3.0)
    assert s["val_solver_iters"] == pytest.approx(3.0)
    assert s["train_step_ms"] > 0 and s["seconds"] > 0
    vals = records(out, "val")
    assert [r["step"] for r in vals] == [5, 7, 9]  # every 2 main steps + the last
    assert all(r["n"] == N_VAL for r in vals)
    assert vals[0]["converged"] == pytest.approx(3 / 5)
    assert s["final_val_psnr"] == pytest.approx(vals[-1]["psnr"])
    best = max(vals, key=lambda r: r["psnr"])
    assert s["best_val_psnr"] == pytest.approx(best["psnr"]) and s["best_step"] == best["step"]
    _, meta = load_weights(out / "best.safetensors")
    assert meta["step"] == best["step"]
    info = load_checkpoint(out / "last.safetensors")
    assert info["step"] == 9
    assert json.loads((out / "config.json").read_text()) == make_cfg().to_dict()
    assert len(records(out, "pretrain_val")) == 1
    csv_lines = (out / "train.csv").read_text().splitlines()
    assert csv_lines[0].startswith("step,") and len(csv_lines) == 1 + 9


def test_the_model_as_pretraining_left_it_is_saved(tmp_path):
    make(tmp_path / "run").fit()
    pretrained, meta = load_weights(tmp_path / "run" / "pretrained.safetensors")
    assert meta["step"] == 3  # pretrain_steps
    stopped = make(tmp_path / "stopped")
    stopped.fit(max_steps=3)
    assert_same(pretrained, weights(stopped))
    make(tmp_path / "plain", train={"pretrain_steps": 0}).fit()
    assert not (tmp_path / "plain" / "pretrained.safetensors").exists()


def test_validation_psnr_is_mean_of_clamped_per_image_psnr(tmp_path):
    t = make(tmp_path, model_cls=Plain, train={"pretrain_steps": 0})
    val = t.validate()
    model = t.model.eval()
    ds = NoisyPairs(N_VAL, fixed=True, seed=2)
    with torch.no_grad():
        ps = [
            10 * math.log10(1 / float(((model(y[None]).clamp(0, 1) - x[None]) ** 2).mean()))
            for x, y in (ds[i] for i in range(N_VAL))
        ]
    assert val["psnr"] == pytest.approx(sum(ps) / len(ps), rel=1e-5)
    assert "iters" not in val and val["n"] == N_VAL


def test_validation_leaves_the_rng_alone(tmp_path):
    class RandomVal(NoisyPairs):
        def __getitem__(self, i):
            return self.x[i], self.x[i] + torch.randn(self.x[i].shape)

    t = make(tmp_path, val_set=RandomVal(4))
    torch.manual_seed(3)
    state = torch.get_rng_state()
    t.validate()
    assert torch.equal(state, torch.get_rng_state())


def test_time_limit_stops_resumably_and_the_resumed_run_equals_an_uninterrupted_one(
    tmp_path, monkeypatch
):
    """train.max_minutes: a fake clock runs out after the third step's check."""
    import jfb.train.trainer as trainer_mod

    ref = make(tmp_path / "a")
    ref.fit()
    clock = {"now": 0.0}

    class FakeTime:
        @staticmethod
        def perf_counter():
            clock["now"] += 1.0  # one second per reading
            return clock["now"]

        def __getattr__(self, name):
            return getattr(time, name)

    monkeypatch.setattr(trainer_mod, "time", FakeTime())
    first = make(tmp_path / "b", train={"max_minutes": 0.5})  # 30 fake seconds
    s1 = first.fit()
    monkeypatch.undo()
    assert s1["stopped"] == "time_limit" and 0 < s1["global_step"] < 9
    assert load_checkpoint(tmp_path / "b" / "last.safetensors")["step"] == s1["global_step"]
    assert "max_minutes=0.5" in [r for r in records(tmp_path / "b", "event")][-1]["message"]
    second = make(tmp_path / "b", model_seed=123)
    s2 = second.fit(resume=True)
    assert s2["global_step"] == 9 and s2["stopped"] == "completed"
    assert_same(weights(ref), weights(second))


@pytest.mark.parametrize("stop_at", [2, 7])  # inside pre-training; mid-epoch of main training
def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, stop_at):
    ref = make(tmp_path / "a")
    ref.fit()
    first = make(tmp_path / "b")
    s1 = first.fit(max_steps=stop_at)
    assert s1["stopped"] == "max_steps" and s1["global_step"] == stop_at
    assert load_checkpoint(tmp_path / "b" / "last.safetensors")["step"] == stop_at
    # A new process would build a new model, with another initialisation: resume overrides it.
    second = make(tmp_path / "b", model_seed=123)
    s2 = second.fit(resume=True)
    assert s2["global_step"] == 9 and s2["stopped"] == "completed"
    assert_same(weights(ref), weights(second))
    ref_opt, opt = ref.optimizer.state_dict(), second.optimizer.state_dict()
    for pid, st in ref_opt["state"].items():
        for k, v in st.items():
            assert torch.equal(v, opt["state"][pid][k])
    assert [r["psnr"] for r in records(tmp_path / "a", "val")] == [
        r["psnr"] for r in records(tmp_path / "b", "val")
    ]
    assert [r["loss"] for r in records(tmp_path / "a", "train")] == [
        r["loss"] for r in records(tmp_path / "b", "train")
    ]


def test_resume_needs_the_random_states(tmp_path, monkeypatch):
    """Control for the test above: without restoring the RNG states (dropout), resuming differs."""
    ref = make(tmp_path / "a")
    ref.fit()
    make(tmp_path / "b").fit(max_steps=5)
    import jfb.train.run_checkpoints as files

    real = files.load_checkpoint
    monkeypatch.setattr(
        files, "load_checkpoint", lambda *a, **k: real(*a, **{**k, "restore_rng": False})
    )
    second = make(tmp_path / "b")
    second.fit(resume=True)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(weights(ref).values(), weights(second).values(), strict=True)
    )


def test_resume_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no last.safetensors"):
        make(tmp_path / "empty").fit(resume=True)
    make(tmp_path / "r").fit(max_steps=2)

    class Wider(Tiny):
        def __init__(self):
            super().__init__()
            self.body[0] = nn.Conv2d(1, 4, 5, padding=2)

    with pytest.raises(CheckpointError, match="shape mismatch"):
        make(tmp_path / "r", model_cls=Wider).fit(resume=True)
    other = make(tmp_path / "r", model={"net": {"depth": 3}})
    with pytest.raises(CheckpointError, match=r"model\.net\.depth: checkpoint 17, expected 3"):
        other.fit(resume=True)


def test_training_noise_is_fresh_each_epoch_and_reproducible(tmp_path):
    class Recording(NoisyPairs):
        def __init__(self):
            super().__init__(N_TRAIN)
            self.ys: dict[int, list[torch.Tensor]] = {}

        def __getitem__(self, i):
            x, y = super().__getitem__(i)
            self.ys.setdefault(int(i), []).append(y)
            return x, y

    runs = []
    for name in ("a", "b"):
        ds = Recording()
        t = Trainer(
            Plain(),
            ds,
            None,
            make_cfg(train={"steps": 6, "pretrain_steps": 0}),
            out_dir=tmp_path / name,
            progress=False,
        )
        t.fit()
        runs.append(ds.ys)
    assert all(len(v) == 2 for v in runs[0].values())  # 6 steps x 4 = 2 epochs of 12
    for i, ys in runs[0].items():
        assert not torch.equal(ys[0], ys[1])  # new noise in the second epoch
        assert all(torch.equal(a, b) for a, b in zip(ys, runs[1][i], strict=True))


def test_num_workers_are_used_and_do_not_change_the_result(tmp_path):
    rec = tmp_path / "pids.txt"
    a = make(tmp_path / "a")
    a.fit()
    b = make(tmp_path / "b", train_set=NoisyPairs(N_TRAIN, record=rec), data={"num_workers": 2})
    b.fit()
    assert_same(weights(a), weights(b))
    pids = {int(line.split()[0]) for line in rec.read_text().splitlines()}
    assert os.getpid() not in pids and len(pids) >= 2  # read by worker processes


def test_data_order_and_seed(tmp_path):
    a = make(tmp_path / "a", train={"seed": 0})
    a.fit()
    b = make(tmp_path / "b", train={"seed": 0})
    b.fit()
    c = make(tmp_path / "c", train={"seed": 1})
    c.fit()
    assert_same(weights(a), weights(b))
    assert any(
        not torch.equal(x, y) for x, y in zip(weights(a).values(), weights(c).values(), strict=True)
    )


def test_batch_size_and_max_images(tmp_path):
    train = NoisyPairs(N_TRAIN)
    val = NoisyPairs(N_VAL, fixed=True)
    t = make(
        tmp_path,
        train_set=train,
        val_set=val,
        data={"batch_size": 3, "max_train_images": 6, "max_val_images": 2},
    )
    t.fit()
    assert set(t.model.batch_sizes) == {3, 2}  # training batches of 3; last val batch of 2
    assert t.model.batch_sizes[0] == 3
    assert set(train.seen) <= set(range(6)) and len(set(train.seen)) == 6
    assert all(r["n"] == 2 for r in records(tmp_path, "val"))
    with pytest.raises(DataError, match="fewer than one batch"):
        make(tmp_path, data={"batch_size": 13})


def test_optimizer_and_weight_decay(tmp_path):
    a = make(tmp_path / "a", train={"optimizer": "adam"})
    assert type(a.optimizer) is torch.optim.Adam
    b = make(tmp_path / "b", train={"optimizer": "adamw", "weight_decay": 0.5})
    assert type(b.optimizer) is torch.optim.AdamW
    assert b.optimizer.param_groups[0]["weight_decay"] == 0.5
    c = make(tmp_path / "c", train={"optimizer": "adamw", "weight_decay": 0.0})
    b.fit()
    c.fit()
    # Decoupled decay shrinks the weights towards 0 at every step.
    assert float(b.model.scale.detach()) < float(c.model.scale.detach())


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_learning_rate_schedule(tmp_path, schedule):
    t = make(
        tmp_path, train={"schedule": schedule, "warmup_steps": 2, "pretrain_steps": 2, "steps": 6}
    )
    t.fit()
    lrs = [r["lr"] for r in records(tmp_path, "train")]
    main = [1e-2 * lr_factor(s, total=6, warmup=2, schedule=schedule) for s in range(6)]
    assert lrs == pytest.approx([1e-2 * 0.5, 1e-2 * 1.0] + main)


def test_grad_clip(tmp_path):
    t = make(tmp_path / "a", train={"grad_clip": 1e-3})
    t.fit()
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in t.params]))
    assert float(norm) <= 1e-3 * (1 + 1e-4)
    u = make(tmp_path / "b", train={"grad_clip": "none"})
    u.fit()
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in u.params]))
    assert float(norm) > 1e-2
    assert records(tmp_path / "b", "train")[-1]["grad_norm"] == pytest.approx(float(norm))


def test_val_every_and_log_every(tmp_path):
    t = make(tmp_path, train={"steps": 6, "val_every": 4, "log_every": 4, "pretrain_steps": 0})
    t.fit()
    assert [r["step"] for r in records(tmp_path, "val")] == [4, 6]
    assert [r["step"] for r in records(tmp_path, "train")] == [4, 6]


def test_pretraining(tmp_path):
    t = make(tmp_path / "a", train={"pretrain_steps": 4, "steps": 2})
    s = t.fit()
    assert t.model.calls["pretrain"] == 4 + N_VAL // 4 + 1  # 4 steps + one val pass
    assert s["pretrain_steps"] == 4 and s["steps"] == 2
    assert [r["phase"] for r in records(tmp_path / "a", "train")] == ["pretrain"] * 4 + [
        "train"
    ] * 2
    p = make(tmp_path / "b", model_cls=Plain, train={"pretrain_steps": 4, "steps": 2})
    s = p.fit()
    assert s["pretrain_steps"] == 0 and s["global_step"] == 2
    assert any(
        "skipping 4 pre-training steps" in r["message"] for r in records(tmp_path / "b", "event")
    )


def test_a_model_without_feedforward_skips_pretraining(tmp_path):
    """An implicit model whose class keeps the base class's ``feedforward = None`` cannot
    pre-train in either mode: the trainer says so and skips it, without importing any model
    class."""
    from jfb.models import ImplicitModel
    from jfb.physics import Identity
    from jfb.train.pretrain import can_pretrain

    class OnlyT(ImplicitModel):
        def T(self, s, y):
            return 0.5 * (s + y) + 0 * self.net(s)

    model = OnlyT(Identity(), nn.Conv2d(1, 1, 3, padding=1))
    for mode in ("deblur", "denoise"):
        assert not can_pretrain(model, mode)
        t = make(tmp_path / mode, model_cls=lambda: model,
                 train={"pretrain": mode, "pretrain_steps": 4, "steps": 1})
        assert t.pretrain_steps == 0 and any("skipping 4 pre-training" in n for n in t.notes)
    assert can_pretrain(Tiny(), "deblur") and not can_pretrain(Tiny(), "denoise")
    assert not can_pretrain(Plain(), "deblur")


def test_collate_fn_batches_every_loader(tmp_path):
    """``collate_fn`` batches training and validation items (torch's default collate unless
    given), e.g. jfb.data.collate_images, which explains images of different sizes."""
    from torch.utils.data import default_collate

    from jfb.data import collate_images

    seen = []

    def counting(items):
        seen.append(len(items))
        return default_collate(items)

    torch.manual_seed(0)
    cfg = make_cfg(train={"pretrain_steps": 0, "steps": 2, "val_every": 2})
    Trainer(Plain(), NoisyPairs(N_TRAIN), NoisyPairs(N_VAL, fixed=True), cfg, out_dir=tmp_path,
            progress=False, collate_fn=counting).fit()
    assert seen == [4, 4, 4, 1]  # two training batches, then the validation set in 4 + 1

    class Mixed(NoisyPairs):
        def __getitem__(self, i):
            x, y = super().__getitem__(i)
            return (x, y) if i % 2 else (x[:, :4, :4], y[:, :4, :4])

    t = Trainer(Plain(), NoisyPairs(N_TRAIN), Mixed(N_VAL), cfg, out_dir=tmp_path / "m",
                progress=False, collate_fn=collate_images)
    with pytest.raises(DataError, match="different sizes"):
        t.validate()


def test_names_that_moved_out_of_the_trainer_module_still_import_from_it():
    import jfb.device
    import jfb.train.trainer as tr
    from jfb.train import guard, loading, run_checkpoints, schedule, seeding

    moved = {"SeededItems": loading, "TrainingDivergedError": guard, "epoch_permutation": seeding,
             "lr_factor": schedule, "mix_seed": seeding, "solver_divergence": guard,
             "amp_dtype": jfb.device, "use_channels_last": jfb.device, "LAST": run_checkpoints,
             "BEST": run_checkpoints}
    for name, home in moved.items():
        assert getattr(tr, name) is getattr(home, name) and name in tr.__all__, name


def test_the_parts_of_training_never_import_the_trainer_nor_it_models_or_data():
    """Imports point one way: the trainer composes the parts; it builds no model or dataset."""
    import ast

    import jfb.train

    def imported(path: Path) -> set[str]:
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        return names

    folder = Path(jfb.train.__file__).parent
    for path in folder.glob("*.py"):
        if path.name not in ("trainer.py", "__init__.py"):
            assert "jfb.train.trainer" not in imported(path), path.name
    trainer = imported(folder / "trainer.py")
    assert not {m for m in trainer if m.startswith(("jfb.models", "jfb.data", "jfb.tasks"))}
    assert len((folder / "trainer.py").read_text().splitlines()) <= 600


def test_out_dir_defaults_to_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    cfg = make_cfg(train={"out_dir": "runs/here", "pretrain_steps": 0, "steps": 2})
    Trainer(Plain(), NoisyPairs(8), None, cfg, progress=False).fit()
    assert (tmp_path / "runs" / "here" / "last.safetensors").exists()
    assert not (tmp_path / "runs" / "here" / "best.safetensors").exists()  # no val set


def test_compile_option_wraps_the_training_forward(tmp_path, monkeypatch):
    calls = []

    class Wrapped(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, y):
            calls.append(y.shape[0])
            return self.inner(y)

    monkeypatch.setattr(torch, "compile", lambda m, **kw: Wrapped(m))
    t = make(tmp_path / "a", train={"compile": True, "pretrain_steps": 0, "steps": 3})
    t.fit()
    assert calls == [4, 4, 4]
    calls.clear()
    make(tmp_path / "b", train={"compile": False, "pretrain_steps": 0, "steps": 3}).fit()
    assert calls == []


def test_cuda_only_options_are_reported_on_cpu(tmp_path):
    t = make(
        tmp_path,
        train={
            "amp": "bf16",
            "channels_last": True,
            "device": "cpu",
            "steps": 1,
            "pretrain_steps": 0,
        },
    )
    assert t.amp is None and not t.channels_last
    t.fit()
    messages = " ".join(r["message"] for r in records(tmp_path, "event"))
    assert "train.amp='bf16' ignored" in messages
    assert "train.channels_last ignored" in messages


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_autocast_and_channels_last_on_cuda(tmp_path):
    seen = {}

    class Probe(Plain):
        def forward(self, y):
            seen["autocast"] = torch.is_autocast_enabled("cuda")
            seen["dtype"] = torch.get_autocast_dtype("cuda")
            seen["cl"] = y.is_contiguous(memory_format=torch.channels_last)
            seen["w_cl"] = self.conv.weight.is_contiguous(memory_format=torch.channels_last)
            return super().forward(y)

    t = make(
        tmp_path,
        model_cls=Probe,
        train={
            "device": "cuda",
            "amp": "bf16",
            "channels_last": True,
            "steps": 2,
            "pretrain_steps": 0,
        },
    )
    t.fit()
    assert seen == {"autocast": True, "dtype": torch.bfloat16, "cl": True, "w_cl": True}


# ---------------------------------------------------------------------- divergence
class NaNAfter(Tiny):
    """Produces a NaN loss (or a NaN gradient) on the forward calls listed in ``bad``."""

    def __init__(self, bad=(), grad=False):
        super().__init__()
        self.bad = set(bad)
        self.grad = grad

    def forward(self, y):
        out = super().forward(y)
        if self.training and self.calls["forward"] in self.bad:
            if self.grad:
                return out + torch.sqrt(self.scale - self.scale.detach())  # 0, gradient inf
            return out * float("nan")
        return out


def test_nan_step_is_skipped_and_counted(tmp_path):
    torch.manual_seed(0)
    model = NaNAfter(bad={2})
    t = Trainer(
        model,
        NoisyPairs(N_TRAIN),
        None,
        make_cfg(train={"pretrain_steps": 0, "steps": 4}),
        out_dir=tmp_path,
        progress=False,
    )
    before = {}

    def spy(*a, **k):
        before[t.step] = weights(t)
        return real_step(*a, **k)

    real_step = t._train_step
    t._train_step = spy
    s = t.fit()
    assert s["skipped_steps"] == 1 and s["global_step"] == 4
    # Step 2 (the second forward) made no update: weights after it equal weights before it.
    assert_same(before[1], before[2])
    assert any(
        not torch.equal(a, b) for a, b in zip(before[2].values(), before[3].values(), strict=True)
    )
    assert any("non-finite loss" in r["message"] for r in records(tmp_path, "event"))


def test_nan_gradient_is_detected(tmp_path):
    torch.manual_seed(0)
    model = NaNAfter(bad={1}, grad=True)
    t = Trainer(
        model,
        NoisyPairs(N_TRAIN),
        None,
        make_cfg(train={"pretrain_steps": 0, "steps": 2, "grad_clip": "none"}),
        out_dir=tmp_path,
        progress=False,
    )
    assert t.fit()["skipped_steps"] == 1
    assert any("non-finite gradient" in r["message"] for r in records(tmp_path, "event"))


def test_divergence_stops_after_max_bad_steps_keeping_last_good_checkpoint(tmp_path):
    """With rollback off (max_rollbacks=0), the behaviour from before rollbacks existed."""
    torch.manual_seed(0)
    model = NaNAfter(bad=set(range(3, 100)))
    cfg = make_cfg(
        train={"pretrain_steps": 0, "steps": 20, "val_every": 2, "max_bad_steps": 3,
               "max_rollbacks": 0}
    )
    t = Trainer(
        model,
        NoisyPairs(N_TRAIN),
        NoisyPairs(N_VAL, fixed=True),
        cfg,
        out_dir=tmp_path,
        progress=False,
    )
    with pytest.raises(
        TrainingDivergedError,
        match=r"3 consecutive steps.*max_bad_steps=3.*last good checkpoint is",
    ):
        t.fit()
    assert t.step == 5  # steps 3, 4, 5 were bad
    assert load_checkpoint(tmp_path / "last.safetensors")["step"] == 2  # the last good one
    assert not any("rolled back" in r["message"] for r in records(tmp_path, "event"))
    with pytest.raises(RuntimeError):  # SolverError subclass: a RuntimeError
        raise TrainingDivergedError("x")


# ---------------------------------------------------------------------- solver divergence, rollback
class BlowUp(Tiny):
    """Tiny whose solver statistics report a residual of 5 (or NaN) on the listed training
    forward calls (1-based, validation not counted); ``unconverged``: the fraction of the batch
    reported as not converged."""

    def __init__(self, bad=(), residual=5.0, unconverged=0.0):
        super().__init__()
        self.bad, self.residual, self.unconverged = set(bad), residual, unconverged
        self.train_calls = 0

    def forward(self, y):
        out = super().forward(y)
        n = y.shape[0]
        self.train_calls += self.training
        blown = self.training and self.train_calls in self.bad
        self.last_stats.residual = torch.full((n,), self.residual if blown else 1e-4)
        self.last_stats.converged = torch.arange(n) >= round(self.unconverged * n)
        return out


def test_solver_divergence_reads_residuals_and_convergence():
    from jfb.train.guard import solver_divergence

    stats = SimpleNamespace(
        residual=torch.tensor([1e-4, 0.5, 2.0]), converged=torch.tensor([True, False, False])
    )
    blown, capped, worst, frac = solver_divergence(stats, max_residual=1.0, max_unconverged=0.5)
    assert (float(blown), float(capped), float(worst)) == (1.0, 1.0, 2.0)
    assert float(frac) == pytest.approx(2 / 3)
    blown, capped, *_ = solver_divergence(stats, max_residual=3.0, max_unconverged=0.7)
    assert (float(blown), float(capped)) == (0.0, 0.0)
    blown, capped, *_ = solver_divergence(stats, max_residual=None, max_unconverged=None)
    assert (float(blown), float(capped)) == (0.0, 0.0)
    nan = SimpleNamespace(residual=torch.tensor([1e-4, float("nan")]), converged=None)
    blown, _, worst, _ = solver_divergence(nan, max_residual=1e9, max_unconverged=None)
    assert float(blown) == 1.0 and math.isinf(float(worst))
    for bare in (None, SimpleNamespace(iterations=torch.ones(2))):  # nothing to check: healthy
        assert [float(v) for v in solver_divergence(bare, max_residual=1.0,
                                                    max_unconverged=0.0)] == [0, 0, 0, 0]


def _rollback_trainer(out_dir, model, val_every=2, **train):
    torch.manual_seed(0)
    cfg = make_cfg(train={"pretrain_steps": 0, "steps": 8, "val_every": val_every,
                          "warmup_steps": 0, "schedule": "constant", **train})
    return Trainer(model, NoisyPairs(N_TRAIN), NoisyPairs(N_VAL, fixed=True), cfg,
                   out_dir=out_dir, progress=False)


def _spy_steps(t: Trainer) -> list[tuple[int, float, dict[str, torch.Tensor], torch.Tensor]]:
    """Record (step, lr, weights, torch RNG state) before every training step of ``t``."""
    seen: list[tuple[int, float, dict[str, torch.Tensor], torch.Tensor]] = []
    real = t._train_step

    def spy(*a, **k):
        seen.append((t.step, t.optimizer.param_groups[0]["lr"], weights(t), torch.get_rng_state()))
        return real(*a, **k)

    t._train_step = spy
    return seen


def test_residual_blow_up_rolls_back_to_the_last_checkpoint_with_half_the_lr(tmp_path):
    torch.manual_seed(0)
    t = _rollback_trainer(tmp_path, BlowUp(bad={4}))  # the 4th step (global step 4) blows up
    seen = _spy_steps(t)
    s = t.fit()
    assert s["stopped"] == "completed" and s["global_step"] == 8
    assert s["rollbacks"] == 1 and s["lr_scale"] == 0.5 and s["skipped_steps"] == 1
    steps = [step for step, *_ in seen]
    assert steps == [0, 1, 2, 3, 2, 3, 4, 5, 6, 7]  # back to step 2, then on to the end
    assert_same(seen[4][2], seen[2][2])  # after the rollback: the weights checkpointed at step 2
    assert torch.equal(seen[4][3], seen[2][3])  # ... and the random state (dropout) of then
    assert [lr for _, lr, *_ in seen] == pytest.approx([1e-2] * 4 + [5e-3] * 6)
    events = [r for r in records(tmp_path, "event") if r.get("rollback")]
    assert len(events) == 1 and events[0]["detected_at"] == 4 and events[0]["step"] == 2
    msg = events[0]["message"]
    assert "solver residual blow-up" in msg and "train.diverge_residual=1" in msg
    assert "rolled back to step 2" in msg and "x0.5 -> 0.005" in msg
    info = load_checkpoint(tmp_path / "last.safetensors")
    assert info["extra"]["lr_scale"] == 0.5 and info["extra"]["rollbacks"] == 1


def test_a_run_resumed_after_a_rollback_equals_the_uninterrupted_one(tmp_path):
    """The lr reduction is saved: resume after a rollback continues at the reduced rate."""
    ref = _rollback_trainer(tmp_path / "a", BlowUp(bad={4}))
    ref.fit()
    first = _rollback_trainer(tmp_path / "b", BlowUp(bad={4}))
    assert first.fit(max_steps=6)["rollbacks"] == 1
    torch.manual_seed(5)
    second = _rollback_trainer(tmp_path / "b", BlowUp())
    s = second.fit(resume=True)
    assert s["lr_scale"] == 0.5 and s["rollbacks"] == 1 and s["global_step"] == 8
    assert_same(weights(ref), weights(second))


def test_rollback_lr_factor_and_diverge_residual_options(tmp_path):
    t = _rollback_trainer(tmp_path / "f", BlowUp(bad={4}), rollback_lr_factor=0.25)
    seen = _spy_steps(t)
    assert t.fit()["lr_scale"] == 0.25
    assert seen[-1][1] == pytest.approx(2.5e-3)
    # a residual of 5 is no blow-up under a threshold of 10, nor with the test off
    for i, threshold in enumerate((10.0, "none")):
        quiet = _rollback_trainer(tmp_path / f"q{i}", BlowUp(bad={4}), diverge_residual=threshold)
        s = quiet.fit()
        assert s["rollbacks"] == 0 and s["skipped_steps"] == 0
    nan = _rollback_trainer(tmp_path / "n", BlowUp(bad={4}, residual=float("nan")),
                            diverge_residual=1e9)
    assert nan.fit()["rollbacks"] == 1  # NaN is a blow-up under any threshold


def test_diverge_unconverged_option(tmp_path):
    """Half the batch unconverged: a divergence above a threshold of 0.4, not at the default."""
    off = _rollback_trainer(tmp_path / "off", BlowUp(unconverged=0.5))
    assert off.fit()["rollbacks"] == 0
    on = _rollback_trainer(tmp_path / "on", BlowUp(unconverged=0.5), diverge_unconverged=0.4,
                           max_rollbacks=2)
    with pytest.raises(TrainingDivergedError, match=r"iteration cap for 50% of the batch"):
        on.fit()
    assert on.rollbacks == 2


def test_repeated_divergence_stops_after_max_rollbacks_keeping_the_checkpoint(tmp_path):
    t = _rollback_trainer(tmp_path, BlowUp(bad=set(range(4, 100))), max_rollbacks=2)
    seen = _spy_steps(t)
    with pytest.raises(
        TrainingDivergedError,
        match=r"residual blow-up.* at step 3 after 2 rollbacks \(train\.max_rollbacks=2\); "
        r"the last good checkpoint is .*last\.safetensors",
    ):
        t.fit()
    assert [step for step, *_ in seen] == [0, 1, 2, 3, 2, 2]  # every step from the 4th blows up
    info = load_checkpoint(tmp_path / "last.safetensors")
    assert info["step"] == 2 and info["extra"]["lr_scale"] == 0.25
    assert_same(info["weights"], seen[2][2])  # the checkpoint kept holds the step-2 weights
    events = records(tmp_path, "event")
    assert sum(bool(r.get("rollback")) for r in events) == 2
    assert events[-1]["message"].startswith("training diverged: ")


def test_without_rollback_a_diverged_solve_is_a_skipped_step(tmp_path):
    t = _rollback_trainer(tmp_path, BlowUp(bad={4}), max_rollbacks=0)
    s = t.fit()
    assert s["rollbacks"] == 0 and s["skipped_steps"] == 1 and s["global_step"] == 8
    assert any("solver residual blow-up" in r["message"] and "update skipped" in r["message"]
               for r in records(tmp_path, "event"))


def test_a_streak_of_nan_steps_rolls_back_when_rollback_is_on(tmp_path):
    # forward calls 3 and 4 validate at step 2; calls 5 and 6 are the training steps after it
    t = _rollback_trainer(tmp_path, NaNAfter(bad={5, 6}), max_bad_steps=2)
    seen = _spy_steps(t)
    s = t.fit()
    assert s["stopped"] == "completed" and s["rollbacks"] == 1 and s["skipped_steps"] == 2
    assert [step for step, *_ in seen][:5] == [0, 1, 2, 3, 2]
    assert any("2 consecutive steps with a NaN/Inf loss" in r["message"]
               for r in records(tmp_path, "event") if r.get("rollback"))


# ---------------------------------------------------------------------- signals
CHILD = """
import json, sys
sys.path.insert(0, {tests!r})
from test_trainer import make
t = make({out!r}, train={{"steps": 10**6, "val_every": 10**6, "pretrain_steps": 2}},
         data={{"num_workers": {workers}}})
print(json.dumps(t.fit()))
"""


@pytest.mark.parametrize(
    ("sig", "workers", "group"),
    [
        (signal.SIGINT, 0, False),  # to the trainer alone
        (signal.SIGTERM, 2, True),
    ],  # to the whole process group, DataLoader workers included
)
def test_signal_writes_resumable_checkpoint_and_exits_cleanly(tmp_path, sig, workers, group):
    out = tmp_path / "run"
    code = CHILD.format(tests=str(Path(__file__).parent), out=str(out), workers=workers)
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            jsonl = out / "metrics.jsonl"
            if jsonl.exists() and jsonl.read_text().count('"kind": "train"') >= 4:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["stopped"] == "signal"
    step = load_checkpoint(out / "last.safetensors")["step"]
    assert step == summary["global_step"] >= 4
    if sig == signal.SIGINT:  # resume continues exactly like an uninterrupted run
        cfg = {"steps": 10**6, "val_every": 10**6, "pretrain_steps": 2}
        ref = make(tmp_path / "ref", train=cfg)
        ref.fit(max_steps=step + 3)
        resumed = make(out, model_seed=7, train=cfg)
        resumed.fit(resume=True, max_steps=step + 3)
        assert_same(weights(ref), weights(resumed))


# ---------------------------------------------------------------------- a real DEGrad
def test_trains_a_tiny_degrad(tmp_path):
    models = pytest.importorskip("jfb.models")
    from jfb.physics import Blur, kernels

    op = Blur(kernels.gaussian(3, 1.0), padding="zeros")
    cfg = Config.from_dict(
        {
            "model": {"net": {"depth": 3, "width": 4}, "solver": {"max_iter": 10, "tol": 1e-2}},
            "data": {"batch_size": 2},
            "train": {
                "steps": 3,
                "pretrain_steps": 2,
                "val_every": 3,
                "log_every": 1,
                "device": "cpu",
                "lr": 1e-3,
            },
        }
    )

    def build():
        torch.manual_seed(0)
        return models.build_model(cfg.to_dict()["model"], op, channels=1)

    class Pairs(Dataset):
        def __init__(self, n, fixed):
            g = torch.Generator().manual_seed(0)
            self.x = torch.rand(n, 1, SIZE, SIZE, generator=g)
            self.fixed = fixed

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i) if self.fixed else None
            y = op.A(self.x[i][None])[0]
            return self.x[i], y + 0.01 * torch.randn(y.shape, generator=g)

    t = Trainer(
        build(), Pairs(6, False), Pairs(3, True), cfg, out_dir=tmp_path / "a", progress=False
    )
    s = t.fit()
    assert s["global_step"] == 5 and s["skipped_steps"] == 0
    assert s["mean_solver_iters"] is not None and 1 <= s["mean_solver_iters"] <= 10
    assert math.isfinite(s["final_val_psnr"])
    assert records(tmp_path / "a", "train")[0]["phase"] == "pretrain"
    fresh = build()
    load_checkpoint(tmp_path / "a" / "best.safetensors", model=fresh, expected_config=cfg.to_dict())
    assert_same({k: v for k, v in fresh.state_dict().items()}, weights(t))
    # exact resume with a real implicit model
    b = Trainer(
        build(), Pairs(6, False), Pairs(3, True), cfg, out_dir=tmp_path / "b", progress=False
    )
    b.fit(max_steps=3)
    c = Trainer(
        build(), Pairs(6, False), Pairs(3, True), cfg, out_dir=tmp_path / "b", progress=False
    )
    c.fit(resume=True)
    assert_same(weights(t), weights(c))


# ---------------------------------------------------------------------- stability logs
class ZeroNet(nn.Module):
    """R(x) = 0, with a parameter (whose gradient is 0) for the optimiser."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return 0.0 * self.w * x


def test_contraction_is_logged_and_is_the_known_factor(tmp_path):
    """DE-GRAD with A = I and R = 0: T(x) = (1 - eta) x + eta y, so ||J_T|| = |1 - eta| = 0.5."""
    from jfb.deq import Picard
    from jfb.models import DEGrad
    from jfb.physics import Identity

    def run(out, **train):
        model = DEGrad(Identity(), ZeroNet(), eta=1.5, eta_max=2.0,
                       solver=Picard(tol=1e-6, max_iter=50))
        model.eta_raw.requires_grad_(False)  # keep eta (hence the factor) fixed
        cfg = make_cfg(train={"pretrain_steps": 0, "steps": 3, "log_every": 1, **train})
        Trainer(model, NoisyPairs(N_TRAIN), None, cfg, out_dir=out, progress=False).fit()
        return records(out, "train")

    recs = run(tmp_path / "on")
    assert len(recs) == 3
    for r in recs:
        assert r["contraction"] == pytest.approx(0.5, rel=1e-5)
        assert r["contraction_max"] == pytest.approx(0.5, rel=1e-5)
    assert all("contraction" not in r for r in run(tmp_path / "off", log_contraction=False))


def _tiny_degrad_trainer(out_dir, **train):
    from jfb.models import build_model
    from jfb.physics import Blur, kernels

    cfg = make_cfg(
        model={"net": {"depth": 2, "width": 3, "spectral_norm": True},
               "solver": {"max_iter": 8, "tol": 1e-3}},
        train={"pretrain_steps": 0, "steps": 2, "log_every": 1, "val_every": 100,
               "grad_clip": "none", **train},
    )
    torch.manual_seed(0)
    model = build_model(cfg.to_dict()["model"], Blur(kernels.gaussian(3, 1.0)), channels=1)
    return Trainer(model, NoisyPairs(N_TRAIN), None, cfg, out_dir=out_dir, progress=False)


def test_stability_diagnostics_do_not_change_training(tmp_path):
    """Measuring the contraction factor neither draws from the global RNGs nor advances the
    spectral norm's power iteration: the weights (and power-iteration vectors) are those of a
    run without it."""
    on = _tiny_degrad_trainer(tmp_path / "on")
    on.fit()
    rng_on = torch.get_rng_state()
    off = _tiny_degrad_trainer(tmp_path / "off", log_contraction=False)
    off.fit()
    assert "contraction" in records(tmp_path / "on", "train")[-1]
    assert_same(weights(on), weights(off))
    assert torch.equal(rng_on, torch.get_rng_state())


def test_jacobian_penalty_changes_the_gradient_and_is_logged(tmp_path):
    grads = {}
    for gamma in (0.0, 1.0):
        t = _tiny_degrad_trainer(tmp_path / str(gamma), jacobian_penalty=gamma, steps=1)
        t.fit()
        grads[gamma] = torch.cat([p.grad.flatten() for p in t.params])
    assert not torch.allclose(grads[0.0], grads[1.0])
    on, off = records(tmp_path / "1.0", "train"), records(tmp_path / "0.0", "train")
    assert all("jacobian" not in r for r in off)
    assert on[0]["jacobian"] > 0 and math.isfinite(on[0]["jacobian"])
    assert on[0]["loss"] == pytest.approx(off[0]["loss"])  # "loss" stays the MSE
    plain = make(tmp_path / "plain", model_cls=Plain, train={"jacobian_penalty": 1.0})
    assert any("jacobian_penalty ignored" in n for n in plain.notes)


# ---------------------------------------------------------------------- logging
def test_metric_logger_jsonl_csv_and_rewind(tmp_path):
    lg = MetricLogger(tmp_path)
    lg.log("train", 1, loss=torch.tensor(0.5), psnr=20.0)
    lg.log("train", 2, loss=0.25, psnr=float("nan"))
    lg.log("train", 3, loss=0.1, psnr=22.0, iters=4.5)  # a new column
    lg.log("val", 3, psnr=25.0)
    recs = lg.read("train")
    assert [r["step"] for r in recs] == [1, 2, 3]
    assert recs[0]["loss"] == 0.5 and recs[1]["psnr"] == "nan"
    lines = (tmp_path / "train.csv").read_text().splitlines()
    assert lines[0] == "step,time,loss,psnr,iters"
    assert lines[3].endswith(",4.5") and lines[1].endswith(",")  # old rows: empty new column
    lg.rewind(1)
    assert [r["step"] for r in lg.read()] == [1]
    assert len((tmp_path / "train.csv").read_text().splitlines()) == 2
    assert len((tmp_path / "val.csv").read_text().splitlines()) == 1
    # appending after a rewind continues the same files
    MetricLogger(tmp_path).log("train", 2, loss=0.2, psnr=21.0)
    assert [r["step"] for r in lg.read("train")] == [1, 2]


def test_metric_logger_skips_a_line_cut_by_a_crash(tmp_path):
    """Records are appended and flushed one by one: a crash mid-append leaves a cut last line,
    which reading and rewinding (on resume) skip; the records before it are all there."""
    lg = MetricLogger(tmp_path)
    lg.log("train", 1, loss=0.5)
    lg.log("train", 2, loss=0.4)
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"kind": "train", "step": 3, "lo')
    assert [r["step"] for r in lg.read("train")] == [1, 2]
    lg.rewind(2)
    assert [r["step"] for r in lg.read()] == [1, 2]
    lg.log("train", 3, loss=0.3)
    assert [r["step"] for r in lg.read("train")] == [1, 2, 3]


def test_metric_logger_disabled_writes_nothing(tmp_path):
    lg = MetricLogger(tmp_path / "x", enabled=False)
    lg.log("train", 1, loss=1.0)
    assert not (tmp_path / "x").exists()


def test_tensorboard_optional(tmp_path, monkeypatch):
    monkeypatch.setattr(logmod, "tensorboard_available", lambda: False)
    lg = MetricLogger(tmp_path / "a", tensorboard=True)
    assert "not installed" in lg.warning
    lg.log("train", 1, loss=1.0)
    scalars = []

    class FakeWriter:
        def add_scalar(self, tag, value, step):
            scalars.append((tag, value, step))

        def flush(self):
            pass

        def close(self):
            scalars.append("closed")

    monkeypatch.setattr(logmod, "tensorboard_available", lambda: True)
    monkeypatch.setattr(logmod, "_make_tb_writer", lambda d: FakeWriter())
    lg = MetricLogger(tmp_path / "b", tensorboard=True)
    assert lg.warning is None
    lg.log("val", 7, psnr=30.0, note="x", best=True)
    lg.close()
    assert scalars == [("val/psnr", 30.0, 7), "closed"]
    assert MetricLogger(tmp_path / "c", tensorboard=False)._tb is None


def test_trainer_reports_missing_tensorboard(tmp_path, monkeypatch):
    monkeypatch.setattr(logmod, "tensorboard_available", lambda: False)
    make(tmp_path, train={"tensorboard": True, "steps": 1, "pretrain_steps": 0}).fit()
    assert any("tensorboard" in r["message"] for r in records(tmp_path, "event"))


def test_progress_plain_and_tty():
    buf = io.StringIO()
    p = Progress(10, stream=buf, every=5)
    assert not p.is_tty
    for s in range(1, 11):
        p.update(s, loss=0.01, psnr=30.0, iters=12.34, step_ms=5.0)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("step  5/10")
    assert "loss 1.000e-02" in lines[0] and "psnr 30.00 dB" in lines[0]
    assert "iters 12.3" in lines[0] and "5.0 ms/step" in lines[0]
    tty = io.StringIO()
    p = Progress(10, stream=tty, is_tty=True, min_interval=0.0)
    p.update(1, loss=1.0)
    p.update(2, loss=0.5)
    p.message("hello")
    p.close()
    text = tty.getvalue()
    assert text.count("\r") >= 3 and "\n" in text and "hello\n" in text
    quiet = io.StringIO()
    Progress(10, stream=quiet, enabled=False).update(10, loss=1.0)
    assert quiet.getvalue() == ""
    assert format_metrics(3, None, loss=None, val_psnr=28.0) == "step 3 | val 28.00 dB"


def test_training_time_is_recorded_and_accumulates_over_resume(tmp_path):
    """Checkpoints carry the wall-clock training time (for results tables), summed over resumes."""
    from jfb.train.checkpoint import load_weights

    first = make(tmp_path / "t").fit(max_steps=5)
    _, info = load_weights(tmp_path / "t" / "last.safetensors")
    t1 = info["extra"]["train_seconds"]
    assert 0 < t1 <= first["seconds"] + 1e-3
    assert info["extra"]["device"].startswith("cpu")
    second = make(tmp_path / "t").fit(resume=True)
    _, info = load_weights(tmp_path / "t" / "last.safetensors")
    assert info["extra"]["train_seconds"] > t1
    assert abs(second["train_seconds"] - info["extra"]["train_seconds"]) < 1.0


def _slow_worker_init(worker_id: int) -> None:
    time.sleep(1.0)  # hold the start-up window open
    from jfb.train.signals import ignore_stop_signals

    ignore_stop_signals(worker_id)


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks")
def test_a_stop_signal_during_worker_start_up_does_not_kill_the_worker():
    """Workers are re-forked every epoch; a SIGTERM to the process group that lands before a
    worker has made itself ignore it must not kill it (it used to, now and then: a flaky crash
    instead of a clean checkpoint)."""
    from torch.utils.data import DataLoader

    from jfb.train.signals import start_loader

    loader = DataLoader(
        list(range(8)), batch_size=2, num_workers=2, worker_init_fn=_slow_worker_init
    )
    it = start_loader(loader)
    time.sleep(0.3)  # the workers exist and are inside their slow init
    for w in it._workers:
        os.kill(w.pid, signal.SIGTERM)
    assert sorted(int(v) for batch in it for v in batch) == list(range(8))
