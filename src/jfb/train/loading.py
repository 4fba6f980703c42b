"""Training and validation batches: epoch-permuted, sharded over ranks, each item read seeded.

Global step ``g`` consumes global batch ``g``: epoch ``g // per_epoch``, whose order is
:func:`~jfb.train.seeding.epoch_permutation` of ``(seed, epoch)``, and rank ``r`` of ``N`` reads
the slice ``[r B, (r + 1) B)`` of it (B = per-rank batch). Item ``i`` of the epoch is read with
the global RNGs seeded by ``(seed, epoch, i)`` (:class:`SeededItems`), so its random noise and
crop are the same whether the run was resumed, how many DataLoader workers read it and how many
processes share the batch. A dataset with a ``set_epoch(epoch)`` method, or wrapping one, is told
the epoch before it is read. Workers ignore stop signals (:mod:`jfb.train.signals`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from jfb.errors import DataError
from jfb.train.distributed import rank_slice
from jfb.train.seeding import epoch_permutation, mix_seed, seeded_global_rngs
from jfb.train.signals import ignore_stop_signals, start_loader

__all__ = [
    "LoaderOptions",
    "SeededItems",
    "TrainBatches",
    "first_items",
    "set_epoch",
    "validation_batches",
]


class SeededItems(Dataset):
    """Dataset view whose items are ``(index, seed)`` pairs: ``dataset[index]`` is read with the
    global RNGs seeded by ``seed`` (and restored after), so its random draws are a function of
    the seed, not of the process, worker or history that reads it."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with seeded_global_rngs(seed):
            return self.dataset[index]


def set_epoch(dataset: Any, epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on the dataset and the datasets it wraps, where defined."""
    seen: set[int] = set()
    stack = [dataset]
    while stack:
        d = stack.pop()
        if d is None or id(d) in seen:
            continue
        seen.add(id(d))
        if callable(getattr(d, "set_epoch", None)):
            d.set_epoch(epoch)
        for attr in ("dataset", "clean", "base"):
            inner = getattr(d, attr, None)
            if isinstance(inner, Dataset):
                stack.append(inner)


def first_items(dataset: Dataset, n: int | None) -> Dataset:
    """The first ``n`` items of ``dataset`` (all of them when ``n`` is None or too large)."""
    if n is None or n >= len(dataset):  # type: ignore[arg-type]
        return dataset
    return Subset(dataset, range(n))


@dataclass(frozen=True)
class LoaderOptions:
    """How the DataLoaders read: ``num_workers`` worker processes (which ignore stop signals),
    ``collate_fn`` to batch items, and pinned memory (for CUDA)."""

    num_workers: int = 0
    collate_fn: Callable[[list[Any]], Any] = default_collate
    pin_memory: bool = False

    def kwargs(self) -> dict[str, Any]:
        """The matching keyword arguments of ``DataLoader``."""
        return {
            "num_workers": self.num_workers,
            "collate_fn": self.collate_fn,
            "pin_memory": self.pin_memory,
            "worker_init_fn": ignore_stop_signals if self.num_workers > 0 else None,
        }


class TrainBatches:
    """Rank ``rank``'s share of the global training batches (``batch_size`` per rank, so
    ``batch_size * world_size`` items per global step; the last partial batch of an epoch is
    dropped). Raises DataError when the set holds less than one global batch."""

    def __init__(self, dataset: Dataset, *, seed: int, batch_size: int, rank: int = 0,
                 world_size: int = 1, options: LoaderOptions | None = None) -> None:
        self.dataset, self.seed = dataset, seed
        self.rank, self.world_size = rank, world_size
        self.options = options or LoaderOptions()
        self.global_batch = batch_size * world_size
        n = len(dataset)  # type: ignore[arg-type]
        if n < self.global_batch:
            raise DataError(
                f"the training set has {n} items, fewer than one batch of {self.global_batch} "
                f"(data.batch_size={batch_size} x {world_size} processes)"
            )
        self.per_epoch = n // self.global_batch

    def from_step(self, start: int) -> Iterator[Any]:
        """The batches of global steps ``start``, ``start + 1``, ... (forever)."""
        items = SeededItems(self.dataset)
        n = len(self.dataset)  # type: ignore[arg-type]
        step = start
        while True:
            epoch, offset = divmod(step, self.per_epoch)
            perm = epoch_permutation(n, self.seed, epoch)
            keys = []
            for b in range(offset, self.per_epoch):
                pos = range(b * self.global_batch, (b + 1) * self.global_batch)
                glob = [(perm[i], mix_seed(self.seed, epoch, i)) for i in pos]
                keys.append(rank_slice(glob, self.rank, self.world_size))  # type: ignore[arg-type]
            set_epoch(self.dataset, epoch)
            loader = DataLoader(
                items,
                batch_sampler=keys,
                generator=torch.Generator().manual_seed(mix_seed(self.seed, epoch, offset)),
                **self.options.kwargs(),
            )
            for batch in start_loader(loader):
                yield batch
                step += 1


def validation_batches(dataset: Dataset, *, batch_size: int, rank: int = 0, world_size: int = 1,
                       options: LoaderOptions | None = None) -> Iterator[Any]:
    """Rank ``rank``'s shard of the validation set (items ``rank, rank + N, ...``), in order, in
    batches of ``batch_size``."""
    n = len(dataset)  # type: ignore[arg-type]
    shard = Subset(dataset, range(rank, n, world_size))
    options = options or LoaderOptions()
    return start_loader(DataLoader(shard, batch_size=batch_size, shuffle=False, **options.kwargs()))
