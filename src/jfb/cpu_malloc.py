"""The CPU allocator: :func:`tune_cpu_malloc` (glibc ``mallopt``) and its state. The tuning is
process-wide and cannot be undone, so its state lives here, in one place, and is read through
:func:`malloc_state` and :func:`malloc_record` (which every ``jfb bench`` JSON carries). The
command line tunes the allocator for its CPU runs (``jfb.cli``; ``JFB_MALLOC=default`` leaves
glibc as it is); docs/BENCHMARKS.md measures what it is worth.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Any

#: glibc's mallopt parameters (malloc.h) and the values ``tune_cpu_malloc`` sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_MMAP_THRESHOLD = 32 * 2**20  # glibc's largest allowed value on 64-bit
_TRIM_THRESHOLD = 2**31 - 1
_MMAP_MAX = 0  # no block of the main thread's heap from mmap, whatever its size
_malloc_state = "default"


def tune_cpu_malloc() -> str:
    """Make glibc keep freed memory for reuse instead of returning it to the OS (Linux only).

    By default glibc serves blocks above a dynamic threshold (128 KiB at start) with fresh
    ``mmap`` pages and trims the heap top after frees, so every activation tensor of T can cost
    page faults on each application; on this project's CPU VM that made one T of the ``small``
    size 3-4x slower until a large enough free raised the thresholds (see docs/BENCHMARKS.md).
    The threshold cannot go above 32 MiB, and every tensor of a photo is larger (one channel of
    a 12-megapixel image is 46 MiB), so M_MMAP_MAX = 0 also turns ``mmap`` off for the heap:
    large blocks come from the heap too and are reused after a free (a 1-megapixel ``jfb
    deblur`` went from 9.4 s of system time to 0.8 s; docs/BENCHMARKS.md, "Photos").
    Sets M_MMAP_THRESHOLD = 32 MiB, M_TRIM_THRESHOLD = 2 GiB - 1 and M_MMAP_MAX = 0 for the
    whole process (irreversible) and returns the state recorded in every JSON written
    afterwards.
    """
    global _malloc_state
    if not sys.platform.startswith("linux"):
        return _malloc_state
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1
        ok = libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1 and ok
        ok = libc.mallopt(_M_MMAP_MAX, _MMAP_MAX) == 1 and ok
    except (OSError, AttributeError):
        return _malloc_state
    if ok:
        _malloc_state = (
            f"tuned: glibc mallopt(M_MMAP_THRESHOLD={_MMAP_THRESHOLD}, "
            f"M_TRIM_THRESHOLD={_TRIM_THRESHOLD}, M_MMAP_MAX={_MMAP_MAX})"
        )
    return _malloc_state


def malloc_state() -> str:
    """``"default"`` until :func:`tune_cpu_malloc` succeeds, then the settings it made."""
    return _malloc_state


def malloc_record() -> dict[str, Any]:
    """The allocator state and the ``MALLOC_*`` environment, as every JSON record carries them."""
    env = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
    return {"state": _malloc_state, "env": env}
