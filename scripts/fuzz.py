#!/usr/bin/env python
"""Fuzz the input parsers of jfb with seeded random inputs and count what happens.

Targets:
  image     ``jfb.data.load_image`` on random bytes, random bytes behind a valid magic number,
            valid PNG/JPEG/BMP/GIF/TIFF/NPY files in odd modes (1-bit, grey, grey+alpha, palette
            with and without transparency, RGBA, CMYK, 16-bit grey and colour, float and integer
            TIFFs, 1x1 pixels), and the same files corrupted (truncated, bytes flipped, inserted
            or zeroed, PNG dimensions set to 0 or to huge values with a valid CRC).
  kernel    kernel specs (``gaussian:SIZE:SIGMA``, ``motion:...``, ``disk:R``, ``file:PATH`` with
            generated .npy/.png kernels, good and bad) through ``jfb.tasks.parse_task``; an
            accepted blur kernel of side <= 101 is built and checked.
  task      whole task specs ``key=value,...`` through ``jfb.tasks.parse_task``.
  config    ``jfb.config.load_config`` on random, mutated and schema-shaped TOML/YAML/JSON files.
  override  ``jfb.config.load_config(None, overrides)`` on random ``key=value`` strings.

Contract: every input either succeeds with a sane result (image: a finite float32 tensor in
[0, 1] of shape (3, H, W), (1, H, W) or (1|3, H, W) for modes rgb/grey/keep, H and W those of the
file when it was not corrupted; task: a Task whose spec round-trips and whose small kernels are
valid; config: a Config equal to its own dict and TOML round trips) or raises a
``jfb.errors.JFBError``. Anything else (another exception, a broken result, more than
``--timeout`` seconds; 1 s for a YAML alias bomb) is a crash. A broken contract that is already
known and reported to the owner of the code (listed in docs/RELIABILITY.md; recognised by
``KnownIssue`` checks) is counted as ``known`` instead; there are none at present (those found
were fixed and their checks removed, so that a regression counts as a crash). Prints per target:
tried, accepted, rejected (JFBError), known, crashed, and the first crashes and known issues;
exits 1 if anything crashed.

    python scripts/fuzz.py --cases 3000 --seed 0
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import random
import signal
import string
import struct
import sys
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# ---------------------------------------------------------------------- bookkeeping


@dataclass
class Counts:
    """What happened to the cases of one target."""

    target: str
    tried: int = 0
    accepted: int = 0
    rejected: int = 0
    known: int = 0
    crashed: int = 0
    seconds: float = 0.0
    crashes: list[str] = field(default_factory=list)  # the first few, described
    known_issues: dict[str, int] = field(default_factory=dict)  # what -> how many

    def row(self) -> dict[str, Any]:
        return {"target": self.target, "tried": self.tried, "accepted": self.accepted,
                "rejected": self.rejected, "known": self.known, "crashed": self.crashed,
                "seconds": round(self.seconds, 1), "known_issues": self.known_issues}


class Hang(Exception):
    """A case ran past its time limit."""


class KnownIssue(Exception):
    """A contract break already reported (docs/RELIABILITY.md): counted, not a crash."""


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise Hang in the block after ``seconds`` (SIGALRM; main thread of a POSIX process)."""
    def on_alarm(signum: int, frame: Any) -> None:
        raise Hang(f"no answer within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


#: A case of a known slow input (``slow_issue``) that takes longer than this is that issue.
SLOW_S = 0.5


def run_case(counts: Counts, describe: str, call: Callable[[], Any],
             check: Callable[[Any], None], timeout: float, keep: int = 5,
             slow_issue: str | None = None) -> None:
    """One case: ``check(call())`` accepted, JFBError rejected, KnownIssue known, anything else
    (or no answer within ``timeout`` s) a crash; an answer after more than SLOW_S seconds to an
    input known to be slow counts as the known issue ``slow_issue``."""
    from jfb.errors import JFBError

    counts.tried += 1
    issue = None
    t0 = time.perf_counter()
    try:
        with _time_limit(timeout):
            result = call()
            check(result)
        outcome = "accepted"
    except JFBError:
        outcome = "rejected"
    except KnownIssue as exc:
        outcome, issue = "known", str(exc)
    except Exception as exc:  # noqa: BLE001 - the point is to catch everything else
        outcome = "crashed"
        if len(counts.crashes) < keep:
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:])
            counts.crashes.append(f"{describe}\n    {type(exc).__name__}: {exc}\n{tb}")
    if slow_issue and outcome != "crashed" and time.perf_counter() - t0 > SLOW_S:
        outcome, issue = "known", slow_issue
    setattr(counts, outcome, getattr(counts, outcome) + 1)
    if issue is not None:
        counts.known_issues[issue] = counts.known_issues.get(issue, 0) + 1


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise AssertionError(f"contract broken: {what}")


