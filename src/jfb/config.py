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
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import math
import reprlib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jfb.errors import ConfigError

try:  # Python >= 3.11
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 fallback
    try:
        import tomli as _toml  # type: ignore[no-redef]
    except ModuleNotFoundError:
        _toml = None  # type: ignore[assignment]

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
    """A dataclass field with range limits (checked by ``_validate``) and a one-line doc."""
    meta = {"gt": gt, "ge": ge, "le": le, "doc": doc}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class NetConfig:
    """The learned network R_theta (``jfb.nets.build_net(name, **kwargs)``).

    ``depth``/``width``/``batch_norm``/``residual`` apply to DnCNN; ``base``/``levels`` to U-Net;
    ``spectral_norm`` rescales each conv so its spectral norm is at most ``sn_target``.
    """

    name: Literal["dncnn", "unet"] = _f("dncnn", doc="network architecture")
    depth: int = _f(17, ge=2, doc="number of conv layers (DnCNN)")
    width: int = _f(64, ge=1, doc="channels of the hidden layers (DnCNN)")
    spectral_norm: bool = _f(True, doc="spectral normalisation of every conv")
    sn_target: float = _f(1.0, gt=0, doc="target spectral norm per layer")
    batch_norm: bool = _f(False, doc="BatchNorm layers (breaks per-sample fixed points)")
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
        model = _build(cls, data, "model.")
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
        cfg = _build(cls, data, "")
        _check_cross_fields(cfg)
        return cfg

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def to_toml(self) -> str:
        """TOML text that ``load_config`` reads back to an equal Config (None -> "none")."""
        return _to_toml(self.to_dict())

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
                raise ConfigError(_unknown_msg(".".join(parts[: i + 1]), known))
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
        raw = _read_file(Path(path))
    cfg = Config.from_dict(raw)
    overrides = list(overrides)
    return apply_overrides(cfg, overrides) if overrides else cfg


