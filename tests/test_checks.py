"""The argument checks of :mod:`jfb.errors` that every layer uses: what they accept, what they
return, and the error class and words of what they refuse."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jfb.errors import (
    ConfigError,
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_positive,
    check_shape,
)


def test_check_int_accepts_integers_and_refuses_bools_floats_and_small_values():
    assert check_int("n", 3, minimum=1) == 3
    assert check_int("n", np.int64(0), minimum=0) == 0 and type(check_int("n", np.int64(2))) is int
    for bad in (True, 2.0, "2", None):
        with pytest.raises(ValueError, match=r"^n must be an integer >= 1, got "):
            check_int("n", bad, minimum=1)
    with pytest.raises(ValueError, match=r"^n must be >= 1, got 0$"):
        check_int("n", 0, minimum=1)
    with pytest.raises(TypeError, match="must be an integer, got str '2'"):
        check_int("n", "2", type_error=TypeError)
    with pytest.raises(ConfigError, match="depth must be >= 2"):
        check_int("depth", 1, minimum=2, error=ConfigError)


@pytest.mark.parametrize(
    ("kwargs", "good", "bad", "words"),
    [
        ({}, [-1.5, 0, 7], [math.inf, math.nan], "a finite number"),
        ({"low": 0}, [0, 2.5], [-1e-9, math.inf], "a finite number >= 0"),
        ({"low": 0, "low_open": True}, [1e-300, 3], [0.0, -1.0, math.nan],
         "a finite positive number"),
        ({"low": 1, "low_open": True}, [1.5], [1.0], "a finite number > 1"),
        ({"high": 2}, [2, -5], [2.5], "a finite number <= 2"),
        ({"low": 0, "high": 1, "low_open": True}, [1, 0.5], [0, 1.1],
         r"a finite number in \(0, 1\]"),
        ({"low": 0, "high": 1, "high_open": True}, [0, 0.5], [1, -0.1],
         r"a finite number in \[0, 1\)"),
    ],
)
def test_check_number_intervals(kwargs, good, bad, words):
    for v in good:
        assert check_number("x", v, **kwargs) == float(v)
    for v in bad:
        with pytest.raises(ValueError, match=rf"^x must be {words}, got "):
            check_number("x", v, **kwargs)


def test_check_number_refuses_non_numbers_with_its_own_error_class():
    assert isinstance(check_number("x", np.float32(0.5)), float)
    for bad in (True, "0.5", None, [1.0]):
        with pytest.raises(ValueError, match="x must be a finite positive number, got"):
            check_positive("x", bad)
        with pytest.raises(TypeError, match="sigma must be a finite number >= 0, got"):
            check_number("sigma", bad, low=0, type_error=TypeError)
    with pytest.raises(ValueError):  # the range is still checked with the error class
        check_number("sigma", -1.0, low=0, type_error=TypeError)


def test_check_bool_choice_and_shape():
    assert check_bool("flag", False) is False
    with pytest.raises(TypeError, match="flag must be True or False, got 1"):
        check_bool("flag", 1)
    with pytest.raises(ConfigError, match="flag must be True or False"):
        check_bool("flag", None, error=ConfigError)
    assert check_choice("mode", "b", ("a", "b")) == "b"
    for bad in ("c", None, 1):
        with pytest.raises(ValueError, match=r"^unknown mode .*; expected one of a, b$"):
            check_choice("mode", bad, ("a", "b"))
    assert check_shape([1, 3.0, 4]) == (1, 3, 4)
    with pytest.raises(TypeError, match="in_shape must be a sequence of ints"):
        check_shape(5)
    with pytest.raises(ValueError, match="out_shape must be a non-empty sequence"):
        check_shape([2, 0], "out_shape")
    with pytest.raises(ValueError, match="non-empty"):
        check_shape([])
