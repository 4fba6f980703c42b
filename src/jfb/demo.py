"""`jfb demo`: the project's best recipe at work on built-in photos, against the baselines.

Task ``natural-gauss5`` (training patches from some photos that ship with scikit-image,
evaluation crops from others: ``jfb.data.builtin``). With the config ``jfb/configs/demo.toml``
the demo trains, then evaluates on the same crops with seeded noise:

1. DE-ADMM + JFB, the recipe of ``configs/cpu-deadmm.toml`` on a smaller budget: R pre-trained
   as a blind denoiser, then the whole model trained by JFB through the fixed point. The run
   is paused at the hand-over (a checkpoint, resumed exactly) to keep the model JFB starts
   from: plug-and-play ADMM with the pre-trained denoiser.
2. Its feedforward twin: the same DnCNN applied once to the same initial estimate, trained from
   scratch for the wall-clock seconds the DE-ADMM run took (steps sized by a timed probe, capped
   by ``train.max_minutes``).
3. Tikhonov and TV, weights tuned on training patches as ``jfb compare`` does.
4. The shipped default model (``jfb deblur``'s), trained across blurs and noise levels on BSDS
   photos (none of these), told this task's blur and noise per call.

It writes ``report.md``, ``results.json``, ``figure.png`` and ``curve.png`` (and each training
run's folder). Learned rows are the final weights of their runs: the validation curve, on the
evaluation crops, is shown and never used to pick a checkpoint.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from jfb.atomic import write_text
from jfb.compare import classical_method, tune_weight, tuning_pairs
from jfb.config import Config, load_config
from jfb.deblur import call_physics, default_checkpoint
from jfb.errors import ConfigError
from jfb.evaluate import EvalResult, evaluate
from jfb.pipeline import EVAL_SEED, Run, build_run, initial_model, load_model
from jfb.progress import progress_bar
from jfb.report import figure_grid, markdown_table, save_figure, write_json
from jfb.tasks import get_task
from jfb.train.trainer import LAST, Trainer

#: Training patches on which the classical weights are tuned.
TUNE_IMAGES = 32
#: Training steps the probe times to size the feedforward twin's run, in log windows of this.
PROBE_STEPS, PROBE_WINDOW = 30, 5
#: The relative difference of the twin's and the implicit run's seconds the report lets pass.
PACE_TOLERANCE = 0.1
#: About this many validations during the feedforward twin's run (points of its curve).
TWIN_VALIDATIONS = 5
#: The checkpoint of the implicit model at the hand-over, beside its run's other files.
HANDOVER = "handover.safetensors"
#: Display names of the model kinds.
KIND_NAMES = {"deadmm": "DE-ADMM", "degrad": "DE-GRAD", "deprox": "DE-Prox",
              "feedforward": "feedforward"}
#: The demo's rows, in table order (the ``key`` of each row of results.json).
ROW_KEYS = ("input", "tikhonov", "tv", "default", "feedforward", "handover", "implicit")
#: The columns of the report's table.
COLUMNS = ["method", "psnr", "psnr_std", "ssim", "mean_solver_iters", "infer_ms_per_image",
           "steps", "train_seconds"]


def demo_config(overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The demo's config (``jfb/configs/demo.toml`` inside the package) with overrides."""
    path = resources.files("jfb") / "configs" / "demo.toml"
    with resources.as_file(path) as p:
        return load_config(p, list(overrides))


@dataclass
class TrainedRun:
    """A finished training run: its summary and log records, and the wall-clock time at which
    each of its ``fit`` calls started with the training seconds done before it."""

    out_dir: Path
    summary: dict[str, Any]
    records: list[dict[str, Any]]
    fits: list[tuple[float, float]]

    def seconds_at(self, wall: float) -> float:
        """Training seconds at wall-clock time ``wall`` (a log record's ``time``), counted as
        the trainer counts ``train_seconds``: inside ``fit`` calls only."""
        start, before = max((f for f in self.fits if f[0] <= wall), default=self.fits[0])
        return before + max(0.0, wall - start)

    @property
    def seconds(self) -> float:
        """Training seconds (``fit``'s wall time, summed over the resumed parts)."""
        return float(self.summary["train_seconds"])

    @property
    def steps(self) -> str:
        """"P + S" (pre-training + main steps), or "S" without pre-training."""
        p, s = self.summary["pretrain_steps"], self.summary["steps"]
        return f"{p} + {s}" if p else str(s)


