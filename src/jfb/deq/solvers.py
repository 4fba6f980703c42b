"""Batched fixed-point solvers for x = T(x), with per-sample stopping and freezing.

Every solver (Picard, Anderson, Broyden) stops a sample once its relative residual
r_i = ||T(x)_i - x_i|| / (||T(x)_i|| + eps) falls below ``tol``; the sample is then frozen at
T(x)_i while the rest of the batch iterates. Freezing is done on the device with ``torch.where``
(no host sync); whether every sample is done is checked every ``check_every`` iterations (one
host sync each time). With autograd enabled the code is out-of-place, so the solve is
differentiable (the ``Unrolled`` strategy uses that); without it, Anderson and Broyden keep their
history in buffers allocated once per solve.

They know nothing of images: ``x`` is any tensor whose first dimension is the batch, and T must act
on each sample alone (sample i of T(x) depends only on sample i of x).

Compaction: when the map is a :class:`SubsetMap` (it can be applied to a subset of the batch) and
the solve runs without autograd, each convergence check that finds samples newly finished cuts
the map down to the unfinished ones, so a finished sample stops costing applications of T. The
iterates stay full-batch (finished rows are carried unchanged), so the result is the same.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from jfb.deq.stats import SolverStats
from jfb.errors import SolverError, check_choice, check_int, check_number, check_positive

__all__ = ["Anderson", "Broyden", "Map", "Picard", "Solver", "SubsetMap", "per_sample_norm",
           "relative_residual"]

Map = Callable[[torch.Tensor], torch.Tensor]


class SubsetMap:
    """A map x -> f(x) on batches that can also be applied to part of a batch.

    ``restrict(idx)`` (idx: a 1-D tensor of sample indices into the full batch) returns the map
    g with g(x[idx]) == f(x)[idx]; e.g. for T(x; y), ``lambda idx: lambda s: T(s, y[idx])``.
    Solvers use it to apply f to the samples still iterating only (see the module docstring).
    """

    def __init__(self, f: Map, restrict: Callable[[torch.Tensor], Map]) -> None:
        self.f, self.restrict = f, restrict

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x)


_ON_FAILURE = ("ignore", "warn", "raise")


def per_sample_norm(v: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of each sample: ||v_i||_2 over all non-batch dimensions -> Tensor[N]."""
    return torch.linalg.vector_norm(v.reshape(v.shape[0], -1), dim=1)


