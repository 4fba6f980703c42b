"""Experiment configuration: nested dataclasses, TOML/YAML/JSON files and ``key=value`` overrides.

A configuration is a tree of sections (``task``, ``model``, ``data``, ``train``). Every key has a
default; a file or an override only changes the keys it names. Unknown keys, values of the wrong
type and out-of-range values raise :class:`jfb.errors.ConfigError` naming the dotted key, e.g.
``unknown key 'model.nett'`` or ``model.net.depth: expected int, got str 'abc'``.

Types: ``int`` fields accept integers (and integral floats such as ``1e4``), ``float`` fields
accept ints and floats, ``bool`` fields accept booleans only. An optional field (``X | None``)
also accepts the strings ``"none"``/``"null"`` (case-insensitive), which is how a TOML file or a
command-line override switches it off (TOML has no null): ``train.grad_clip=none``.

``Config.to_dict()`` / ``Config.from_dict()`` round-trip through plain JSON-compatible dicts (that
form is stored in checkpoints). ``jfb.models.build_model`` takes the typed ``ModelConfig``: the
defaults below are the only ones a built model gets.

This module holds the schema (the sections, their defaults and ranges) and the loading API; the
text of files and overrides lives in :mod:`jfb.config_files`, the checking of each value against
its field in :mod:`jfb.config_values`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jfb.config_files import dict_to_toml, override_dict, parse_override_value, read_config_file
from jfb.config_values import build_section, choices, describe, unknown_key_message
from jfb.errors import ConfigError

__all__ = [
    "BackwardConfig",
    "Config",
    "DataConfig",
    "MODEL_DEFINING_KEYS",
    "ModelConfig",
    "NetConfig",
    "SolverConfig",
    "TrainConfig",
    "apply_overrides",
    "choices",
    "load_config",
    "parse_override_value",
]

# Keys whose values change the *weights* a model has (their names, shapes or meaning). A checkpoint
# may only be loaded into a model built with the same values (``jfb.train.checkpoint``).
#: Keys a checkpoint must agree on to be resumed into a run: the model, and the task (whose
#: operator's kernel is saved with the model's buffers). ``model.eta_scale`` is not listed, so that
#: checkpoints written before it existed still load; its "operator" mode adds the buffer
#: ``ata_norm``, so a checkpoint of the other mode is refused by its weights instead.
MODEL_DEFINING_KEYS: tuple[str, ...] = (
    "task", "model.kind", "model.net", "model.init", "model.eta_max",
)


def _f(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING,
       gt: float | None = None, ge: float | None = None, le: float | None = None,
       doc: str = "") -> Any:
    """A dataclass field with range limits (checked by ``config_values.build_section``) and a
    one-line doc."""
    meta = {"gt": gt, "ge": ge, "le": le, "doc": doc}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class NetConfig:
    """The learned network R_theta (``jfb.nets.build_net(name, **kwargs)``).

    ``depth``/``width``/``group_norm`` apply to DnCNN, ``base``/``levels`` to U-Net,
    ``activation``/``batch_norm``/``residual`` to both;
    ``spectral_norm`` rescales each conv so its spectral norm is at most ``sn_target``.
    """

    name: Literal["dncnn", "unet"] = _f("dncnn", doc="network architecture")
    depth: int = _f(17, ge=2, doc="number of conv layers (DnCNN)")
    width: int = _f(64, ge=1, doc="channels of the hidden layers (DnCNN)")
    spectral_norm: bool = _f(True, doc="spectral normalisation of every conv")
    sn_target: float = _f(1.0, gt=0, doc="target spectral norm per layer")
    activation: Literal["relu", "leaky_relu", "elu", "tanh", "softplus", "gelu", "silu"] = _f(
        "relu", doc="activation of the hidden layers")
    batch_norm: bool = _f(False, doc="BatchNorm layers (breaks per-sample fixed points)")
    group_norm: bool = _f(False, doc="GroupNorm layers, 8 groups (DnCNN; per sample, not local)")
    residual: bool = _f(False, doc="predict x - R(x) instead of R(x)")
    base: int = _f(32, ge=1, doc="channels at the first level (U-Net)")
    levels: int = _f(3, ge=1, doc="number of resolution levels (U-Net)")


@dataclass
class SolverConfig:
    """The forward fixed-point solver (``jfb.deq.Anderson`` / ``jfb.deq.Picard``).

    Stop when the per-sample relative residual ||f(x)-x|| / (||f(x)|| + eps) < ``tol`` or after
    ``max_iter`` iterations; ``eval_tol``/``eval_max_iter`` (None: same as training) apply in eval
    mode. Anderson: memory ``m``, Tikhonov regularisation ``lam``, mixing ``beta``. Picard /
    Krasnoselskii-Mann: x <- (1 - damping) x + damping f(x). Every other key is a keyword of
    both ``jfb.deq`` solvers, with the same name.
    """

    name: Literal["anderson", "picard", "broyden"] = _f("anderson", doc="solver")
    tol: float = _f(1e-3, gt=0, doc="relative residual tolerance (training)")
    max_iter: int = _f(50, ge=1, doc="iteration cap (training)")
    eval_max_iter: int | None = _f(None, ge=1, doc="iteration cap in eval mode")
    eval_tol: float | None = _f(None, gt=0, doc="tolerance in eval mode")
    m: int = _f(5, ge=1, doc="Anderson memory / Broyden updates before a restart")
    lam: float = _f(1e-4, ge=0, doc="Anderson regularisation")
    beta: float = _f(1.0, gt=0, le=1, doc="Anderson mixing parameter")
    damping: float = _f(1.0, gt=0, le=1, doc="Picard / Krasnoselskii-Mann relaxation")
    check_every: int = _f(1, ge=1, doc="test convergence every this many iterations")
    compact: bool = _f(True, doc="apply T to the unfinished samples only (solves without grad)")
    on_failure: Literal["ignore", "warn", "raise"] = _f(
        "ignore", doc="a sample not converged or NaN: reported in the stats, warned, or raised"
    )
    record_trace: bool = _f(False, doc="keep every iteration's residuals (stats.trace)")
    eps: float = _f(1e-8, gt=0, doc="epsilon of the relative residual's denominator")
    train_caps: tuple[int, ...] = _f(
        (), ge=1, doc="truncated training solves: each stops at a cap drawn from these and "
        "max_iter"
    )


@dataclass
class BackwardConfig:
    """How gradients pass through the fixed point (``jfb.deq.JFB/IFT/Neumann/Unrolled``).

    JFB: differentiate ``k`` applications of T at x*. IFT: solve (I - J^T) g = grad with
    ``solver`` (Anderson with memory ``m``, Picard, or GMRES restarted every ``m`` steps) to
    ``tol`` / ``max_iter``. Neumann: ``k`` terms of sum_j (J^T)^j grad.
    Unrolled: backpropagate through every forward iteration.
    """

    name: Literal["jfb", "ift", "neumann", "unrolled"] = _f("jfb", doc="gradient strategy")
    k: int = _f(1, ge=1, doc="JFB steps / Neumann terms")
    tol: float = _f(1e-4, gt=0, doc="IFT linear-solve tolerance")
    max_iter: int = _f(50, ge=1, doc="IFT linear-solve iteration cap")
    solver: Literal["anderson", "picard", "gmres"] = _f(
        "anderson", doc="IFT linear solver (picard = fixed-point iteration)"
    )
    m: int = _f(10, ge=1, doc="IFT Anderson memory / GMRES restart length")


@dataclass
class ModelConfig:
    """The reconstructor: ``kind`` = DE-GRAD (x <- x - eta (A^T(Ax - y) + R(x))), DE-PROX
    (x <- R(x - eta A^T(Ax - y))), DE-ADMM (one ADMM iteration on (z, u):
    x = (A^T A + rho I)^{-1}(A^T y + rho (z - u)), z <- R(x + u), u <- u + x - z; outputs z) or a
    feedforward net; ``init`` is x0 (A^T y, y or Tikhonov). DE-GRAD/DE-PROX: ``eta`` the initial
    step size, bounded by ``eta_max`` when it is learned. DE-ADMM: ``rho`` the initial (learned,
    positive) ADMM penalty, ``cg_iters`` the CG steps per x-update, preconditioned by the
    operator's ``ridge_preconditioner`` when ``precondition``, ``relax`` the over-relaxation
    (x <- relax x + (1 - relax) z before the denoiser; same fixed points); eta/eta_max do not
    apply. With ``eta_scale="operator"`` eta and eta_max are in units of 1/L and rho in units of
    L, L = ||A^T A|| estimated at the first forward and saved with the weights (the data-fit step is
    non-expansive for eta <= 2/L).
    """

    kind: Literal["degrad", "deprox", "deadmm", "feedforward"] = _f("degrad", doc="model kind")
    net: NetConfig = _f(factory=NetConfig)
    solver: SolverConfig = _f(factory=SolverConfig)
    backward: BackwardConfig = _f(factory=BackwardConfig)
    init: Literal["adjoint", "y", "tikhonov", "wiener"] = _f(
        "adjoint", doc="initial iterate x0 ('wiener': told the noise std)")
    eta: float = _f(1.0, gt=0, doc="initial step size")
    eta_max: float | None = _f(2.0, gt=0, doc="upper bound of the learned step size")
    eta_scale: Literal["none", "operator"] = _f(
        "none", doc="'operator': eta and eta_max in units of 1 / ||A^T A||, rho in units of it"
    )
    rho: float = _f(1.0, gt=0, doc="initial ADMM penalty (deadmm)")
    cg_iters: int = _f(20, ge=1, doc="CG steps per ADMM x-update (deadmm)")
    precondition: bool = _f(
        True, doc="precondition the x-update's CG by the operator's, if any (deadmm)"
    )
    relax: float = _f(1.0, gt=0, doc="ADMM over-relaxation alpha in (0, 2): same fixed points "
                      "(deadmm)")
    noise_ref: float | None = _f(None, gt=0, doc="noise std the learned rho is for: rho_i scales "
                                 "with sigma_i^2 + floor^2 per call (deadmm)")
    noise_floor: float = _f(0.0, ge=0, doc="initial learned noise floor of the rho rule (deadmm)")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """The ``model`` section from a (partial) nested dict such as
        ``Config.to_dict()["model"]``: missing keys take the defaults above, and errors name
        the dotted key (``model.net.depth: ...``). Raises ConfigError."""
        model = build_section(cls, data, "model.")
        _check_model(model)
        return model


@dataclass
class DataConfig:
    """Data loading: ``root`` (None: the task's default location), training crops of
    ``patch_size`` pixels (None: whole images), per-process ``batch_size``, loader workers, and
    optional caps on the number of train/val images (the first N, in the dataset's order).
    """

    root: str | None = _f(None, doc="dataset root folder")
    patch_size: int | None = _f(None, ge=1, doc="training crop size in pixels")
    batch_size: int = _f(16, ge=1, doc="batch size per process")
    num_workers: int = _f(0, ge=0, doc="DataLoader worker processes")
    max_train_images: int | None = _f(None, ge=1, doc="use only the first N training images")
    max_val_images: int | None = _f(None, ge=1, doc="validate on the first N val images")
    val_batch_size: int | None = _f(None, ge=1, doc="validation batch (None: batch_size)")


@dataclass
class TrainConfig:
    """The training loop (``jfb.train.Trainer``): ``steps`` optimiser steps of Adam/AdamW at
    ``lr`` with ``warmup_steps`` of linear warm-up then a cosine (or constant) schedule, gradient
    norm clipping, validation every ``val_every`` steps, and so on.

    Divergence (docs/RELIABILITY.md): a step with a NaN/Inf loss or gradient, or whose solve
    diverged (``diverge_residual``, ``diverge_unconverged``), makes no update. A diverged solve,
    or ``max_bad_steps`` such steps in a row, rolls model, optimiser and schedule back to the last
    checkpointed state with the learning rate times ``rollback_lr_factor``; after
    ``max_rollbacks`` rollbacks (0: never roll back) training stops with TrainingDivergedError.
    """

    steps: int = _f(1000, ge=1, doc="optimiser steps (after pre-training)")
    lr: float = _f(1e-3, gt=0, doc="peak learning rate")
    optimizer: Literal["adam", "adamw"] = _f("adam", doc="optimiser")
    weight_decay: float = _f(0.0, ge=0, doc="weight decay")
    warmup_steps: int = _f(0, ge=0, doc="linear warm-up steps")
    schedule: Literal["cosine", "constant"] = _f("cosine", doc="learning-rate schedule")
    grad_clip: float | None = _f(1.0, gt=0, doc="max global gradient norm (None: off)")
    seed: int = _f(0, ge=0, doc="seed of RNGs and of the data order")
    val_every: int = _f(500, ge=1, doc="validate (and checkpoint) every N steps")
    log_every: int = _f(50, ge=1, doc="log training metrics every N steps")
    amp: Literal["none", "bf16"] = _f("none", doc="bf16 autocast (CUDA only)")
    channels_last: bool = _f(False, doc="channels-last memory format (CUDA only)")
    compile: bool = _f(False, doc="torch.compile the model")
    pretrain_steps: int = _f(0, ge=0, doc="pre-train R as a feedforward map first")
    pretrain: Literal["deblur", "denoise"] = _f(
        "deblur", doc="pre-train R to map x0(y) to x, or x + noise to x (a blind denoiser)"
    )
    pretrain_noise: float = _f(
        0.1, gt=0, doc="denoising pre-training: noise std drawn uniformly in [0, this]"
    )
    init_net: str | None = _f(
        None, doc="start R from the net of this jfb checkpoint (e.g. a trained denoiser)"
    )
    device: Literal["auto", "cpu", "cuda"] = _f("auto", doc="device")
    max_minutes: float | None = _f(
        None, gt=0, doc="stop after this much wall time, resumable (like a signal; None: off)"
    )
    max_cpu_minutes: float | None = _f(None, gt=0, doc="stop at this CPU time (all resumes)")
    out_dir: str = _f("runs/default", doc="output folder (logs, checkpoints)")
    max_bad_steps: int = _f(
        10, ge=1, doc="N consecutive skipped (NaN/Inf or diverged) steps: roll back or stop"
    )
    diverge_residual: float | None = _f(
        1.0, gt=0, doc="solver diverged: a final relative residual above this or NaN (None: off)"
    )
    diverge_unconverged: float | None = _f(
        None, ge=0, le=1,
        doc="solver diverged: more than this fraction of the batch hit the cap (None: off)",
    )
    max_rollbacks: int = _f(3, ge=0, doc="roll back to the last good state at most N times")
    rollback_lr_factor: float = _f(0.5, gt=0, le=1, doc="learning-rate multiplier per rollback")
    log_contraction: bool = _f(True, doc="log ||J_T(x*)||_2 every log_every steps (implicit)")
    jacobian_penalty: float = _f(0.0, ge=0, doc="weight of the ||J_T(x*)||_F^2 / d penalty")
    monitor_jfb_every: int = _f(
        0, ge=0, doc="every N steps: JFB vs IFT gradient cosine, gamma, line search (0: off)"
    )
    tensorboard: bool = _f(False, doc="also log to TensorBoard (if installed)")


@dataclass
class Config:
    """A whole experiment; ``task`` names a task or spec (see ``jfb.tasks.parse_task``)."""

    task: str = _f("celeba-gauss5", doc="task name or spec")
    model: ModelConfig = _f(factory=ModelConfig)
    data: DataConfig = _f(factory=DataConfig)
    train: TrainConfig = _f(factory=TrainConfig)

    # ------------------------------------------------------------------ conversions
    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of JSON types (None for switched-off optional keys, lists for
        tuples)."""
        return dataclasses.asdict(self, dict_factory=lambda items: {
            k: list(v) if isinstance(v, tuple) else v for k, v in items})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Config:
        """Build from a (partial) nested dict; missing keys take defaults. Raises ConfigError."""
        cfg = build_section(cls, data, "")
        _check_cross_fields(cfg)
        return cfg

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def to_toml(self) -> str:
        """TOML text that ``load_config`` reads back to an equal Config (None -> "none")."""
        return dict_to_toml(self.to_dict())

    def with_overrides(self, overrides: Iterable[str]) -> Config:
        """A new Config with ``key=value`` overrides applied (see ``apply_overrides``)."""
        return apply_overrides(self, overrides)

    def get(self, dotted: str) -> Any:
        """The value at a dotted key, e.g. ``cfg.get("model.net.depth")``."""
        node: Any = self.to_dict()
        parts = dotted.split(".")
        for i, part in enumerate(parts):
            known = node if isinstance(node, dict) else {}
            if part not in known:
                raise ConfigError(unknown_key_message(".".join(parts[: i + 1]), known))
            node = known[part]
        return node


# ---------------------------------------------------------------------- loading
def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Read a TOML (``.toml``), YAML (``.yaml``/``.yml``) or JSON file, apply overrides.

    ``path=None`` starts from the defaults. Raises ConfigError for a missing/unreadable file,
    a syntax error, unknown keys, wrong types and out-of-range values.
    """
    raw: Mapping[str, Any] = {}
    if path is not None:
        raw = read_config_file(Path(path))
    cfg = Config.from_dict(raw)
    overrides = list(overrides)
    return apply_overrides(cfg, overrides) if overrides else cfg


def apply_overrides(cfg: Config, overrides: Iterable[str]) -> Config:
    """``cfg`` (not modified) with ``["train.lr=3e-4", "model.net.depth=5", ...]`` applied
    (the rules: :func:`jfb.config_files.override_dict`)."""
    return Config.from_dict(override_dict(cfg.to_dict(), overrides))


# ---------------------------------------------------------------------- cross-field checks
def _check_cross_fields(cfg: Config) -> None:
    """ConfigError when keys valid one by one disagree with each other."""
    _check_model(cfg.model)


def _check_model(m: ModelConfig) -> None:
    """ConfigError when the initial step size exceeds its bound."""
    if m.eta_max is not None and m.eta > m.eta_max:
        raise ConfigError(f"model.eta: must be <= model.eta_max ({m.eta_max}), got {m.eta}")


#: ``tests/test_config.py`` tests the bounded description of a value under this name.
_describe = describe
