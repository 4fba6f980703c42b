"""The divergence guard: which steps are bad, when to roll back, and the state rolled back to.

A step is *bad* when its loss or gradient is NaN/Inf, or when the solve of an implicit model
diverged (:func:`solver_divergence`): a final relative residual NaN/Inf or above
``diverge_residual``, or more than a fraction ``diverge_unconverged`` of the batch stopped at the
iteration cap. A bad step makes no update. A diverged solve (with rollback on), or
``max_bad_steps`` bad steps in a row, *rolls back* to the :class:`Snapshot` of the last good
checkpoint, with the learning rate times ``rollback_lr_factor`` for the rest of the run; when
``max_rollbacks`` rollbacks are used up (at once if it is 0), the next trigger is fatal
(:class:`TrainingDivergedError`). :class:`DivergenceGuard` counts and decides; the trainer acts.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from jfb.errors import SolverError
from jfb.train.checkpoint import capture_rng_state, restore_rng_state

__all__ = [
    "DivergenceGuard",
    "Snapshot",
    "TrainingDivergedError",
    "solver_divergence",
    "step_verdict",
]


class TrainingDivergedError(SolverError):
    """Training diverged beyond repair: ``max_bad_steps`` bad steps in a row or a diverged solve,
    with no rollback left (``max_rollbacks``)."""


def solver_divergence(
    stats: Any, *, max_residual: float | None, max_unconverged: float | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Did a batched solve diverge? From ``stats`` (``SolverStats`` or any object with
    per-sample ``residual`` / ``converged``; a missing field is not checked).

    Returns 0-d float tensors on the stats' device (no host sync): ``blown`` = 1 when some
    sample's final relative residual is NaN/Inf or > ``max_residual``, ``capped`` = 1 when the
    fraction f of samples that did not converge is > ``max_unconverged``; and the worst residual
    (NaN/Inf -> inf) and f, for the message. A threshold of None switches its test off.
    """
    residual = getattr(stats, "residual", None)
    converged = getattr(stats, "converged", None)
    like = residual if residual is not None else converged
    zero = torch.zeros((), device=like.device if like is not None else None)
    worst, frac = zero, zero
    if residual is not None and residual.numel():
        worst = residual.detach().float().nan_to_num(nan=math.inf).max()
    if converged is not None and converged.numel():
        frac = (~converged.detach().bool()).float().mean()
    blown = (worst > max_residual).float() if max_residual is not None else zero
    capped = (frac > max_unconverged).float() if max_unconverged is not None else zero
    return blown, capped, worst, frac


def _step_problem(
    bad_loss: bool, bad_grad: bool, blown: bool, capped: bool, worst: float, unconverged: float,
    tc: Any,
) -> str | None:
    """What is wrong with a step, in words (None: nothing); a diverged solve is named first.
    ``tc``: the train config, for the thresholds it names."""
    if blown:
        return (
            f"solver residual blow-up (max relative residual {worst:.3g} > "
            f"train.diverge_residual={tc.diverge_residual:g})"
        )
    if capped:
        return (
            f"solver stopped at its iteration cap for {100 * unconverged:.0f}% of the batch "
            f"(> train.diverge_unconverged={tc.diverge_unconverged:g})"
        )
    if bad_loss:
        return "non-finite loss"
    if bad_grad:
        return "non-finite gradient"
    return None


def step_verdict(
    total: torch.Tensor, grad_norm: torch.Tensor, *, stop: bool,
    divergence: tuple[torch.Tensor, ...], tc: Any, distributed: bool,
) -> tuple[str | None, bool, bool]:
    """A step's verdict, the same on every rank (each flag is a max over ranks): what is wrong
    with it, in words (None: nothing), whether to stop (``stop`` on some rank), and whether its
    solve diverged. ``total``: the loss minimised; ``divergence``: :func:`solver_divergence`'s
    four tensors; ``tc``: the train config. One host sync."""
    blown, capped, worst, unconverged = divergence
    dev = total.device
    flags = torch.stack(
        [
            (~torch.isfinite(total.detach())).float(),
            (~torch.isfinite(grad_norm.detach().float())).float(),
            torch.tensor(float(stop), device=dev),
            blown.to(dev),
            capped.to(dev),
            worst.to(dev),
            unconverged.to(dev),
        ]
    )
    if distributed:
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
    values = flags.tolist()
    bad_loss, bad_grad, stop_any, is_blown, is_capped = (bool(v) for v in values[:5])
    problem = _step_problem(bad_loss, bad_grad, is_blown, is_capped, values[5], values[6], tc)
    return problem, stop_any, is_blown or is_capped