def relative_residual(fx: torch.Tensor, x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """r_i = ||T(x)_i - x_i|| / (||T(x)_i|| + eps), the stopping quantity -> Tensor[N]."""
    return per_sample_norm(fx - x) / (per_sample_norm(fx) + eps)


def _batch_where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """where(mask_i, a_i, b_i) with a per-sample mask broadcast over the other dimensions."""
    return torch.where(mask.view(-1, *([1] * (a.dim() - 1))), a, b)


@dataclass
class Solver:
    """A batched fixed-point solver: the settings every solver shares and the per-sample loop
    (module docstring); a subclass gives the update rule (``_step``), as :class:`Picard`,
    :class:`Anderson` and :class:`Broyden` do.

    Args:
        tol: per-sample relative-residual tolerance in training.
        max_iter: most applications of T per sample in training.
        eval_tol: tolerance in evaluation (default: ``tol``).
        eval_max_iter: budget in evaluation (default: ``max_iter``); usually larger.
        check_every: test "all samples done" (a host sync) every this many iterations.
        compact: at those tests, apply a :class:`SubsetMap` to the unfinished samples only
            (no-grad solves; a plain map is always applied to the whole batch).
        record_trace: keep every iteration's residuals in ``stats.trace``.
        on_failure: what a sample that did not converge or went NaN/Inf does:
            "ignore" (reported in the stats), "warn", or "raise" (SolverError).
        eps: the epsilon of the relative residual.
        train_caps: truncated training solves: each training solve stops after a number of
            iterations drawn uniformly from ``train_caps`` and ``max_iter`` (torch's global
            RNG, one draw per solve). With JFB, the gradient taken at a truncated iterate
            teaches T to reach the answer in few iterations; the full solves keep the fixed
            point in view (docs/RESULTS.md, "Equal cost").
    """

    tol: float = 1e-4
    max_iter: int = 50
    eval_tol: float | None = None
    eval_max_iter: int | None = None
    check_every: int = 1
    compact: bool = True
    record_trace: bool = False
    on_failure: str = "ignore"
    eps: float = 1e-8
    train_caps: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.train_caps = tuple(self.train_caps)
        for cap in self.train_caps:
            check_int("train_caps", cap, minimum=1)
        for name in ("tol", "eval_tol"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name), type_error=TypeError)
        for name in ("max_iter", "eval_max_iter", "check_every"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), minimum=1)
        check_choice("on_failure", self.on_failure, _ON_FAILURE)
        check_positive("eps", self.eps, type_error=TypeError)

    def budget(self, training: bool) -> tuple[float, int]:
        """(tol, max_iter) for a training or an evaluation solve."""
        if training:
            pick = int(torch.randint(len(self.train_caps) + 1, ())) if self.train_caps else 0
            return self.tol, (self.train_caps + (self.max_iter,))[pick]
        tol = self.tol if self.eval_tol is None else self.eval_tol
        max_iter = self.max_iter if self.eval_max_iter is None else self.eval_max_iter
        return tol, max_iter

    def solve(
        self, f: Map, x0: torch.Tensor, *, training: bool = True
    ) -> tuple[torch.Tensor, SolverStats]:
        """Iterate from ``x0`` to a fixed point of ``f``; returns (x*, stats)."""
        if x0.dim() < 1 or x0.shape[0] == 0:
            raise ValueError(
                f"x0 must have a non-empty batch dimension, got shape {tuple(x0.shape)}"
            )
        tol, max_iter = self.budget(training)
        n = x0.shape[0]
        state = _Tracker(n, x0.device, tol, self.eps, self.record_trace)
        restrict = getattr(f, "restrict", None)
        compact = self.compact and callable(restrict) and not torch.is_grad_enabled()
        x = x0
        memory: dict = {}
        g, idx = f, None  # the map applied, and the samples it covers (None: all)
        for k in range(max_iter):
            if idx is None:
                fx = g(x)
            else:  # finished rows carry x unchanged: a zero residual, and they stay frozen
                fx = x.index_copy(0, idx, g(x.index_select(0, idx)))
            if fx.shape != x.shape:
                raise ValueError(
                    f"the map changed the shape of its input: {tuple(x.shape)} -> {tuple(fx.shape)}"
                )
            res = relative_residual(fx, x, self.eps)
            done_now = state.update(res)
            x_next = self._step(x, fx, memory)
            # Samples that converged now freeze at T(x); frozen ones keep their value.
            x = _batch_where(state.active_before, _batch_where(done_now, fx, x_next), x)
            if (k + 1) % self.check_every != 0:
                continue
            if not compact:
                if not bool(state.active.any()):
                    break
                continue
            n_active = int(state.active.sum())  # the one host sync of this check
            if n_active == 0:
                break
            if n_active < (n if idx is None else idx.numel()):
                idx = state.active.nonzero().squeeze(1)
                g = restrict(idx)
        stats = state.finish(max_iter, tol)
        self._report(stats)
        return x, stats

    def _step(self, x: torch.Tensor, fx: torch.Tensor, memory: dict) -> torch.Tensor:
        """The update rule: next iterate from x, T(x) and this solve's own ``memory``."""
        raise NotImplementedError

    def _report(self, stats: SolverStats) -> None:
        if self.on_failure == "ignore":
            return
        bad_nan = int(stats.nonfinite.sum())
        bad_conv = int((~stats.converged & ~stats.nonfinite).sum())
        if bad_nan == 0 and bad_conv == 0:
            return
        msg = (
            f"{type(self).__name__}: {bad_conv} of {stats.batch_size} samples did not reach "
            f"tol {stats.tol:g} in {stats.max_iter} iterations (max residual "
            f"{float(stats.residual.nan_to_num(nan=float('inf')).max()):.3g})"
        )
        if bad_nan:
            msg += f"; {bad_nan} became NaN/Inf"
        if self.on_failure == "raise":
            raise SolverError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


