"""`jfb compare`: every method on the same images, noise and metrics, as one table.

Methods are named by specs:
    input              the direct inverse: y itself for same-size operators (blur, noise,
                       masks), bicubic upsampling for super-resolution, filtered
                       back-projection for tomography ("blurred" is an alias)
    tikhonov           Tikhonov with gradient penalty (CG), weight tuned on training images
    tikhonov-identity  Tikhonov with identity penalty, weight tuned likewise
    tv                 total variation (primal-dual), weight tuned likewise
    wiener             Wiener filter (circular padding only), weight tuned likewise
    PATH.safetensors   a checkpoint written by `jfb train` (its method name is its config's)
    pnp-admm:PATH      plug-and-play ADMM with the model of checkpoint PATH as its denoiser D
                       (a model trained on a denoising task, op=denoise, e.g. `jfb train --set
                       task=op=denoise,noise=0.03,... --set model.kind=feedforward`); the penalty
                       rho is tuned like the classical weights (grid PNP_GRIDS, times ||A||^2)
    pnp-pgd:PATH       plug-and-play proximal gradient x <- D(x - step A^T(A x - y)), same
                       denoiser; the step is tuned (grid PNP_GRIDS, in units of 1 / ||A||^2)
Classical and PnP weights are tuned on fixed-noise pairs drawn from the *training* split, never
on the images the table reports; for operators with ||A||^2 far from 1 (super-resolution,
tomography) the grid is scaled by ||A||^2, so that it brackets the data term's scale (the PnP-PGD
step is always in units of 1 / ||A||^2). Both PnP methods run exactly PNP_ITERS iterations from
A^T y (no early stop; ADMM's x-update by at most PNP_CG_ITERS CG steps). Implicit models are also
evaluated at several test-time iteration budgets (PSNR versus fixed-point iterations). Every
row is scored by PSNR, SSIM and the metrics asked for (:mod:`jfb.quality`); the files are written
by :mod:`jfb.compare_report`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from jfb.baselines.direct import direct_inverse
from jfb.data import DegradedDataset
from jfb.errors import ConfigError, DataError, JFBError
from jfb.evaluate import EvalResult, evaluate
from jfb.pipeline import EVAL_SEED, adapt_noise, load_model, load_run, read_config
from jfb.progress import ProgressBar, progress_bar
from jfb.quality import Metric, check_images
from jfb.tasks import Task, get_task

#: A reconstruction method: y -> x_hat.
Method = Callable[[torch.Tensor], torch.Tensor]

#: Seed of the tuning noise (distinct from the evaluation seed).
TUNE_SEED = 12345
GRIDS: dict[str, tuple[float, ...]] = {
    "tikhonov": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0),
    "tikhonov-identity": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0),
    "tv": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1),
    "wiener": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
}
#: Plug-and-play methods ("pnp-admm:PATH", "pnp-pgd:PATH"): the grids of their tuned weight, the
#: ADMM penalty rho (scaled by ||A||^2 like the regularisation weights; with f = ||Ax - y||^2 / 2
#: and a denoiser for noise sigma_d, MAP suggests rho ~ sigma_y^2 / sigma_d^2) and the PGD step
#: (in units of 1 / ||A||^2, below 2 / ||A||^2, the stability bound for a non-expansive D).
PNP_GRIDS: dict[str, tuple[float, ...]] = {
    "pnp-admm": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0),
    "pnp-pgd": (0.25, 0.5, 1.0, 1.5, 1.9),
}
#: The PnP row names and the names of their weights.
PNP_NAMES = {"pnp-admm": ("PnP-ADMM", "rho"), "pnp-pgd": ("PnP-PGD", "step")}
#: PnP iterations (all run: no early stop) and CG steps at most per ADMM x-update.
PNP_ITERS = 40
PNP_CG_ITERS = 20


@dataclass
class Row:
    """A table row: the evaluation, its extra columns, and the short name titling its figure
    column (the row name, ``result.method``, can be long)."""

    result: EvalResult
    info: dict[str, Any]
    short: str = ""


INPUT_METHODS = ("input", "blurred")
#: The name of the direct-inverse row, per operator kind.
INPUT_NAMES = {
    "blur": "blurred input y",
    "denoise": "noisy input y",
    "inpaint": "masked input y",
    "sr": "bicubic upsampling of y",
    "radon": "filtered back-projection",
}
#: The same, short enough to title a figure column.
INPUT_SHORT = {"blur": "blurred y", "denoise": "noisy y", "inpaint": "masked y",
               "sr": "bicubic", "radon": "FBP"}


def classical_method(name: str, op, weight: float) -> Method:
    """The y -> x_hat map of a classical method with regularisation weight ``weight``."""
    from jfb.baselines import tikhonov

    if name == "tikhonov":
        return lambda y: tikhonov(op, y, weight, penalty="gradient", max_iter=200)
    if name == "tikhonov-identity":
        return lambda y: tikhonov(op, y, weight, penalty="identity", max_iter=200)
    if name == "tv":
        from jfb.baselines.tv import tv_reconstruct

        return lambda y: tv_reconstruct(op, y, weight, max_iter=300)
    if name == "wiener":
        from jfb.baselines.wiener import wiener

        return lambda y: wiener(op, y, weight, penalty="gradient")
    raise _unknown_method(name)


def pnp_method(name: str, op, denoiser: Method, weight: float) -> Method:
    """The y -> x_hat map of PnP-ADMM (``name="pnp-admm"``, rho = ``weight``) or PnP-PGD
    ("pnp-pgd", step = ``weight``) with ``denoiser``: PNP_ITERS iterations from A^T y."""
    from jfb.baselines.pnp import pnp_admm, pnp_pgd

    if name == "pnp-admm":
        return lambda y: pnp_admm(op, y, denoiser, rho=weight, max_iter=PNP_ITERS, tol=0.0,
                                  cg_iters=PNP_CG_ITERS)
    if name == "pnp-pgd":
        return lambda y: pnp_pgd(op, y, denoiser, step=weight, max_iter=PNP_ITERS, tol=0.0)
    raise _unknown_method(name)


def method_kind(spec: str) -> str:
    """"input", "pnp" ("pnp-admm:PATH", "pnp-pgd:PATH"), "checkpoint" ("PATH.safetensors") or
    "classical" (a key of GRIDS); ConfigError for any other spec (a "pnp-NAME:..." with an
    unknown NAME included)."""
    if spec in INPUT_METHODS:
        return "input"
    name, sep, _ = spec.partition(":")
    if sep and name.startswith("pnp-"):
        if name not in PNP_GRIDS:
            raise _unknown_method(spec)
        return "pnp"
    if spec.endswith(".safetensors"):
        return "checkpoint"
    if spec in GRIDS:
        return "classical"
    raise _unknown_method(spec)


def denoiser_config(spec: str, path: str):
    """The config of the denoiser checkpoint ``path`` of PnP method ``spec``; ConfigError unless
    it is a readable .safetensors checkpoint of a model trained on a denoising task."""
    if not path.endswith(".safetensors"):
        raise ConfigError(f"method {spec!r}: expected {spec.partition(':')[0]}:PATH with PATH a "
                          ".safetensors checkpoint of a denoiser")
    try:
        cfg = read_config(path)
        kind = get_task(cfg.task).op_kind
    except JFBError as exc:
        raise ConfigError(f"method {spec!r}: {exc}") from exc
    if kind != "denoise":
        raise ConfigError(
            f"method {spec!r}: the denoiser must be a model trained on a denoising task "
            f"(op=denoise), but {path} was trained on task {cfg.task!r} (op={kind})"
        )
    return cfg


def _unknown_method(spec: str) -> ConfigError:
    return ConfigError(
        f"unknown method {spec!r}: expected one of {', '.join(GRIDS)}, 'input', a .safetensors "
        "checkpoint, pnp-admm:PATH or pnp-pgd:PATH (PATH: a denoiser's .safetensors checkpoint)"
    )


def tuning_pairs(task: Task, n: int, crop: int | None = None, seed: int = TUNE_SEED) -> Dataset:
    """``n`` fixed-noise (x, y) pairs from the task's training split (for weight tuning);
    ``seed`` draws the crops, the noise always uses ``TUNE_SEED``."""
    clean = task.train_set(crop=crop, seed=seed) if crop else task.train_set()
    pairs = DegradedDataset(clean, task.operator(), task.noise(), seed=TUNE_SEED)
    return Subset(pairs, range(min(n, len(pairs))))


def tune_weight(
    name: str,
    op,
    pairs: Dataset,
    device: str | torch.device = "cpu",
    method: Callable[[float], Method] | None = None,
) -> tuple[float, list[dict[str, float]]]:
    """The grid weight of ``name`` with the best mean PSNR on ``pairs``, and every try.

    The grid is ``GRIDS[name]`` or ``PNP_GRIDS[name]`` times :func:`grid_scale`, or, for the
    PnP-PGD step, divided by ||A||^2; ``method(w)`` is the y -> x_hat map at weight w (default:
    :func:`classical_method`).
    """
    from jfb.baselines import tune

    shape = tuple(pairs[0][0].shape)
    if name == "pnp-pgd":  # a step size, stable below 2 / ||A||^2
        scale = 1.0 / operator_norm_sq(op, shape)
    else:
        scale = grid_scale(op, shape)
    grid = tuple(float(f"{w * scale:.3g}") for w in {**GRIDS, **PNP_GRIDS}[name])
    make = method if method is not None else partial(classical_method, name, op)
    best, table = tune(make, grid, pairs, batch_size=16, device=device)
    return best, [{"weight": r.value, "psnr": round(r.psnr, 4)} for r in table]


def grid_scale(op, image_shape: tuple[int, ...]) -> float:
    """||A||^2 on images of ``image_shape`` (C, H, W) when it lies outside [1/2, 2], else 1: the
    factor by which the regularisation grids are scaled."""
    norm_sq = operator_norm_sq(op, image_shape)
    return norm_sq if not 0.5 <= norm_sq <= 2.0 else 1.0


def operator_norm_sq(op, image_shape: tuple[int, ...]) -> float:
    """||A||^2 = ||A^T A|| on images of ``image_shape`` (C, H, W), by power iteration."""
    return op.norm_estimate((1, *image_shape), n_iter=50, tol=1e-4) ** 2


@dataclass
class Prepared:
    """One method spec built for the task's operator, before any evaluation: a fixed y -> x_hat
    map with its row name (``method``, ``name``), or a tunable one (``tunable``: grid name,
    weight -> map, weight -> row name). ``kind``: :func:`method_kind`; ``short`` titles its
    figure column; ``info`` goes to its table row."""

    spec: str
    kind: str
    short: str
    info: dict[str, Any]
    method: Method | None = None
    name: str = ""
    tunable: tuple[str, Callable[[float], Method], Callable[[float], str]] | None = None


def prepare_methods(
    task: Task,
    methods: Sequence[str],
    op,
    measurement_shape: tuple[int, ...],
    *,
    device: str | torch.device = "cpu",
    adapt_rho: bool = False,
) -> list[Prepared]:
    """Build every method of ``methods`` for ``op``, or refuse the first one that cannot run.

    Checkpoints and PnP denoisers are loaded; the direct inverse and each classical method are
    applied once to a zero measurement of ``measurement_shape`` (C, H, W) (a few milliseconds:
    their iterations stop at once on zero data). A method that cannot run on ``op``, such as
    Wiener on a blur with zero padding, is a ConfigError naming it, before any evaluation.
    """
    y0 = torch.zeros((1, *measurement_shape), device=device)
    prepared = []
    for spec in methods:
        kind = method_kind(spec)
        if kind == "pnp":
            denoiser_config(spec, spec.partition(":")[2])
        if spec == "wiener" and task.op_kind != "blur":
            raise ConfigError(f"method 'wiener' applies to blur tasks only, not op={task.op}")
        if kind == "input":
            prepared.append(Prepared(spec, kind, INPUT_SHORT[task.op_kind],
                                     {"params": 0, "train_seconds": 0},
                                     partial(direct_inverse, op), INPUT_NAMES[task.op_kind]))
            _dry_run(spec, task, prepared[-1].method, y0)
        elif kind == "checkpoint":
            prepared.append(_prepare_checkpoint(spec, task, op, device, adapt_rho))
        else:
            prepared.append(_prepare_tunable(spec, op, device))
            if kind == "classical":
                _dry_run(spec, task, prepared[-1].tunable[1](1.0), y0)
    return _unique_names(prepared)


def _dry_run(spec: str, task: Task, method: Method, y0: torch.Tensor) -> None:
    """Apply ``method`` to ``y0``; its failure is a ConfigError that names the method."""
    try:
        with torch.no_grad():
            method(y0)
    except (JFBError, ValueError, TypeError, RuntimeError, NotImplementedError) as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"method {spec!r} cannot run on task {task.name} "
                          f"(op={task.op}): {why}") from exc


def _prepare_checkpoint(spec: str, task: Task, op, device, adapt_rho: bool) -> Prepared:
    """A checkpoint's model, loaded with ``op``; DE-ADMM rho adapted to the task's noise when
    ``adapt_rho``."""
    model, cfg, info = load_model(spec, op=op, device=device)
    name = _model_name(cfg)
    if adapt_rho and callable(getattr(model, "adapt_noise", None)):
        factor = adapt_noise(model, cfg, task.noise_sigma)
        name += f" [rho x{factor:.3g} for noise {task.noise_sigma:g}]"
    extra = info.get("extra", {})
    row_info = {
        "params": sum(p.numel() for p in model.parameters()),
        "train_seconds": extra.get("train_seconds", _logged_seconds(spec)),
        "train_device": extra.get("device"),
        "checkpoint": spec,
    }
    return Prepared(spec, "checkpoint", f"{cfg.model.kind} ({_run_name(spec)})", row_info,
                    model, name)


def _run_name(checkpoint: str) -> str:
    """The folder of a file the trainer writes (its run: "c5" for runs/c5/best.safetensors),
    else the file's stem ("faces" for src/jfb/weights/faces.safetensors)."""
    from jfb.train.run_checkpoints import BEST, LAST, PRETRAINED

    path = Path(checkpoint)
    if path.name in (BEST, LAST, PRETRAINED) and path.parent.name:
        return path.parent.name
    return path.stem


