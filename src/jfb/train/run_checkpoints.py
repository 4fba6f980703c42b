"""A training run's checkpoints: ``last.safetensors`` to resume from, ``best.safetensors`` to use.

In ``out_dir``: ``config.json`` (the run's config), ``last.safetensors`` (model, optimiser,
scheduler and global RNG states, step and the trainer's ``extra``: what an exact resume needs;
rewritten at every validation point and when the run stops early), ``best.safetensors`` (the
weights of the best validation PSNR so far, with the same ``extra``) and, for runs that
pre-train, ``pretrained.safetensors`` (the model as pre-training left it: for DE-ADMM with a
denoising pre-training, plug-and-play ADMM with that denoiser). Only rank 0 writes; every
rank reads ``last`` back on resume. The file format is :mod:`jfb.train.checkpoint`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from jfb.atomic import write_bytes
from jfb.config import Config
from jfb.errors import CheckpointError
from jfb.train.checkpoint import load_checkpoint, save_checkpoint

__all__ = ["BEST", "LAST", "PRETRAINED", "RunCheckpoints"]

LAST = "last.safetensors"
BEST = "best.safetensors"
PRETRAINED = "pretrained.safetensors"


class RunCheckpoints:
    """The checkpoints of the run of ``config`` in ``out_dir``; ``is_main``: this process
    writes (rank 0), else every write is skipped."""

    def __init__(self, out_dir: Path, config: Config, *, is_main: bool) -> None:
        self.out_dir = out_dir
        self.config = config
        self.is_main = is_main

    @property
    def last(self) -> Path:
        return self.out_dir / LAST

    def write_config(self) -> None:
        """Create ``out_dir`` and write ``config.json`` (as a run starts, not on resume)."""
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_bytes(self.out_dir / "config.json", (self.config.to_json() + "\n").encode())

    def save_last(self, *, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                  step: int, extra: dict[str, Any]) -> Path:
        """Write the resumable ``last.safetensors`` (with the global RNG states); its path."""
        if self.is_main:
            save_checkpoint(self.last, model=model, optimizer=optimizer, scheduler=scheduler,
                            step=step, config=self.config.to_dict(), extra=extra, rng=True)
        return self.last

    def save_best(self, *, model: nn.Module, step: int, extra: dict[str, Any]) -> None:
        """Write ``best.safetensors``: the weights, step and ``extra``."""
        self._save_weights(BEST, model=model, step=step, extra=extra)

    def save_pretrained(self, *, model: nn.Module, step: int, extra: dict[str, Any]) -> None:
        """Write ``pretrained.safetensors``: the weights as pre-training ends, step, ``extra``."""
        self._save_weights(PRETRAINED, model=model, step=step, extra=extra)

    def _save_weights(self, name: str, *, model: nn.Module, step: int,
                      extra: dict[str, Any]) -> None:
        if self.is_main:
            save_checkpoint(self.out_dir / name, model=model, step=step,
                            config=self.config.to_dict(), extra=extra, rng=False)

    def load_last(self, *, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                  restore_rng: bool) -> dict[str, Any]:
        """Load ``last.safetensors`` into the objects (and the global RNG states when
        ``restore_rng``); returns :func:`~jfb.train.checkpoint.load_checkpoint`'s dict. Raises
        CheckpointError when there is none, or it was written for another model config."""
        if not self.last.exists():
            raise CheckpointError(f"cannot resume: no {LAST} in {self.out_dir}")
        return load_checkpoint(self.last, model=model, optimizer=optimizer, scheduler=scheduler,
                               expected_config=self.config.to_dict(), restore_rng=restore_rng)