# ---------------------------------------------------------------------- images
_MAGICS = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"BM", b"II*\x00", b"MM\x00*", b"GIF89a",
           b"\x93NUMPY", b"II+\x00", b"RIFF"]
_SUFFIXES = [".png", ".jpg", ".bmp", ".tif", ".gif", ".npy", ".webp", ""]


def _pil_bytes(rng: random.Random, h: int, w: int) -> tuple[str, bytes]:
    """A valid image file made with Pillow, in a random mode and format."""
    from PIL import Image

    nrng = np.random.default_rng(rng.getrandbits(32))
    fmt, mode = rng.choice([
        ("PNG", "1"), ("PNG", "L"), ("PNG", "LA"), ("PNG", "P"), ("PNG", "Pt"), ("PNG", "RGB"),
        ("PNG", "RGBA"), ("PNG", "I;16"), ("TIFF", "I"), ("JPEG", "L"), ("JPEG", "RGB"),
        ("JPEG", "CMYK"), ("BMP", "1"), ("BMP", "L"), ("BMP", "P"), ("BMP", "RGB"),
        ("GIF", "P"), ("TIFF", "P"), ("TIFF", "CMYK"), ("TIFF", "I;16"), ("TIFF", "F"),
    ])
    if mode == "I;16":
        im = Image.fromarray(nrng.integers(0, 65536, (h, w), dtype=np.uint16))
    elif mode == "I":
        im = Image.fromarray(nrng.integers(0, 65536, (h, w)).astype(np.int32), mode="I")
    elif mode == "F":
        im = Image.fromarray(nrng.random((h, w), dtype=np.float32))
    else:
        base = Image.fromarray(nrng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        im = base.convert("P") if mode == "Pt" else base.convert(mode)
        if mode == "Pt":
            im.info["transparency"] = 0
    buf = io.BytesIO()
    kwargs = {"transparency": 0} if mode == "Pt" else {}
    im.save(buf, format=fmt, **kwargs)
    return f"{fmt} {mode} {w}x{h}", buf.getvalue()


def _png16_bytes(rng: random.Random, h: int, w: int) -> tuple[str, bytes]:
    from jfb.data import _png

    c = rng.choice([1, 2, 3, 4])
    arr = np.random.default_rng(rng.getrandbits(32)).integers(0, 65536, (h, w, c), dtype=np.uint16)
    buf = io.BytesIO()
    f = rng.randrange(5)
    _png.encode(arr, buf, filter_type=f)
    return f"PNG 16-bit {c} channels filter {f} {w}x{h}", buf.getvalue()


def _tiff_bytes(rng: random.Random, h: int, w: int) -> tuple[str, bytes, bool]:
    """A TIFF written by tifffile; the flag says whether its samples are valid image data."""
    import tifffile

    nrng = np.random.default_rng(rng.getrandbits(32))
    kind = rng.choice(["u8", "u16", "f01", "f_out", "f_nan", "i16_neg", "u32", "stack", "rgb16"])
    shape = (h, w, 3) if kind == "rgb16" or rng.random() < 0.5 else (h, w)
    valid = True
    if kind == "u8":
        arr = nrng.integers(0, 256, shape, dtype=np.uint8)
    elif kind in ("u16", "rgb16"):
        arr = nrng.integers(0, 65536, shape, dtype=np.uint16)
    elif kind == "f01":
        arr = nrng.random(shape, dtype=np.float32)
    elif kind == "f_out":
        arr, valid = (nrng.random(shape) * 4 - 2).astype(np.float32), False
    elif kind == "f_nan":
        arr, valid = nrng.random(shape).astype(np.float32), False
        arr.flat[0] = np.nan
    elif kind == "i16_neg":
        arr, valid = nrng.integers(-5, 5, shape).astype(np.int16), False
        arr.flat[0] = -1
    elif kind == "u32":
        arr = nrng.integers(0, 70000, shape).astype(np.uint32)
        valid = bool(arr.max() <= 65535)
    else:  # two pages: the first is the image
        arr = nrng.integers(0, 256, (h, w), dtype=np.uint8)
    buf = io.BytesIO()
    photometric = "rgb" if arr.ndim == 3 else "minisblack"
    with tifffile.TiffWriter(buf) as tw:
        tw.write(arr, photometric=photometric)
        if kind == "stack":
            tw.write(arr[::-1].copy(), photometric=photometric)
    return f"TIFF {kind} {arr.dtype} {arr.shape}", buf.getvalue(), valid


def _valid_image(rng: random.Random) -> tuple[str, bytes, str, tuple[int, int] | None]:
    """(description, bytes, suffix, expected (H, W) or None when the samples are invalid)."""
    h, w = (1, 1) if rng.random() < 0.1 else (rng.randint(1, 24), rng.randint(1, 24))
    pick = rng.random()
    if pick < 0.6:
        desc, data = _pil_bytes(rng, h, w)
        suffix = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "GIF": ".gif",
                  "TIFF": ".tif"}[desc.split()[0]]
        return desc, data, suffix, (h, w)
    if pick < 0.8:
        desc, data = _png16_bytes(rng, h, w)
        return desc, data, ".png", (h, w)
    if pick < 0.95:
        desc, data, valid = _tiff_bytes(rng, h, w)
        return desc, data, ".tif", (h, w) if valid else None
    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(rng.getrandbits(32)).random((h, w)))
    return f"NPY {h}x{w}", buf.getvalue(), ".npy", None  # not an image format: rejected


