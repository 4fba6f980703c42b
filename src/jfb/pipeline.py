"""Wiring: config -> task -> data and model; checkpoint -> model. Used by the CLI and by users.

cfg = jfb.config.load_config("configs/celeba-gauss5-jfb.toml", ["train.steps=100"])
run = build_run(cfg)
Trainer(run.model, run.train_pairs, run.val_pairs, cfg).fit()
loaded = load_model("runs/x/best.safetensors")   # or: model, cfg, info = load_model(...)

A run's task is parsed once (``Run.task``, ``LoadedRun.task``); later stages take it from there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.utils.data import Dataset

from jfb.config import Config, ModelConfig
from jfb.constants import CHANNELS
from jfb.errors import CheckpointError, ConfigError, DataError
from jfb.models import build_model
from jfb.physics import LinearOperator
from jfb.tasks import Task, get_task
from jfb.train.checkpoint import check_weights, load_weights
from jfb.train.seeding import mix_seed

#: Seed of the evaluation noise: image i of a split gets noise from seed EVAL_SEED + i.
EVAL_SEED = 0

#: Salt of the seed that draws a new model's initial weights: mix_seed(train.seed, _SALT_INIT).
_SALT_INIT = 0x1417


@dataclass
class Run:
    """Everything a training run needs, built from one config."""

    config: Config
    task: Task
    model: nn.Module
    train_pairs: Dataset
    val_pairs: Dataset


def build_run(cfg: Config, *, with_train: bool = True) -> Run:
    """Task, (x, y) training pairs with fresh noise (None unless ``with_train``), fixed-noise
    val pairs and the model as training starts (R from ``train.init_net`` when set)."""
    task = get_task(cfg.task)
    root = cfg.data.root  # where CelebA-128 lives (None: the default search)
    train = (
        task.train_pairs(crop=cfg.data.patch_size, seed=cfg.train.seed, root=root)
        if with_train
        else None
    )
    val = task.val_pairs(seed=EVAL_SEED, limit=cfg.data.max_val_images, root=root)
    op = None if task.is_family else task.operator()
    return Run(cfg, task, initial_model(cfg, op), train, val)  # type: ignore[arg-type]


def initial_model(cfg: Config, op: LinearOperator | None = None) -> nn.Module:
    """The model ``cfg`` describes as training starts: built with the task's operator (or
    ``op``), R from ``train.init_net`` when set. Its random initial weights are a function of
    ``train.seed`` alone (drawn from a forked CPU RNG, so the global RNGs are left as they were)."""
    if op is None:  # a task that draws a blur per image has no operator of its own
        task = get_task(cfg.task)
        op = None if task.is_family else task.operator()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(mix_seed(cfg.train.seed, _SALT_INIT))
        model = build_model(cfg.model, op, channels=CHANNELS)
    if cfg.train.init_net is not None:
        init_net(model, cfg.train.init_net)
    return model


def init_net(model: nn.Module, path: str | Path) -> int:
    """Start ``model.net`` (the learned part R) from the net of the jfb checkpoint ``path``;
    returns the number of tensors copied. Everything else (eta, rho, the operator) is left as is.

    The two nets must have the same architecture and parametrisation (both with or both without
    spectral normalisation); the ``residual`` flag may differ, since it changes what the net
    returns, not its weights. Typical use: a feedforward residual DnCNN denoiser D(x) = x - N(x)
    trained with ``jfb train`` starts DE-Prox or DE-ADMM at plug-and-play with D, or DE-GRAD
    (built with ``residual=false``, so R = N = x - D(x)) at RED's gradient step. Raises
    CheckpointError naming the tensors that do not fit.
    """
    net = getattr(model, "net", None)
    if not isinstance(net, nn.Module):
        raise CheckpointError(f"{type(model).__name__} has no learned net to initialise")
    weights, _ = load_weights(path)
    theirs = {k[len("net."):]: v for k, v in weights.items() if k.startswith("net.")}
    check_weights(path, theirs, net, what="this model's net",
                  hint=" (the architecture, width, depth and spectral_norm must be the same)")
    net.load_state_dict(theirs, strict=True)
    return len(theirs)


class LoadedModel(NamedTuple):
    """A model rebuilt from a checkpoint, in eval mode, with what it was trained as.

    ``info`` holds the checkpoint's metadata: ``"step"`` (int, global training steps done,
    pre-training included), ``"config"`` (the training config as a plain dict, the source of
    ``config``) and ``"extra"`` (a dict the trainer writes: ``best_val_psnr``, ``best_step``,
    ``train_seconds``, ``device``, ...; empty for checkpoints written by other code). A plain
    3-tuple otherwise: ``model, cfg, info = load_model(path)`` still works.
    """

    model: nn.Module
    config: Config
    info: dict[str, Any]


class LoadedRun(NamedTuple):
    """What :func:`load_run` gives: a :class:`LoadedModel`'s ``model``, ``config`` and
    ``info``, and ``task``, the checkpoint's training task (``config.task``) parsed once."""

    model: nn.Module
    config: Config
    info: dict[str, Any]
    task: Task