def _cpu_copy(obj: Any) -> Any:
    """A deep copy of nested dicts/lists with every tensor cloned to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_cpu_copy(v) for v in obj)
    return copy.deepcopy(obj)


@dataclass(frozen=True)
class Snapshot:
    """The rollback target: step, model, optimiser and scheduler states (CPU copies) and, in one
    process, the global RNG states (None under DDP, where they are re-derived from the step)."""

    step: int
    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any] | None

    @classmethod
    def take(cls, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: Any, *, rng: bool) -> Snapshot:
        """The current state, copied to the CPU (with the global RNG states when ``rng``)."""
        return cls(
            step=step,
            model=_cpu_copy(model.state_dict()),
            optimizer=_cpu_copy(optimizer.state_dict()),
            scheduler=_cpu_copy(scheduler.state_dict()),
            rng=capture_rng_state() if rng else None,
        )

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> int:
        """Load the states back (and the RNG states, if kept); returns the step."""
        model.load_state_dict(self.model)
        optimizer.load_state_dict(copy.deepcopy(self.optimizer))
        scheduler.load_state_dict(copy.deepcopy(self.scheduler))
        if self.rng is not None:
            restore_rng_state(self.rng)
        return self.step


#: The guard's counters and their start values; checkpoints save them (in ``extra``) so that a
#: resume goes on exactly.
_COUNTERS: dict[str, int | float] = {
    "bad_streak": 0, "skipped_steps": 0, "rollbacks": 0, "lr_scale": 1.0,
}


class DivergenceGuard:
    """Counts bad steps and rollbacks and decides when to roll back (see the module docs).

    ``lr_scale`` is the product of ``rollback_lr_factor`` over the rollbacks so far; ``snapshot``
    the rollback target, one copy, replaced at each checkpoint.
    """

    def __init__(self, *, max_bad_steps: int, max_rollbacks: int,
                 rollback_lr_factor: float) -> None:
        self.max_bad_steps = max_bad_steps
        self.max_rollbacks = max_rollbacks
        self.rollback_lr_factor = rollback_lr_factor
        self.bad_streak, self.skipped_steps, self.rollbacks = 0, 0, 0
        self.lr_scale = 1.0
        self.snapshot: Snapshot | None = None

    def skip(self, problem: str, step: int, solver_diverged: bool) -> tuple[str, str | None]:
        """Count a skipped step: its message, and the cause of a rollback now due (None: none),
        on a diverged solve when rollback is on or after ``max_bad_steps`` in a row."""
        self.bad_streak += 1
        self.skipped_steps += 1
        message = (
            f"step {step}: {problem}, update skipped "
            f"({self.bad_streak}/{self.max_bad_steps} in a row)"
        )
        if solver_diverged and self.max_rollbacks > 0:
            return message, problem
        if self.bad_streak >= self.max_bad_steps:
            return message, (
                f"{self.bad_streak} consecutive steps with a NaN/Inf loss or gradient or a "
                f"diverged solve (train.max_bad_steps={self.max_bad_steps})"
            )
        return message, None

    def exhausted(self, cause: str, step: int) -> str | None:
        """What made training diverge beyond repair, when no rollback is left; else None."""
        if self.rollbacks < self.max_rollbacks:
            return None
        used = (
            f"after {self.rollbacks} rollbacks (train.max_rollbacks={self.max_rollbacks})"
            if self.max_rollbacks
            else "(rollback off: train.max_rollbacks=0)"
        )
        return f"{cause} at step {step} {used}"

    def count_rollback(self) -> None:
        """One more rollback: the learning rate is scaled down and the streak starts over."""
        self.rollbacks += 1
        self.lr_scale *= self.rollback_lr_factor
        self.bad_streak = 0

    def rollback_message(self, cause: str, detected: int, step: int, lr: float) -> str:
        """The log line of a rollback detected at step ``detected`` that went back to ``step``."""
        return (
            f"step {detected}: {cause}; rolled back to step {step} (rollback "
            f"{self.rollbacks}/{self.max_rollbacks}), learning rate x{self.rollback_lr_factor:g} "
            f"-> {lr:.3g}"
        )

    def state(self) -> dict[str, Any]:
        """The counters, for a checkpoint's ``extra``."""
        return {key: getattr(self, key) for key in _COUNTERS}

    def load_state(self, extra: dict[str, Any]) -> None:
        """The counters from a checkpoint's ``extra`` (missing ones at their start values)."""
        for key, start in _COUNTERS.items():
            setattr(self, key, type(start)(extra.get(key, start)))
