"""Every config key reaches what is built from it, or is refused with an error naming it.

The keys come from the config dataclasses, so a new key without a row in :data:`CASES` fails
here. Each case sets one key to a non-default valid value (in the context where it applies, e.g.
``model.rho`` on a DE-ADMM model), builds the run (task, data, model) and, where the key is the
trainer's, a Trainer (no training step), and reads back the attribute the table names. The engine
side is walked too: every keyword of the solvers and gradient strategies is a config key, and the
built parts get the config's defaults, not their constructors'.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
from PIL import Image

from jfb.config import (
    BackwardConfig,
    Config,
    ModelConfig,
    NetConfig,
    SolverConfig,
    load_config,
)
from jfb.data import save_image
from jfb.deq import IFT, JFB, Anderson, Neumann, Picard
from jfb.errors import ConfigError
from jfb.models import build_model
from jfb.models.build import BACKWARDS, IFT_SOLVERS, KINDS, SOLVERS
from jfb.nets import NETS, SpectralConvNorm, has_batch_norm
from jfb.physics import Identity
from jfb.pipeline import Run, build_run
from jfb.train.checkpoint import save_checkpoint
from jfb.train.trainer import Trainer


def config_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every leaf key of the config dataclass ``cls``, dotted."""
    keys = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            keys += config_keys(tp, f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


class Built:
    """What a case builds: the run of ``cfg`` and, on first use, its Trainer (no step run)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.run: Run = build_run(cfg)
        self.model = self.run.model

    @cached_property
    def trainer(self) -> Trainer:
        return Trainer(self.model, self.run.train_pairs, self.run.val_pairs, self.cfg,
                       progress=False)


class Case(NamedTuple):
    """``key=value`` (with ``context`` overrides) reaches ``read(built) == expected``; or, when
    ``read`` is None, the build is refused with a ConfigError whose message matches
    ``expected`` (it must name the key)."""

    key: str
    value: str
    read: Callable[[Built], Any] | None
    expected: Any
    context: tuple[str, ...] = ()


def _kind(obj: Any) -> str:
    return type(obj).__name__.lower()


def _solver(name: str) -> Callable[[Built], Any]:
    return lambda b: getattr(b.model.solver, name)


def _backward(name: str) -> Callable[[Built], Any]:
    return lambda b: getattr(b.model.backward, name)


def _net(name: str) -> Callable[[Built], Any]:
    return lambda b: getattr(b.model.net, name)


def _sn_targets(b: Built) -> set[float]:
    return {m.target for m in b.model.net.modules() if isinstance(m, SpectralConvNorm)}


def _train_config(name: str) -> Callable[[Built], Any]:
    """A key the Trainer reads from its typed config when it needs it (at a step, a
    validation, a rollback): what reaches it is ``trainer.config``."""
    return lambda b: getattr(b.trainer.config.train, name)


UNET = ("model.net.name=unet",)
FEEDFORWARD = ("model.kind=feedforward",)
IFT_CTX = ("model.backward.name=ift",)
ADMM = ("model.kind=deadmm",)

#: key, value, what it must reach (attribute of the built run/model/trainer), expected, context.
CASES: list[Case] = [
    Case("task", "{data},noise=0.02,name=walk", lambda b: (b.run.task.name,
                                                          b.run.task.noise_sigma), ("walk", 0.02)),
    # ------------------------------------------------------------------------------ model
    Case("model.kind", "deprox", lambda b: _kind(b.model), "deprox"),
    Case("model.kind", "deadmm", lambda b: _kind(b.model), "deadmm"),
    Case("model.kind", "feedforward", lambda b: _kind(b.model), "feedforward"),
    Case("model.init", "y", lambda b: b.model.init, "y"),
    Case("model.init", "tikhonov", lambda b: b.model.init, "tikhonov", FEEDFORWARD),
    Case("model.init", "wiener", lambda b: b.model.init, "wiener", FEEDFORWARD),
    Case("model.eta", "0.5", lambda b: round(float(b.model.eta), 6), 0.5),
    Case("model.eta_max", "3.0", lambda b: b.model.eta_max, 3.0),
    Case("model.eta_max", "1.5", None, "model: .*eta_max", ("model.eta=1.5",)),
    Case("model.eta_scale", "operator", lambda b: b.model.eta_scale, "operator"),
    Case("model.eta_scale", "operator", lambda b: b.model.eta_scale, "operator", ADMM),
    Case("model.rho", "0.5", lambda b: round(float(b.model.rho), 6), 0.5, ADMM),
    Case("model.cg_iters", "7", lambda b: b.model.cg_iters, 7, ADMM),
    Case("model.precondition", "false", lambda b: b.model.precondition, False, ADMM),
    Case("model.relax", "1.7", lambda b: b.model.relax, 1.7, ADMM),
    Case("model.relax", "2.0", None, "model: .*relax", ADMM),
    Case("model.noise_ref", "0.02", lambda b: b.model.noise_ref, 0.02, ADMM),
    Case("model.noise_floor", "0.003",
         lambda b: round(float(b.model.noise_floor().detach()), 6), 0.003,
         ADMM + ("model.noise_ref=0.01",)),
    Case("model.noise_floor", "0.003", None, "noise_floor needs noise_ref", ADMM),
    # ------------------------------------------------------------------------- model.net
    Case("model.net.name", "unet", lambda b: _kind(b.model.net), "unet"),
    Case("model.net.depth", "3", _net("depth"), 3),
    Case("model.net.width", "5", _net("width"), 5),
    Case("model.net.spectral_norm", "false", _net("spectral_norm"), False),
    Case("model.net.spectral_norm", "false", _net("spectral_norm"), False, UNET),
    Case("model.net.sn_target", "0.5", _sn_targets, {0.5}),
    Case("model.net.sn_target", "0.5", _sn_targets, {0.5}, UNET),
    Case("model.net.batch_norm", "true", lambda b: has_batch_norm(b.model.net), True,
         FEEDFORWARD + ("model.net.depth=3",)),
    Case("model.net.batch_norm", "true", lambda b: has_batch_norm(b.model.net), True,
         FEEDFORWARD + UNET),
    Case("model.net.batch_norm", "true", None, "model.net.batch_norm"),
    Case("model.net.batch_norm", "true", None, "model.net.batch_norm", UNET + ADMM),
    Case("model.net.activation", "silu", lambda b: _kind(b.model.net.body[1]), "silu"),
    Case("model.net.activation", "gelu", lambda b: _kind(b.model.net.inc[1]), "gelu", UNET),
    Case("model.net.group_norm", "true", lambda b: _kind(b.model.net.body[3]), "groupnorm",
         ("model.net.depth=3",)),
    Case("model.net.residual", "true", _net("residual"), True),
    Case("model.net.residual", "true", _net("residual"), True, UNET),
    Case("model.net.base", "3", _net("base"), 3, UNET),
    Case("model.net.levels", "2", _net("levels"), 2, UNET),
    # ---------------------------------------------------------------------- model.solver
    Case("model.solver.name", "picard", lambda b: _kind(b.model.solver), "picard"),
    Case("model.solver.tol", "0.01", _solver("tol"), 0.01),
    Case("model.solver.max_iter", "7", _solver("max_iter"), 7),
    Case("model.solver.eval_max_iter", "9", _solver("eval_max_iter"), 9),
    Case("model.solver.eval_tol", "1e-5", _solver("eval_tol"), 1e-5),
    Case("model.solver.train_caps", "[3, 5]", _solver("train_caps"), (3, 5)),
    Case("model.solver.m", "3", _solver("m"), 3),
    Case("model.solver.lam", "0.01", _solver("lam"), 0.01),
    Case("model.solver.beta", "0.5", _solver("beta"), 0.5),
    Case("model.solver.damping", "0.5", _solver("damping"), 0.5, ("model.solver.name=picard",)),
    Case("model.solver.check_every", "2", _solver("check_every"), 2),
    Case("model.solver.check_every", "2", _solver("check_every"), 2, ("model.solver.name=picard",)),
    Case("model.solver.compact", "false", _solver("compact"), False),
    Case("model.solver.on_failure", "warn", _solver("on_failure"), "warn"),
    Case("model.solver.record_trace", "true", _solver("record_trace"), True),
    Case("model.solver.eps", "1e-6", _solver("eps"), 1e-6),
    # -------------------------------------------------------------------- model.backward
    Case("model.backward.name", "ift", lambda b: _kind(b.model.backward), "ift"),
    Case("model.backward.name", "neumann", lambda b: _kind(b.model.backward), "neumann"),
    Case("model.backward.name", "unrolled", lambda b: _kind(b.model.backward), "unrolled"),
    Case("model.backward.k", "2", _backward("k"), 2),
    Case("model.backward.k", "3", _backward("k"), 3, ("model.backward.name=neumann",)),
    Case("model.backward.tol", "1e-6", _backward("tol"), 1e-6, IFT_CTX),
    Case("model.backward.max_iter", "9", _backward("max_iter"), 9, IFT_CTX),
    Case("model.backward.solver", "gmres", _backward("solver"), "gmres", IFT_CTX),
    Case("model.backward.solver", "picard", _backward("solver"), "fixed_point", IFT_CTX),
    Case("model.backward.m", "4", _backward("m"), 4, IFT_CTX),
    # ------------------------------------------------------------------------------ data
    Case("data.root", "{celeba}", lambda b: len(b.run.val_pairs), 2, ("task=celeba-gauss5",)),
    Case("data.root", "{celeba}", None, "data.root"),
    Case("data.patch_size", "4", lambda b: tuple(b.run.train_pairs[0][0].shape), (3, 4, 4)),
    Case("data.batch_size", "3", lambda b: b.trainer.batch_size, 3),
    Case("data.num_workers", "1", lambda b: b.trainer.config.data.num_workers, 1),
    Case("data.max_train_images", "2", lambda b: len(b.trainer.train_set), 2),
    Case("data.max_val_images", "1", lambda b: len(b.run.val_pairs), 1),
    Case("data.val_batch_size", "3", lambda b: b.trainer.val_batch_size, 3),
    # ----------------------------------------------------------------------------- train
    Case("train.steps", "7", lambda b: b.trainer.total_steps, 7),
    Case("train.lr", "0.01", lambda b: b.trainer.optimizer.param_groups[0]["initial_lr"], 0.01),
    Case("train.optimizer", "adamw", lambda b: _kind(b.trainer.optimizer), "adamw"),
    Case("train.weight_decay", "0.1",
         lambda b: b.trainer.optimizer.param_groups[0]["weight_decay"], 0.1),
    Case("train.warmup_steps", "5", _train_config("warmup_steps"), 5),
    Case("train.schedule", "constant", _train_config("schedule"), "constant"),
    Case("train.grad_clip", "none", _train_config("grad_clip"), None),
    Case("train.seed", "3", lambda b: torch.equal(_first_net_tensor(b.model), SEED0_NET[0]),
         False),
    Case("train.val_every", "3", _train_config("val_every"), 3),
    Case("train.log_every", "3", _train_config("log_every"), 3),
    Case("train.amp", "bf16", lambda b: (b.trainer.amp is not None)
         or any("train.amp" in n for n in b.trainer.notes), True),
    Case("train.channels_last", "true", lambda b: b.trainer.channels_last
         or any("train.channels_last" in n for n in b.trainer.notes), True),
    Case("train.compile", "true", lambda b: b.trainer.forward_module is not b.trainer.ddp, True),
    Case("train.pretrain_steps", "3", lambda b: b.trainer.pretrain_steps, 3),
    Case("train.pretrain", "denoise", _train_config("pretrain"), "denoise"),
    Case("train.pretrain_noise", "0.05", _train_config("pretrain_noise"), 0.05),
    Case("train.init_net", "{init_net}", lambda b: torch.equal(
        _first_net_tensor(b.model), INIT_NET[0]), True),
    Case("train.device", "cpu", lambda b: b.trainer.device.type, "cpu"),
    Case("train.max_minutes", "2.5", _train_config("max_minutes"), 2.5),
    Case("train.max_cpu_minutes", "30", lambda b: b.trainer.cost.max_cpu_minutes, 30.0),
    Case("train.out_dir", "{out}/other", lambda b: b.trainer.out_dir.name, "other"),
    Case("train.max_bad_steps", "4", _train_config("max_bad_steps"), 4),
    Case("train.diverge_residual", "0.5", _train_config("diverge_residual"), 0.5),
    Case("train.diverge_unconverged", "0.5", _train_config("diverge_unconverged"), 0.5),
    Case("train.max_rollbacks", "1", _train_config("max_rollbacks"), 1),
    Case("train.rollback_lr_factor", "0.25", _train_config("rollback_lr_factor"), 0.25),
    Case("train.log_contraction", "false", _train_config("log_contraction"), False),
    Case("train.jacobian_penalty", "0.1", lambda b: b.trainer.jacobian_on, True),
    Case("train.monitor_jfb_every", "5", lambda b: b.trainer.monitor.every, 5),
    Case("train.tensorboard", "true", lambda b: b.trainer.logger._tb is not None
         or bool(b.trainer.logger.warning), True),
]

#: The first tensor of the net of a model built with train.seed = 0, and of the net in the
#: train.init_net checkpoint (set by the fixture).
SEED0_NET: list[torch.Tensor] = []
INIT_NET: list[torch.Tensor] = []


def _first_net_tensor(model: torch.nn.Module) -> torch.Tensor:
    """The net's first weight (its random initial values depend on the seed)."""
    return next(v for k, v in model.net.state_dict().items() if "weight" in k)


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tiny image folder (train/ and val/), a fake CelebA-128 root, an output folder and a
    checkpoint whose net starts ``train.init_net``."""
    root = tmp_path_factory.mktemp("keys")
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        (root / "data" / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), np.uint8)).save(
                root / "data" / split / f"{i}.png")
            save_image(torch.full((3, 8, 8), 0.1 * (i + 1)), root / "celeba" / split
                       / f"{i:06d}.jpg")
    out = {"data": f"data={root / 'data'}", "celeba": str(root / "celeba"),
           "out": str(root / "out"), "init_net": str(root / "init.safetensors")}
    cfg = _config(out, ["train.seed=9"])
    donor = build_run(cfg).model
    save_checkpoint(out["init_net"], model=donor, step=0, config=cfg.to_dict(), rng=False)
    INIT_NET[:] = [_first_net_tensor(donor).clone()]
    SEED0_NET[:] = [_first_net_tensor(build_run(_config(out, [])).model).clone()]
    return out


def _config(places: dict[str, str], overrides: list[str]) -> Config:
    """The tiny base config (nets of a few channels, the image folder, batch 2) + overrides."""
    base = [f"task={places['data']},noise=0.01", "model.net.depth=2", "model.net.width=4",
            "model.net.base=2", "model.net.levels=1", "data.batch_size=2",
            f"train.out_dir={places['out']}"]
    return load_config(None, base + [o.format(**places) for o in overrides])


def test_every_config_key_has_a_case() -> None:
    assert sorted(config_keys()) == sorted({c.key for c in CASES})


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.key}={c.value}" + (
    f"[{','.join(c.context)}]" if c.context else ""))
def test_every_config_key_reaches_what_is_built(case: Case, places: dict[str, str]) -> None:
    default = Config().get(case.key)
    value = load_config(None, [f"{case.key}={case.value.format(**places)}"]).get(case.key)
    assert value != default, f"{case.key}: the case must set a non-default value"
    overrides = [*case.context, f"{case.key}={case.value}"]
    if case.read is None:
        with pytest.raises(ConfigError, match=case.expected):
            Built(_config(places, overrides))
        return
    with torch.no_grad():
        got = case.read(Built(_config(places, overrides)))
    if isinstance(case.expected, float):
        assert got == pytest.approx(case.expected), case
    else:
        assert got == case.expected, case


# ------------------------------------------------------------------------------ the engine side
ENGINE_SECTIONS: list[tuple[type, type]] = [
    (Anderson, SolverConfig), (Picard, SolverConfig), (IFT, BackwardConfig), (JFB, BackwardConfig),
    (Neumann, BackwardConfig),
]
#: Constructor keywords of the nets that no config key sets (the nets' own defaults apply).
NET_KEYWORDS_NOT_IN_CONFIGS = {"in_channels", "out_channels", "kernel_size", "bias", "sn_mode",
                               "final_scale_init", "up", "pad_mode"}


@pytest.mark.parametrize(("engine", "section"), ENGINE_SECTIONS,
                         ids=lambda x: getattr(x, "__name__", ""))
def test_every_engine_keyword_is_a_config_key(engine: type, section: type) -> None:
    keywords = set(inspect.signature(engine).parameters)
    assert keywords <= {f.name for f in dataclasses.fields(section)}


def test_net_keywords_outside_configs_are_the_listed_ones() -> None:
    net_keys = {f.name for f in dataclasses.fields(NetConfig)}
    outside = set()
    for cls in NETS.values():
        outside |= set(inspect.signature(cls).parameters) - net_keys
    assert outside == NET_KEYWORDS_NOT_IN_CONFIGS


def test_the_config_choices_are_the_built_ones() -> None:
    """One vocabulary: the names a config accepts are those the builder maps, no more."""
    hints = {cls: typing.get_type_hints(cls) for cls in (ModelConfig, NetConfig, SolverConfig,
                                                         BackwardConfig)}
    assert set(typing.get_args(hints[ModelConfig]["kind"])) == set(KINDS)
    assert set(typing.get_args(hints[NetConfig]["name"])) == set(NETS)
    assert set(typing.get_args(hints[SolverConfig]["name"])) == set(SOLVERS)
    assert set(typing.get_args(hints[BackwardConfig]["name"])) == set(BACKWARDS)
    assert set(typing.get_args(hints[BackwardConfig]["solver"])) == set(IFT_SOLVERS)
    for name in IFT_SOLVERS.values():
        IFT(solver=name)  # every translation is a solver IFT takes


@pytest.mark.parametrize("overrides", [[], ["model.solver.name=picard"],
                                       ["model.backward.name=ift"],
                                       ["model.backward.name=neumann"],
                                       ["model.net.name=unet"]])
def test_built_parts_get_the_config_defaults(overrides: list[str]) -> None:
    """The defaults live in config.py: each keyword of a built solver, strategy or net has the
    value of the config key of that name (where the constructor's own default may differ)."""
    cfg = load_config(None, ["model.net.depth=2", "model.net.width=4", *overrides]).model
    model = build_model(cfg, Identity(), channels=3)
    for part, section in ((model.solver, cfg.solver), (model.backward, cfg.backward),
                          (model.net, cfg.net)):
        for name in inspect.signature(type(part)).parameters:
            if hasattr(section, name) and hasattr(part, name):
                expected = getattr(section, name)
                if name == "solver":
                    expected = IFT_SOLVERS[expected]
                assert getattr(part, name) == expected, f"{type(part).__name__}.{name}"
