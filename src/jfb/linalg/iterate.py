"""The per-sample iteration loop of the classical solvers: run a whole update on the samples still
active, and freeze each sample once its own change is small enough.

Its stop measure, :func:`relative_change`, is the engine's relative residual
(:func:`jfb.deq.relative_residual`: ||T(x) - x|| / (||T(x)|| + eps), eps = 1e-8, stop when < tol)
taken on the variable a solver outputs, with no eps (0 when nothing changed) and a non-strict
test: a sample stops once ||x_{k+1} - x_k|| <= tol ||x_{k+1}||. That is the rule the classical
solvers document (their ``tol``); it is scale-free, and it lets tol = 0 mean "run max_iter
iterations unless a sample stops changing at all", which ``jfb compare`` asks of PnP and the
tests check. The engine (:mod:`jfb.deq.solvers`) keeps its own loop: it freezes samples the same
way but iterates on the whole batch (Anderson's memory, the autograd of the Unrolled strategy),
applying T to the unfinished samples only from one convergence check to the next.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["Step", "iterate_per_sample", "relative_change"]

#: step(state, consts) -> (new state, per-sample change Tensor[N]) on the active samples.
Step = Callable[[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]],
                tuple[tuple[torch.Tensor, ...], torch.Tensor]]


def relative_change(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Per-sample ||new - old|| / ||new|| (0 when new == old) -> Tensor[N]."""
    n = new.shape[0]
    num = torch.linalg.vector_norm((new - old).reshape(n, -1), dim=1)
    den = torch.linalg.vector_norm(new.reshape(n, -1), dim=1)
    tiny = torch.finfo(new.dtype).tiny
    return torch.where(num == 0, torch.zeros_like(num), num / torch.clamp(den, min=tiny))


def iterate_per_sample(
    step: Step,
    state: tuple[torch.Tensor, ...],
    consts: tuple[torch.Tensor, ...],
    *,
    max_iter: int,
    tol: float,
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Run ``state <- step(state, consts)`` up to ``max_iter`` times, freezing each sample once the
    relative change that ``step`` reports for it is <= ``tol``.

    ``step`` sees only the still-active samples (every tensor of ``state`` and ``consts`` is
    indexed on its first, batch, dimension), so a sample's result is the same whether it is solved
    alone or in a batch. Returns (state, per-sample iteration counts as LongTensor[N]).
    """
    n = state[0].shape[0]
    device = state[0].device
    active = torch.ones(n, dtype=torch.bool, device=device)
    iters = torch.zeros(n, dtype=torch.long, device=device)
    state = tuple(s.clone() for s in state)
    for _ in range(max_iter):
        if bool(active.all()):
            new_state, change = step(state, consts)
            state = tuple(new_state)
            idx = None
        else:
            idx = torch.nonzero(active).flatten()
            sub = tuple(s.index_select(0, idx) for s in state)
            sub_consts = tuple(c.index_select(0, idx) if c.shape[0] == n else c for c in consts)
            new_sub, change = step(sub, sub_consts)
            state = tuple(s.index_copy(0, idx, ns) for s, ns in zip(state, new_sub, strict=True))
        if idx is None:
            iters = iters + 1
            done = change <= tol
            active = ~done
        else:
            iters = iters.index_add(0, idx, torch.ones_like(idx))
            active = active.index_put((idx,), change > tol)
        if not bool(active.any()):
            break
    return state, iters
