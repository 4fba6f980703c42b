"""jfb.train.checkpoint: safetensors checkpoints, atomic writes, verification, never unpickling."""

from __future__ import annotations

import json
import os
import pickle
import random
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from jfb.config import Config
from jfb.errors import CheckpointError
from jfb.train.checkpoint import load_checkpoint, load_weights, save_checkpoint


class Net(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, x):
        return self.head(self.bn(self.conv(x)))


def _trained(seed: int = 0, width: int = 4):
    torch.manual_seed(seed)
    model = Net(width)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(2, 1, 6, 6)).pow(2).mean().backward()
        opt.step()
        sched.step()
    return model, opt, sched


def _fresh(width: int = 4):
    torch.manual_seed(123)
    model = Net(width)
    opt = torch.optim.AdamW(model.parameters(), lr=5.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    return model, opt, sched


def _save(path, model, opt=None, sched=None, cfg=None, **kw):
    save_checkpoint(path, model=model, optimizer=opt, scheduler=sched, step=kw.pop("step", 3),
                    config=(cfg or Config()).to_dict(), extra=kw.pop("extra", {"best": 1.5}), **kw)


def test_round_trip_everything(tmp_path):
    path = tmp_path / "c.safetensors"
    model, opt, sched = _trained()
    cfg = Config.from_dict({"train": {"lr": 0.01}})
    _save(path, model, opt, sched, cfg, step=17, extra={"best": 31.5, "list": [1, 2]})
    m2, o2, s2 = _fresh()
    info = load_checkpoint(path, model=m2, optimizer=o2, scheduler=s2,
                           expected_config=cfg.to_dict())
    assert info["step"] == 17
    assert info["extra"] == {"best": 31.5, "list": [1, 2]}
    assert Config.from_dict(info["config"]) == cfg
    for (k, a), (k2, b) in zip(model.state_dict().items(), m2.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k
    sa, sb = opt.state_dict(), o2.state_dict()
    assert sa["param_groups"][0]["lr"] == sb["param_groups"][0]["lr"]
    assert sa["param_groups"][0]["weight_decay"] == sb["param_groups"][0]["weight_decay"] == 0.1
    for pid in sa["state"]:
        for key, value in sa["state"][pid].items():
            assert torch.equal(value, sb["state"][pid][key]), (pid, key)
    assert s2.state_dict()["last_epoch"] == sched.state_dict()["last_epoch"] == 3
    assert s2.get_last_lr() == sched.get_last_lr()
    # The restored optimizer continues exactly like the original one.
    x = torch.randn(2, 1, 6, 6)
    for m, o in ((model, opt), (m2, o2)):
        o.zero_grad()
        m(x).pow(2).mean().backward()
        o.step()
    for a, b in zip(model.parameters(), m2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_single_safetensors_file_with_json_metadata(tmp_path):
    path = tmp_path / "c.safetensors"
    model, opt, sched = _trained()
    _save(path, model, opt, sched)
    tensors = load_file(str(path))
    assert "model/conv.weight" in tensors and "model/bn.running_mean" in tensors
    assert any(k.startswith("optim/0/exp_avg") for k in tensors)
    assert tensors["rng/torch"].dtype == torch.uint8
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
    assert meta["format"] == "jfb-checkpoint" and len(meta["sha256"]) == 64
    decoded = json.loads(meta["meta"])
    assert decoded["step"] == 3 and "param_groups" in decoded["optimizer"]
    assert list(tmp_path.iterdir()) == [path]  # no temporary files left behind


def test_rng_states_saved_and_restored(tmp_path):
    path = tmp_path / "c.safetensors"
    model, _, _ = _trained()
    torch.manual_seed(5)
    random.seed(5)
    np.random.seed(5)  # noqa: NPY002
    _save(path, model)
    expected = (torch.rand(3), random.random(), np.random.rand())  # noqa: NPY002
    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)  # noqa: NPY002
    info = load_checkpoint(path)  # restore_rng defaults to False: nothing changes
    unchanged = torch.rand(3)
    torch.manual_seed(99)
    assert torch.equal(unchanged, torch.rand(3))
    assert info["rng"]["torch"].dtype == torch.uint8
    load_checkpoint(path, restore_rng=True)
    got = (torch.rand(3), random.random(), np.random.rand())  # noqa: NPY002
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]


def test_no_rng_stored_when_asked(tmp_path):
    path = tmp_path / "c.safetensors"
    model, _, _ = _trained()
    _save(path, model, rng=False)
    assert "rng/torch" not in load_file(str(path))
    assert load_checkpoint(path)["rng"] is None
    with pytest.raises(CheckpointError, match="no RNG state"):
        load_checkpoint(path, restore_rng=True)


def test_optional_parts_missing(tmp_path):
    path = tmp_path / "c.safetensors"
    model, opt, sched = _trained()
    _save(path, model)  # weights only
    _, o2, s2 = _fresh()
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_checkpoint(path, optimizer=o2)
    with pytest.raises(CheckpointError, match="no scheduler state"):
        load_checkpoint(path, scheduler=s2)


def test_unwraps_compiled_model(tmp_path):
    path = tmp_path / "c.safetensors"
    model, _, _ = _trained()
    compiled = torch.compile(model)  # lazily compiled: never called here
    assert any(k.startswith("_orig_mod.") for k in compiled.state_dict())
    _save(path, compiled)
    weights, _ = load_weights(path)
    assert set(weights) == set(model.state_dict())
    m2, _, _ = _fresh()
    load_checkpoint(path, model=torch.compile(m2))
    assert torch.equal(m2.conv.weight, model.conv.weight)


def test_tied_and_bf16_tensors(tmp_path):
    path = tmp_path / "c.safetensors"
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3)).to(torch.bfloat16)
    model[1].weight = model[0].weight  # shared storage
    _save(path, model)
    weights, _ = load_weights(path)
    assert weights["0.weight"].dtype == torch.bfloat16
    assert torch.equal(weights["1.weight"], model[0].weight.detach())


