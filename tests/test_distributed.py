"""jfb.train.distributed: DDP with Gloo on CPU (2 processes on 127.0.0.1) matches one process
training on the combined batch; sharding, rank-0-only files, and resume under DDP; and the
README's ``torchrun ... -m jfb train`` command, run as written."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import Dataset

from jfb.config import Config
from jfb.train.checkpoint import load_checkpoint
from jfb.train.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_sum,
    any_across_ranks,
    cleanup_distributed,
    get_dist_info,
    init_distributed,
    rank_slice,
    wrap_ddp,
)
from jfb.train.trainer import Trainer

B = 2  # per-rank batch
WORLD = 2


class Pairs(Dataset):
    """(x, y = x/2 + noise), noise from torch's global RNG unless ``fixed``."""

    def __init__(self, n: int, fixed: bool = False, seed: int = 0) -> None:
        self.x = torch.rand(n, 1, 6, 6, generator=torch.Generator().manual_seed(seed))
        self.fixed = fixed

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(50 + i) if self.fixed else None
        return self.x[i], 0.5 * self.x[i] + 0.05 * torch.randn(self.x[i].shape, generator=g)


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(),
                                  nn.Conv2d(3, 1, 3, padding=1))
        self.last_stats = None

    def forward(self, y):
        n = y.shape[0]
        self.last_stats = SimpleNamespace(iterations=torch.full((n,), 2), converged=None)
        return 2 * y + self.body(y)

    def pretrain_forward(self, y):
        return self.body(y)


def _cfg(batch: int) -> Config:
    return Config.from_dict({
        "data": {"batch_size": batch},
        "train": {"steps": 4, "pretrain_steps": 2, "val_every": 2, "log_every": 1, "lr": 1e-2,
                  "device": "cpu", "grad_clip": 0.5, "warmup_steps": 1},
    })


def _trainer(out_dir, batch: int, model_seed: int = 0) -> Trainer:
    torch.manual_seed(model_seed)
    return Trainer(Small(), Pairs(10), Pairs(5, fixed=True, seed=1), _cfg(batch),
                   out_dir=out_dir, progress=False)


def _worker(rank: int, port: int, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    info = init_distributed("cpu", timeout_s=60)
    assert info == get_dist_info()
    tmp_path = Path(tmp)
    # Every rank initialises differently: DDP must broadcast rank 0's weights.
    full = _trainer(tmp_path / "ddp", B, model_seed=rank)
    summary = full.fit()
    save_file({k: v.contiguous() for k, v in full.model.state_dict().items()},
              str(tmp_path / f"rank{rank}.safetensors"))
    # interrupted after 3 global steps, then a new Trainer resumes from last.safetensors
    _trainer(tmp_path / "ddp_resume", B, model_seed=rank).fit(max_steps=3)
    resumed = _trainer(tmp_path / "ddp_resume", B, model_seed=10 + rank)
    resumed.fit(resume=True)
    save_file({k: v.contiguous() for k, v in resumed.model.state_dict().items()},
              str(tmp_path / f"resumed{rank}.safetensors"))
    gathered = all_gather_objects(rank)
    flag = any_across_ranks(rank == 1, torch.device("cpu"))
    total = all_reduce_sum(torch.tensor([float(rank + 1)]))
    with open(tmp_path / f"summary{rank}.json", "w") as fh:
        json.dump({"summary": summary, "info": [info.rank, info.world_size, info.backend],
                   "logger_enabled": full.logger.enabled, "gathered": gathered,
                   "flag": flag, "total": float(total)}, fh)
    del full, resumed  # their DDP wrappers go before the group does (see cleanup_distributed)
    cleanup_distributed()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_ddp_two_processes_match_single_process_on_combined_batch(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)

    single = _trainer(tmp_path / "single", B * WORLD)
    s_single = single.fit()
    ref = single.model.state_dict()
    r0 = load_file(str(tmp_path / "rank0.safetensors"))
    r1 = load_file(str(tmp_path / "rank1.safetensors"))
    for k, v in ref.items():
        torch.testing.assert_close(r0[k], v, rtol=0, atol=1e-6)
        assert torch.equal(r0[k], r1[k]), k  # ranks stay identical
    last = load_checkpoint(tmp_path / "ddp" / "last.safetensors")
    for k, v in ref.items():
        torch.testing.assert_close(last["weights"][k], v, rtol=0, atol=1e-6)
    # resumed DDP run == uninterrupted DDP run
    for rank in range(WORLD):
        res = load_file(str(tmp_path / f"resumed{rank}.safetensors"))
        for k in ref:
            torch.testing.assert_close(res[k], r0[k], rtol=0, atol=1e-7)

    out = [json.loads((tmp_path / f"summary{r}.json").read_text()) for r in range(WORLD)]
    assert out[0]["info"] == [0, 2, "gloo"] and out[1]["info"] == [1, 2, "gloo"]
    assert out[0]["logger_enabled"] and not out[1]["logger_enabled"]
    assert out[0]["gathered"] == [0, 1] and out[0]["flag"] and out[1]["flag"]
    assert out[0]["total"] == 3.0
    # Validation is sharded over ranks but averaged over every image: same as one process.
    for r in range(WORLD):
        s = out[r]["summary"]
        assert s["final_val_psnr"] == pytest.approx(s_single["final_val_psnr"], abs=1e-4)
        assert s["global_step"] == 6
    # Only rank 0 logs: one start message, one record per step.
    recs = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").open()]
    starts = [r for r in recs if r["kind"] == "event" and r["message"].startswith("training ")]
    assert len(starts) == 1
    assert [r["step"] for r in recs if r["kind"] == "train"] == list(range(1, 7))
    assert "x2" in recs[0]["message"] and "batch 4" in recs[0]["message"]
    single_loss = [json.loads(line) for line in (tmp_path / "single" / "metrics.jsonl").open()]
    ddp_loss = [r["loss"] for r in recs if r["kind"] == "train"]
    assert ddp_loss == pytest.approx([r["loss"] for r in single_loss if r["kind"] == "train"],
                                     rel=1e-5)


def test_single_process_fallbacks(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = init_distributed("cpu")
    assert info == DistInfo(0, 1, 0, None) and info.is_main and not info.distributed
    assert get_dist_info() == DistInfo()
    m = nn.Linear(2, 2)
    assert wrap_ddp(m, torch.device("cpu")) is m
    t = torch.tensor([2.0])
    assert all_reduce_sum(t) is t and float(t) == 2.0
    assert any_across_ranks(True, torch.device("cpu")) is True
    assert any_across_ranks(False, torch.device("cpu")) is False
    assert all_gather_objects("a") == ["a"]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ValueError, match="RANK=5"):
        init_distributed("cpu")
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="not an integer"):
        init_distributed("cpu")