def _png_with_size(data: bytes, width: int, height: int) -> bytes:
    """The PNG with its IHDR width/height replaced (and the chunk's CRC fixed)."""
    ihdr = bytearray(data[12:29])
    ihdr[4:12] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return data[:12] + bytes(ihdr) + crc + data[33:]


def _corrupt(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    out = bytearray(data)
    done = []
    for _ in range(rng.randint(1, 3)):
        op = rng.choice(["truncate", "flip", "insert", "zero", "dims"])
        if op == "truncate" and len(out) > 1:
            cut = rng.randrange(1, len(out))
            del out[cut:]
        elif op == "flip" and out:
            for _ in range(rng.randint(1, 8)):
                out[rng.randrange(len(out))] = rng.randrange(256)
        elif op == "insert":
            pos = rng.randrange(len(out) + 1)
            out[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        elif op == "zero" and out:
            a = rng.randrange(len(out))
            b = min(len(out), a + rng.randint(1, 256))
            out[a:b] = bytes(b - a)
        elif op == "dims" and out[:8] == _MAGICS[0] and len(out) >= 33:
            size = rng.choice([0, 1, 2**31 - 1, 2**32 - 1, 65535, 100000])
            other = rng.choice([0, 1, 7, 65535])
            out = bytearray(_png_with_size(bytes(out), size, other))
        else:
            continue
        done.append(op)
    return "+".join(done) or "unchanged", bytes(out)


def _image_case(rng: random.Random, workdir: Path, i: int):
    """(description, path, mode, expected (H, W) or None)."""
    pick = rng.random()
    expect = None
    if pick < 0.15:
        data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 2048)))
        desc, suffix = f"random {len(data)} bytes", rng.choice(_SUFFIXES)
    elif pick < 0.3:
        magic = rng.choice(_MAGICS)
        data = magic + bytes(rng.randrange(256) for _ in range(rng.randint(0, 1024)))
        desc, suffix = f"magic {magic!r} + random", rng.choice(_SUFFIXES)
    else:
        desc, data, suffix, expect = _valid_image(rng)
        if pick < 0.65:
            how, data = _corrupt(rng, data)
            desc += f", corrupted ({how})"
            expect = None
    path = workdir / f"case{i}{suffix}"
    path.write_bytes(data)
    return desc, path, rng.choice(["rgb", "grey", "keep"]), expect