def _read_file(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    try:
        if suffix == ".toml":
            if _toml is None:  # pragma: no cover
                raise ConfigError("reading TOML needs Python >= 3.11 or the 'tomli' package")
            data = _toml.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
            if data is None:
                data = {}
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(
                f"config file {path}: unknown format {suffix!r} (use .toml, .yaml, .yml or .json)"
            )
    except ConfigError:
        raise
    except Exception as exc:  # syntax errors of the three parsers
        raise ConfigError(f"config file {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a table, got "
                          f"{type(data).__name__}")
    return data


def parse_override_value(text: str) -> Any:
    """Parse the right-hand side of ``key=value`` as a TOML literal, else keep it as a string.

    ``"3e-4"`` -> 0.0003, ``"5"`` -> 5, ``"true"`` -> True, ``"[1, 2]"`` -> [1, 2],
    ``'"5"'`` -> "5", ``"ift"`` -> "ift".
    """
    text = text.strip()
    if _toml is not None:
        try:
            return _toml.loads(f"v = {text}")["v"]
        except Exception:  # noqa: BLE001 - anything that is not a TOML literal is a string
            pass
    return text


def apply_overrides(cfg: Config, overrides: Iterable[str]) -> Config:
    """Apply ``["train.lr=3e-4", "model.net.depth=5", ...]`` to ``cfg`` (not modified).

    The key is a dotted path to an existing key; a whole section may be replaced by an inline
    table (``model.net={depth=5, width=32}``: keys not named keep their values).
    """
    data = cfg.to_dict()
    for item in overrides:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, _, value_text = item.partition("=")
        key = key.strip()
        if not key or any(not p for p in key.split(".")):
            raise ConfigError(f"override {item!r}: empty key")
        parts = key.split(".")
        node: dict[str, Any] = data
        for i, part in enumerate(parts):
            dotted = ".".join(parts[: i + 1])
            if part not in node:
                raise ConfigError(_unknown_msg(dotted, node))
            if i == len(parts) - 1:
                value = parse_override_value(value_text)
                if isinstance(node[part], dict) and isinstance(value, dict):
                    node[part] = _deep_merge(node[part], value)
                else:
                    node[part] = value
            else:
                if not isinstance(node[part], dict):
                    raise ConfigError(f"override {item!r}: '{dotted}' is a value, not a section")
                node = node[part]
    return Config.from_dict(data)


# ---------------------------------------------------------------------- internals
def _deep_merge(base: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in new.items():
        if isinstance(out.get(k), dict) and isinstance(v, Mapping):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _unknown_msg(dotted: str, known: Mapping[str, Any]) -> str:
    leaf = dotted.rsplit(".", 1)[-1]
    msg = f"unknown key '{dotted}'"
    close = difflib.get_close_matches(leaf, [str(k) for k in known], n=1)
    if close:
        prefix = dotted.rsplit(".", 1)[0] + "." if "." in dotted else ""
        msg += f" (did you mean '{prefix}{close[0]}'?)"
    return msg


class _ShortRepr(reprlib.Repr):
    """A bounded repr for error messages: at most 4 items per container, 3 levels deep, 60
    characters per string, and dicts in their own order (reprlib sorts a dict's keys first), so
    describing a value visits O(1) of it whatever its size; a 345-byte YAML alias bomb stands
    for 9^8 strings, and ``repr()`` of it took seconds and hundreds of MB."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxtuple = self.maxlist = self.maxarray = self.maxdict = 4
        self.maxset = self.maxfrozenset = self.maxdeque = 4
        self.maxstring = self.maxother = 60
        self.maxlong = 40

    def repr_dict(self, x: dict[Any, Any], level: int) -> str:
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        items = [f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}"
                 for k, v in itertools.islice(x.items(), self.maxdict)]
        return "{" + ", ".join(items + (["..."] if len(x) > self.maxdict else [])) + "}"


_SHORT_REPR = _ShortRepr()


def _describe(value: Any) -> str:
    """``"TYPE REPR"`` for an error message, REPR bounded (see :class:`_ShortRepr`) and cut to
    60 characters."""
    try:
        text = _SHORT_REPR.repr(value)
    except Exception:  # noqa: BLE001 - e.g. an int too long to print; the type is enough
        text = "<...>"
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


_HINTS_CACHE: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS_CACHE:
        _HINTS_CACHE[cls] = typing.get_type_hints(cls)
    return _HINTS_CACHE[cls]


def choices(section: type, key: str) -> tuple[Any, ...]:
    """The values a ``Literal`` key of a config section allows, e.g.
    ``choices(ModelConfig, "kind")`` -> ``("degrad", "deprox", "deadmm", "feedforward")``."""
    tp = _hints(section)[key]
    if typing.get_origin(tp) is not Literal:
        raise TypeError(f"{section.__name__}.{key} is not a Literal key")  # a bug of the caller
    return typing.get_args(tp)


def _build(cls: type, data: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "config"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a table of keys, got {_describe(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise ConfigError(_unknown_msg(f"{prefix}{key}", fields))
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for name, fld in fields.items():
        if name not in data:
            continue
        dotted = f"{prefix}{name}"
        value = _coerce(hints[name], data[name], dotted)
        _check_range(fld, value, dotted)
        kwargs[name] = value
    obj = cls(**kwargs)
    # Defaults of nested sections are built by their factories; range-check defaults too.
    for name, fld in fields.items():
        if name not in data:
            _check_range(fld, getattr(obj, name), f"{prefix}{name}")
    return obj


def _coerce(tp: Any, value: Any, dotted: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, dotted + ".")
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            return None
        return _coerce(inner[0], value, dotted)
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return value
        choices = ", ".join(repr(a) for a in args)
        raise ConfigError(f"{dotted}: expected one of {choices}, got {_describe(value)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{dotted}: expected bool, got {_describe(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        raise ConfigError(f"{dotted}: expected int, got {_describe(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out = float(value)
            if math.isnan(out):
                raise ConfigError(f"{dotted}: expected a number, got nan")
            return out
        raise ConfigError(f"{dotted}: expected float, got {_describe(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{dotted}: expected str, got {_describe(value)}")
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]
        if isinstance(value, (list, tuple)):
            return tuple(_coerce(args[0], v, f"{dotted}[{i}]") for i, v in enumerate(value))
        raise ConfigError(f"{dotted}: expected a list, got {_describe(value)}")
    raise TypeError(f"{dotted}: unsupported annotation {tp!r}")  # a bug in this module


def _check_range(fld: dataclasses.Field, value: Any, dotted: str) -> None:
    if isinstance(value, tuple):
        for i, v in enumerate(value):
            _check_range(fld, v, f"{dotted}[{i}]")
        return
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    gt, ge, le = fld.metadata.get("gt"), fld.metadata.get("ge"), fld.metadata.get("le")
    if gt is not None and not value > gt:
        raise ConfigError(f"{dotted}: must be > {gt}, got {value!r}")
    if ge is not None and not value >= ge:
        raise ConfigError(f"{dotted}: must be >= {ge}, got {value!r}")
    if le is not None and not value <= le:
        raise ConfigError(f"{dotted}: must be <= {le}, got {value!r}")
    if isinstance(value, float) and math.isinf(value) and (gt is not None or ge is not None):
        raise ConfigError(f"{dotted}: must be finite, got {value!r}")


def _check_cross_fields(cfg: Config) -> None:
    _check_model(cfg.model)


def _check_model(m: ModelConfig) -> None:
    if m.eta_max is not None and m.eta > m.eta_max:
        raise ConfigError(f"model.eta: must be <= model.eta_max ({m.eta_max}), got {m.eta}")


def _toml_value(value: Any) -> str:
    if value is None:
        return '"none"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _to_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    lines: list[str] = []
    tables = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    out = "\n".join(lines)
    for key, value in tables:
        name = f"{prefix}{key}"
        body = _to_toml(value, name + ".")
        out += ("\n\n" if out else "") + f"[{name}]\n" + body
    return out.strip("\n") + "\n" if not prefix else out