@dataclass
class Entry:
    """One row of the demo: its key (``ROW_KEYS``), the method, its table name and figure
    label, and what it cost."""

    key: str
    name: str
    label: str
    method: Callable[[torch.Tensor], torch.Tensor] | nn.Module
    steps: str | None = None
    train_seconds: float | None = None


def run_demo(
    out_dir: str | Path = "runs/demo",
    overrides: list[str] | tuple[str, ...] = (),
    *,
    progress: bool = True,
    n_figure: int = 4,
) -> dict[str, Any]:
    """Train, evaluate, and write ``report.md``, ``results.json``, ``figure.png``, ``curve.png``;
    returns the table's rows (one per ``ROW_KEYS``), the output folder, the two training
    summaries and the demo's seconds."""
    out = Path(out_dir)
    cfg = demo_config([*overrides, f"train.out_dir={(out / 'implicit').as_posix()}"])
    t0 = time.perf_counter()
    run = build_run(cfg)
    implicit = train_with_handover(run, cfg, progress=progress)
    twin = train_twin(run, cfg, implicit.seconds, out / "feedforward", progress=progress)

    op = run.task.operator()
    pairs = tuning_pairs(run.task, TUNE_IMAGES, crop=cfg.data.patch_size, seed=cfg.train.seed)
    tuning = {name: timed_tuning(name, op, pairs) for name in ("tikhonov", "tv")}
    entries = demo_entries(cfg, op, implicit, twin, tuning)
    val = run.val_pairs  # the crops the trainer validated on: the curve and the table agree
    with progress_bar(len(entries) * len(val), f"evaluating {len(entries)} methods",
                      unit="image", enabled=progress) as bar:
        results = [evaluate(e.method, val, name=e.name, keep=n_figure, progress=bar)
                   for e in entries]
    rows = [_row(e, r) for e, r in zip(entries, results, strict=True)]
    seconds = time.perf_counter() - t0
    write_json(
        out / "results.json",
        {
            "task": run.task.name,
            "rows": rows,
            "tuning": tuning,
            "training": {"implicit": implicit.summary, "feedforward": twin.summary},
            "seconds": round(seconds, 1),
            "threads": torch.get_num_threads(),
        },
    )
    by_key = {r["key"]: r for r in rows}
    _write_figure(out / "figure.png", val, entries, results, n_figure)
    write_curve(out / "curve.png", cfg, implicit, twin, by_key)
    write_text(out / "report.md", _report(run, cfg, by_key, tuning, implicit, twin, seconds))
    return {"rows": rows, "out_dir": str(out), "training": implicit.summary,
            "twin": twin.summary, "seconds": seconds}


def train_with_handover(run: Run, cfg: Config, *, progress: bool = True) -> TrainedRun:
    """Train ``run.model`` as ``cfg`` says, pausing after pre-training to keep the model as the
    main phase receives it (``HANDOVER`` in the run's folder). The pause is a checkpoint and an
    exact resume: the run is the one an uninterrupted ``jfb train`` makes."""
    out = fresh_run_folder(cfg.train.out_dir)
    first = Trainer(run.model, run.train_pairs, run.val_pairs, cfg, out_dir=out,
                    progress=progress)
    fits = [(time.time(), 0.0)]
    handover = _unless_interrupted(first.fit(max_steps=first.pretrain_steps))
    shutil.copyfile(out / LAST, out / HANDOVER)
    second = Trainer(run.model, run.train_pairs, run.val_pairs, cfg, out_dir=out,
                     progress=progress)
    fits.append((time.time(), handover["train_seconds"]))
    summary = _unless_interrupted(second.fit(resume=True))
    return TrainedRun(out, summary, _records(out), fits)


