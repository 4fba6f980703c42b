"""jfb: implicit networks trained by Jacobian-free backpropagation for imaging inverse problems."""

from jfb import deq, models, nets, physics
from jfb.errors import CheckpointError, ConfigError, DataError, JFBError, SolverError

__version__ = "0.1.0"

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
]
