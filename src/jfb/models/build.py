"""Build a model from the plain-dict form of the ``model`` section of a ``jfb.config.Config``."""

from __future__ import annotations

from typing import Any

from torch import nn

from jfb.deq import IFT, JFB, Anderson, BackwardStrategy, Neumann, Picard, Unrolled
from jfb.deq.solvers import _SolverBase
from jfb.errors import ConfigError
from jfb.models.feedforward import Feedforward
from jfb.models.implicit import DEADMM, DEGrad, DEProx
from jfb.nets import build_net
from jfb.physics import LinearOperator

_STEP_MODELS = {"degrad": DEGrad, "deprox": DEProx}
KINDS = ("degrad", "deprox", "deadmm", "feedforward")
_IFT_SOLVER_NAMES = {
    "picard": "fixed_point",
    "fixed_point": "fixed_point",
    "anderson": "anderson",
    "gmres": "gmres",
}


def build_solver(cfg: dict[str, Any]) -> _SolverBase:
    """Picard or Anderson from {name, tol, max_iter, eval_tol, eval_max_iter, check_every, ...}."""
    common = {
        k: cfg[k]
        for k in ("tol", "max_iter", "eval_tol", "eval_max_iter", "check_every", "compact")
        if k in cfg
    }
    name = cfg.get("name", "anderson")
    if name == "anderson":
        return Anderson(**common, **{k: cfg[k] for k in ("m", "lam", "beta") if k in cfg})
    if name == "picard":
        return Picard(**common, **({"damping": cfg["damping"]} if "damping" in cfg else {}))
    raise ConfigError(f"model.solver.name: unknown solver {name!r} (anderson, picard)")


def build_backward(cfg: dict[str, Any]) -> BackwardStrategy:
    """JFB(k), Neumann(k), IFT(solver, tol, max_iter) or Unrolled() from the backward section."""
    name = cfg.get("name", "jfb")
    if name == "jfb":
        return JFB(cfg.get("k", 1))
    if name == "neumann":
        return Neumann(cfg.get("k", 5))
    if name == "ift":
        solver = _IFT_SOLVER_NAMES.get(cfg.get("solver", "anderson"))
        if solver is None:
            raise ConfigError(f"model.backward.solver: unknown IFT solver {cfg.get('solver')!r}")
        return IFT(solver=solver, tol=cfg.get("tol", 1e-6), max_iter=cfg.get("max_iter", 100))
    if name == "unrolled":
        return Unrolled()
    raise ConfigError(
        f"model.backward.name: unknown strategy {name!r} (jfb, neumann, ift, unrolled)"
    )


def build_model(cfg: dict[str, Any], op: LinearOperator, channels: int = 3) -> nn.Module:
    """The reconstructor described by ``cfg`` (``Config.to_dict()["model"]``) for operator ``op``.

    Net keys that do not apply to the chosen architecture (``base``/``levels`` for DnCNN,
    ``depth``/``width`` for U-Net) are ignored, as the config documents.
    """
    kind = cfg.get("kind", "degrad")
    net = build_net(
        cfg.get("net", {}).get("name", "dncnn"), **_net_kwargs(cfg.get("net", {}), channels)
    )
    if kind == "feedforward":
        return Feedforward(op, net, init=cfg.get("init", "adjoint"))
    if kind not in KINDS:
        raise ConfigError(f"model.kind: unknown model {kind!r} ({', '.join(KINDS)})")
    common = {
        "solver": build_solver(cfg.get("solver", {})),
        "backward": build_backward(cfg.get("backward", {})),
        "init": cfg.get("init", "adjoint"),
        "eta_scale": cfg.get("eta_scale", "none"),
    }
    if kind == "deadmm":
        return DEADMM(
            op, net, rho=cfg.get("rho", 1.0), cg_iters=cfg.get("cg_iters", 20), **common
        )
    return _STEP_MODELS[kind](
        op, net, eta=cfg.get("eta", 1.0), eta_max=cfg.get("eta_max", 2.0), **common
    )


def _net_kwargs(net_cfg: dict[str, Any], channels: int) -> dict[str, Any]:
    name = net_cfg.get("name", "dncnn")
    keys = {
        "dncnn": ("depth", "width", "spectral_norm", "sn_target", "batch_norm", "residual"),
        "unet": ("base", "levels", "spectral_norm", "residual"),
    }.get(name, ())
    return {"in_channels": channels, **{k: net_cfg[k] for k in keys if k in net_cfg}}