def _check_image(x: Any, mode: str, expect: tuple[int, int] | None) -> None:
    import torch

    _require(isinstance(x, torch.Tensor) and x.dtype == torch.float32, "a float32 tensor")
    _require(x.dim() == 3 and x.shape[1] >= 1 and x.shape[2] >= 1, f"(C, H, W), got {x.shape}")
    channels = {"rgb": (3,), "grey": (1,), "keep": (1, 3)}[mode]
    _require(x.shape[0] in channels, f"{channels} channels for mode {mode}, got {x.shape[0]}")
    _require(bool(torch.isfinite(x).all()), "finite samples")
    _require(float(x.min()) >= 0.0 and float(x.max()) <= 1.0, "samples in [0, 1]")
    if expect is not None:
        _require(tuple(x.shape[1:]) == expect, f"size {expect}, got {tuple(x.shape[1:])}")


def fuzz_image(rng: random.Random, n: int, workdir: Path, timeout: float) -> Counts:
    from jfb.data import load_image

    counts = Counts("image")
    for i in range(n):
        desc, path, mode, expect = _image_case(rng, workdir, i)
        run_case(counts, f"{desc} as {path.name}, mode {mode}",
                 lambda p=path, m=mode: load_image(p, mode=m),
                 lambda x, m=mode, e=expect: _check_image(x, m, e), timeout)
        path.unlink()
    return counts


# ---------------------------------------------------------------------- kernels and tasks
_NUMBERS = ["0", "1", "2", "3", "5", "7", "9", "-1", "-3", "2.5", "0.5", "1e3", "1e-300", "nan",
            "inf", "-inf", "1e999", "", " ", "0x10", "1_000", " 3", "3 ", "+5", "\u0663",
            "5.0", "3.", ".5", "1e2", "abc", "99", "101", "4", "1.0e0", "--1", "0.0"]
_KERNEL_KINDS = ["gaussian", "motion", "disk", "file", "Gaussian", " gaussian", "box", "", "gauss",
                 "disk ", "motion:"]


def _number(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.5:
        return rng.choice(_NUMBERS)
    if r < 0.75:
        return str(rng.randint(-3, 41))
    return repr(rng.uniform(-5, 30))


def _kernel_file(rng: random.Random, workdir: Path, i: int) -> str:
    nrng = np.random.default_rng(rng.getrandbits(32))
    kind = rng.choice(["good", "neg", "nan", "zeros", "1d", "3d", "empty", "obj", "png", "bytes",
                       "missing", "int", "complex", "bool", "rgba_png", "4d"])
    path = workdir / f"k{i}.{'png' if 'png' in kind else 'npy'}"
    shape = (rng.randint(1, 9), rng.randint(1, 9))
    if kind == "missing":
        return str(workdir / "no-such-kernel.npy")
    if kind == "bytes":
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(0, 300))))
        return str(path)
    if kind in ("png", "rgba_png"):
        from PIL import Image

        arr = nrng.integers(0, 256, (*shape, 4) if kind == "rgba_png" else shape, dtype=np.uint8)
        Image.fromarray(arr).save(path)
        return str(path)
    arrays = {
        "good": nrng.random(shape), "neg": nrng.random(shape) - 0.5,
        "nan": np.full(shape, np.nan), "zeros": np.zeros(shape), "1d": nrng.random(5),
        "3d": nrng.random((2, *shape)), "empty": np.zeros((0, 3)),
        "obj": np.array([[1, "a"]], dtype=object), "int": nrng.integers(0, 5, shape),
        "complex": nrng.random(shape) + 1j, "bool": nrng.random(shape) > 0.5,
        "4d": nrng.random((1, 1, *shape)),
    }
    with open(path, "wb") as fh:
        np.save(fh, arrays[kind], allow_pickle=True)
    return str(path)


