"""Scenario ``peer``: torchdeq 0.1.0 (optional, skipped when not importable) on the same T: its
Anderson with its IFT backward and with its one-step phantom gradient, against ours (step time,
calls of T, graph size, and the agreement of the gradients at the initial weights).
"""

from __future__ import annotations

import copy
import statistics
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from jfb.bench.common import (
    FIXED_TOL,
    Context,
    Span,
    median,
    median_cpu,
    median_wall,
    synthetic_pair,
)
from jfb.bench.memory import SavedTensorMeter
from jfb.deq import IFT, JFB, Anderson, fixed_point


def _flat_grad(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) if p.grad is not None else torch.zeros_like(p).reshape(-1)
                      for p in model.parameters()])


class _Counter:
    """Counts the calls of T (batched applications)."""

    def __init__(self, f: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.f, self.calls = f, 0

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.f(z)


def scenario_peer(ctx: Context) -> dict[str, Any]:
    """torchdeq's Anderson + IFT / one-step phantom gradient against ours, on the same T."""
    try:
        import torchdeq  # noqa: F401
        from torchdeq import get_deq
    except ImportError as exc:
        ctx.notes.append(f"torchdeq not importable ({exc}); scenario skipped. Install it with "
                         "'pip install --no-deps torchdeq==0.1.0'.")
        return {"skipped": True, "reason": f"torchdeq not importable: {exc}", "rows": []}
    version = getattr(sys.modules["torchdeq"], "__version__", None)
    if version is None:
        from importlib.metadata import version as _version

        version = _version("torchdeq")
    cfg = ctx.cfg
    m = 6  # torchdeq's default Anderson memory; used by both libraries here
    model = ctx.model()
    x, y = synthetic_pair(cfg.batch, cfg.image, cfg.channels, model.op, 1, ctx.device)
    init = copy.deepcopy(model.state_dict())

    def torchdeq_deq(ift: bool, tol: float) -> nn.Module:
        kw: dict[str, Any] = {"core": "indexing", "f_solver": "anderson", "f_max_iter":
                              cfg.max_iter, "f_tol": tol, "f_stop_mode": "rel"}
        if ift:
            kw.update(ift=True, b_solver="anderson", b_max_iter=cfg.max_iter, b_tol=cfg.tol,
                      b_stop_mode="rel")
        else:
            kw.update(grad=1)
        return get_deq(**kw)

    class Method:
        """One method on its own copy of the model (same initial weights for all)."""

        def __init__(self, name: str, regime: str, tol: float) -> None:
            self.name, self.regime, self.tol = name, regime, tol
            self.model = copy.deepcopy(model)
            self.model.load_state_dict(init)
            self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
            self.deq = None
            if name.startswith("torchdeq"):
                self.deq = torchdeq_deq("IFT" in name, tol).to(ctx.device).train()
            else:
                self.model.solver = Anderson(m=m, lam=1e-4, tol=tol, max_iter=cfg.max_iter)
                self.model.backward = (
                    IFT(solver="anderson", tol=cfg.tol, max_iter=cfg.max_iter, m=m)
                    if "IFT" in name else JFB())
            self.spans: dict[str, list[Span]] = {"forward": [], "backward": [], "optim": []}
            self.calls: dict[str, list[float]] = {"forward": [], "backward": []}
            self.b_iters: list[float] = []
            self._b_info: list[float] = []
            self.grad: torch.Tensor | None = None
            self.graph: int | None = None

        def step(self, record: bool, first: bool = False) -> None:
            mdl = self.model
            self.opt.zero_grad(set_to_none=True)
            meter = SavedTensorMeter(exclude=mdl.parameters()) if first else None
            t0 = ctx.now()
            with mdl.fixed_map():
                counter = _Counter(lambda z: mdl.T(z, y))
                if meter is not None:
                    meter.__enter__()
                stats = None
                self._b_info.clear()
                if self.deq is None:
                    out, stats = fixed_point(counter, mdl.initial(y), solver=mdl.solver,
                                             backward=mdl.backward, params=[*mdl.parameters()])
                else:
                    zs, _info = self.deq(counter, mdl.initial(y), solver_kwargs={"m": m},
                                         backward_writer=self._writer)
                    out = zs[-1]
                loss = F.mse_loss(mdl.output(out), x)
                if meter is not None:
                    meter.__exit__(None, None, None)
                t1 = ctx.now()
                n_fwd = counter.calls
                loss.backward()
                t2 = ctx.now()
                n_bwd = counter.calls - n_fwd
            if first:  # the gradient at the initial weights, and the graph size
                self.grad = _flat_grad(mdl).detach().clone()
                self.graph = meter.peak if meter is not None else None
            self.opt.step()
            t3 = ctx.now()
            if record:
                self.spans["forward"].append(t1 - t0)
                self.spans["backward"].append(t2 - t1)
                self.spans["optim"].append(t3 - t2)
                self.calls["forward"].append(float(n_fwd))
                self.calls["backward"].append(float(n_bwd))
                if stats is not None and "iterations" in stats.backward:
                    self.b_iters.append(float(stats.backward["iterations"].float().mean()))
                elif self._b_info:
                    self.b_iters.append(self._b_info[-1])

        def _writer(self, info: dict[str, Any]) -> None:
            """torchdeq's backward_writer: the backward solver's statistics."""
            nstep = info.get("nstep")
            if nstep is not None:
                self._b_info.append(float(torch.as_tensor(nstep).float().mean()))

        def row(self) -> dict[str, Any]:
            steps = [a + b + c for a, b, c in zip(*self.spans.values(), strict=True)]
            row = {"method": self.name, "regime": self.regime, "tol": self.tol,
                   "max_iter": cfg.max_iter}
            row.update({f"{k}_s": median_wall(v) for k, v in self.spans.items()})
            row["step_s"] = median_wall(steps)
            row["step_cpu_s"] = median_cpu(steps)
            row["T_calls_forward"] = median(self.calls["forward"])
            row["T_calls_backward"] = median(self.calls["backward"])
            row["backward_iters_mean"] = statistics.fmean(self.b_iters) if self.b_iters else None
            row["graph_bytes"] = self.graph
            return row

    method_names = ["ours JFB", "torchdeq 1-step phantom", "ours IFT", "torchdeq IFT"]
    rows, grads = [], {}
    for regime, tol in (("tol", cfg.tol), ("fixed", FIXED_TOL)):
        methods = [Method(name, regime, tol) for name in method_names]
        for meth in methods:  # gradient at the initial weights + graph size, then warm-up
            meth.step(record=False, first=True)
            for _ in range(cfg.warmup):
                meth.step(record=False)
        for _ in range(cfg.repeats):  # round-robin: load changes fall on all methods alike
            for meth in methods:
                meth.step(record=True)
        for meth in methods:
            row = meth.row()
            rows.append(row)
            grads[(regime, meth.name)] = meth.grad
            ctx.log(f"peer: {meth.name} ({regime}): {row['step_s'] * 1e3:.1f} ms/step, "
                    f"{row['T_calls_forward']:.0f}+{row['T_calls_backward']:.0f} T calls")
        del methods

    def cos(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(F.cosine_similarity(a.double(), b.double(), dim=0))

    agreement = {}
    for regime in ("tol", "fixed"):
        for a, b in (("ours JFB", "torchdeq 1-step phantom"), ("ours IFT", "torchdeq IFT"),
                     ("ours JFB", "ours IFT")):
            ga, gb = grads[(regime, a)], grads[(regime, b)]
            agreement[f"{regime}: cos({a}, {b})"] = cos(ga, gb)
            agreement[f"{regime}: |{a} - {b}| / |{b}|"] = float(
                (ga - gb).norm() / gb.norm().clamp_min(1e-30))
    ratios = {}
    for regime in ("tol", "fixed"):
        by = {r["method"]: r for r in rows if r["regime"] == regime}
        ratios[f"{regime}: torchdeq IFT / ours IFT step"] = (
            by["torchdeq IFT"]["step_s"] / by["ours IFT"]["step_s"])
        ratios[f"{regime}: torchdeq 1-step / ours JFB step"] = (
            by["torchdeq 1-step phantom"]["step_s"] / by["ours JFB"]["step_s"])
        ratios[f"{regime}: ours IFT / ours JFB step"] = (
            by["ours IFT"]["step_s"] / by["ours JFB"]["step_s"])
    return {
        "skipped": False,
        "torchdeq_version": version,
        "model": ctx.describe_model(),
        "image": cfg.image,
        "batch": cfg.batch,
        "settings": f"Anderson m={m}, lam=1e-4 (ours scales lam by tr(GG^T)/n, torchdeq does "
        "not), relative-residual stop in both; torchdeq stops when the worst sample reaches tol "
        "and returns the lowest-residual iterate, ours freezes each sample at its own tol. "
        f"IFT backward: Anderson, tol {cfg.tol:g}, max_iter {cfg.max_iter}. Regime 'tol': "
        f"forward tol {cfg.tol:g}; 'fixed': tol {FIXED_TOL:g} (every solve runs max_iter).",
        "rows": rows,
        "gradient_agreement": agreement,
        "ratios": ratios,
    }