class _Tracker:
    """Book-keeping of per-sample activity, iteration counts and residuals."""

    def __init__(self, n: int, device: torch.device, tol: float, eps: float, trace: bool):
        self.tol = tol
        self.active = torch.ones(n, dtype=torch.bool, device=device)
        self.active_before = self.active
        self.converged = torch.zeros(n, dtype=torch.bool, device=device)
        self.nonfinite = torch.zeros(n, dtype=torch.bool, device=device)
        self.iterations = torch.zeros(n, dtype=torch.long, device=device)
        self.residual = torch.full((n,), float("inf"), device=device)
        self.trace: list[torch.Tensor] | None = [] if trace else None
        self.n_evals = 0

    def update(self, res: torch.Tensor) -> torch.Tensor:
        """Record one application of T; returns the mask of samples that converged now."""
        res = res.detach().float()
        self.n_evals += 1
        active = self.active
        self.active_before = active
        self.iterations = self.iterations + active.long()
        self.residual = torch.where(active, res, self.residual)
        finite = torch.isfinite(res)
        done_now = active & finite & (res < self.tol)
        self.converged = self.converged | done_now
        self.nonfinite = self.nonfinite | (active & ~finite)
        self.active = active & ~done_now & finite
        if self.trace is not None:
            self.trace.append(res)
        return done_now

    def finish(self, max_iter: int, tol: float) -> SolverStats:
        trace = torch.stack(self.trace) if self.trace else None
        return SolverStats(
            iterations=self.iterations,
            residual=self.residual,
            converged=self.converged,
            nonfinite=self.nonfinite,
            n_evals=self.n_evals,
            tol=tol,
            max_iter=max_iter,
            trace=trace,
        )


@dataclass
class Picard(Solver):
    """Krasnoselskii-Mann iteration x_{k+1} = (1 - alpha) x_k + alpha T(x_k).

    ``damping`` is alpha in (0, 1]; alpha = 1 is plain Picard iteration. For a nonexpansive T,
    alpha < 1 still converges to a fixed point where plain Picard may cycle.
    """

    damping: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("damping", self.damping, low=0, high=1, low_open=True, type_error=TypeError)

    def _step(self, x: torch.Tensor, fx: torch.Tensor, memory: dict) -> torch.Tensor:
        if self.damping == 1.0:
            return fx
        return x + self.damping * (fx - x)