def _well_formed_kernel(rng: random.Random) -> str:
    """A kernel spec of the documented shape with plausible (mostly valid) numbers."""
    size = rng.choice([1, 3, 5, 7, 9, 15, 31, 2, 0, -3, 99])
    kind = rng.choice(["gaussian", "motion", "disk"])
    if kind == "gaussian":
        return f"gaussian:{size}:{rng.choice([0.5, 1.0, 2.0, 5.0, 30.0, 0.01, 0, -1])}"
    if kind == "motion":
        extra = [str(rng.randint(0, 2**40)), repr(rng.choice([0.0, 0.5, 1.0, 1.5, -0.1]))]
        return ":".join(["motion", str(size), *extra[: rng.randint(0, 2)]])
    return f"disk:{rng.choice([0.1, 0.5, 1.0, 2.5, 4.7, 12.0, 0, -2])}"


def kernel_spec(rng: random.Random, workdir: Path, i: int) -> str:
    kind = rng.choice(_KERNEL_KINDS)
    if kind == "file":
        return "file:" + (_kernel_file(rng, workdir, i) if rng.random() < 0.9 else "")
    if rng.random() < 0.5:
        return _well_formed_kernel(rng)
    parts = [kind] + [_number(rng) for _ in range(rng.randint(0, 4))]
    return rng.choice([":", ":", ":", "::", ";"]).join(parts)


def _first_size(spec: str) -> float:
    """The size/radius field of a kernel spec, as a number (inf when it is not one)."""
    try:
        return abs(float(spec.split(":")[1]))
    except (IndexError, ValueError):
        return math.inf


def _check_round_trip(task: Any) -> None:
    """``parse_task(task.to_spec()) == task`` (when the task can be written as a spec)."""
    from jfb.tasks import parse_task

    try:
        spec = task.to_spec()
    except ValueError:  # documented: values holding ',' or '=' cannot be written as a spec
        return
    _require(parse_task(spec) == task, f"round trip through {spec!r}")


def _check_kernel(task: Any) -> None:
    """The task's blur kernel: (kh, kw), or (3, kh, kw) per channel; finite, >= 0, sums to 1."""
    import torch

    k = task.kernel_tensor()
    _require(isinstance(k, torch.Tensor) and k.dim() in (2, 3), f"a 2-D kernel, got {k.shape}")
    _require(k.dim() == 2 or k.shape[0] == 3, f"(kh, kw) or (3, kh, kw), got {tuple(k.shape)}")
    _require(bool(torch.isfinite(k).all()) and float(k.min()) >= 0, "finite, >= 0")
    sums = k.sum(dim=(-2, -1))
    _require(bool(((sums - 1).abs() < 1e-4).all()), f"sums to 1, got {sums.tolist()}")


def _check_task(task: Any, spec_kernel: str | None, build_kernel: bool) -> None:
    from jfb.tasks import Task

    _require(isinstance(task, Task), f"a Task, got {type(task).__name__}")
    if spec_kernel is not None:
        _require(task.kernel == spec_kernel.strip(), f"kernel {spec_kernel!r} kept")
    _check_round_trip(task)
    if build_kernel and getattr(task, "kernel", None):
        _check_kernel(task)


def _parse_kernel_task(spec: str) -> Any:
    """``parse_task(f"kernel={spec}")``."""
    from jfb.tasks import parse_task

    return parse_task(f"kernel={spec}")


def fuzz_kernel(rng: random.Random, n: int, workdir: Path, timeout: float) -> Counts:
    counts = Counts("kernel")
    for i in range(n):
        spec = kernel_spec(rng, workdir, i)
        small = spec.startswith("file:") or _first_size(spec) <= 101
        run_case(counts, f"kernel={spec!r}", lambda s=spec: _parse_kernel_task(s),
                 lambda t, s=spec, b=small: _check_task(t, s, b), timeout)
    return counts