def test_rank_slice_partitions_the_global_batch():
    batch = [9, 4, 7, 1, 3, 8]
    parts = [rank_slice(batch, r, 3) for r in range(3)]
    assert parts == [[9, 4], [7, 1], [3, 8]]
    assert sum(parts, []) == batch
    with pytest.raises(ValueError, match="does not split"):
        rank_slice(batch, 0, 4)


# ---------------------------------------------------------------------- torchrun, as in the README
TINY = ["--set", "task=demo", "--set", "model.net.depth=3", "--set", "model.net.width=4",
        "--set", "model.solver.max_iter=8", "--set", "data.batch_size=2",
        "--set", "data.patch_size=24", "--set", "data.max_val_images=2",
        "--set", "train.val_every=3", "--set", "train.log_every=1", "--set", "train.device=cpu",
        "--set", "train.pretrain_steps=1"]


def _torchrun_train(out: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node=2 -m jfb train`` with the
    tiny config (``--standalone``: a free port of this machine, so parallel runs never meet)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", "-m", "jfb", "train", *TINY, *args, "--out", str(out),
               "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_torchrun_jfb_train_trains_with_two_processes_and_resumes(tmp_path):
    """Both processes join one Gloo group: one start message (rank 0 logs) counting 2 processes
    and a global batch of 2 x data.batch_size, one summary line, the checkpoints written by rank
    0 with world_size 2; ``--resume`` with more steps goes on from the last step."""
    out = tmp_path / "run"
    done = _torchrun_train(out, "--set", "train.steps=3")
    summaries = [line for line in done.stdout.splitlines() if line.startswith("steps=")]
    assert len(summaries) == 1 and "global_step=4" in summaries[0], done.stdout
    assert "stopped=completed" in summaries[0]
    info = load_checkpoint(out / "last.safetensors")
    assert info["step"] == 4 and info["extra"]["world_size"] == 2
    assert load_checkpoint(out / "best.safetensors")["step"] == 4
    recs = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    starts = [r["message"] for r in recs if r["kind"] == "event"
              and r["message"].startswith("training ")]
    assert len(starts) == 1 and "x2" in starts[0] and "batch 4" in starts[0]
    assert [r["step"] for r in recs if r["kind"] == "train"] == [1, 2, 3, 4]

    _torchrun_train(out, "--set", "train.steps=5", "--resume")
    info = load_checkpoint(out / "last.safetensors")
    assert info["step"] == 6 and info["extra"]["world_size"] == 2
    recs = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    assert [r["step"] for r in recs if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