def test_non_tensor_optimizer_state_survives(tmp_path):
    path = tmp_path / "c.safetensors"
    model, opt, _ = _trained()
    p0 = next(iter(model.parameters()))
    opt.state[p0]["counter"] = 7
    _save(path, model, opt)
    m2, o2, _ = _fresh()
    load_checkpoint(path, model=m2, optimizer=o2)
    assert o2.state[next(iter(m2.parameters()))]["counter"] == 7


def test_load_weights(tmp_path):
    path = tmp_path / "c.safetensors"
    model, opt, sched = _trained()
    cfg = Config.from_dict({"model": {"net": {"depth": 5}}})
    _save(path, model, opt, sched, cfg, step=9, extra={"val": 30.0})
    weights, meta = load_weights(path)
    assert set(weights) == set(model.state_dict())
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert meta["step"] == 9 and meta["extra"] == {"val": 30.0}
    assert meta["config"]["model"]["net"]["depth"] == 5


# ---------------------------------------------------------------------- atomic writes
def test_crash_mid_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.safetensors"
    model, opt, sched = _trained(seed=0)
    _save(path, model, opt, sched, step=1)
    before = path.read_bytes()

    def half_then_fail(target: Path, data: bytes) -> None:  # the temporary file of jfb.atomic
        with open(target, "wb") as fh:
            fh.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", half_then_fail)
    model2, opt2, sched2 = _trained(seed=1)
    with pytest.raises(OSError, match="disk full"):
        _save(path, model2, opt2, sched2, step=2)
    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.safetensors"]


def test_crash_before_rename_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.safetensors"
    model, _, _ = _trained()
    _save(path, model, step=1)

    def no_replace(src, dst):
        raise KeyboardInterrupt  # e.g. killed between fsync and rename

    monkeypatch.setattr(os, "replace", no_replace)
    with pytest.raises(KeyboardInterrupt):
        _save(path, model, step=2)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]


