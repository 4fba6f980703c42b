"""The spec mini-language: kernel, operator and data specs parsed once into values.

Operator specs (``op=``): ``blur`` (the default: ``kernel`` and ``padding`` say which),
``denoise`` (A = I), ``sr:FACTOR[:FILTER]`` (anti-aliased downsampling, FILTER gaussian or box,
boundary ``padding``), ``inpaint:random:MISSING[:SEED]`` (a fraction of pixels missing, fixed by
the seed and the image size), ``inpaint:box:SIZE`` (a centred square hole, SIZE a fraction of the
side), ``radon:ANGLES`` (parallel-beam tomography, ANGLES equally spaced angles over 180 degrees,
as many detectors as the image side; square images).

Kernel specs: ``gaussian:SIZE:SIGMA``, ``motion:SIZE[:SEED[:INTENSITY]]`` (SIZE odd, at most
:data:`jfb.physics.kernels.MAX_SIZE` = 255), ``disk:RADIUS`` (RADIUS at most
:data:`jfb.physics.kernels.MAX_DISK_RADIUS` = 127.5, a 255 x 255 kernel), ``file:PATH``
(``.npy`` or a grey image; an ``.npy`` array is (kh, kw), or (C, kh, kw) with C = 1 or 3, the
pipeline's RGB channels), ``random:MAXSIZE`` (a family: every image draws its own kernel by
:func:`jfb.physics.kernels.sample`, sides up to MAXSIZE, odd).

Data specs: ``celeba128:train``, ``celeba128:val``, ``natural:patches:SIZE``,
``natural:crops:SIZE``, ``folder:PATH``, ``shared:NAME`` (the folder ``data/NAME`` of the
project's shared data, found as CelebA-128 is: ``../shared`` beside the current folder or the
repository).

Every parser raises :class:`jfb.errors.ConfigError` naming the spec and the bad field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from jfb.constants import CHANNELS
from jfb.errors import ConfigError, DataError
from jfb.physics import kernels
from jfb.physics.downsample import FILTERS

__all__ = [
    "DATA_KINDS",
    "OPERATORS",
    "DataSpec",
    "KernelSpec",
    "OpSpec",
    "Spec",
    "parse_data",
    "parse_kernel",
    "parse_op",
    "spec_float",
    "spec_int",
]

#: Operator kinds of ``op=`` specs.
OPERATORS = ("blur", "denoise", "sr", "inpaint", "radon")
#: Kinds of data specs.
DATA_KINDS = ("celeba128", "natural", "folder", "shared")


def spec_int(text: str, what: str) -> int:
    """``text`` as an int; ConfigError "WHAT must be an integer" otherwise."""
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{what} must be an integer, got {text!r}") from None


def spec_float(text: str, what: str) -> float:
    """``text`` as a finite float; ConfigError "WHAT must be a (finite) number" otherwise."""
    try:
        v = float(text)
    except ValueError:
        raise ConfigError(f"{what} must be a number, got {text!r}") from None
    if not math.isfinite(v):
        raise ConfigError(f"{what} must be a finite number, got {text!r}")
    return v


def _nonempty(text: object, what: str) -> str:
    """``text`` if it is a non-empty string; ConfigError "WHAT spec must be ..." otherwise."""
    if not isinstance(text, str) or not text:
        raise ConfigError(f"{what} spec must be a non-empty string, got {text!r}")
    return text


@dataclass(frozen=True)
class Spec:
    """A parsed spec: its ``text``, its ``kind`` (the word before the first colon) and the
    ``args`` that follow, as values."""

    text: str
    kind: str
    args: tuple[Any, ...]


def _path_arg(where: str, kind: str, rest: str) -> tuple[str]:
    """The args (PATH,) of a ``KIND:PATH`` spec."""
    if not rest:
        raise ConfigError(f"{where}: expected {kind}:PATH")
    return (rest,)


def _check_odd_size(where: str, size: int) -> None:
    if size < 1 or size % 2 == 0:
        raise ConfigError(f"{where}: size must be odd and >= 1, got {size}")
    if size > kernels.MAX_SIZE:
        raise ConfigError(f"{where}: size must be <= {kernels.MAX_SIZE} (the maximum kernel "
                          f"size), got {size}")


# ---------------------------------------------------------------------------------- kernels
@dataclass(frozen=True)
class KernelSpec(Spec):
    """A parsed kernel spec: ``kind`` gaussian, motion, disk or file, ``args`` (SIZE, SIGMA),
    (SIZE, SEED, INTENSITY), (RADIUS,) or (PATH,). A ``file:`` kernel carries the tensor
    :meth:`read` loaded (``loaded``)."""

    loaded: torch.Tensor | None = field(default=None, compare=False, repr=False)

    def read(self) -> KernelSpec:
        """This spec with a ``file:`` kernel read from disk (other kinds: itself). The array
        must be (kh, kw) or (C, kh, kw) with C = 1 (kept as (kh, kw)) or :data:`CHANNELS`."""
        if self.kind != "file" or self.loaded is not None:
            return self
        where = f"kernel={self.text!r}"
        try:
            k = kernels.from_file(self.args[0])
        except DataError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        if k.dim() == 3:
            if k.shape[0] not in (1, CHANNELS):
                raise ConfigError(
                    f"{where}: a 3-D kernel (C, kh, kw) needs C = 1 or {CHANNELS} (one kernel "
                    f"per channel of the RGB images), got shape {tuple(k.shape)}")
            if k.shape[0] == 1:
                k = k[0].clone()
        return replace(self, loaded=k)

    def tensor(self) -> torch.Tensor:
        """The kernel as a float32 tensor summing to 1: ``(kh, kw)``, or ``(3, kh, kw)`` for a
        per-channel ``file:`` kernel (a fresh copy of the one :meth:`read` loaded)."""
        if self.kind == "gaussian":
            return kernels.gaussian(*self.args)
        if self.kind == "motion":
            size, seed, intensity = self.args
            return kernels.motion(size, seed=seed, intensity=intensity)
        if self.kind == "disk":
            return kernels.disk(*self.args)
        if self.kind == "random":
            raise ConfigError(f"kernel={self.text!r} is a family (a kernel drawn per image), not "
                              "one kernel")
        loaded = self.read().loaded
        assert loaded is not None  # read() loads every file kernel or raises
        return loaded.clone()


def parse_kernel(text: str) -> KernelSpec:
    """``"gaussian:5:5.0"`` -> ``KernelSpec("gaussian:5:5.0", "gaussian", (5, 5.0))``.

    Checks the syntax and the ranges; a ``file:`` kernel is read by :meth:`KernelSpec.read`.
    """
    kind, _, rest = _nonempty(text, "kernel").partition(":")
    where = f"kernel={text!r}"
    if kind == "file":
        return KernelSpec(text, kind, _path_arg(where, kind, rest))
    parts = rest.split(":") if rest else []
    if kind == "gaussian":
        if len(parts) != 2:
            raise ConfigError(f"{where}: expected gaussian:SIZE:SIGMA")
        size, sigma = spec_int(parts[0], f"{where}: size"), spec_float(parts[1], f"{where}: sigma")
        _check_odd_size(where, size)
        if sigma <= 0:
            raise ConfigError(f"{where}: sigma must be > 0, got {sigma}")
        return KernelSpec(text, kind, (size, sigma))
    if kind == "motion":
        if not 1 <= len(parts) <= 3:
            raise ConfigError(f"{where}: expected motion:SIZE[:SEED[:INTENSITY]]")
        size = spec_int(parts[0], f"{where}: size")
        seed = spec_int(parts[1], f"{where}: seed") if len(parts) > 1 else 0
        intensity = spec_float(parts[2], f"{where}: intensity") if len(parts) > 2 else 0.5
        _check_odd_size(where, size)
        if seed < 0:
            raise ConfigError(f"{where}: seed must be >= 0, got {seed}")
        if not 0.0 <= intensity <= 1.0:
            raise ConfigError(f"{where}: intensity must be in [0, 1], got {intensity}")
        return KernelSpec(text, kind, (size, seed, intensity))
    if kind == "random":
        if len(parts) != 1:
            raise ConfigError(f"{where}: expected random:MAXSIZE")
        size = spec_int(parts[0], f"{where}: maximum size")
        _check_odd_size(where, size)
        if not 3 <= size <= kernels.MAX_SIZE:
            raise ConfigError(f"{where}: maximum size must be in [3, {kernels.MAX_SIZE}]")
        return KernelSpec(text, kind, (size,))
    if kind == "disk":
        if len(parts) != 1:
            raise ConfigError(f"{where}: expected disk:RADIUS")
        radius = spec_float(parts[0], f"{where}: radius")
        if radius <= 0:
            raise ConfigError(f"{where}: radius must be > 0, got {radius}")
        if radius > kernels.MAX_DISK_RADIUS:
            raise ConfigError(f"{where}: radius must be <= {kernels.MAX_DISK_RADIUS} (a "
                              f"{kernels.MAX_SIZE} x {kernels.MAX_SIZE} kernel, the maximum "
                              f"kernel size), got {radius}")
        return KernelSpec(text, kind, (radius,))
    raise ConfigError(f"{where}: unknown kernel type {kind!r}; expected gaussian, motion, disk, "
                      "file or random")


# -------------------------------------------------------------------------------- operators
@dataclass(frozen=True)
class OpSpec(Spec):
    """A parsed operator spec: ``kind`` one of :data:`OPERATORS`, ``args`` () for blur and
    denoise, (FACTOR, FILTER) for sr, ("random", MISSING, SEED) or ("box", SIZE) for inpaint,
    (ANGLES,) for radon."""


def parse_op(text: str) -> OpSpec:
    """``"sr:4"`` -> ``OpSpec("sr:4", "sr", (4, "gaussian"))``."""
    kind, *parts = _nonempty(text, "op").split(":")
    where = f"op={text!r}"
    if kind in ("blur", "denoise"):
        if parts:
            raise ConfigError(f"{where}: {kind} takes no arguments (the kernel is kernel=...)")
        return OpSpec(text, kind, ())
    if kind == "sr":
        if not 1 <= len(parts) <= 2:
            raise ConfigError(f"{where}: expected sr:FACTOR[:FILTER]")
        factor = spec_int(parts[0], f"{where}: factor")
        if factor < 2:
            raise ConfigError(f"{where}: factor must be >= 2, got {factor}")
        filt = parts[1] if len(parts) > 1 else "gaussian"
        if filt not in FILTERS:
            raise ConfigError(f"{where}: filter must be one of {FILTERS}, got {filt!r}")
        return OpSpec(text, kind, (factor, filt))
    if kind == "inpaint":
        if parts[:1] == ["random"] and len(parts) in (2, 3):
            missing = spec_float(parts[1], f"{where}: fraction missing")
            if not 0.0 < missing < 1.0:
                raise ConfigError(f"{where}: fraction missing must be in (0, 1), got {missing}")
            seed = spec_int(parts[2], f"{where}: seed") if len(parts) > 2 else 0
            if seed < 0:
                raise ConfigError(f"{where}: seed must be >= 0, got {seed}")
            return OpSpec(text, kind, ("random", missing, seed))
        if parts[:1] == ["box"] and len(parts) == 2:
            size = spec_float(parts[1], f"{where}: box size")
            if not 0.0 < size < 1.0:
                raise ConfigError(f"{where}: box size must be a fraction in (0, 1), got {size}")
            return OpSpec(text, kind, ("box", size))
        raise ConfigError(f"{where}: expected inpaint:random:MISSING[:SEED] or inpaint:box:SIZE")
    if kind == "radon":
        if len(parts) != 1:
            raise ConfigError(f"{where}: expected radon:ANGLES")
        angles = spec_int(parts[0], f"{where}: angles")
        if angles < 1:
            raise ConfigError(f"{where}: angles must be >= 1, got {angles}")
        return OpSpec(text, kind, (angles,))
    raise ConfigError(f"{where}: unknown operator {kind!r}; expected one of {', '.join(OPERATORS)}")


# ------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class DataSpec(Spec):
    """A parsed data spec: ``kind`` one of :data:`DATA_KINDS`, ``args`` (SPLIT,) for
    celeba128, ("patches" or "crops", SIZE) for natural, (PATH,) for folder."""


def parse_data(text: str) -> DataSpec:
    """``"natural:crops:256"`` -> ``DataSpec("natural:crops:256", "natural", ("crops", 256))``."""
    kind, _, rest = _nonempty(text, "data").partition(":")
    where = f"data spec {text!r}"
    if kind == "folder":
        return DataSpec(text, kind, _path_arg(where, kind, rest))
    if kind == "shared":
        if not rest or "/" in rest or rest.startswith("."):
            raise ConfigError(f"{where}: expected shared:NAME (a folder of ../shared/data)")
        return DataSpec(text, kind, (rest,))
    if kind == "celeba128":
        if rest not in ("train", "val"):
            raise ConfigError(f"{where}: expected celeba128:train or celeba128:val")
        return DataSpec(text, kind, (rest,))
    if kind == "natural":
        parts = rest.split(":")
        if len(parts) != 2 or parts[0] not in ("patches", "crops"):
            raise ConfigError(f"{where}: expected natural:patches:SIZE or natural:crops:SIZE")
        size = spec_int(parts[1], f"{where}: size")
        if size < 1:
            raise ConfigError(f"{where}: size must be >= 1, got {size}")
        return DataSpec(text, kind, (parts[0], size))
    raise ConfigError(f"{where}: unknown data kind {kind!r}; expected one of {DATA_KINDS}")
