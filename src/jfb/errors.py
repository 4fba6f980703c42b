"""Error types the command line reports as one clear line (no traceback)."""

from __future__ import annotations


class JFBError(Exception):
    """Base class of every error that is the user's input, not a bug."""


class ConfigError(JFBError, ValueError):
    """A configuration key is unknown, has the wrong type, or is out of range."""


class DataError(JFBError, ValueError):
    """An image, dataset or kernel file cannot be used."""


class CheckpointError(JFBError, ValueError):
    """A checkpoint is missing, corrupt, tampered with, or from another model."""


class SolverError(JFBError, RuntimeError):
    """A fixed-point solve did not converge or produced NaN/Inf (when asked to raise)."""


class TrustWarning(UserWarning):
    """A result that should not be trusted as it is: its data misfit or the input's noise is far
    from what the model assumes (see :mod:`jfb.diagnose`)."""