@dataclass
class Anderson(Solver):
    """Anderson acceleration (type II) with memory ``m``.

    With residuals g_j = T(x_j) - x_j of the last n <= m iterates, solve per sample
        alpha = argmin ||sum_j alpha_j g_j||^2 + lam * s * ||alpha||^2  s.t.  sum_j alpha_j = 1,
    (s = ||g_newest||^2 makes ``lam`` scale-free and keeps it in proportion to the residuals of
    the current iterate, not to the older, larger ones) by its bordered linear system, then
        x_{k+1} = beta * sum_j alpha_j T(x_j) + (1 - beta) * sum_j alpha_j x_j.
    A sample whose small system is singular or gives non-finite weights falls back to the
    damped Picard step x + beta (T(x) - x) for that iteration.
    """

    m: int = 5
    lam: float = 1e-4
    beta: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("m", self.m, minimum=1)
        check_number("lam", self.lam, low=0, type_error=TypeError)
        check_number("beta", self.beta, low=0, high=1, low_open=True, type_error=TypeError)

    def _step(self, x: torch.Tensor, fx: torch.Tensor, memory: dict) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return self._step_in_place(x, fx, memory)
        n_batch = x.shape[0]
        keep = self.m - 1  # history kept besides the newest pair
        xs_hist = memory.get("xs", [])[-keep:] if keep else []
        fs_hist = memory.get("fs", [])[-keep:] if keep else []
        memory["xs"] = [*xs_hist, x.reshape(n_batch, -1)]
        memory["fs"] = [*fs_hist, fx.reshape(n_batch, -1)]
        if len(memory["xs"]) == 1:
            return x + self.beta * (fx - x) if self.beta != 1.0 else fx
        xs = torch.stack(memory["xs"], dim=1)  # (N, n, D)
        fs = torch.stack(memory["fs"], dim=1)
        g = fs - xs
        gram = torch.bmm(g, g.transpose(1, 2)).double()  # (N, n, n), solved in float64
        alpha = _anderson_weights(gram, self.lam)  # (N, n)
        ok = torch.isfinite(alpha).all(dim=1)
        last = torch.zeros_like(alpha)
        last[:, -1] = 1.0
        alpha = torch.where(ok[:, None], alpha, last).to(x.dtype)
        mixed = torch.bmm(alpha[:, None, :], fs).squeeze(1)
        if self.beta != 1.0:
            mixed = self.beta * mixed + (1 - self.beta) * torch.bmm(alpha[:, None, :], xs).squeeze(
                1
            )
        return mixed.reshape(x.shape)

    def _step_in_place(self, x: torch.Tensor, fx: torch.Tensor, memory: dict) -> torch.Tensor:
        """The same step without autograd, on history buffers that the solve allocates once:
        T(x_j) and g_j = T(x_j) - x_j live in rings of m slots (N, m, D), the newest written
        over the oldest, and the Gram matrix keeps its entries, so a step computes one new
        row of it instead of stacking 2m iterates and forming all of G G^T (on a 12-megapixel
        photo the stacks were 4 GiB and as many bytes copied per iteration). The weights do not
        depend on the order of the slots; sums run in another order, so iterates agree with the
        autograd path up to rounding."""
        n_batch = x.shape[0]
        xf, f = x.reshape(n_batch, -1), fx.reshape(n_batch, -1)
        if "fs" not in memory:
            memory["fs"] = f.new_empty(n_batch, self.m, f.shape[1])
            memory["gs"] = f.new_empty(n_batch, self.m, f.shape[1])
            memory["gram"] = torch.zeros(n_batch, self.m, self.m, dtype=torch.float64,
                                         device=f.device)
            memory["k"] = 0
        fs, gs, gram = memory["fs"], memory["gs"], memory["gram"]
        k = memory["k"]
        slot, n = k % self.m, min(k + 1, self.m)
        memory["k"] = k + 1
        fs[:, slot] = f
        g = gs[:, slot]
        torch.sub(f, xf, out=g)
        row = torch.bmm(gs[:, :n], g[:, :, None]).squeeze(2).double()  # <g_j, g_new>, (N, n)
        gram[:, slot, :n] = row
        gram[:, :n, slot] = row
        if n == 1:
            return x + self.beta * (fx - x) if self.beta != 1.0 else fx
        alpha = _anderson_weights(gram[:, :n, :n], self.lam, newest=slot)
        ok = torch.isfinite(alpha).all(dim=1)
        last = torch.zeros_like(alpha)
        last[:, slot] = 1.0
        alpha = torch.where(ok[:, None], alpha, last).to(x.dtype)[:, None, :]  # (N, 1, n)
        mixed = torch.bmm(alpha, fs[:, :n]).squeeze(1)
        if self.beta != 1.0:  # sum alpha_j x_j = sum alpha_j T(x_j) - sum alpha_j g_j
            mixed -= (1 - self.beta) * torch.bmm(alpha, gs[:, :n]).squeeze(1)
        return mixed.reshape(x.shape)


def _anderson_weights(gram: torch.Tensor, lam: float, newest: int = -1) -> torch.Tensor:
    """Solve [[0, 1^T], [1, GG^T + lam s I]] [nu; alpha] = [1; 0] per sample -> alpha (N, n),
    s = ||g_newest||^2 (GG^T's diagonal entry ``newest``, by default the last)."""
    n_batch, n, _ = gram.shape
    scale = gram[:, newest, newest].clamp_min(1e-300)
    eye = torch.eye(n, dtype=gram.dtype, device=gram.device)
    h = torch.zeros(n_batch, n + 1, n + 1, dtype=gram.dtype, device=gram.device)
    h[:, 0, 1:] = 1.0
    h[:, 1:, 0] = 1.0
    h[:, 1:, 1:] = gram + (lam * scale)[:, None, None] * eye
    rhs = torch.zeros(n_batch, n + 1, dtype=gram.dtype, device=gram.device)
    rhs[:, 0] = 1.0
    sol, info = torch.linalg.solve_ex(h, rhs)
    alpha = sol[:, 1:]
    return torch.where((info == 0)[:, None], alpha, torch.full_like(alpha, float("nan")))