def _data_value(rng: random.Random, workdir: Path) -> str:
    folder = workdir / "folder"
    split = workdir / "split"
    for d in (folder, split / "train", split / "val"):
        d.mkdir(parents=True, exist_ok=True)
    return rng.choice([
        "celeba128", "natural", str(folder), str(split), str(workdir / "missing"), "",
        "celeba128:train", "celeba128:val", "celeba128:test", "natural:patches:64",
        "natural:crops:256", "natural:crops:0", "natural:crops:-5", "natural:patch:64",
        "natural:crops:abc", f"folder:{folder}", "folder:", "folder", "natural:crops:1e3",
        "celeba", "natural:crops", ":", str(folder) + "/", "x" * rng.randint(1, 40),
    ])


def _task_value(rng: random.Random, key: str, workdir: Path, i: int) -> str:
    if key == "kernel":
        return kernel_spec(rng, workdir, i)
    if key == "noise":
        return rng.choice([_number(rng), "0.01", "0", "0.005", "0.1"])
    if key == "padding":
        return rng.choice(["zeros", "circular", "reflect", "valid", "zeros", "replicate", "",
                           "Zeros"])
    if key in ("data", "train", "val"):
        return _data_value(rng, workdir)
    if key == "op":
        return rng.choice(["blur", "denoise", "sr", "inpaint", "radon", "identity"]) + "".join(
            ":" + rng.choice([_number(rng), "gaussian", "box", "random", "box"])
            for _ in range(rng.randint(0, 3)))
    return "".join(rng.choice(string.printable) for _ in range(rng.randint(0, 12)))


def task_spec(rng: random.Random, workdir: Path, i: int) -> str:
    from jfb import tasks

    if rng.random() < 0.1:
        return "".join(rng.choice(string.printable + "é=,:") for _ in range(rng.randint(0, 40)))
    keys = list(getattr(tasks, "_KEYS", ("name", "kernel", "noise", "padding", "data")))
    items = []
    for _ in range(rng.randint(0, 3) if rng.random() < 0.1 else rng.randint(1, 3)):
        key = rng.choice(keys) if rng.random() < 0.95 else rng.choice(["kernal", "", " ", "x"])
        eq = rng.choice(["=", "=", "=", "=", "=", "==", "", " = "])
        items.append(f"{key}{eq}{_task_value(rng, key.strip(), workdir, i)}")
    return rng.choice([",", ",", ", ", ",,"]).join(items)


def fuzz_task(rng: random.Random, n: int, workdir: Path, timeout: float) -> Counts:
    from jfb.tasks import parse_task

    counts = Counts("task")
    for i in range(n):
        spec = task_spec(rng, workdir, i)
        run_case(counts, f"parse_task({spec!r})", lambda s=spec: parse_task(s),
                 lambda t: _check_task(t, None, False), timeout)
    return counts


# ---------------------------------------------------------------------- configs and overrides
def _schema_keys() -> list[str]:
    from jfb.config import Config

    def leaves(d: dict[str, Any], prefix: str) -> list[str]:
        out = []
        for k, v in d.items():
            out += leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
        return out

    return leaves(Config().to_dict(), "")


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if r < 0.2:
        return rng.randint(-3, 100)
    if r < 0.35:
        return rng.choice([0.0, 1e-3, -1.0, 2.5, math.inf, -math.inf, math.nan, 1e300, 0.5])
    if r < 0.45:
        return rng.choice([True, False])
    if r < 0.7:
        return rng.choice(["none", "null", "adam", "anderson", "jfb", "dncnn", "unet", "cpu",
                           "auto", "cosine", "degrad", "operator", "", "abc", "1e-3", "5",
                           "celeba-gauss5", "kernel=gaussian:3:1.0", "demo"])
    if r < 0.8 and depth < 2:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if r < 0.9 and depth < 2:
        return {rng.choice(["depth", "x", "lr"]): _random_value(rng, depth + 1)}
    return None


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            return
        node = nxt
    node[parts[-1]] = value


def _toml_scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v == math.inf else
                                            "-inf" if v == -math.inf else repr(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_scalar(x) for x in v if x is not None) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_scalar(x)}" for k, x in v.items()
                               if x is not None) + "}"
    return '"none"'


