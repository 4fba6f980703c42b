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
# deepinv, for jfb.interop.deepinv and its tests (docs/DEEPINV.md). Installed with --no-deps:
# its metadata asks for torchvision, and none on PyPI imports beside a CPU-only torch (pip would
# take a wheel built for the CUDA torch, or upgrade torch to match a newer one). Its pure-Python
# dependencies are pinned, with torch held at the installed version so pip never resolves it.
# Without torchvision `import deepinv` fails; the tests then import it through a test-only
# torchvision stub that fails loudly if used (docs/DEEPINV.md explains why that is sound).
deepinv_pkg="deepinv==0.5.0"
deepinv_deps="einops==0.8.2 h5py==3.16.0 natsort==8.4.0 requests==2.34.2 torchmetrics==1.9.0 lightning-utilities==0.15.3 tqdm==4.70.1"
deepinv_stamp=.venv/.jfb-deepinv
if [ ! -f "$deepinv_stamp" ] || [ "$(cat "$deepinv_stamp")" != "$deepinv_pkg $deepinv_deps" ]; then
  torch_pin="torch==$(.venv/bin/python -c 'import torch; print(torch.__version__)')"
  # shellcheck disable=SC2086  # $deepinv_deps is a list of requirements
  .venv/bin/python -m pip install -q -c <(echo "$torch_pin") $deepinv_deps
  .venv/bin/python -m pip install -q --no-deps "$deepinv_pkg"
  echo "$deepinv_pkg $deepinv_deps" > "$deepinv_stamp"
fi
# piq, for the HaarPSI, GMSD and FSIM of `--metrics` (jfb.quality, docs/questions/metrics.md).
# Installed with --no-deps: it declares torchvision, which has no build for this CPU-only torch.
# Its package __init__ imports torchvision (for FID and LPIPS, which jfb does not use), so
# jfb.quality loads its pure-torch metric modules without that __init__; they need only torch
# and numpy.
piq_pkg="piq==0.8.0"
if ! .venv/bin/python -c "from importlib.metadata import version; assert version('piq') == '${piq_pkg#piq==}'" >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q --no-deps "$piq_pkg"
fi
