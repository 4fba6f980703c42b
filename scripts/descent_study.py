"""Issue 21, question 2: when is the JFB direction a descent direction? (docs/questions/descent.md)

Short training runs of DE-GRAD and DE-ADMM on celeba-gauss5 (the recipes of
``configs/cpu-degrad.toml`` and ``configs/cpu-deadmm.toml`` made smaller: a 5-layer, 16-channel
DnCNN, 32x32 crops, batch 8, 200 JFB steps), with and without spectral normalisation and the
Jacobian penalty, each with ``train.monitor_jfb_every = 10``: the cosine of the JFB and exact
gradients, ||J_T(x*)||_2 and a line search every 10 steps (jfb.train.monitor). One thread each,
one run at a time.

    python scripts/descent_study.py command NAME    # the jfb train command of a run
    python scripts/descent_study.py run [NAME...]   # run them in turn (all by default; nohup it)
    python scripts/descent_study.py collect         # the table and the figure
    python scripts/descent_study.py linescan NAME   # the line search at several step sizes

``run`` skips a finished run (its ``summary`` record), continues an interrupted one with
``--resume``, and writes the run's CPU seconds (the child process, monitor included) to
``runs/descent/NAME/cpu.json``. ``collect`` reads the ``monitor`` records and writes
``docs/questions/descent.json`` (one row per run) and ``docs/questions/descent.png``.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

OUT = Path("runs/descent")
DOCS = Path("docs/questions")
EVERY = 10
COMMON = [
    "task=celeba-gauss5", "model.net.depth=5", "model.net.width=16", "data.patch_size=32",
    "data.batch_size=8", "data.max_val_images=10", "train.steps=200", "train.val_every=100",
    "train.log_every=10", "train.warmup_steps=10", f"train.monitor_jfb_every={EVERY}",
]
#: name -> (label, config, overrides). The recipes' own choices: DE-GRAD with spectral
#: normalisation, DE-ADMM (residual denoiser pre-trained as a blind denoiser) with the penalty.
RUNS: dict[str, tuple[str, str, list[str]]] = {
    "degrad-sn": ("DE-GRAD, spectral norm", "configs/cpu-degrad.toml", [
        "train.pretrain_steps=100"]),
    "degrad-free": ("DE-GRAD, neither", "configs/cpu-degrad.toml", [
        "train.pretrain_steps=100", "model.net.spectral_norm=false"]),
    "degrad-jac": ("DE-GRAD, Jacobian penalty", "configs/cpu-degrad.toml", [
        "train.pretrain_steps=100", "model.net.spectral_norm=false",
        "train.jacobian_penalty=1e-3"]),
    # The RED form R(x) = x - N(x): T = (1 - eta) x - eta A^T(A x - y) + eta N(x), a contraction
    # from the start where plain R leaves T ~ I at the frequencies the blur removes.
    "degrad-red": ("DE-GRAD, RED form + spectral norm", "configs/cpu-degrad.toml", [
        "train.pretrain_steps=100", "model.net.residual=true"]),
    "deadmm-jac": ("DE-ADMM, Jacobian penalty", "configs/cpu-deadmm.toml", [
        "train.pretrain_steps=300"]),
    "deadmm-free": ("DE-ADMM, neither", "configs/cpu-deadmm.toml", [
        "train.pretrain_steps=300", "train.jacobian_penalty=0"]),
    "deadmm-sn": ("DE-ADMM, spectral norm", "configs/cpu-deadmm.toml", [
        "train.pretrain_steps=300", "train.jacobian_penalty=0", "model.net.spectral_norm=true"]),
}


def command(name: str, resume: bool = False) -> list[str]:
    """The ``jfb train`` command of run ``name`` (1 thread)."""
    _, config, overrides = RUNS[name]
    sets = [a for o in COMMON + overrides for a in ("--set", o)]
    return [sys.executable, "-m", "jfb", "train", "--config", config, *sets, "--threads", "1",
            "--out", str(OUT / name), "--quiet", *(["--resume"] if resume else [])]


def records(name: str, kind: str) -> list[dict]:
    """The run's ``kind`` records (none when it has no log yet)."""
    path = OUT / name / "metrics.jsonl"
    if not path.exists():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == kind]


