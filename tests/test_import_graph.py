"""The import graph of ``jfb``: acyclic (lazy imports inside functions included), the engine
layers import nothing of the project but ``jfb.errors``, and every module imports on its own."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "jfb"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {
    _module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts
}


def _resolve(name: str) -> str | None:
    """The project module ``name`` names (itself, or its longest known prefix: ``from jfb.x
    import f`` names ``jfb.x``); None outside the project."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str) -> set[str]:
    """Project modules ``module`` imports anywhere in its code (top level, functions, TYPE_CHECKING
    blocks aside), each by the module it names: ``from jfb import deq`` names ``jfb.deq``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
            and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(m for m in map(_resolve, names) if m is not None and m != module)
    return found


GRAPH: dict[str, set[str]] = {m: imports_of(m) for m in MODULES}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _outside(package: str, allowed: set[str]) -> dict[str, set[str]]:
    """Modules of ``package`` that import project modules outside it and ``allowed``."""
    bad = {}
    for module, deps in GRAPH.items():
        if module == package or module.startswith(package + "."):
            out = {d for d in deps if not (d == package or d.startswith(package + "."))
                   and d not in allowed}
            if out:
                bad[module] = out
    return bad


def test_the_graph_sees_lazy_imports_and_package_imports() -> None:
    assert {"jfb.deq", "jfb.models", "jfb.nets", "jfb.physics"} <= GRAPH["jfb"]
    assert "jfb.tasks.registry" in GRAPH["jfb.tasks"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    assert "jfb.physics.radon" in GRAPH["jfb.tasks.task"]  # imported inside a method


def test_the_import_graph_is_acyclic() -> None:
    cycle = _cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("package", ["jfb.physics", "jfb.deq", "jfb.nets"])
def test_engine_layers_import_only_errors(package: str) -> None:
    assert _outside(package, {"jfb.errors"}) == {}


def test_constants_and_specs_import_no_upper_layer() -> None:
    assert GRAPH["jfb.constants"] == set()
    assert GRAPH["jfb.specs"] <= {"jfb.constants", "jfb.errors", "jfb.physics",
                                  "jfb.physics.kernels", "jfb.physics.downsample"}
    assert _outside("jfb.data", {"jfb.atomic", "jfb.errors", "jfb.specs"}) == {}


def test_models_import_no_baselines() -> None:
    """CG and the ADMM x-update come from jfb.linalg, below both models and baselines."""
    assert {m: d for m, d in _outside("jfb.models", set()).items()
            if any(x == "jfb.baselines" or x.startswith("jfb.baselines.") for x in d)} == {}


def test_every_module_imports_on_its_own_in_a_fresh_interpreter() -> None:
    """Each module imported first, in one interpreter whose ``jfb`` modules are dropped between
    imports (third-party ones are kept, for speed): an order-dependent cycle fails here.
    ``__main__`` modules are left out: importing one runs its program."""
    script = (
        "import importlib, sys\n"
        f"names = {sorted(m for m in MODULES if not m.endswith('__main__'))!r}\n"
        "for name in names:\n"
        "    for key in [k for k in sys.modules if k == 'jfb' or k.startswith('jfb.')]:\n"
        "        del sys.modules[key]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError as exc:\n"
        "        if getattr(exc, 'name', None) in ('deepinv', 'tensorboard'):\n"
        "            continue  # an optional dependency, imported by an adapter\n"
        "        raise SystemExit(f'{name}: {type(exc).__name__}: {exc}')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600, env={"PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1",
                                            "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]


def test_only_the_entry_points_import_the_command_line() -> None:
    """``jfb.cli`` is imported by ``python -m jfb`` alone, its parsers by ``jfb.cli`` alone."""
    users = {m: {d for d in deps if d in ("jfb.cli", "jfb.cli_parsers")}
             for m, deps in GRAPH.items()}
    assert {m: d for m, d in users.items() if d} == {"jfb.__main__": {"jfb.cli"},
                                                     "jfb.cli": {"jfb.cli_parsers"}}