def _config_of(info: dict[str, Any], path: str | Path) -> Config:
    try:
        return Config.from_dict(info["config"])
    except Exception as exc:  # a checkpoint of another program, or of an older config schema
        raise CheckpointError(f"{path}: the checkpoint's config is not usable: {exc}") from exc


def read_config(path: str | Path) -> Config:
    """The config a (verified) checkpoint was trained with."""
    return _config_of(load_weights(path)[1], path)


def load_model(
    path: str | Path,
    *,
    op: LinearOperator | Callable[[Task], LinearOperator] | None = None,
    device: str | torch.device = "cpu",
    eval_max_iter: int | None = None,
    eval_tol: float | None = None,
    noise: float | None = None,
) -> LoadedModel:
    """Rebuild the model a checkpoint was trained as, load its weights, put it in eval mode.

    ``op`` replaces the task's operator (a physics-aware model can be applied to another blur,
    mask or image size); it may be a function of the checkpoint's task that returns it;
    ``eval_max_iter`` and ``eval_tol`` change the test-time iteration budget and tolerance of
    an implicit model (:func:`set_eval_budget`); ``noise``
    (the measurements' noise std) applies :func:`adapt_noise`. The checkpoint's task is parsed
    (once) only when one of them needs it; :func:`load_run` also returns it.
    Returns a :class:`LoadedModel` ``(model, config, info)``.
    """
    weights, info = load_weights(path)
    cfg = _config_of(info, path)
    task = get_task(cfg.task)
    if not isinstance(op, LinearOperator):
        op = (None if task.is_family else task.operator()) if op is None else op(task)
    model = build_model(with_noise_rule(cfg.model, task), op, channels=CHANNELS)
    # The operator's buffers come from the task (or ``op``), not from the checkpoint.
    own = {k: v for k, v in weights.items() if not k.startswith("op.")}
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith("op.")}
    check_weights(path, own, expected, what="the model of its own config")
    model.load_state_dict(own, strict=False)
    set_eval_budget(model, max_iter=eval_max_iter, tol=eval_tol)
    if noise is not None:
        adapt_noise(model, cfg, noise, task=task)
    return LoadedModel(model.to(device).eval(), cfg, info)


def with_noise_rule(model_cfg: ModelConfig, task: Task) -> ModelConfig:
    """A DE-ADMM trained at one noise level (no ``noise_ref`` in its config) gets that level as
    its ``noise_ref``, so that a call's physics may carry another: the plug-and-play rule
    rho ~ sigma^2 (what :func:`adapt_noise` sets as a factor). Other configs as they are."""
    if (model_cfg.kind != "deadmm" or model_cfg.noise_ref is not None or task.is_family
            or not task.noise_sigma > 0):
        return model_cfg
    return dataclasses.replace(model_cfg, noise_ref=task.noise_sigma)


