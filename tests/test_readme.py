"""Every ```python block of README.md runs as written, each on its own (a fresh namespace, a
scratch working directory). A block holding the line ``# slow: not run by tests/test_readme.py``
is skipped, visibly, in the README and in the test report."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from jfb.errors import TrustWarning

README = Path(__file__).resolve().parents[1] / "README.md"
SLOW = "# slow: not run by tests/test_readme.py"
_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number of the opening fence, code) of every ```python block of ``text``."""
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in _BLOCK.finditer(text)]


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def test_the_extractor_finds_each_block_and_only_python_ones():
    text = "x\n```python\na = 1\n```\n```bash\nls\n```\n\n```python\nb = 2\nc = 3\n```\n"
    assert python_blocks(text) == [(2, "a = 1\n"), (9, "b = 2\nc = 3\n")]
    assert len(BLOCKS) >= 4  # the library section: restore, load, build, engine


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"README.md:{n}" for n, _ in BLOCKS])
def test_readme_block_runs(line, code, tmp_path, monkeypatch):
    if SLOW in code:
        pytest.skip(f"README.md:{line} is marked slow")
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():  # an example whose result cannot be trusted is a bad example
        warnings.simplefilter("error", TrustWarning)
        exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})  # noqa: S102
