"""jfb: implicit networks trained by Jacobian-free backpropagation for imaging inverse problems.

The core (``physics``, ``deq``, ``nets``, ``models``) is imported with ``jfb``; the rest
(``baselines``, ``data``, ``tasks``, ``metrics``, ``train``, ``config``, ``evaluate``, ...) is
imported on first use, so ``import jfb`` stays cheap. ``jfb.load_pretrained``,
``jfb.restore_image`` and ``jfb.restore_images`` (:mod:`jfb.api`) are the main job from Python.
"""

import importlib

from jfb import deq, models, nets, physics
from jfb.errors import CheckpointError, ConfigError, DataError, JFBError, SolverError

__version__ = "0.1.0"

_LAZY = ("api", "baselines", "bench", "compare", "config", "data", "deblur", "evaluate", "metrics",
         "pipeline", "report", "restore", "tasks", "train")

#: Functions of :mod:`jfb.api` exported at the top level (imported on first use too).
_API = ("load_pretrained", "restore_image", "restore_images")

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
    *_API,
]


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(f"jfb.{name}")
    if name in _API:
        return getattr(importlib.import_module("jfb.api"), name)
    raise AttributeError(f"module 'jfb' has no attribute {name!r}")