def fresh_run_folder(path: str | Path) -> Path:
    """``path``, emptied of the training run a previous demo left there (the trainer appends
    to an existing log, and the curve would mix the two runs). ConfigError when ``path``
    exists but holds no run (no ``config.json``): the demo deletes only its own runs."""
    path = Path(path)
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(f"{path} exists and is not a training run's folder; the demo "
                              "writes its runs there: choose another --out")
        shutil.rmtree(path)
    return path


def _unless_interrupted(summary: dict[str, Any]) -> dict[str, Any]:
    """``summary`` of a ``fit``; KeyboardInterrupt when a signal stopped it (Ctrl-C stops the
    demo, not just the run in progress; its ``last.safetensors`` is kept)."""
    if summary["stopped"] == "signal":
        raise KeyboardInterrupt
    return summary


def twin_config(cfg: Config, *, steps: int, seconds: float | None, out_dir: str | Path) -> Config:
    """The feedforward twin of ``cfg``'s model: the same net applied once to the same initial
    estimate, trained from scratch for ``steps`` steps, stopped after ``seconds`` at most."""
    d = cfg.to_dict()
    d["model"]["kind"] = "feedforward"
    d["train"].update(
        steps=steps,
        pretrain_steps=0,
        init_net=None,
        jacobian_penalty=0.0,
        max_minutes=None if seconds is None else seconds / 60.0,
        val_every=math.ceil(steps / TWIN_VALIDATIONS),
        out_dir=Path(out_dir).as_posix(),
    )
    return Config.from_dict(d)


def seconds_per_step(run: Run, cfg: Config) -> float:
    """Wall seconds per training step (data included) of the model ``cfg`` describes, on
    ``run``'s data: the median over the log windows of PROBE_WINDOW steps of a throw-away run of
    PROBE_STEPS steps without validation, its first window (start-up costs) left out."""
    d = cfg.to_dict()
    d["train"].update(steps=PROBE_STEPS, pretrain_steps=0, log_every=PROBE_WINDOW,
                      val_every=PROBE_STEPS, max_minutes=None)
    probe = Config.from_dict(d)
    with tempfile.TemporaryDirectory() as tmp:
        _unless_interrupted(Trainer(initial_model(probe, run.task.operator()),
                                    run.train_pairs, None, probe, out_dir=tmp,
                                    progress=False).fit())
        windows = [r for r in _records(Path(tmp)) if r["kind"] == "train"]
    ms = [r["step_ms"] + r["data_ms"] for r in windows[1:] or windows]
    return statistics.median(ms) / 1000.0


def train_twin(run: Run, cfg: Config, seconds: float, out_dir: Path, *,
               progress: bool = True) -> TrainedRun:
    """Train the feedforward twin of ``cfg``'s model for ``seconds`` of wall time: as many steps
    as fit at the pace :func:`seconds_per_step` measures (its cosine schedule ends there),
    stopped at ``seconds`` in any case."""
    probe = twin_config(cfg, steps=PROBE_STEPS, seconds=None, out_dir=out_dir)
    steps = max(1, round(seconds / seconds_per_step(run, probe)))
    twin_cfg = twin_config(cfg, steps=steps, seconds=seconds, out_dir=out_dir)
    trainer = Trainer(initial_model(twin_cfg, run.task.operator()), run.train_pairs,
                      run.val_pairs, twin_cfg, out_dir=fresh_run_folder(out_dir),
                      progress=progress)
    started = time.time()
    summary = _unless_interrupted(trainer.fit())
    return TrainedRun(out_dir, summary, _records(out_dir), [(started, 0.0)])


def timed_tuning(name: str, op, pairs) -> dict[str, Any]:
    """:func:`jfb.compare.tune_weight` of classical method ``name``: the best weight, every
    try, and the seconds it took."""
    t0 = time.perf_counter()
    best, tried = tune_weight(name, op, pairs)
    return {"best": best, "tried": tried, "seconds": round(time.perf_counter() - t0, 1)}


def method_names(cfg: Config) -> tuple[str, str]:
    """The implicit model's display name and its gradient strategy's, e.g. ("DE-ADMM", "JFB")."""
    return KIND_NAMES.get(cfg.model.kind, cfg.model.kind), cfg.model.backward.name.upper()