def _unique_names(prepared: list[Prepared]) -> list[Prepared]:
    """Tell apart methods that would share a name: checkpoints with the same row name get their
    run's name appended ("... [c5]"), and repeated short names are numbered ("tv", "tv #2"), so
    that table rows, curves and figure columns stay distinct."""
    names = [p.name for p in prepared if p.kind == "checkpoint"]
    for p in prepared:
        if p.kind == "checkpoint" and names.count(p.name) > 1:
            p.name += f" [{_run_name(p.spec)}]"
    seen: dict[str, int] = {}
    for p in prepared:
        seen[p.short] = seen.get(p.short, 0) + 1
        if seen[p.short] > 1:
            p.short = f"{p.short} #{seen[p.short]}"
    return prepared


def compare(
    task: Task,
    methods: Sequence[str],
    *,
    max_images: int | None = None,
    tune_images: int = 16,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    iteration_budgets: Sequence[int] = (),
    keep: int = 4,
    adapt_rho: bool = False,
    progress: bool = True,
    metrics: Sequence[Metric] = (),
) -> dict[str, Any]:
    """Evaluate ``methods`` on ``task``'s evaluation split; returns rows and curves.

    Every method is built (and refused, naming it) before any evaluation
    (:func:`prepare_methods`). ``adapt_rho``: DE-ADMM checkpoints scale their rho to the task's
    noise (:func:`jfb.pipeline.adapt_noise`); their row names say by how much. ``progress``:
    a progress bar per method and phase (tuning, evaluation, iteration budgets) on a terminal.
    ``metrics`` (:func:`jfb.quality.parse_metrics`) score every row beside PSNR and SSIM; one
    that cannot score the task's images is refused before any work. Weights are tuned and
    iteration budgets measured by PSNR whatever the metrics."""
    for spec in methods:  # unknown specs first, before reading any data
        method_kind(spec)
    val = task.val_pairs(seed=EVAL_SEED, limit=max_images)
    if len(val) == 0:
        raise DataError(f"task {task.name} has no evaluation images")
    check_images(metrics, tuple(val[0][0].shape))
    op = task.operator().to(device)
    prepared = prepare_methods(task, methods, op, tuple(val[0][1].shape), device=device,
                               adapt_rho=adapt_rho)
    rows: list[Row] = []
    curves: dict[str, list[dict[str, float]]] = {}
    tuning: dict[str, Any] = {}
    for i, m in enumerate(prepared, 1):
        desc = f"method {i}/{len(prepared)}: {m.short}"
        method, name = m.method, m.name
        if m.tunable is not None:
            grid_name, make, label = m.tunable
            pairs = tuning_pairs(task, tune_images)
            n_grid = len({**GRIDS, **PNP_GRIDS}[grid_name])
            t0 = time.perf_counter()
            with progress_bar(n_grid * len(pairs), f"{desc}, tuning", unit="image",
                              enabled=progress) as bar:
                weight, tried = tune_weight(grid_name, op, pairs, device,
                                            method=_counting(make, bar))
            tuning[m.spec] = {
                "best": weight,
                "tried": tried,
                "seconds": round(time.perf_counter() - t0, 1),
            }
            method, name = make(weight), label(weight)
        with progress_bar(len(val), desc, unit="image", enabled=progress) as bar:
            res = evaluate(method, val, name=name, keep=keep, batch_size=batch_size,
                           device=device, progress=bar, metrics=metrics)
        rows.append(Row(res, m.info, m.short))
        if m.kind == "checkpoint" and res.iterations is not None and iteration_budgets:
            with progress_bar(len(iteration_budgets) * len(val), f"{desc}, iteration budgets",
                              unit="image", enabled=progress) as bar:
                curves[name] = _budget_curve(method, val, iteration_budgets, batch_size, device,
                                             bar)
    return {"task": task.name, "rows": rows, "curves": curves, "tuning": tuning, "val": val,
            "metrics": list(metrics)}


