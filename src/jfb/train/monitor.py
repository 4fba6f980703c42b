"""Is the JFB direction a descent direction? A periodic check in training
(``train.monitor_jfb_every = N``).

At a fixed point x* = T(x*; theta) of a loss L(x*), with w = dL/dx*, J = dT/dx and
M = dT/dtheta at x*, the exact (implicit) gradient and JFB's are

    g_ift = M^T u,  u = (I - J^T)^{-1} w,        g_jfb = M^T w = M^T (I - J^T) u.

So <g_ift, g_jfb> = <u, M M^T u> - <u, M M^T J^T u> >= (lam_min - gamma lam_max) ||u||^2 with
gamma = ||J||_2 and lam the extreme eigenvalues of M M^T: -g_jfb is a descent direction when
gamma < 1 / kappa(M M^T) (M M^T definite needs at least as many parameters as state entries),
and then cos(g_jfb, g_ift) >= (1 / kappa - gamma) / (1 + gamma), at best (1 - gamma) /
(1 + gamma). This is the condition of Fung et al. (AAAI 2022, arXiv 2103.12803: their descent
theorem): T gamma-contractive in x, and dT/dtheta well enough conditioned for
that gamma (docs/questions/descent.md).

Every ``every`` steps of the fixed-point phase, on the step's batch and before the update,
:func:`measure` solves to ``tol`` with the model's own strategies, JFB and IFT (GMRES to a
tenth of ``tol``), and logs a ``monitor`` record: the cosine and norm ratio of g_jfb and g_ift
(and of the step's own gradient and g_ift), gamma = max_i ||J_i||_2 at x* (every sample, 40
Lanczos products, :func:`~jfb.train.diagnostics.contraction_factor`), what the bound allows,
and a line search: whether L(theta - t g_jfb / ||g_jfb||) < L(theta) for t = ``line_step``
||theta||. The model, its buffers, its mode and strategy, the global RNGs and the gradients in
``.grad`` are as they were afterwards: training is unchanged.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from jfb.deq import IFT, JFB
from jfb.train.diagnostics import contraction_factor
from jfb.train.log import MetricLogger

__all__ = ["JFBMonitor", "measure", "monitor_for"]


def _flat(grads: Sequence[torch.Tensor | None], params: Sequence[torch.Tensor]) -> torch.Tensor:
    """The gradients as one vector (a parameter without one counts as zeros)."""
    return torch.cat([(torch.zeros_like(p) if g is None else g).detach().flatten()
                      for g, p in zip(grads, params, strict=True)])


def _norm(a: torch.Tensor) -> torch.Tensor:
    """||a||, at least the dtype's smallest normal number (a divisor)."""
    return a.norm().clamp_min(torch.finfo(a.dtype).tiny)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    """<a, b> / (||a|| ||b||)."""
    return float(a @ b / (_norm(a) * _norm(b)))