@dataclass
class Broyden(Solver):
    """Broyden's good method on g(x) = T(x) - x = 0, line-search free, with memory ``m``.

    H ~ J_g^{-1} starts at -I (so the first step is x + g = T(x), a Picard step) and is kept as
    H = -I + sum_j u_j v_j^T. With s = x_k - x_{k-1} and dg = g_k - g_{k-1}, each iteration applies
    the rank-one update
        H <- H + (s - H dg) s^T H / (s^T H dg),
    then steps x_{k+1} = x_k - H g_k. A sample whose denominator s^T H dg is zero, tiny
    (|s^T H dg| <= 1e-12 ||s|| ||H dg||: a frozen sample, s = 0) or not finite skips the update
    for that iteration. Once ``m`` updates are held the memory restarts from H = -I (the new
    update is then made from -I). The denominators are formed in float64. The u_j and v_j live
    in buffers of m rows in a solve without autograd, and are concatenated out of place with it
    (``Unrolled``); the solver keeps no state between solves (its memory lives in the per-solve
    dict).
    """

    m: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("m", self.m, minimum=1)

    def _step(self, x: torch.Tensor, fx: torch.Tensor, memory: dict) -> torch.Tensor:
        n_batch = x.shape[0]
        xf, g = x.reshape(n_batch, -1), (fx - x).reshape(n_batch, -1)
        if "x" not in memory:  # H = -I: x - H g = T(x)
            memory.update(x=xf, g=g, k=0)
            return fx
        if memory["k"] == self.m:  # memory full: restart from H = -I
            memory["k"] = 0
        us, vs = (memory[key][:, : memory["k"]] if memory["k"] else None for key in "uv")
        s, dg = xf - memory["x"], g - memory["g"]
        h_dg, h_g = _low_rank_apply(us, vs, torch.stack([dg, g], dim=2)).unbind(2)  # H dg, H g
        ht_s = _low_rank_apply(vs, us, s[:, :, None]).squeeze(2)  # H^T s
        denom = (s.double() * h_dg.double()).sum(1)
        scale = per_sample_norm(s).double() * per_sample_norm(h_dg).double()
        ok = (torch.isfinite(denom) & (denom.abs() > 1e-12 * scale))[:, None]
        safe = torch.where(ok, denom[:, None], torch.ones_like(denom[:, None])).to(x.dtype)
        u = torch.where(ok, (s - h_dg) / safe, torch.zeros_like(g))
        v = torch.where(ok, ht_s, torch.zeros_like(g))
        for key, row in (("u", u), ("v", v)):
            _append_row(memory, key, row, self.m)
        memory["k"] += 1
        memory["x"], memory["g"] = xf, g
        h_g = h_g + u * (v * g).sum(1, keepdim=True)  # the updated H applied to g
        return (xf - h_g).reshape(x.shape)


def _low_rank_apply(us: torch.Tensor | None, vs: torch.Tensor | None, w: torch.Tensor):
    """(-I + sum_j u_j v_j^T) w per sample: rows u_j, v_j of us, vs (N, k, D), columns of w
    (N, D, c) -> (N, D, c); ``us`` None is k = 0."""
    if us is None or vs is None:
        return -w
    return torch.bmm(us.transpose(1, 2), torch.bmm(vs, w)) - w


def _append_row(memory: dict, key: str, row: torch.Tensor, capacity: int) -> None:
    """Make ``row`` (N, D) row k = memory["k"] of memory[key] (N, >k, D): written into a buffer
    of ``capacity`` rows without autograd, a new tensor by concatenation with it (Unrolled)."""
    k = memory["k"]
    if torch.is_grad_enabled():
        memory[key] = row[:, None] if k == 0 else torch.cat([memory[key][:, :k], row[:, None]], 1)
        return
    buf = memory.get(key)
    if buf is None or buf.shape[1] < capacity:
        buf = row.new_empty(row.shape[0], capacity, row.shape[1])
        memory[key] = buf
    buf[:, k] = row
