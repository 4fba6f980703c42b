#!/usr/bin/env bash
# Creates .venv and installs jfb into it, without ever letting pip resolve a CUDA torch on a
# CPU-only machine: a torch the system Python already has (a GPU machine) is reused; otherwise
# the pinned CPU build torch==2.13.0 is installed first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  if "$PY" -c "import torch" >/dev/null 2>&1; then
    "$PY" -m venv --system-site-packages .venv
  else
    "$PY" -m venv .venv
  fi
fi
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q "torch==2.13.0"
fi
stamp=.venv/.jfb-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q -e ".[dev]"
  touch "$stamp"
fi