def demo_entries(cfg: Config, op, implicit: TrainedRun, twin: TrainedRun,
                 tuning: dict[str, dict[str, Any]]) -> list[Entry]:
    """The demo's rows, one per ``ROW_KEYS`` in that order; the models are read from the
    checkpoints (final weights, and the hand-over's) and use ``op``."""
    kind, strategy = method_names(cfg)
    net = f"DnCNN {cfg.model.net.depth}x{cfg.model.net.width}"
    lam_tik, lam_tv = tuning["tikhonov"]["best"], tuning["tv"]["best"]
    shipped, _, info = load_model(default_checkpoint())
    sigma = get_task(cfg.task).noise_sigma

    def default(y: torch.Tensor):  # told the blur and the noise per call: (x_hat, stats)
        return shipped.solve(y, call_physics(shipped, op, sigma))

    d_pre = int(info.get("extra", {}).get("pretrain_steps", 0))
    p = implicit.summary["pretrain_steps"]
    return [
        Entry("input", "blurred input y", "blurred", lambda y: y, train_seconds=0.0),
        Entry("tikhonov", f"Tikhonov, gradient penalty (lambda={lam_tik:g}, tuned)", "Tikhonov",
              classical_method("tikhonov", op, lam_tik),
              train_seconds=tuning["tikhonov"]["seconds"]),
        Entry("tv", f"TV (lambda={lam_tv:g}, tuned)", "TV", classical_method("tv", op, lam_tv),
              train_seconds=tuning["tv"]["seconds"]),
        Entry("default", "shipped default model: DE-ADMM + JFB trained across blurs and noise "
              "levels on BSDS photos, told this blur", "default (natural)", default,
              steps=(f"{d_pre} + {int(info.get('step', 0)) - d_pre}" if d_pre
                     else f"{int(info.get('step', 0))} (R pre-trained in a run of its own)")),
        Entry("feedforward", f"feedforward {net}, trained for the {kind} run's time",
              "feedforward", load_model(twin.out_dir / LAST, op=op).model,
              steps=twin.steps, train_seconds=twin.seconds),
        Entry("handover", f"{kind} before {strategy} (R pre-trained as a denoiser: PnP-ADMM)",
              f"{kind} before {strategy}", load_model(implicit.out_dir / HANDOVER, op=op).model,
              steps=f"{p} + 0", train_seconds=_handover_seconds(implicit)),
        Entry("implicit", f"{kind} + {strategy}, trained in this run", f"{kind} + {strategy}",
              load_model(implicit.out_dir / LAST, op=op).model,
              steps=implicit.steps, train_seconds=implicit.seconds),
    ]


def _row(entry: Entry, result: EvalResult) -> dict[str, Any]:
    row = {"key": entry.key, **result.summary(), "steps": entry.steps,
           "train_seconds": None if entry.train_seconds is None
           else round(entry.train_seconds, 1)}
    if isinstance(entry.method, nn.Module):
        row["params"] = sum(p.numel() for p in entry.method.parameters())
    return row


