"""Build a model from the typed ``model`` section of a config (:class:`jfb.config.ModelConfig`).

Every key reaches the part it configures, or the build is refused with a ConfigError naming it.
A solver, backward or net key reaches the constructor keyword of the same name
(``model.solver.m`` -> ``Anderson(m=...)``, ``model.backward.m`` -> ``IFT(m=...)``,
``model.net.sn_target`` -> ``UNet(sn_target=...)``); keys of another choice (``damping`` for
Anderson, ``base`` for DnCNN, ``rho`` for DE-GRAD, the solver of a feedforward model) do not
apply, as the config documents. The defaults are the config's, never the constructors'.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torch import nn

from jfb.config import BackwardConfig, ModelConfig, SolverConfig, choices
from jfb.constants import CHANNELS
from jfb.deq import (
    IFT,
    JFB,
    Anderson,
    BackwardStrategy,
    Broyden,
    Neumann,
    Picard,
    Solver,
    Unrolled,
)
from jfb.errors import ConfigError
from jfb.models.feedforward import Feedforward
from jfb.models.implicit import DEADMM, DEGrad, DEProx
from jfb.nets import NETS, build_net
from jfb.physics import LinearOperator

__all__ = ["BACKWARDS", "IFT_SOLVERS", "KINDS", "SOLVERS", "build_backward", "build_model",
           "build_net_of", "build_solver"]

#: ``model.kind`` values.
KINDS: tuple[str, ...] = choices(ModelConfig, "kind")
#: ``model.solver.name`` -> the forward solver.
SOLVERS: dict[str, type[Solver]] = {"anderson": Anderson, "picard": Picard,
                                    "broyden": Broyden}
#: ``model.backward.name`` -> the gradient strategy.
BACKWARDS: dict[str, type[BackwardStrategy]] = {
    "jfb": JFB, "neumann": Neumann, "ift": IFT, "unrolled": Unrolled,
}
#: ``model.backward.solver`` (anderson, picard or gmres; Broyden is a forward solver only) -> the
#: name ``jfb.deq.IFT`` gives the same linear solver.
IFT_SOLVERS: dict[str, str] = {"anderson": "anderson", "picard": "fixed_point", "gmres": "gmres"}
_STEP_MODELS = {"degrad": DEGrad, "deprox": DEProx}

T = TypeVar("T")


def build_solver(cfg: SolverConfig | Mapping[str, Any]) -> Solver:
    """Anderson, Picard or Broyden (``cfg.name``) with every key of ``cfg`` it takes."""
    cfg = cfg if isinstance(cfg, SolverConfig) else ModelConfig.from_dict({"solver": cfg}).solver
    cls = SOLVERS[cfg.name]
    return _construct("model.solver", cls, **_keywords_of(cls, cfg))


def build_backward(cfg: BackwardConfig | Mapping[str, Any]) -> BackwardStrategy:
    """JFB(k), Neumann(k), IFT(solver, tol, max_iter, m) or Unrolled() (``cfg.name``)."""
    if not isinstance(cfg, BackwardConfig):
        cfg = ModelConfig.from_dict({"backward": cfg}).backward
    cls = BACKWARDS[cfg.name]
    options = _keywords_of(cls, cfg)
    if "solver" in options:
        options["solver"] = IFT_SOLVERS[options["solver"]]
    return _construct("model.backward", cls, **options)


def build_net_of(cfg: ModelConfig, channels: int = CHANNELS) -> nn.Module:
    """The learned net R of ``cfg.net`` for images of ``channels`` channels. BatchNorm is
    refused (naming ``model.net.batch_norm``) in an implicit model's fixed-point map."""
    if cfg.net.batch_norm and cfg.kind != "feedforward":
        raise ConfigError(
            f"model.net.batch_norm=true: BatchNorm couples the samples of a batch, and the "
            f"fixed-point map of model.kind={cfg.kind} must act on each sample alone "
            "(BatchNorm applies to model.kind=feedforward)"
        )
    return build_net(cfg.net.name, in_channels=channels,
                     **_keywords_of(NETS[cfg.net.name], cfg.net))


def build_model(cfg: ModelConfig | Mapping[str, Any], op: LinearOperator | None,
                channels: int = CHANNELS) -> nn.Module:
    """The reconstructor ``cfg`` (a config's ``model`` section) describes, for operator ``op``.

    A plain dict (``Config.to_dict()["model"]``, possibly partial) is read by
    :meth:`ModelConfig.from_dict` first, so its missing keys take the config's defaults.
    A value the model cannot take is a ConfigError naming the key.
    """
    if not isinstance(cfg, ModelConfig):
        cfg = ModelConfig.from_dict(cfg)
    net = build_net_of(cfg, channels)
    if cfg.kind == "feedforward":
        return _construct("model", Feedforward, op, net, init=cfg.init)
    common = {
        "solver": build_solver(cfg.solver),
        "backward": build_backward(cfg.backward),
        "init": cfg.init,
        "eta_scale": cfg.eta_scale,
    }
    if cfg.kind == "deadmm":
        return _construct("model", DEADMM, op, net, rho=cfg.rho, cg_iters=cfg.cg_iters,
                          precondition=cfg.precondition, relax=cfg.relax,
                          noise_ref=cfg.noise_ref, noise_floor=cfg.noise_floor, **common)
    return _construct("model", _STEP_MODELS[cfg.kind], op, net, eta=cfg.eta,
                      eta_max=cfg.eta_max, **common)


def _keywords_of(cls: Callable[..., Any], section: Any) -> dict[str, Any]:
    """The keys of config ``section`` that are keyword parameters of ``cls``, by name."""
    params = inspect.signature(cls).parameters
    return {f.name: getattr(section, f.name) for f in dataclasses.fields(section)
            if f.name in params}


def _construct(where: str, cls: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``cls(*args, **kwargs)``; a ValueError it raises becomes a ConfigError under ``where``
    (its message names the keyword, which is the config key under ``where``)."""
    try:
        return cls(*args, **kwargs)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