def test_write_goes_through_fsync(tmp_path, monkeypatch):
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    model, _, _ = _trained()
    _save(tmp_path / "sub" / "c.safetensors", model)  # also creates the folder
    assert len(calls) >= 1
    assert load_checkpoint(tmp_path / "sub" / "c.safetensors")["step"] == 3


# ---------------------------------------------------------------------- bad files
def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        load_weights(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="not a file"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("keep", [0.3, 0.9, 0.999])
def test_truncated_file(tmp_path, keep):
    path = tmp_path / "c.safetensors"
    model, opt, _ = _trained()
    _save(path, model, opt)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_garbage_and_empty_files(tmp_path):
    path = tmp_path / "c.safetensors"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(path)
    path.write_bytes(os.urandom(256))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    header = b'{"a": 1'
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(path)


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_files_are_refused_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    for name, dump in (("raw.safetensors", lambda p: p.write_bytes(pickle.dumps(_Evil(
            str(marker))))), ("torch.safetensors", lambda p: torch.save(
            {"w": torch.ones(2), "evil": _Evil(str(marker))}, p))):
        path = tmp_path / name
        dump(path)
        assert not marker.exists()
        with pytest.raises(CheckpointError, match="never unpickles"):
            load_checkpoint(path, model=Net())
        with pytest.raises(CheckpointError, match="never unpickles"):
            load_weights(path)
        assert not marker.exists()


def test_plain_safetensors_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"conv.weight": torch.zeros(4, 1, 3, 3)}, str(path))
    with pytest.raises(CheckpointError, match="not a jfb checkpoint"):
        load_checkpoint(path)


