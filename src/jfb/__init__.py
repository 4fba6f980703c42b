"""jfb: implicit networks trained by Jacobian-free backpropagation for imaging inverse problems.

The core (``physics``, ``deq``, ``nets``, ``models``) is imported with ``jfb``; the rest
(``baselines``, ``data``, ``tasks``, ``metrics``, ``train``, ``config``, ``evaluate``, ...) is
imported on first use, so ``import jfb`` stays cheap.
"""

import importlib

from jfb import deq, models, nets, physics
from jfb.errors import CheckpointError, ConfigError, DataError, JFBError, SolverError

__version__ = "0.1.0"

_LAZY = ("baselines", "bench", "compare", "config", "data", "evaluate", "metrics", "pipeline",
         "report", "restore", "tasks", "train")

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "JFBError",
    "SolverError",
    "deq",
    "models",
    "nets",
    "physics",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(f"jfb.{name}")
    raise AttributeError(f"module 'jfb' has no attribute {name!r}")
