"""Error types the command line reports as one clear line (no traceback), and the argument
checks that raise them."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence


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


#: Exceptions that are the user's input, not a bug (TypeError is a wrong call: a bug): the
#: command line reports one as a line with exit status 2, and a batch of files reports it for
#: the file that raised it and goes on.
INPUT_ERRORS: tuple[type[Exception], ...] = (JFBError, ValueError, OSError)


def one_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---------------------------------------------------------------------------- argument checks
# One set of checks for the arguments of every layer (physics, deq, nets, linalg, models,
# baselines), which may import nothing of the project but this module. Each check returns the
# value as the type it promises and raises ``error`` (``type_error`` for a value of the wrong type;
# by default the same class) with a message naming the argument. Booleans are not numbers here.


def _refuse(error: type[Exception], name: str, need: str, value: object, *, typed: bool) -> None:
    got = f"{type(value).__name__} {value!r}" if typed else f"{value!r}"
    raise error(f"{name} must be {need}, got {got}")


def check_int(
    name: str,
    value: object,
    *,
    minimum: int | None = None,
    error: type[Exception] = ValueError,
    type_error: type[Exception] | None = None,
) -> int:
    """``value`` as an int: an integral number (not a bool) that is >= ``minimum`` (if given)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        need = "an integer" if minimum is None else f"an integer >= {minimum}"
        _refuse(type_error or error, name, need, value, typed=True)
    if minimum is not None and value < minimum:
        raise error(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    """The words for low < (or <=) x < (or <=) high, either end optional."""
    if high is None:
        if low is None:
            return "a finite number"
        if low == 0 and low_open:
            return "a finite positive number"
        return f"a finite number {'>' if low_open else '>='} {low:g}"
    if low is None:
        return f"a finite number {'<' if high_open else '<='} {high:g}"
    return (f"a finite number in {'(' if low_open else '['}{low:g}, {high:g}"
            f"{')' if high_open else ']'}")


def check_number(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    error: type[Exception] = ValueError,
    type_error: type[Exception] | None = None,
) -> float:
    """``value`` as a float: a finite real number (not a bool) in the interval from ``low`` to
    ``high`` (either end optional; ``low_open``/``high_open`` leave that end out)."""
    need = _interval(low, high, low_open, high_open)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        _refuse(type_error or error, name, need, value, typed=True)
    v = float(value)
    ok = math.isfinite(v)
    ok = ok and (low is None or (v > low if low_open else v >= low))
    ok = ok and (high is None or (v < high if high_open else v <= high))
    if not ok:
        _refuse(error, name, need, v, typed=False)
    return v


def check_positive(
    name: str,
    value: object,
    *,
    error: type[Exception] = ValueError,
    type_error: type[Exception] | None = None,
) -> float:
    """``value`` as a float: a finite real number > 0 (:func:`check_number` with low = 0, open)."""
    return check_number(name, value, low=0, low_open=True, error=error, type_error=type_error)


def check_bool(name: str, value: object, *, error: type[Exception] = TypeError) -> bool:
    """``value`` itself, which must be True or False (not merely truthy)."""
    if not isinstance(value, bool):
        _refuse(error, name, "True or False", value, typed=False)
    return value


def check_choice(
    name: str, value: object, choices: Sequence[str], *, error: type[Exception] = ValueError
) -> str:
    """``value`` itself, which must be one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise error(f"unknown {name} {value!r}; expected one of {', '.join(choices)}")
    return value


def check_shape(value: object, name: str = "in_shape") -> tuple[int, ...]:
    """A shape given as a non-empty sequence of positive ints, as a tuple (entries go through
    ``int``)."""
    try:
        shape = tuple(int(s) for s in value)  # type: ignore[union-attr]
    except TypeError as exc:
        raise TypeError(f"{name} must be a sequence of ints, got {value!r}") from exc
    if any(s <= 0 for s in shape) or len(shape) == 0:
        raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {shape}")
    return shape