def counted(method: Method, bar: ProgressBar) -> Method:
    """``method`` that advances ``bar`` by the images of each batch it reconstructs."""

    def run(y: torch.Tensor) -> torch.Tensor:
        out = method(y)
        bar.update(int(y.shape[0]))
        return out

    return run


def _counting(make: Callable[[float], Method], bar: ProgressBar) -> Callable[[float], Method]:
    """``make`` (weight -> method) whose methods advance ``bar`` (:func:`counted`)."""
    return lambda weight: counted(make(weight), bar)


def _prepare_tunable(spec: str, op, device: str | torch.device) -> Prepared:
    """A classical or PnP method spec, its weight to be tuned; a PnP spec loads its denoiser
    (in eval mode, on ``device``)."""
    if method_kind(spec) == "classical":
        return Prepared(spec, "classical", spec, {"params": 0, "train_seconds": 0},
                        tunable=(spec, partial(classical_method, spec, op),
                                 lambda w: f"{spec} ({w:g})"))
    from jfb.baselines.pnp import DenoiserWrapper

    name, _, path = spec.partition(":")
    model, cfg, info, trained = load_run(path, device=device)
    title, weight_name = PNP_NAMES[name]
    net = _net_name(cfg.model)
    if cfg.model.kind != "feedforward":  # an implicit model trained to denoise
        net = f"{cfg.model.kind} {net}"
    sigma = trained.noise_sigma

    def label(w: float) -> str:
        return f"{title} (trained {net} denoiser, sigma {sigma:g}; {weight_name} {w:g})"

    row_info = {
        "params": sum(p.numel() for p in model.parameters()),
        "train_seconds": info.get("extra", {}).get("train_seconds", _logged_seconds(path)),
        "checkpoint": path,
    }
    return Prepared(spec, "pnp", f"{title} ({_run_name(path)})", row_info,
                    tunable=(name, partial(pnp_method, name, op, DenoiserWrapper(model)), label))