@contextlib.contextmanager
def _untouched(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Eval mode inside (the solver's eval budget, no spectral-norm power step); afterwards the
    state dict (parameters and buffers), the mode, the backward strategy and the global RNGs are
    restored exactly."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    mode, backward = model.training, model.backward
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            model.eval()
            yield
        finally:
            model.backward = backward
            model.train(mode)
            with torch.no_grad():
                model.load_state_dict(state)


def _solve_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cond: tuple[Any, ...],
                tol: float, max_iter: int) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """(MSE loss, x_hat, stats) of a solve to ``tol`` with the model's current strategy."""
    x_hat, stats = model.solve(y, *cond, tol=tol, max_iter=max_iter)
    return F.mse_loss(x_hat, x.to(x_hat.dtype)), x_hat, stats


def _gradient(model: nn.Module, strategy: Any, x: torch.Tensor, y: torch.Tensor,
              cond: tuple[Any, ...], params: Sequence[torch.Tensor], tol: float,
              max_iter: int) -> tuple[torch.Tensor, float, torch.Tensor, Any]:
    """(dL/dtheta as one vector, L, x_hat, stats) with gradient ``strategy``."""
    model.backward = strategy
    with torch.enable_grad():
        loss, x_hat, stats = _solve_loss(model, x, y, cond, tol, max_iter)
        grads = torch.autograd.grad(loss, list(params), allow_unused=True)
    return _flat(grads, params), float(loss.detach()), x_hat.detach(), stats


def measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cond: tuple[Any, ...] = (), *,
            params: Sequence[torch.Tensor] | None = None,
            step_grads: Sequence[torch.Tensor | None] | None = None, seed: int = 0,
            step: int = 0, tol: float | None = None, max_iter: int = 300,
            ift_max_iter: int = 300, gamma_iters: int = 40,
            line_step: float = 1e-3) -> dict[str, Any]:
    """The monitor's record for one batch (module docstring); ``step_grads``: the gradient the
    training step took (``p.grad``), compared with g_ift too; ``tol``: the forward solve's
    (default 1e-10 in float64, else 1e-5), a tenth of it GMRES's. The model is left unchanged."""
    params = [p for p in model.parameters() if p.requires_grad] if params is None else params
    tol = (1e-10 if x.dtype == torch.float64 else 1e-5) if tol is None else tol
    t0 = time.perf_counter()
    with _untouched(model, x.device):
        g_jfb, loss, x_hat, fwd = _gradient(model, JFB(), x, y, cond, params, tol, max_iter)
        ift = IFT(solver="gmres", tol=tol / 10, max_iter=ift_max_iter, m=50)
        g_ift, _, _, bwd = _gradient(model, ift, x, y, cond, params, tol, max_iter)
        gammas = contraction_factor(model, x_hat, y, cond, seed=seed, step=step,
                                    samples=x.shape[0], n_iter=gamma_iters, method="lanczos")
        t = line_step * float(torch.cat([p.detach().flatten() for p in params]).norm())
        with torch.no_grad():  # theta - t g_jfb / ||g_jfb||, in place (restored on exit)
            step_vec = (t / _norm(g_jfb)) * g_jfb
            for p, d in zip(params, step_vec.split([p.numel() for p in params]), strict=True):
                p.sub_(d.view_as(p).to(p.dtype))
            moved = float(_solve_loss(model, x, y, cond, tol, max_iter)[0])
    gamma, cosine = float(gammas.max()), _cos(g_jfb, g_ift)
    record: dict[str, Any] = {
        "cosine": cosine,
        "ratio": float(g_jfb.norm() / _norm(g_ift)),
        "gamma": gamma,
        "gamma_min": float(gammas.min()),
        "contractive": gamma < 1,
        "kappa_max": 1 / gamma if gamma > 0 else math.inf,
        "cos_bound": (1 - gamma) / (1 + gamma) if gamma < 1 else None,
        "descent": moved < loss,
        "loss": loss,
        "dloss": moved - loss,
        "dloss_pred": -t * float(g_ift.norm()) * cosine,
        "line_step": t,
        "tol": tol,
        "fp_residual": float(fwd.residual.max()),
        "fp_iters": int(fwd.iterations.max()),
        "ift_residual": float(bwd.backward["residual"].max()),
        "ift_iters": int(bwd.backward["iterations"].max()),
    }
    if step_grads is not None:
        record["cos_step"] = _cos(_flat(step_grads, params).to(g_ift.dtype), g_ift)
    record["seconds"] = round(time.perf_counter() - t0, 3)
    return record


@dataclass
class JFBMonitor:
    """Calls :func:`measure` after the backward of every ``every``-th fixed-point step (none when
    ``every`` is 0) and logs its record as kind ``monitor`` at the step's number
    (``pretrain_steps`` come first); its time is spent inside ``excluded()`` (not training)."""

    every: int
    logger: MetricLogger
    excluded: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    seed: int = 0
    pretrain_steps: int = 0

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 cond: tuple[Any, ...], params: Sequence[torch.Tensor],
                 step: int) -> dict[str, Any] | None:
        """After the backward of global step ``step`` (0-based, before the update): the record
        when this step is due, else None."""
        done = step + 1 - self.pretrain_steps
        if self.every == 0 or done <= 0 or done % self.every:
            return None
        with self.excluded():
            record = measure(model, x, y, cond, params=params,
                             step_grads=[p.grad for p in params], seed=self.seed, step=step)
        return self.logger.log("monitor", step + 1, **record)


def monitor_for(model: nn.Module, every: int, logger: MetricLogger, notes: list[str],
                excluded: Callable[[], contextlib.AbstractContextManager], seed: int,
                pretrain_steps: int) -> JFBMonitor:
    """The monitor of ``train.monitor_jfb_every = every``: one that does nothing when ``every``
    is 0, the logger is off (DDP ranks but the first) or the model has no implicit solve
    (``solve``, ``backward`` and ``contraction``; a note then says the option is ignored)."""
    if every and not all(hasattr(model, a) for a in ("solve", "backward", "contraction")):
        notes.append(f"train.monitor_jfb_every ignored: {type(model).__name__} is not an "
                     "implicit model")
        every = 0
    return JFBMonitor(every if logger.enabled else 0, logger, excluded, seed, pretrain_steps)