def run(names: list[str]) -> None:
    """Each run in turn; a finished one is skipped, an interrupted one resumed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in names:
        if records(name, "summary"):
            print(f"{name}: done", flush=True)
            continue
        resume = (OUT / name / "last.safetensors").exists()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.time()
        print(f"{name}: {' '.join(command(name, resume))}", flush=True)
        subprocess.run(command(name, resume), check=True, env=env)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        (OUT / name / "cpu.json").write_text(json.dumps(
            {"cpu_seconds": round(cpu, 1), "wall_seconds": round(time.time() - start, 1),
             "resumed": resume, "load": os.getloadavg()}) + "\n")
        print(f"{name}: {cpu:.0f} CPU-s", flush=True)


def fraction(checks: list[dict], key: str) -> list[int]:
    """[how many of ``checks`` have ``key`` true, how many checks]."""
    return [sum(bool(r[key]) for r in checks), len(checks)]


def row(name: str) -> dict:
    """The table row of a run: its monitor records summarised."""
    mon = records(name, "monitor")
    cos = [r["cosine"] for r in mon]
    gam = [r["gamma"] for r in mon]
    good = [r for r in mon if solved(r)]
    val = records(name, "val")
    cpu_path = OUT / name / "cpu.json"
    return {
        "run": name, "label": RUNS[name][0], "checks": len(mon),
        "cosine_median": statistics.median(cos), "cosine_min": min(cos),
        "cos_step_median": statistics.median(r["cos_step"] for r in mon),
        "ratio_median": statistics.median(r["ratio"] for r in mon),
        "gamma_min": min(gam), "gamma_max": max(gam),
        "contractive": sum(r["contractive"] for r in mon) / len(mon),
        "descent": sum(r["descent"] for r in mon) / len(mon),
        "solved": len(good) / len(mon),
        "descent_solved": fraction(good, "descent"),
        "descent_if_contractive": fraction([r for r in mon if r["contractive"]], "descent"),
        "descent_if_not": fraction([r for r in mon if not r["contractive"]], "descent"),
        "val_psnr": val[-1]["psnr"] if val else None,
        "cpu_seconds": json.loads(cpu_path.read_text())["cpu_seconds"] if cpu_path.exists()
        else None,
    }


#: One colour per variant (the part of the run's name after the model).
COLORS = {"sn": "tab:blue", "free": "tab:orange", "jac": "tab:green", "red": "tab:red"}


def pretrain_steps(name: str) -> int:
    """The run's pre-training steps (where its ``pretrain_val`` record is)."""
    return next((r["step"] for r in records(name, "pretrain_val")), 0)


#: A check's exact gradient counts as reached when GMRES's relative residual is below this (in
#: float32 it stops near 1e-5, above the tenth of ``tol`` it aims at).
IFT_SOLVED = 1e-4


def solved(r: dict) -> bool:
    """Whether a check reached its fixed point (residual <= tol) and its exact gradient."""
    return r["fp_residual"] <= r["tol"] and r["ift_residual"] <= IFT_SOLVED


def figure(names: list[str], path: Path) -> None:
    """Cosine and gamma against the step, DE-GRAD and DE-ADMM side by side: a filled dot is a
    check that reached its fixed point and exact gradient, a hollow one a check that did not,
    a cross a check whose line search found no descent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True, sharey="row")
    for col, model in enumerate(("degrad", "deadmm")):
        for name in (n for n in names if n.startswith(model)):
            mon = records(name, "monitor")
            start = pretrain_steps(name)
            steps = [r["step"] - start for r in mon]
            for ax, key in zip(axes[:, col], ("cosine", "gamma"), strict=True):
                color = COLORS[name.split("-")[1]]
                ax.plot(steps, [r[key] for r in mon], lw=1, color=color, label=RUNS[name][0])
                for step, r in zip(steps, mon, strict=True):
                    ax.plot(step, r[key], "o", ms=4, color=color,
                            mfc=color if solved(r) else "none")
                    if not r["descent"]:
                        ax.plot(step, r[key], "x", ms=8, color=color)
        axes[0, col].set_title("DE-GRAD" if model == "degrad" else "DE-ADMM")
        axes[1, col].axhline(1.0, color="k", lw=0.8, ls="--")
        axes[1, col].set_xlabel("JFB step (after pre-training)")
        axes[0, col].legend(fontsize=8)
    axes[0, 0].set_ylabel("cos(g_jfb, g_ift)")
    axes[1, 0].set_ylabel("gamma = max_i ||J_T(x*_i)||_2")
    fig.suptitle("JFB against the exact gradient every 10 steps (filled: fixed point and exact "
                 "gradient reached; x: the loss rose along -g_jfb)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def collect() -> None:
    names = [n for n in RUNS if records(n, "monitor")]
    rows = [row(n) for n in names]
    DOCS.mkdir(parents=True, exist_ok=True)
    (DOCS / "descent.json").write_text(json.dumps(rows, indent=1) + "\n")
    figure(names, DOCS / "descent.png")
    for r in rows:
        print(json.dumps(r))


def linescan(name: str) -> None:
    """The line search of the monitor at several steps t = s ||theta|| (s = 1e-5 ... 1e-2), on
    the run's final weights and one fixed batch of 8 training crops: the loss change along
    -g_jfb against the first-order prediction -t ||g_ift|| cos."""
    from torch.utils.data import default_collate

    from jfb.config import Config
    from jfb.pipeline import build_run, load_model
    from jfb.train.monitor import measure

    cfg = Config.from_dict(json.loads((OUT / name / "config.json").read_text()))
    pairs = build_run(cfg).train_pairs
    torch.manual_seed(0)
    x, y = default_collate([pairs[i] for i in range(cfg.data.batch_size)])
    model = load_model(OUT / name / "last.safetensors").model
    for s in (1e-5, 1e-4, 1e-3, 1e-2):
        r = measure(model, x, y, line_step=s)
        print(json.dumps({"run": name, "line_step": s, **{k: r[k] for k in (
            "cosine", "gamma", "loss", "dloss", "dloss_pred", "descent", "fp_residual",
            "ift_residual")}}), flush=True)


def main(argv: list[str]) -> None:
    if argv[:1] == ["command"]:
        print(" ".join(command(argv[1])))
    elif argv[:1] == ["run"]:
        run(argv[1:] or list(RUNS))
    elif argv[:1] == ["collect"]:
        collect()
    elif argv[:1] == ["linescan"]:
        for name in argv[1:]:
            linescan(name)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
