"""The command line: one clear line per user error, and a tiny train -> eval -> deblur run."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
import torch

from jfb.cli import main
from jfb.data import load_image, save_image

TINY = [
    "--set",
    "task=demo",
    "--set",
    "model.net.depth=3",
    "--set",
    "model.net.width=4",
    "--set",
    "model.solver.max_iter=8",
    "--set",
    "data.batch_size=2",
    "--set",
    "data.patch_size=24",
    "--set",
    "data.max_val_images=2",
    "--set",
    "train.steps=3",
    "--set",
    "train.val_every=3",
    "--set",
    "train.log_every=1",
    "--set",
    "train.device=cpu",
    "--set",
    "train.pretrain_steps=1",
]


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *needles):
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_no_command_prints_help_and_tasks_lists_the_registry(capsys):
    code, out, _ = run([], capsys)
    assert code == 0 and "demo" in out and "deblur" in out
    code, out, _ = run(["tasks"], capsys)
    assert code == 0 and "celeba-gauss5" in out and "celeba-motion" in out


def test_config_errors_are_one_line_naming_the_key(capsys, tmp_path):
    code, _, err = run(["train", "--config", str(tmp_path / "nope.toml")], capsys)
    assert_one_line_error(code, err, "nope.toml")
    code, _, err = run(["train", "--set", "model.nett.depth=3", "--print-config"], capsys)
    assert_one_line_error(code, err, "model.nett")
    code, _, err = run(["train", "--set", "train.lr=-1", "--print-config"], capsys)
    assert_one_line_error(code, err, "train.lr")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nkind = 3")
    code, _, err = run(["train", "--config", str(bad)], capsys)
    assert_one_line_error(code, err, "bad.toml")


def test_print_config_resolves_overrides(capsys):
    code, out, _ = run(["train", "--set", "model.backward.name=ift", "--print-config"], capsys)
    assert code == 0 and 'name = "ift"' in out


def test_missing_and_bad_checkpoints_and_images(capsys, tmp_path):
    code, _, err = run(["eval", str(tmp_path / "none.safetensors")], capsys)
    assert_one_line_error(code, err, "none.safetensors")
    pickle_file = tmp_path / "model.safetensors"
    torch.save({"w": torch.zeros(2)}, pickle_file)
    code, _, err = run(["eval", str(pickle_file)], capsys)
    assert_one_line_error(code, err)
    code, _, err = run(
        [
            "deblur",
            str(tmp_path / "in.png"),
            "-o",
            str(tmp_path / "o.png"),
            "--checkpoint",
            str(pickle_file),
        ],
        capsys,
    )
    assert_one_line_error(code, err, "in.png")
    assert not (tmp_path / "o.png").exists()


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(Exception):  # noqa: B017 - any error: --debug re-raises it
        main(["eval", str(tmp_path / "none.safetensors"), "--debug"])


def test_a_bug_is_an_internal_error_not_the_users(monkeypatch, capsys):
    import jfb.cli

    def broken(args):
        raise TypeError("f() got an unexpected keyword argument 'x'")

    monkeypatch.setitem(jfb.cli.COMMANDS, "tasks", broken)
    assert main(["tasks"]) == 1
    err = capsys.readouterr().err
    assert "internal error: TypeError" in err and "--debug" in err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", *TINY, "--out", str(out), "--quiet"]) == 0
    return out


def test_train_refuses_a_folder_that_holds_a_run(trained, capsys):
    before = (trained / "metrics.jsonl").read_text()
    assert main(["train", *TINY, "--out", str(trained), "--quiet"]) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert (trained / "metrics.jsonl").read_text() == before  # untouched


def test_train_eval_deblur_end_to_end(trained, capsys, tmp_path):
    ckpt = trained / "best.safetensors"
    assert ckpt.is_file() and (trained / "last.safetensors").is_file()
    from jfb.report import training_curve

    log = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    train_pts, val_pts = training_curve(tmp_path / "curve.png", log)  # the trainer's real log
    assert len(train_pts) >= 3 and len(val_pts) >= 1
    code, out, err = run(
        ["eval", str(ckpt), "--max-images", "2", "--out", str(tmp_path / "ev"), "--device", "cpu"],
        capsys,
    )
    assert code == 0, err
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert res["n_images"] == 2 and res["task"] == "demo" and res["psnr"] > 10
    assert (tmp_path / "ev" / "per_image.csv").read_text().count("\n") == 3
    assert (tmp_path / "ev" / "figure.png").is_file()
    for option, value in (("--eval-tol", "0.9"), ("--eval-max-iter", "1")):  # one iteration
        code, _, err = run(["eval", str(ckpt), "--max-images", "2", option, value, "--out",
                            str(tmp_path / option), "--device", "cpu"], capsys)
        assert code == 0, err
        cut = json.loads((tmp_path / option / "results.json").read_text())
        assert cut["mean_solver_iters"] == 1 < res["mean_solver_iters"]

    img = tmp_path / "blurred.png"
    save_image(torch.rand(3, 40, 52), img)
    dst = tmp_path / "sharp.png"
    argv = [
        "deblur",
        str(img),
        "-o",
        str(dst),
        "--checkpoint",
        str(ckpt),
        "--tile",
        "32",
        "--margin",
        "8",
        "--device",
        "cpu",
    ]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    assert load_image(dst).shape == (3, 40, 52)
    code, _, err = run(argv, capsys)
    assert_one_line_error(code, err, "--force")
    code, _, err = run([*argv, "--force"], capsys)
    assert code == 0
    code, _, err = run(
        ["deblur", str(img), "-o", str(img), "--checkpoint", str(ckpt), "--force"], capsys
    )
    assert_one_line_error(code, err, "input")
    grey = tmp_path / "grey.png"
    save_image(torch.rand(1, 20, 20), grey)
    code, _, err = run(
        [
            "deblur",
            str(grey),
            "-o",
            str(tmp_path / "g.png"),
            "--checkpoint",
            str(ckpt),
            "--kernel",
            "motion:7:1",
        ],
        capsys,
    )
    assert code == 0, err
    assert load_image(tmp_path / "g.png", mode="keep").shape == (1, 20, 20)
    code, _, err = run(
        [
            "deblur",
            str(grey),
            "-o",
            str(tmp_path / "h.png"),
            "--checkpoint",
            str(ckpt),
            "--kernel",
            "gaussian:4:1.0",
        ],
        capsys,
    )
    assert_one_line_error(code, err, "kernel")


def test_eval_reports_the_contraction_factor_when_asked(trained, capsys, tmp_path, monkeypatch):
    ckpt = str(trained / "best.safetensors")
    argv = ["eval", ckpt, "--max-images", "2", "--device", "cpu", "--contraction"]
    code, out, err = run([*argv, "--out", str(tmp_path / "ev")], capsys)
    assert code == 0, err
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert 0 < res["contraction_mean"] <= res["contraction_max"] < float("inf")
    header = out.splitlines()[0]
    assert "contraction_mean" in header and "contraction_max" in header
    assert "contraction_max" in (tmp_path / "ev" / "results.md").read_text()
    rows = (tmp_path / "ev" / "per_image.csv").read_text().splitlines()
    assert rows[0].endswith(",contraction") and len(rows) == 3
    per_image = [float(r.split(",")[-1]) for r in rows[1:]]
    assert max(per_image) == pytest.approx(res["contraction_max"], abs=1e-4)

    import jfb.pipeline

    real = jfb.pipeline.load_model
    monkeypatch.setattr(jfb.pipeline, "load_model",
                        lambda *a, **k: (torch.nn.Identity(), *real(*a, **k)[1:]))
    code, _, err = run([*argv, "--out", str(tmp_path / "ff")], capsys)
    assert_one_line_error(code, err, "--contraction needs an implicit model", "Identity")
    assert not (tmp_path / "ff").exists()


def test_resume_continues_a_finished_run(trained, capsys):
    code, out, err = run(
        ["train", *TINY, "--set", "train.steps=4", "--out", str(trained), "--resume", "--quiet"],
        capsys,
    )
    assert code == 0, err
    assert "global_step=5" in out  # 1 pre-training + 4 steps: one more than the first run


def test_module_entry_point_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "jfb", "tasks"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "demo" in proc.stdout


def test_compare_writes_one_table_for_classical_and_trained_methods(trained, capsys, tmp_path):
    ckpt = str(trained / "best.safetensors")
    out = tmp_path / "cmp"
    code, stdout, err = run(
        [
            "compare",
            "--task",
            "demo",
            "--methods",
            f"blurred,tikhonov,{ckpt}",
            "--max-images",
            "2",
            "--tune-images",
            "2",
            "--iterations",
            "1,3",
            "--device",
            "cpu",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0, err
    res = json.loads((out / "results.json").read_text())
    names = [r["method"] for r in res["rows"]]
    assert names[0] == "blurred input y" and names[1].startswith("tikhonov (")
    assert all(r["n_images"] == 2 and r["command"].startswith("jfb compare") for r in res["rows"])
    assert res["tuning"]["tikhonov"]["best"] in [
        t["weight"] for t in res["tuning"]["tikhonov"]["tried"]
    ]
    (curve,) = res["iterations_curves"].values()
    assert [p["iterations"] for p in curve] == [1, 3]
    for name in ("results.md", "figure.png", "iterations.png"):
        assert (out / name).is_file()
    code, _, err = run(
        ["compare", "--task", "demo", "--methods", "magic", "--out", str(out)], capsys
    )
    assert_one_line_error(code, err, "magic")


def test_deblur_uses_the_shipped_default_model(capsys, tmp_path):
    """No --checkpoint: the natural model shipped inside the package. Not told the blur, it
    refuses in one line and writes nothing; told a blur it was not trained on (a face, the
    faces protocol's 5x5 Gaussian), it restores far better than the blurred input; the face
    model (--checkpoint faces) needs no kernel: it knows its one blur."""
    from jfb.errors import DataError
    from jfb.metrics import psnr
    from jfb.tasks import get_task

    task = get_task("celeba-gauss5")
    try:
        x = task.val_set(limit=1)[0][None]
    except DataError as exc:  # CelebA-128 lives in ../shared; CI has it
        pytest.skip(f"CelebA-128 not found: {exc}")
    y = task.noise()(task.operator().A(x), generator=torch.Generator().manual_seed(0))
    src, dst = tmp_path / "y.png", tmp_path / "x.png"
    save_image(y[0], src, bits=16)
    code, _, err = run(["deblur", str(src), "-o", str(dst), "--device", "cpu"], capsys)
    assert code != 0 and "--kernel" in err and len(err.strip().splitlines()) == 1
    assert not dst.exists()
    for extra in (["--kernel", "gaussian:5:5.0", "--padding", "zeros", "--noise", "0.005"],
                  ["--checkpoint", "faces"]):
        code, _, err = run(["deblur", str(src), "-o", str(dst), "--device", "cpu", "--force",
                            *extra], capsys)
        assert code == 0, err
        out = load_image(dst)[None]
        assert float(psnr(out, x)) > float(psnr(y.clamp(0, 1), x)) + 2.0, extra


def test_bench_subcommand_takes_its_own_options(tmp_path, capsys):
    code, out, err = run(["bench", "--scenario", "floor", "--size", "tiny", "--repeats", "1",
                          "--out", str(tmp_path)], capsys)
    assert code == 0, err
    assert list(tmp_path.glob("floor_tiny.json"))


def test_train_that_diverges_stops_with_one_line_and_exit_2(capsys, tmp_path):
    """eta = 5 on A = I: |1 - eta| = 4, the solve runs away; after the allowed rollbacks the
    CLI says why in one line, exits 2, and keeps the checkpoint."""
    sets = ["task=op=denoise,noise=0.05,train=natural:patches:16,val=natural:crops:16,name=t",
            "model.eta=5", "model.eta_max=none", "model.solver.name=picard",
            "model.solver.max_iter=20", "model.net.depth=2", "model.net.width=4",
            "model.net.spectral_norm=false", "model.init=adjoint", "data.batch_size=2",
            "data.max_val_images=1", "train.steps=6", "train.val_every=2", "train.max_rollbacks=1",
            "train.device=cpu"]
    argv = ["train", "--quiet", "--out", str(tmp_path / "run")]
    for kv in sets:
        argv += ["--set", kv]
    code, _, err = run(argv, capsys)
    assert_one_line_error(code, err, "diverged", "max_rollbacks")
    assert (tmp_path / "run" / "last.safetensors").is_file()


def test_compute_commands_tune_the_cpu_allocator_unless_told_not_to(monkeypatch, tmp_path,
                                                                   capsys):
    from jfb import cpu_malloc

    calls = []
    monkeypatch.setattr(cpu_malloc, "tune_cpu_malloc", lambda: calls.append(1) or "tuned")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    missing = str(tmp_path / "none.safetensors")
    main(["eval", missing])  # fails (no such file) after the tuning: that is enough here
    assert calls == [1]
    main(["tasks"])
    assert calls == [1]  # listing tasks computes nothing
    monkeypatch.setenv("JFB_MALLOC", "default")
    main(["eval", missing])
    assert calls == [1]
    capsys.readouterr()


class FakeTTY(io.StringIO):
    """A stderr that says it is a terminal, so that progress bars draw on it."""

    def isatty(self) -> bool:
        return True


def test_every_compute_command_takes_threads_and_quiet(capsys):
    from jfb.cli import build_parser

    parser = build_parser()
    required = {
        "demo": [], "train": [], "eval": ["c.safetensors"], "compare": ["--methods", "tv",
                                                                       "--out", "o"],
        "restore": ["y.png", "-o", "x.png"], "deblur": ["y.png", "-o", "x.png"],
        "degrade": ["x.png", "-o", "y.png", "--task", "demo"],
    }
    for command, args in required.items():
        ns = parser.parse_args([command, *args, "--threads", "3", "--quiet"])
        assert (ns.threads, ns.quiet) == (3, True), command
        assert parser.parse_args([command, *args]).threads is None, command
    for bad in ("0", "-2", "two"):
        with pytest.raises(SystemExit):
            parser.parse_args(["eval", "c.safetensors", "--threads", bad])
        assert "expected an integer >= 1" in capsys.readouterr().err


def test_threads_are_set_before_the_command_runs(monkeypatch, capsys):
    import jfb.cli

    events = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: events.append(("threads", n)))
    monkeypatch.setitem(jfb.cli.COMMANDS, "degrade", lambda args: events.append("work") or 0)
    assert main(["degrade", "x.png", "-o", "y.png", "--task", "demo", "--threads", "2"]) == 0
    assert events == [("threads", 2), "work"]
    events.clear()
    assert main(["degrade", "x.png", "-o", "y.png", "--task", "demo"]) == 0
    assert events == ["work"]  # torch's default is left alone


def test_eval_and_train_show_progress_on_a_terminal_unless_quiet(trained, monkeypatch, tmp_path,
                                                                 capsys):
    ckpt = str(trained / "best.safetensors")
    argv = ["eval", ckpt, "--max-images", "2", "--out", str(tmp_path / "ev"), "--device", "cpu"]
    monkeypatch.setenv("COLUMNS", "200")  # the line is cut to the terminal's width
    monkeypatch.setattr(sys, "stderr", FakeTTY())
    assert main(argv) == 0
    shown = sys.stderr.getvalue()
    assert "image 2/2" in shown and "done in" in shown and "psnr" in shown
    monkeypatch.setattr(sys, "stderr", FakeTTY())
    assert main([*argv, "--quiet"]) == 0
    assert sys.stderr.getvalue() == ""
    monkeypatch.setattr(sys, "stderr", FakeTTY())
    assert main(["train", *TINY, "--out", str(tmp_path / "t")]) == 0
    shown = sys.stderr.getvalue()
    assert "\r" in shown and "ETA" in shown and "step 4/4" in shown
    capsys.readouterr()


def test_compare_refuses_a_method_that_cannot_run_before_any_work(monkeypatch, capsys, tmp_path):
    """Wiener needs a circular blur: on a zero-padded blur it is refused, naming it, before
    Tikhonov (listed first) is tuned or anything is evaluated."""
    import jfb.compare
    from jfb.compare import compare, prepare_methods
    from jfb.errors import ConfigError
    from jfb.tasks import parse_task

    def no_work(*args, **kwargs):
        raise AssertionError("work started before every method was checked")

    monkeypatch.setattr(jfb.compare, "evaluate", no_work)
    monkeypatch.setattr(jfb.compare, "tune_weight", no_work)
    spec = ("op=blur,kernel=gaussian:5:1.0,padding={},noise=0.01,"
            "train=natural:patches:32,val=natural:crops:32,name=b")
    task = parse_task(spec.format("zeros"))
    with pytest.raises(ConfigError, match=r"method 'wiener' cannot run on task b .*circular"):
        compare(task, ["input", "tikhonov", "wiener"], max_images=1)
    code, _, err = run(["compare", "--task", spec.format("zeros"), "--methods",
                        "tikhonov,wiener", "--max-images", "1", "--out", str(tmp_path)], capsys)
    assert_one_line_error(code, err, "'wiener'", "circular")
    circular = parse_task(spec.format("circular"))
    ready = prepare_methods(circular, ["input", "tikhonov", "wiener", "wiener"],
                            circular.operator(), (3, 32, 32))
    assert [m.short for m in ready] == ["blurred y", "tikhonov", "wiener", "wiener #2"]
