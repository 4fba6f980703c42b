"""jfb.config: defaults, files (TOML/YAML/JSON), overrides, validation, round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomllib

from jfb.config import (
    MODEL_DEFINING_KEYS,
    Config,
    apply_overrides,
    load_config,
    parse_override_value,
)
from jfb.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
# Experiment configs (configs/) and those shipped inside the package (jfb/configs/).
CONFIGS = sorted([*(ROOT / "configs").glob("*.toml"), *(ROOT / "src/jfb/configs").glob("*.toml")])


def test_defaults_are_the_paper_setup():
    cfg = Config()
    assert cfg.model.kind == "degrad"
    assert (cfg.model.net.name, cfg.model.net.depth, cfg.model.net.width) == ("dncnn", 17, 64)
    assert cfg.model.solver.name == "anderson" and cfg.model.solver.m == 5
    assert cfg.model.backward.name == "jfb"
    assert cfg.train.optimizer == "adam" and cfg.train.lr == 1e-3
    assert cfg.data.batch_size == 16


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    # A file only sets keys that exist: its values must be visible in the loaded config.
    raw = tomllib.loads(path.read_text())
    for section in ("model", "data", "train"):
        for key, value in raw.get(section, {}).items():
            if not isinstance(value, dict):
                got = cfg.get(f"{section}.{key}")
                assert got == value or (value == "none" and got is None), (section, key)


def test_shipped_configs_exist():
    names = {p.name for p in CONFIGS}
    assert {"celeba-gauss5-jfb.toml", "demo.toml"} <= names


def test_paper_config_values():
    cfg = load_config(ROOT / "configs" / "celeba-gauss5-jfb.toml")
    assert cfg.task == "celeba-gauss5"
    assert cfg.model.net.depth == 17 and cfg.model.net.width == 64 and cfg.model.net.spectral_norm
    s = cfg.model.solver
    assert (s.name, s.m, s.tol, s.max_iter) == ("anderson", 5, 1e-3, 50)
    assert cfg.model.backward.name == "jfb"
    assert (cfg.train.optimizer, cfg.train.lr, cfg.data.batch_size) == ("adam", 1e-3, 16)


def test_toml_file_partial_and_types(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('task = "natural-gauss5"\n[model.net]\ndepth = 5\n[train]\nlr = 3e-4\n'
                 'grad_clip = "none"\nsteps = 1e3\n')
    cfg = load_config(p)
    assert cfg.task == "natural-gauss5"
    assert cfg.model.net.depth == 5 and cfg.model.net.width == 64  # untouched default
    assert cfg.train.lr == 3e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.grad_clip is None
    assert cfg.train.steps == 1000 and isinstance(cfg.train.steps, int)


def test_yaml_and_json_files(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("model:\n  backward:\n    name: neumann\n    k: 4\ndata:\n  batch_size: 3\n")
    cfg = load_config(y)
    assert cfg.model.backward.name == "neumann" and cfg.model.backward.k == 4
    assert cfg.data.batch_size == 3
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"train": {"seed": 7}}))
    assert load_config(j).train.seed == 7
    empty = tmp_path / "e.yml"
    empty.write_text("")
    assert load_config(empty) == Config()


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nlr = 1")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config(bad)
    other = tmp_path / "c.ini"
    other.write_text("x=1")
    with pytest.raises(ConfigError, match="unknown format"):
        load_config(other)
    lst = tmp_path / "l.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level"):
        load_config(lst)


def test_unknown_keys_are_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'model\.nett'.*model\.net"):
        Config.from_dict({"model": {"nett": {}}})
    with pytest.raises(ConfigError, match=r"unknown key 'train\.learning_rate'"):
        Config.from_dict({"train": {"learning_rate": 1.0}})
    with pytest.raises(ConfigError, match=r"unknown key 'model\.solver\.tolerance'"):
        Config.from_dict({"model": {"solver": {"tolerance": 1e-3}}})
    with pytest.raises(ConfigError, match=r"unknown key 'optim'"):
        Config.from_dict({"optim": {}})
    p = tmp_path / "c.toml"
    p.write_text("[model.net]\ndepht = 3\n")
    with pytest.raises(ConfigError, match=r"unknown key 'model\.net\.depht'"):
        load_config(p)


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ({"model": {"net": {"depth": "abc"}}}, r"model\.net\.depth: expected int, got str 'abc'"),
        ({"model": {"net": {"depth": 2.5}}}, r"model\.net\.depth: expected int"),
        ({"model": {"net": {"depth": True}}}, r"model\.net\.depth: expected int, got bool"),
        ({"train": {"lr": "fast"}}, r"train\.lr: expected float"),
        ({"train": {"compile": 1}}, r"train\.compile: expected bool"),
        ({"train": {"optimizer": "sgd"}}, r"train\.optimizer: expected one of 'adam', 'adamw'"),
        ({"model": {"kind": "deq"}}, r"model\.kind: expected one of"),
        ({"model": {"backward": {"name": "exact"}}}, r"model\.backward\.name"),
        ({"task": 3}, r"task: expected str"),
        ({"model": {"net": 5}}, r"model\.net: expected a table"),
        ({"train": {"lr": float("nan")}}, r"train\.lr"),
    ],
)
def test_wrong_types(data, pattern):
    with pytest.raises(ConfigError, match=pattern):
        Config.from_dict(data)


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ({"train": {"lr": 0.0}}, r"train\.lr: must be > 0"),
        ({"train": {"lr": -1e-3}}, r"train\.lr: must be > 0"),
        ({"data": {"batch_size": 0}}, r"data\.batch_size: must be >= 1"),
        ({"model": {"solver": {"tol": 0}}}, r"model\.solver\.tol: must be > 0"),
        ({"model": {"solver": {"max_iter": 0}}}, r"model\.solver\.max_iter"),
        ({"model": {"solver": {"damping": 1.5}}}, r"model\.solver\.damping: must be <= 1"),
        ({"model": {"solver": {"eval_tol": -1}}}, r"model\.solver\.eval_tol"),
        ({"train": {"grad_clip": 0}}, r"train\.grad_clip: must be > 0"),
        ({"train": {"warmup_steps": -1}}, r"train\.warmup_steps"),
        ({"train": {"max_bad_steps": 0}}, r"train\.max_bad_steps"),
        ({"data": {"num_workers": -1}}, r"data\.num_workers"),
        ({"model": {"eta": 3.0, "eta_max": 2.0}}, r"model\.eta: must be <= model\.eta_max"),
        ({"train": {"lr": float("inf")}}, r"train\.lr: must be finite"),
        ({"train": {"diverge_residual": 0}}, r"train\.diverge_residual: must be > 0"),
        ({"train": {"diverge_unconverged": 1.5}}, r"train\.diverge_unconverged: must be <= 1"),
        ({"train": {"diverge_unconverged": -0.1}}, r"train\.diverge_unconverged: must be >= 0"),
        ({"train": {"max_rollbacks": -1}}, r"train\.max_rollbacks: must be >= 0"),
        ({"train": {"rollback_lr_factor": 0}}, r"train\.rollback_lr_factor: must be > 0"),
        ({"train": {"rollback_lr_factor": 2}}, r"train\.rollback_lr_factor: must be <= 1"),
        ({"train": {"jacobian_penalty": -1}}, r"train\.jacobian_penalty: must be >= 0"),
        ({"model": {"eta_scale": "adaptive"}}, r"model\.eta_scale: expected one of"),
        ({"train": {"log_contraction": 1}}, r"train\.log_contraction: expected bool"),
        ({"model": {"solver": {"train_caps": [3, 0]}}},
         r"model\.solver\.train_caps\[1\]: must be >= 1"),
        ({"model": {"solver": {"train_caps": 4}}}, r"model\.solver\.train_caps: expected a list"),
        ({"model": {"solver": {"train_caps": [2.5]}}},
         r"model\.solver\.train_caps\[0\]: expected int"),
    ],
)
def test_out_of_range(data, pattern):
    with pytest.raises(ConfigError, match=pattern):
        Config.from_dict(data)


def test_config_error_is_value_error():
    with pytest.raises(ValueError):
        Config.from_dict({"train": {"lr": -1}})


def test_overrides():
    cfg = load_config(None, ["train.lr=3e-4", "model.net.depth=5", "model.backward.name=ift",
                             "train.grad_clip=none", "model.solver.eval_max_iter=200",
                             "train.compile=true", 'task="my-task"', "train.out_dir=runs/x"])
    assert cfg.train.lr == 3e-4
    assert cfg.model.net.depth == 5
    assert cfg.model.backward.name == "ift"
    assert cfg.train.grad_clip is None
    assert cfg.model.solver.eval_max_iter == 200
    assert cfg.train.compile is True
    assert cfg.task == "my-task"
    assert cfg.train.out_dir == "runs/x"
    # Later overrides win; the original object is not modified.
    base = Config()
    out = apply_overrides(base, ["train.seed=1", "train.seed=2"])
    assert out.train.seed == 2 and base.train.seed == 0
    # A section may be replaced by an inline table, keeping keys it does not name.
    out = base.with_overrides(["model.net={depth=3, width=8}"])
    assert (out.model.net.depth, out.model.net.width, out.model.net.name) == (3, 8, "dncnn")


def test_override_on_top_of_file(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[train]\nlr = 1e-2\nsteps = 10\n")
    cfg = load_config(p, ["train.lr=5e-3"])
    assert cfg.train.lr == 5e-3 and cfg.train.steps == 10


@pytest.mark.parametrize(
    ("item", "pattern"),
    [
        ("model.nett.depth=3", r"unknown key 'model\.nett'"),
        ("train.lrr=1", r"unknown key 'train\.lrr'.*'train\.lr'"),
        ("model.net.depth=abc", r"model\.net\.depth: expected int, got str 'abc'"),
        ("train.lr=-1", r"train\.lr: must be > 0"),
        ("task.name=x", r"'task' is a value, not a section"),
        ("train.lr", r"not of the form key=value"),
        ("=3", r"empty key"),
        ("train..lr=3", r"empty key"),
    ],
)
def test_override_errors(item, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [item])


def test_parse_override_value():
    assert parse_override_value("3e-4") == 3e-4
    assert parse_override_value("5") == 5 and isinstance(parse_override_value("5"), int)
    assert parse_override_value("true") is True
    assert parse_override_value("[1, 2]") == [1, 2]
    assert parse_override_value('"5"') == "5"
    assert parse_override_value("ift") == "ift"
    assert parse_override_value("runs/a b") == "runs/a b"


def test_dict_json_toml_round_trips(tmp_path):
    cfg = load_config(None, ["train.lr=2e-4", "model.net.name=unet", "data.patch_size=32",
                             "model.solver.eval_tol=1e-5", "train.grad_clip=none",
                             "model.solver.train_caps=[3, 4]"])
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert Config.from_dict(d) == cfg
    assert Config.from_dict(json.loads(cfg.to_json())) == cfg
    p = tmp_path / "c.toml"
    p.write_text(cfg.to_toml())
    assert load_config(p) == cfg
    assert cfg.get("model.net.name") == "unet"
    with pytest.raises(ConfigError, match="unknown key 'model.nope'"):
        cfg.get("model.nope")


def test_model_section_schema():
    """The plain-dict model section has the keys jfb.models.build_model reads (the solver's
    on_failure/record_trace/eps and IFT's memory m reach the engine from configs too)."""
    m = Config().to_dict()["model"]
    assert set(m) == {"kind", "net", "solver", "backward", "init", "eta", "eta_max", "eta_scale",
                      "rho", "cg_iters", "precondition", "relax", "noise_ref", "noise_floor"}
    assert {"name", "depth", "width", "spectral_norm", "sn_target", "activation", "batch_norm",
            "group_norm", "residual", "base", "levels"} == set(m["net"])
    assert {"name", "tol", "max_iter", "eval_max_iter", "eval_tol", "m", "lam", "beta",
            "damping", "check_every", "compact", "on_failure", "record_trace",
            "eps", "train_caps"} == set(m["solver"])
    assert {"name", "k", "tol", "max_iter", "solver", "m"} == set(m["backward"])
    for key in MODEL_DEFINING_KEYS:
        Config().get(key)  # every model-defining key exists


def test_stability_keys_defaults_and_overrides():
    t = Config().train
    assert (t.diverge_residual, t.diverge_unconverged, t.max_rollbacks) == (1.0, None, 3)
    assert (t.rollback_lr_factor, t.log_contraction, t.jacobian_penalty) == (0.5, True, 0.0)
    assert Config().model.eta_scale == "none"
    cfg = load_config(None, ["train.diverge_residual=none", "train.diverge_unconverged=0.9",
                             "train.max_rollbacks=0", "train.rollback_lr_factor=0.1",
                             "train.log_contraction=false", "train.jacobian_penalty=2",
                             "model.eta_scale=operator"])
    t = cfg.train
    assert (t.diverge_residual, t.diverge_unconverged, t.max_rollbacks) == (None, 0.9, 0)
    assert (t.rollback_lr_factor, t.log_contraction, t.jacobian_penalty) == (0.1, False, 2.0)
    assert cfg.model.eta_scale == "operator"
    assert Config.from_dict(cfg.to_dict()) == cfg
    # not model-defining: a checkpoint written before the key existed still resumes
    assert "model.eta_scale" not in MODEL_DEFINING_KEYS


# ---------------------------------------------------------------------- bounded error messages
class _NoRepr:
    """An object that must never be repr()'d: describing a value around it must not reach it."""

    def __repr__(self) -> str:
        raise AssertionError("repr() of the whole value")


def test_describing_a_wrong_typed_value_reads_a_bounded_part_of_it():
    from jfb.config import _describe

    huge = [0] * 10**6 + [_NoRepr()]  # repr() would build a 3 MB string, then fail
    assert _describe(huge) == "list [0, 0, 0, 0, ...]"
    deep = {"a": [[[[[_NoRepr()]]]]], "b": "x" * 10**6, **{f"k{i}": i for i in range(10**5)}}
    text = _describe(deep)
    assert text.startswith("dict {'a': [[[...]]], 'b': 'xxx") and len(text) <= 65
    assert _describe(10**5000) == "int <...>"  # too long for repr(): the type is enough
    assert _describe("abc") == "str 'abc'" and _describe([1, 2]) == "list [1, 2]"
    with pytest.raises(ConfigError, match=r"model\.net\.depth: expected int, got list \[0, 0, 0"):
        Config.from_dict({"model": {"net": {"depth": huge}}})


def test_a_yaml_alias_bomb_is_refused_without_expanding_it(tmp_path):
    import tracemalloc

    # 7 anchors, each 9 aliases of the one before: 9^7 strings in 230 bytes
    items = ["&a [x, x, x, x, x, x, x, x, x]"] + [
        f"&{c} [" + ", ".join([f"*{p}"] * 9) + "]" for p, c in zip("abcdef", "bcdefg", strict=True)
    ]
    path = tmp_path / "bomb.yaml"
    path.write_text("model:\n  net:\n    depth: [" + ", ".join(items) + "]\n")
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match=r"model\.net\.depth: expected int, got list"):
            load_config(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # the whole repr() was ~40 MB of text