def load_run(
    path: str | Path,
    *,
    op: LinearOperator | Callable[[Task], LinearOperator] | None = None,
    **options: Any,
) -> LoadedRun:
    """:func:`load_model` (the same arguments: ``op``, ``device``, ``eval_max_iter``,
    ``eval_tol``, ``noise``) with the checkpoint's task, parsed once there, for the later stages
    of a run that evaluate or adapt the model under it."""
    parsed: list[Task] = []

    def operator_of(task: Task) -> LinearOperator:  # load_model's hook: the task it parsed
        parsed.append(task)
        if isinstance(op, LinearOperator):
            return op
        return task.operator() if op is None else op(task)

    model, cfg, info = load_model(path, op=operator_of, **options)
    return LoadedRun(model, cfg, info, parsed[0] if parsed else get_task(cfg.task))


#: What a model trained across blurs says when it is not told one.
NO_BLUR = ("this model deblurs any blur and has none of its own: tell it the blur (--kernel "
           "gaussian:25:1.6, motion:15:3, disk:4 or the path of a PSF image; kernel= in Python)")


def replace_blur(kernel: str | None = None,
                 padding: str | None = None) -> Callable[[Task], LinearOperator]:
    """The ``op`` for :func:`load_model` that gives a blur model the blur of its own task with
    another ``kernel`` (a spec such as ``"gaussian:5:5.0"``, see :mod:`jfb.tasks`, or the path
    of a PSF image or ``.npy`` array) and/or ``padding`` (a model trained across blurs: the
    kernel is required, and the padding defaults to "reflect"). Loading a model of another
    operator with it is a DataError; a bad spec is a ConfigError."""

    def blur_for(base: Task) -> LinearOperator:
        if base.op_kind != "blur":
            raise DataError(f"kernel/padding apply to blur models; this one is op={base.op}")
        if base.is_family and kernel is None:
            raise DataError(NO_BLUR)
        spec = kernel or base.kernel
        if spec is not None and ":" not in spec and Path(spec).is_file():
            spec = f"file:{spec}"  # a PSF image or .npy given by its path
        # a model trained across blurs (circular) meets photos, which are not periodic
        default_padding = "reflect" if base.is_family else base.padding
        return Task("custom", kernel=spec, noise_sigma=0.0,
                    padding=padding or default_padding).operator()

    return blur_for


def adapt_noise(model: nn.Module, cfg: Config, sigma: float, *,
                task: Task | None = None) -> float:
    """Tell ``model``, trained under ``cfg``, that its measurements have noise std ``sigma``: a
    DE-ADMM model scales its rho by (sigma / sigma_train)^2, sigma_train the noise of its
    training task (:meth:`jfb.models.DEADMM.adapt_noise`). Returns that factor. ConfigError for
    other models (they have no such rule) and for a model trained without noise. ``task``:
    ``cfg.task`` already parsed (None: parsed here)."""
    if not callable(getattr(model, "adapt_noise", None)):
        raise ConfigError(f"noise adaptation applies to DE-ADMM models (their rho follows "
                          f"sigma^2); this one is {cfg.model.kind}")
    trained = (task if task is not None else get_task(cfg.task)).noise_sigma
    if not trained > 0:
        raise ConfigError(f"the model was trained without noise (task {cfg.task}): there is "
                          "no noise level to adapt from")
    return model.adapt_noise(sigma, trained)


def set_eval_budget(model: nn.Module, *, max_iter: int | None = None,
                    tol: float | None = None) -> None:
    """Give an implicit model a copy of its solver with another test-time iteration budget
    and/or relative-residual tolerance (those given; neither: the model is left as it is), made
    by the solver's constructor (``dataclasses.replace``), which validates them."""
    given = {k: v for k, v in (("eval_max_iter", max_iter), ("eval_tol", tol)) if v is not None}
    if not given:
        return
    solver = getattr(model, "solver", None)
    if solver is None:
        raise ValueError("eval_max_iter and eval_tol apply to implicit models only")
    model.solver = dataclasses.replace(solver, **given)