def _to_toml(tree: dict[str, Any], prefix: str = "") -> str:
    """TOML text of a nested dict: scalars and lists first, then one table per dict."""
    out = "".join(f"{k} = {_toml_scalar(v)}\n" for k, v in tree.items() if not isinstance(v, dict))
    for k, v in tree.items():
        if isinstance(v, dict):
            out += f"\n[{prefix}{k}]\n" + _to_toml(v, f"{prefix}{k}.")
    return out


def _schema_tree(rng: random.Random, keys: list[str]) -> dict[str, Any]:
    """A partial config with real keys (valid or random values) and the odd unknown key."""
    from jfb.config import Config

    defaults = Config().to_dict()
    tree: dict[str, Any] = {}
    for key in rng.sample(keys, rng.randint(0, min(5, len(keys)))):
        node: Any = defaults
        for p in key.split("."):
            node = node[p]
        _set(tree, key, node if rng.random() < 0.75 else _random_value(rng))
    if rng.random() < 0.1:
        _set(tree, rng.choice(["model.nett", "optim", "train.learning_rate", "data.x.y"]),
             _random_value(rng))
    return tree


def yaml_alias_bomb(levels: int) -> str:
    """A list of ``levels`` YAML anchors, each nine aliases of the one before: a few hundred
    bytes that stand for 9^levels strings (as the value of model.net.depth)."""
    names = "abcdefghijkl"[:levels]
    items = ["&a [x, x, x, x, x, x, x, x, x]"] + [
        f"&{c} [" + ", ".join([f"*{p}"] * 9) + "]" for p, c in zip(names, names[1:], strict=False)
    ]
    return "model:\n  net:\n    depth: [" + ", ".join(items) + "]\n"


#: Time limit of a YAML alias bomb case: refused in milliseconds since config's ``_describe``
#: uses a bounded repr; the whole ``repr()`` it made before took ~3 s and ~700 MB (a crash now).
BOMB_TIMEOUT_S = 1.0


def _config_text(rng: random.Random, keys: list[str]) -> tuple[str, str, str]:
    """(description, text, suffix)."""
    from jfb.config import Config

    suffix = rng.choice([".toml", ".toml", ".yaml", ".yml", ".json", ".ini", ""])
    pick = rng.random()
    if pick < 0.0005:
        return "YAML alias bomb", yaml_alias_bomb(8), ".yaml"
    if pick < 0.15:
        text = "".join(rng.choice(string.printable + "[]{}=:\"'#\u00e9") for _ in
                       range(rng.randint(0, 300)))
        return "random text", text, suffix
    tree = _schema_tree(rng, keys)
    if suffix in (".yaml", ".yml"):
        import yaml

        text = yaml.safe_dump(tree)
    elif suffix == ".json":
        text = json.dumps(tree)
    else:
        text = _to_toml(tree)
    if pick < 0.45:  # mutate the text of a real config
        base = Config().to_toml() if suffix in (".toml", ".ini", "") else text
        chars = list(base)
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(chars) + 1)
            r = rng.random()
            if r < 0.4 and chars:
                chars[min(pos, len(chars) - 1)] = rng.choice(string.printable)
            elif r < 0.7:
                chars.insert(pos, rng.choice(string.printable))
            elif chars:
                del chars[min(pos, len(chars) - 1)]
        return "mutated config", "".join(chars), suffix
    return "schema-shaped config", text, suffix


def _check_config(cfg: Any, workdir: Path) -> None:
    from jfb.config import Config, load_config

    _require(isinstance(cfg, Config), f"a Config, got {type(cfg).__name__}")
    _require(Config.from_dict(cfg.to_dict()) == cfg, "dict round trip")
    path = workdir / "roundtrip.toml"
    path.write_text(cfg.to_toml(), encoding="utf-8")
    _require(load_config(path) == cfg, "TOML round trip")