def _records(out_dir: Path) -> list[dict[str, Any]]:
    """The trainer's log records (``metrics.jsonl``) of a run."""
    text = (out_dir / "metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _handover_seconds(run: TrainedRun) -> float:
    """Training seconds at the hand-over: the first ``fit`` call's (pre-training) seconds."""
    return run.fits[-1][1]


def _val_points(run: TrainedRun) -> list[tuple[float, float]]:
    """(training seconds, validation PSNR) of each validation of the main phase."""
    return [(run.seconds_at(r["time"]), r["psnr"]) for r in run.records if r["kind"] == "val"]


def write_curve(path: Path, cfg: Config, implicit: TrainedRun, twin: TrainedRun,
                rows: dict[str, dict[str, Any]]) -> None:
    """Two panels: the training loss of the implicit run (config ``cfg``) by global step,
    pre-training and main phase apart; validation PSNR against training seconds for the
    implicit model (from its hand-over) and the feedforward twin, beside the rows that were not
    trained here (``rows`` by key)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jfb.report import legend_outside

    kind, strategy = method_names(cfg)
    p = implicit.summary["pretrain_steps"]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 3.6))
    train = [r for r in implicit.records if r["kind"] == "train" and "loss" in r]
    for phase, colour, label in (
        ("pretrain", "tab:gray", "pre-training R as a denoiser (denoising loss)"),
        ("train", "tab:blue", f"{strategy} (deblurring loss at the fixed point)"),
    ):
        pts = [(r["step"], r["loss"]) for r in train if r.get("phase") == phase]
        if pts:
            ax_loss.semilogy(*zip(*pts, strict=True), color=colour, label=label)
    if p:
        ax_loss.axvline(p, color="k", ls=":", lw=1)
    ax_loss.set_xlabel(f"global step (hand-over after step {p})")
    ax_loss.set_ylabel("training loss (MSE)")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend(fontsize=7)

    t_handover = _handover_seconds(implicit)
    pts = [(t_handover, rows["handover"]["psnr"]), *_val_points(implicit)]
    ax_val.plot(*zip(*pts, strict=True), marker="o", color="tab:blue",
                label=f"{kind} + {strategy}")
    ax_val.plot([t_handover], [rows["handover"]["psnr"]], marker="s", ms=8, color="tab:blue",
                ls="none", label=f"hand-over (before {strategy})")
    twin_pts = _val_points(twin)  # a twin stopped by its time budget was validated there too
    ax_val.plot(*zip(*twin_pts, strict=True), marker=".", color="tab:orange",
                label="feedforward twin")
    for key, colour, label in (("tikhonov", "tab:gray", "Tikhonov"), ("tv", "tab:green", "TV"),
                               ("default", "tab:purple", "shipped default (natural)")):
        psnr = rows[key]["psnr"]
        ax_val.axhline(psnr, color=colour, ls="--", lw=1, label=f"{label}: {psnr:.2f} dB")
    ax_val.set_xlabel("training seconds")
    ax_val.set_ylabel(f"PSNR on the {rows['input']['n_images']} evaluation crops (dB)")
    ax_val.grid(alpha=0.3)
    legend_outside(ax_val)
    save_figure(fig, path, title="jfb demo: training loss (left), evaluation PSNR (right)")


def _cost(entry: Entry) -> str:
    """E.g. "; 200 + 120 steps, 139 s" (what is known of it)."""
    parts = [f"{entry.steps} steps"] if entry.steps else []
    if entry.train_seconds:
        parts.append(f"{entry.train_seconds:.0f} s")
    return "; " + ", ".join(parts) if parts else ""


def _write_figure(path: Path, val, entries: list[Entry], results: list[EvalResult],
                  n: int) -> None:
    n = min(n, len(val))
    columns = ["ground truth"] + [e.label for e in entries]
    images, labels = [], []
    for i in range(n):
        x, _ = val[i]
        images.append([x] + [r.examples[i] for r in results])
        labels.append([""] + [f"{float(r.psnr[i]):.2f} dB" for r in results])
    caption = [f"{e.label}: {e.name}" + _cost(e) for e in entries]
    figure_grid(path, columns, images, labels, title="PSNR of each reconstruction (clamped)",
                caption=caption)


def _report(run: Run, cfg: Config, rows: dict[str, dict[str, Any]],
            tuning: dict[str, dict[str, Any]], implicit: TrainedRun, twin: TrainedRun,
            seconds: float) -> str:
    kind, strategy = method_names(cfg)
    p, s = implicit.summary["pretrain_steps"], implicit.summary["steps"]
    psnr = {k: r["psnr"] for k, r in rows.items()}
    net = f"DnCNN {cfg.model.net.depth}x{cfg.model.net.width}"
    intro = (
        f"Task `{run.task.name}`: {run.task.description}. Every row is evaluated on the same "
        f"{rows['input']['n_images']} crops of photos that no training step saw, with seeded "
        f"noise (image i: seed {EVAL_SEED} + i); metrics on outputs clamped to [0, 1] "
        "(PROTOCOL.md). `steps`: optimiser steps, pre-training + main phase; `train_seconds`: "
        "the wall time this run spent training or tuning the method."
    )
    items = [
        f"**{kind} + {strategy}**, the method: its denoiser R ({net}) pre-trained as a blind "
        f"denoiser for {p} steps, then the whole model (R and rho) trained by {strategy} through "
        f"the fixed point for {s} steps, {implicit.seconds:.0f} s in all. These are its final "
        "weights: the validation curve is shown, never used to choose a checkpoint.",
        f"**{kind} before {strategy}**: the same model at the hand-over, plug-and-play ADMM "
        f"with the pre-trained denoiser iterated to its fixed point. {strategy} moved it by "
        f"{psnr['implicit'] - psnr['handover']:+.2f} dB.",
        f"**feedforward**: the same {net} applied once to the same initial estimate "
        f"({cfg.model.init}), trained from scratch on the same patches for "
        f"{twin.summary['global_step']} steps in {twin.seconds:.0f} s, sized to the time the "
        f"{kind} run took ({implicit.seconds:.0f} s){_pace_note(implicit, twin)}. {kind} + "
        f"{strategy} minus feedforward: {psnr['implicit'] - psnr['feedforward']:+.2f} dB.",
        "**shipped default model**: what `jfb deblur` uses without `--checkpoint`, a DE-ADMM + "
        "JFB trained by the project across blurs and noise levels on BSDS photos, none of "
        "these, and told this task's blur and noise (model card: "
        "`src/jfb/weights/natural.md`). It was trained before this run, so it has no seconds "
        f"here. This run's {kind} + {strategy} minus the default: "
        f"{psnr['implicit'] - psnr['default']:+.2f} dB.",
        f"**Tikhonov, TV**: weights tuned on {TUNE_IMAGES} training patches over the grids of "
        f"`jfb compare` ({tuning['tikhonov']['seconds']:.0f} s and "
        f"{tuning['tv']['seconds']:.0f} s), never on these crops.",
    ]
    curve = (
        f"Training (`curve.png`). Left: global steps 1-{p} pre-train R as a denoiser, whose "
        "loss (a denoising MSE) is not comparable with the deblurring loss of steps "
        f"{p + 1}-{p + s}, the {strategy} phase. Right: the PSNR on the evaluation crops against "
        f"training seconds, from the hand-over ({psnr['handover']:.2f} dB) to the last step "
        f"({psnr['implicit']:.2f} dB), and the feedforward twin's."
    )
    closing = (
        f"The whole demo took {seconds:.0f} s on the CPU ({torch.get_num_threads()} "
        f"thread(s)). The {kind} run's config (`implicit/config.json`; the twin's: "
        "`feedforward/config.json`):"
    )
    bullets = "\n".join(_fill(item, initial_indent="- ", subsequent_indent="  ")
                        for item in items)
    return "\n\n".join([
        "# jfb demo report",
        _fill(intro),
        markdown_table([rows[k] for k in ROW_KEYS], COLUMNS).rstrip("\n"),
        "What each row is:\n\n" + bullets,
        "![reconstructions](figure.png)",
        _fill(curve),
        "![training curve](curve.png)",
        _fill(closing),
        f"```toml\n{cfg.to_toml()}```",
    ]) + "\n"


def _pace_note(implicit: TrainedRun, twin: TrainedRun) -> str:
    """A warning when the twin's seconds missed the implicit run's by more than
    PACE_TOLERANCE: the pace its steps were sized by changed (another job on the machine)."""
    if abs(twin.seconds - implicit.seconds) <= PACE_TOLERANCE * implicit.seconds:
        return ""
    return (f"; it took {twin.seconds / implicit.seconds:.0%} of that time, because the pace "
            "measured before it did not hold: other work on the machine changes it, so compare "
            "the two rows only from a run on an otherwise idle machine")


def _fill(text: str, **options: Any) -> str:
    """``text`` wrapped to 100 columns at spaces only, and never at those of " + " (a line that
    began with "+ " would be a Markdown list item)."""
    glued = textwrap.fill(text.replace(" + ", "\0+\0"), 100, break_long_words=False,
                          break_on_hyphens=False, **options)
    return glued.replace("\0+\0", " + ")
