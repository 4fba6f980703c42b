"""Data-parallel training under ``torchrun`` (DDP): set-up, sharding and small collectives.

``torchrun --nproc_per_node N -m jfb train ...`` (README, "Training on several GPUs or
machines") sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`init_distributed`, which ``jfb train`` calls first, reads them and joins the process group
(NCCL on CUDA, Gloo on CPU). Without those variables everything here degrades to a single
process (rank 0 of 1) and the collectives are identities.

Sharding: at every step the trainer takes a *global* batch of ``B * world_size`` indices from the
epoch's permutation (a function of (seed, epoch) only) and rank r keeps the slice
``[r*B, (r+1)*B)``. DDP averages the gradients, so N processes with per-rank batch B compute the
same update as one process with batch N*B, and resuming at step s skips exactly the s global
batches already consumed, whatever the number of processes.
"""

from __future__ import annotations

import datetime
import gc
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistInfo",
    "all_reduce_sum",
    "any_across_ranks",
    "barrier",
    "cleanup_distributed",
    "get_dist_info",
    "init_distributed",
    "rank_slice",
    "wrap_ddp",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size`` (``local_rank`` on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def init_distributed(device: str = "auto", *, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group described by torchrun's environment variables.

    ``device``: "cuda" -> NCCL (and ``torch.cuda.set_device(LOCAL_RANK)``), "cpu" -> Gloo,
    "auto" -> NCCL when CUDA is available. With ``WORLD_SIZE`` unset or 1 nothing is
    initialised and rank 0 of 1 is returned. Idempotent.
    """
    if dist.is_available() and dist.is_initialized():
        return get_dist_info()
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    if world <= 1:
        return DistInfo(rank=0, world_size=1, local_rank=0, backend=None)
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is outside [0, WORLD_SIZE={world})")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but CUDA is not available")
        torch.cuda.set_device(local_rank)
    backend = "nccl" if use_cuda else "gloo"
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, backend=backend)


def get_dist_info() -> DistInfo:
    """This process's rank/world size (rank 0 of 1 when no process group is initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                    local_rank=_env_int("LOCAL_RANK", dist.get_rank()),
                    backend=str(dist.get_backend()))


def cleanup_distributed() -> None:
    """Leave the process group (no-op when none), after a barrier: no rank tears down its
    connections (rank 0 also hosts the rendezvous store) while another still uses them.

    Drop every ``DistributedDataParallel`` wrapper (a finished ``Trainer``) before calling
    this: a Gloo DDP reducer freed after the group is destroyed makes its process abort now and
    then ("terminate called without an active exception", 3 in 60 two-rank runs on a loaded
    2-core machine; 0 in 160 with the wrapper freed first). The ``gc.collect()`` here frees the
    wrappers that only reference cycles still hold.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def rank_slice(global_batch: Sequence[int], rank: int, world_size: int) -> list[int]:
    """Rank ``rank``'s contiguous share of a global batch whose size is a multiple of the world.

    >>> rank_slice([7, 3, 5, 1], 1, 2)
    [5, 1]
    """
    n = len(global_batch)
    if n % world_size:
        raise ValueError(f"global batch of {n} does not split over {world_size} processes")
    per = n // world_size
    return list(global_batch[rank * per : (rank + 1) * per])


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(model)`` when a process group is up (else ``model``).

    Rank 0's parameters and buffers are broadcast to all ranks on construction, so every rank
    starts from the same weights whatever its local initialisation was.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return model
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return nn.parallel.DistributedDataParallel(model, device_ids=[index],
                                                   output_device=index)
    return nn.parallel.DistributedDataParallel(model)


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over ranks (in place; returned for chaining). Identity in one process."""
    if _active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_across_ranks(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is True on at least one rank (every rank gets the same answer)."""
    if not _active():
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier() -> None:
    if _active():
        dist.barrier()


def all_gather_objects(obj: object) -> list[object]:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` in one process)."""
    if not _active():
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: object, src: int = 0) -> object:
    """Rank ``src``'s ``obj`` on every rank."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
