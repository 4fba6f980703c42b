"""Random streams as functions of the seed: seed mixing, the epoch order, the global RNGs.

Every random draw of training is a function of ``train.seed`` and of where it happens: the order
of an epoch of ``(seed, epoch)`` (:func:`epoch_permutation`), an item's draws of
``(seed, epoch, position)`` (the global RNGs seeded around its read, :func:`seeded_global_rngs`),
a step's side randomness (diagnostics, pre-training noise) of ``(seed, step, salt)``
(:func:`step_generator`), never of the process, worker or history that computes it.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch

__all__ = [
    "epoch_permutation",
    "mix_seed",
    "seed_global_rngs",
    "seeded_global_rngs",
    "step_generator",
]

_MASK64 = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """A well-mixed 63-bit seed from integers (splitmix64 chain); stable across runs/platforms."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & _MASK64)) & _MASK64
        h = (h + 0x9E3779B97F4A7C15) & _MASK64
        z = h
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        h = z ^ (z >> 31)
    return h & ((1 << 63) - 1)


def epoch_permutation(n: int, seed: int, epoch: int) -> list[int]:
    """The order of the ``n`` training items in ``epoch``: a permutation seeded by (seed, epoch)."""
    g = torch.Generator().manual_seed(mix_seed(seed, epoch, 0x5A3D))
    return torch.randperm(n, generator=g).tolist()


def step_generator(seed: int, step: int, salt: int) -> torch.Generator:
    """A CPU generator seeded by (seed, step, salt): a step's side randomness (diagnostics,
    pre-training noise) never touches the global RNGs."""
    return torch.Generator().manual_seed(mix_seed(seed, step, salt))


def seed_global_rngs(seed: int) -> None:
    """Seed the global RNGs of python, numpy (legacy) and torch (CPU) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))  # noqa: NPY002 - datasets may draw from the legacy RNG
    torch.default_generator.manual_seed(seed)


@contextlib.contextmanager
def seeded_global_rngs(seed: int) -> Iterator[None]:
    """Seed python/numpy/torch-CPU global RNGs for the block, then restore their states."""
    py = random.getstate()
    npy = np.random.get_state()  # noqa: NPY002
    th = torch.get_rng_state()
    try:
        seed_global_rngs(seed)
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)  # noqa: NPY002
        torch.set_rng_state(th)