def _rewrite(path, tensors=None, meta_edit=None):
    """Rewrite a checkpoint's tensors/metadata while keeping its stored SHA-256."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        metadata = dict(fh.metadata())
        all_t = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    if tensors is not None:
        all_t.update(tensors)
    if meta_edit is not None:
        meta = json.loads(metadata["meta"])
        meta_edit(meta)
        metadata["meta"] = json.dumps(meta)
    save_file(all_t, str(path), metadata=metadata)


def test_tampered_weights_are_detected(tmp_path):
    path = tmp_path / "c.safetensors"
    model, opt, _ = _trained()
    _save(path, model, opt)
    w = model.conv.weight.detach().clone()
    w[0, 0, 0, 0] += 1e-3
    _rewrite(path, tensors={"model/conv.weight": w})
    with pytest.raises(CheckpointError, match="SHA-256 mismatch"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="SHA-256 mismatch"):
        load_weights(path)


def test_tampered_bytes_and_metadata_are_detected(tmp_path):
    path = tmp_path / "c.safetensors"
    model, _, _ = _trained()
    _save(path, model)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x55  # flip bits inside the last tensor's bytes
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(path)
    _save(path, model, step=3)
    _rewrite(path, meta_edit=lambda m: m.update(step=1000))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_are_named(tmp_path):
    path = tmp_path / "c.safetensors"
    model, _, _ = _trained(width=4)
    _save(path, model)
    with pytest.raises(CheckpointError, match=r"shape mismatch: .*conv\.weight: checkpoint "
                                              r"\(4, 1, 3, 3\), model \(6, 1, 3, 3\)"):
        load_checkpoint(path, model=Net(width=6))

    class Extra(Net):
        def __init__(self):
            super().__init__()
            self.extra = nn.Linear(2, 2)

    with pytest.raises(CheckpointError, match=r"missing weights: extra\.bias, extra\.weight"):
        load_checkpoint(path, model=Extra())

    class Less(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)

    with pytest.raises(CheckpointError, match=r"unexpected weights: bn\.bias"):
        load_checkpoint(path, model=Less())


def test_config_mismatch_on_model_keys_only(tmp_path):
    path = tmp_path / "c.safetensors"
    model, _, _ = _trained()
    saved = Config.from_dict({"model": {"net": {"depth": 17}}, "train": {"lr": 1e-3}})
    _save(path, model, cfg=saved)
    # Training keys (lr) and solver settings may differ: the weights are the same kind.
    ok = Config.from_dict({"model": {"net": {"depth": 17}, "solver": {"tol": 1e-5}},
                           "train": {"lr": 5e-4}})
    load_checkpoint(path, expected_config=ok.to_dict())
    # The task may not: the operator's kernel is saved with the model's buffers.
    other_task = Config.from_dict({**ok.to_dict(), "task": "celeba-motion"})
    with pytest.raises(CheckpointError, match=r"task: checkpoint 'celeba-gauss5'"):
        load_checkpoint(path, expected_config=other_task.to_dict())
    load_checkpoint(path, expected_config=other_task.to_dict(), model_keys=("model.kind",))
    bad = Config.from_dict({"model": {"net": {"depth": 5}, "kind": "deprox"}})
    with pytest.raises(CheckpointError, match=r"model\.kind: checkpoint 'degrad', expected "
                                              r"'deprox'.*model\.net\.depth: checkpoint 17, "
                                              r"expected 5"):
        load_checkpoint(path, expected_config=bad.to_dict())


def test_optimizer_that_does_not_fit(tmp_path):
    path = tmp_path / "c.safetensors"
    model, opt, _ = _trained()
    _save(path, model, opt)
    other = nn.Linear(2, 2)
    with pytest.raises(CheckpointError, match="optimizer"):
        load_checkpoint(path, optimizer=torch.optim.AdamW(other.parameters()))
    with pytest.raises(CheckpointError, match="AdamW, not SGD"):
        load_checkpoint(path, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


def test_newer_version_refused(tmp_path):
    path = tmp_path / "c.safetensors"
    model, _, _ = _trained()
    _save(path, model)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        metadata = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    metadata["version"] = "99"
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(path)


# ------------------------------------------------------------------ load_model (jfb.pipeline)
def _degrad_checkpoint(tmp_path, depth: int, kernel: str, claimed_depth: int | None = None):
    """A DE-GRAD checkpoint whose weights have ``depth`` layers and whose config says
    ``claimed_depth`` (default: the same), with the blur ``kernel`` in its task."""
    from jfb.models import build_model
    from jfb.tasks import get_task

    task = f"op=blur,kernel={kernel},noise=0.01,train=natural:patches:16,val=natural:crops:16"
    net = {"name": "dncnn", "depth": depth, "width": 4}
    model_cfg = {"kind": "degrad", "net": net}
    model = build_model(Config.from_dict({"model": model_cfg}).to_dict()["model"],
                        get_task(task).operator(), channels=3)
    claimed = {**model_cfg, "net": {**net, "depth": claimed_depth or depth}}
    cfg = Config.from_dict({"task": task, "model": claimed})
    path = tmp_path / f"d{depth}-{claimed_depth}.safetensors"
    save_checkpoint(path, model=model, step=0, config=cfg.to_dict(), rng=False)
    return model, path


def test_load_model_refuses_weights_that_do_not_fit_their_config_naming_them(tmp_path):
    from jfb.pipeline import load_model

    _, path = _degrad_checkpoint(tmp_path, depth=3, kernel="gaussian:5:1.0", claimed_depth=4)
    with pytest.raises(CheckpointError, match="does not fit the model of its own config: "
                       "missing weights: net.body.6.bias"):
        load_model(path)


def test_load_model_takes_the_operator_from_the_task_not_the_checkpoint(tmp_path):
    from jfb.physics import Blur, kernels
    from jfb.pipeline import load_model

    saved, path = _degrad_checkpoint(tmp_path, depth=3, kernel="gaussian:5:1.0")
    other = Blur(kernels.gaussian(5, 3.0))
    model, _, _ = load_model(path, op=other)
    assert torch.equal(model.op.kernel, other.kernel)
    assert not torch.equal(model.op.kernel, saved.op.kernel)
    for k, v in saved.state_dict().items():
        if not k.startswith("op."):
            assert torch.equal(model.state_dict()[k], v), k