def fuzz_config(rng: random.Random, n: int, workdir: Path, timeout: float) -> Counts:
    from jfb.config import load_config

    counts = Counts("config")
    keys = _schema_keys()
    for i in range(n):
        desc, text, suffix = _config_text(rng, keys)
        path = workdir / f"cfg{i}{suffix}"
        if rng.random() < 0.05:
            path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(1, 200))))
            desc = "random bytes"
        else:
            path.write_text(text, encoding="utf-8")
        run_case(counts, f"{desc} as {path.name}: {text[:120]!r}",
                 lambda p=path: load_config(p), lambda c: _check_config(c, workdir),
                 min(timeout, BOMB_TIMEOUT_S) if desc == "YAML alias bomb" else timeout)
        path.unlink()
    return counts


def override_item(rng: random.Random, keys: list[str]) -> Any:
    r = rng.random()
    if r < 0.05:
        return rng.choice([None, 3, b"train.lr=1"])  # not strings: documented ConfigError
    if r < 0.15:
        return "".join(rng.choice(string.printable) for _ in range(rng.randint(0, 30)))
    key = rng.choice(keys) if rng.random() < 0.85 else rng.choice(
        ["model", "train", "model.net", "", "a..b", "model.nett", ".lr", "train.", "task.x"])
    if rng.random() < 0.5 and key in keys:  # a value of the right type: the default's
        from jfb.config import Config

        value = _toml_scalar(Config().get(key))
    else:
        value = rng.choice([
            _toml_scalar(_random_value(rng)), str(_random_value(rng)), "{depth=5, width=2}",
            "[1, 2", "'unterminated", '"5"', "none", "", "=", "1e-3", "true", "\u00e9", "{x=1}",
        ])
    return f"{key}{rng.choice(['=', '=', '==', ' = '])}{value}"


def fuzz_override(rng: random.Random, n: int, workdir: Path, timeout: float) -> Counts:
    from jfb.config import load_config

    counts = Counts("override")
    keys = _schema_keys()
    for _ in range(n):
        items = [override_item(rng, keys) for _ in range(rng.randint(1, 2))]
        run_case(counts, f"overrides {items!r}", lambda o=items: load_config(None, o),
                 lambda c: _check_config(c, workdir), timeout)
    return counts


TARGETS: dict[str, Callable[[random.Random, int, Path, float], Counts]] = {
    "image": fuzz_image,
    "kernel": fuzz_kernel,
    "task": fuzz_task,
    "config": fuzz_config,
    "override": fuzz_override,
}


def run_target(name: str, cases: int, seed: int, timeout: float = 20.0) -> Counts:
    """Fuzz one target with ``cases`` inputs drawn from a generator seeded by (seed, name)."""
    rng = random.Random(f"{seed}:{name}")
    with tempfile.TemporaryDirectory(prefix=f"jfb-fuzz-{name}-") as tmp:
        t0 = time.perf_counter()
        counts = TARGETS[name](rng, cases, Path(tmp), timeout)
        counts.seconds = time.perf_counter() - t0
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=1000, help="inputs per target")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma-separated targets")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds per case")
    ap.add_argument("--json", type=Path, help="also write the counts here")
    args = ap.parse_args(argv)
    names = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in names if t not in TARGETS]
    if unknown:
        ap.error(f"unknown targets {unknown}; choose from {list(TARGETS)}")
    import warnings

    warnings.simplefilter("ignore")  # Pillow/tifffile warn on odd files; outcomes are counted
    rows, crashed = [], 0
    print(f"{'target':<10}{'tried':>8}{'accepted':>10}{'rejected':>10}{'known':>7}"
          f"{'crashed':>9}{'s':>8}")
    for name in names:
        c = run_target(name, args.cases, args.seed, args.timeout)
        rows.append(c.row())
        crashed += c.crashed
        print(f"{c.target:<10}{c.tried:>8}{c.accepted:>10}{c.rejected:>10}{c.known:>7}"
              f"{c.crashed:>9}{c.seconds:>8.1f}", flush=True)
        for what, n in c.known_issues.items():
            print(f"  known ({n}x): {what}", file=sys.stderr)
        for text in c.crashes:
            print(f"  CRASH {text}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({"seed": args.seed, "cases": args.cases,
                                         "targets": rows}, indent=2) + "\n")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