def _logged_seconds(checkpoint: str) -> float | None:
    """Training seconds from the run's own log (metrics.jsonl beside the checkpoint), for
    checkpoints written before the trainer recorded them; summed over resumed runs."""
    import json

    log = Path(checkpoint).parent / "metrics.jsonl"
    if not log.is_file():
        return None
    total = [
        json.loads(line).get("seconds", 0.0)
        for line in log.read_text().splitlines()
        if '"summary"' in line
    ]
    return round(sum(total), 1) if total else None


def _model_name(cfg) -> str:
    """E.g. "degrad + jfb (dncnn 7x32, SN<=1)" or "feedforward (dncnn 7x32)"."""
    m, t = cfg.model, cfg.train
    net = _net_name(m)
    if m.net.spectral_norm:
        net += f", SN<={m.net.sn_target:g}"
    if t.init_net:
        net += f", R from {Path(t.init_net).parent.name or t.init_net}"
    elif t.pretrain_steps and t.pretrain == "denoise":
        net += f", R pre-trained as a denoiser ({t.pretrain_steps} steps)"
    if m.kind == "feedforward":
        return f"feedforward ({net})"
    bw = m.backward.name + (f"({m.backward.k})" if m.backward.k != 1 else "")
    if t.jacobian_penalty:
        net += f", Jacobian penalty {t.jacobian_penalty:g}"
    return f"{m.kind} + {bw} ({net})"


def _net_name(m) -> str:
    """E.g. "dncnn 7x32" or "unet 3 levels, base 16" for a ``ModelConfig``."""
    if m.net.name == "unet":
        return f"unet {m.net.levels} levels, base {m.net.base}"
    return f"{m.net.name} {m.net.depth}x{m.net.width}"


def _budget_curve(model, val, budgets, batch_size, device, progress: ProgressBar | None = None
                  ) -> list[dict[str, float]]:
    """PSNR when the solve is cut at each test-time iteration budget (``progress`` advances by
    every image of every budget). Each budget is a copy of the model's solver made by its
    constructor (``dataclasses.replace``, validated); the model gets its own solver back."""
    saved = model.solver
    out = []
    try:
        for k in budgets:  # eval_tol 1e-12: exactly k iterations
            model.solver = dataclasses.replace(saved, eval_max_iter=int(k), eval_tol=1e-12)
            res = evaluate(model, val, name=f"k={k}", batch_size=batch_size, device=device,
                           progress=progress)
            out.append({"iterations": int(k), "psnr": round(float(res.psnr.mean()), 4)})
    finally:
        model.solver = saved
    return out
