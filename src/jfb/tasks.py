"""Named inverse problems: forward model (operator, noise) + training/evaluation data.

A :class:`Task` says how measurements are made, ``y = A x + n`` with ``n ~ N(0, sigma^2)``, and
on which images. The registry holds the protocol's deblurring tasks (``celeba-gauss5``,
``celeba-motion``, ``natural-gauss5``), ``demo``, and denoising, super-resolution, inpainting and
tomography tasks on CelebA-128; :func:`parse_task` builds user-defined ones from a string such as
``"kernel=gaussian:7:2.0,noise=0.01,padding=circular,data=/path/to/images"`` or
``"op=sr:4,noise=0.01,data=celeba128"``.

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
pipeline's RGB channels).
Data specs: ``celeba128:train``, ``celeba128:val``, ``natural:patches:SIZE``,
``natural:crops:SIZE``, ``folder:PATH``; in a task spec, ``train=none`` says that the task has no
training images (what :meth:`Task.to_spec` writes for ``train_data=None``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from jfb.data import (
    DegradedDataset,
    ImageFolder,
    NaturalPatches,
    celeba128,
    natural_crops,
)
from jfb.errors import ConfigError, DataError
from jfb.physics import (
    Blur,
    BoxMask,
    Downsample,
    GaussianNoise,
    Identity,
    LinearOperator,
    RandomMask,
    kernels,
)
from jfb.physics.blur import PADDINGS
from jfb.physics.downsample import FILTERS

__all__ = ["TASKS", "Task", "get_task", "list_tasks", "parse_task"]


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{what} must be an integer, got {text!r}") from None


def _float(text: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ConfigError(f"{what} must be a number, got {text!r}") from None
    if not math.isfinite(v):
        raise ConfigError(f"{what} must be a finite number, got {text!r}")
    return v


def _max_size(where: str, size: int) -> None:
    if size > kernels.MAX_SIZE:
        raise ConfigError(f"{where}: size must be <= {kernels.MAX_SIZE} (the maximum kernel "
                          f"size), got {size}")


def _parse_kernel(spec: str) -> tuple[str, tuple[Any, ...]]:
    """``"gaussian:5:5.0"`` -> ``("gaussian", (5, 5.0))``; raises ConfigError naming the problem."""
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"kernel spec must be a non-empty string, got {spec!r}")
    kind, _, rest = spec.partition(":")
    where = f"kernel={spec!r}"
    if kind == "file":
        if not rest:
            raise ConfigError(f"{where}: expected file:PATH")
        return kind, (rest,)
    parts = rest.split(":") if rest else []
    if kind == "gaussian":
        if len(parts) != 2:
            raise ConfigError(f"{where}: expected gaussian:SIZE:SIGMA")
        size, sigma = _int(parts[0], f"{where}: size"), _float(parts[1], f"{where}: sigma")
        if size < 1 or size % 2 == 0:
            raise ConfigError(f"{where}: size must be odd and >= 1, got {size}")
        _max_size(where, size)
        if sigma <= 0:
            raise ConfigError(f"{where}: sigma must be > 0, got {sigma}")
        return kind, (size, sigma)
    if kind == "motion":
        if not 1 <= len(parts) <= 3:
            raise ConfigError(f"{where}: expected motion:SIZE[:SEED[:INTENSITY]]")
        size = _int(parts[0], f"{where}: size")
        seed = _int(parts[1], f"{where}: seed") if len(parts) > 1 else 0
        intensity = _float(parts[2], f"{where}: intensity") if len(parts) > 2 else 0.5
        if size < 1 or size % 2 == 0:
            raise ConfigError(f"{where}: size must be odd and >= 1, got {size}")
        _max_size(where, size)
        if seed < 0:
            raise ConfigError(f"{where}: seed must be >= 0, got {seed}")
        if not 0.0 <= intensity <= 1.0:
            raise ConfigError(f"{where}: intensity must be in [0, 1], got {intensity}")
        return kind, (size, seed, intensity)
    if kind == "disk":
        if len(parts) != 1:
            raise ConfigError(f"{where}: expected disk:RADIUS")
        radius = _float(parts[0], f"{where}: radius")
        if radius <= 0:
            raise ConfigError(f"{where}: radius must be > 0, got {radius}")
        if radius > kernels.MAX_DISK_RADIUS:
            raise ConfigError(f"{where}: radius must be <= {kernels.MAX_DISK_RADIUS} (a "
                              f"{kernels.MAX_SIZE} x {kernels.MAX_SIZE} kernel, the maximum "
                              f"kernel size), got {radius}")
        return kind, (radius,)
    raise ConfigError(f"{where}: unknown kernel type {kind!r}; expected gaussian, motion, disk "
                      "or file")


OPERATORS = ("blur", "denoise", "sr", "inpaint", "radon")


def _parse_op(spec: str) -> tuple[str, tuple[Any, ...]]:
    """``"sr:4"`` -> ``("sr", (4, "gaussian"))``; raises ConfigError naming the problem."""
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"op spec must be a non-empty string, got {spec!r}")
    kind, *parts = spec.split(":")
    where = f"op={spec!r}"
    if kind in ("blur", "denoise"):
        if parts:
            raise ConfigError(f"{where}: {kind} takes no arguments (the kernel is kernel=...)")
        return kind, ()
    if kind == "sr":
        if not 1 <= len(parts) <= 2:
            raise ConfigError(f"{where}: expected sr:FACTOR[:FILTER]")
        factor = _int(parts[0], f"{where}: factor")
        if factor < 2:
            raise ConfigError(f"{where}: factor must be >= 2, got {factor}")
        filt = parts[1] if len(parts) > 1 else "gaussian"
        if filt not in FILTERS:
            raise ConfigError(f"{where}: filter must be one of {FILTERS}, got {filt!r}")
        return kind, (factor, filt)
    if kind == "inpaint":
        if parts[:1] == ["random"] and len(parts) in (2, 3):
            missing = _float(parts[1], f"{where}: fraction missing")
            if not 0.0 < missing < 1.0:
                raise ConfigError(f"{where}: fraction missing must be in (0, 1), got {missing}")
            seed = _int(parts[2], f"{where}: seed") if len(parts) > 2 else 0
            if seed < 0:
                raise ConfigError(f"{where}: seed must be >= 0, got {seed}")
            return kind, ("random", missing, seed)
        if parts[:1] == ["box"] and len(parts) == 2:
            size = _float(parts[1], f"{where}: box size")
            if not 0.0 < size < 1.0:
                raise ConfigError(f"{where}: box size must be a fraction in (0, 1), got {size}")
            return kind, ("box", size)
        raise ConfigError(f"{where}: expected inpaint:random:MISSING[:SEED] or inpaint:box:SIZE")
    if kind == "radon":
        if len(parts) != 1:
            raise ConfigError(f"{where}: expected radon:ANGLES")
        angles = _int(parts[0], f"{where}: angles")
        if angles < 1:
            raise ConfigError(f"{where}: angles must be >= 1, got {angles}")
        return kind, (angles,)
    raise ConfigError(f"{where}: unknown operator {kind!r}; expected one of {', '.join(OPERATORS)}")


_DATA_KINDS = ("celeba128", "natural", "folder")


def _parse_data(spec: str) -> tuple[str, tuple[Any, ...]]:
    """``"natural:crops:256"`` -> ``("natural", ("crops", 256))``; raises ConfigError."""
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"data spec must be a non-empty string, got {spec!r}")
    kind, _, rest = spec.partition(":")
    where = f"data spec {spec!r}"
    if kind == "folder":
        if not rest:
            raise ConfigError(f"{where}: expected folder:PATH")
        return kind, (rest,)
    if kind == "celeba128":
        if rest not in ("train", "val"):
            raise ConfigError(f"{where}: expected celeba128:train or celeba128:val")
        return kind, (rest,)
    if kind == "natural":
        parts = rest.split(":")
        if len(parts) != 2 or parts[0] not in ("patches", "crops"):
            raise ConfigError(f"{where}: expected natural:patches:SIZE or natural:crops:SIZE")
        size = _int(parts[1], f"{where}: size")
        if size < 1:
            raise ConfigError(f"{where}: size must be >= 1, got {size}")
        return kind, (parts[0], size)
    raise ConfigError(f"{where}: unknown data kind {kind!r}; expected one of {_DATA_KINDS}")


def open_dataset(spec: str, *, train: bool, crop: int | None = None, seed: int | None = None,
                 mode: str = "rgb", root: str | None = None) -> Dataset:
    """Build the clean dataset named by a data spec.

    ``root`` (the config's ``data.root``) is where CelebA-128 lives when the spec is
    ``celeba128:...``; other specs name their images themselves, and a root there is an error.

    Folders and CelebA give whole images, or ``crop x crop`` crops (random when ``train``, centre
    otherwise; ``seed`` fixes the random crops, see :class:`jfb.data.ImageFiles`).
    ``natural:patches:S`` gives :class:`jfb.data.NaturalPatches` of size ``crop or S`` drawn with
    ``seed`` (0 when None); ``natural:crops:S`` the centre crops of size ``crop or S``.
    """
    kind, args = _parse_data(spec)
    random_crop = bool(train and crop is not None)
    if root is not None and kind != "celeba128":
        raise ConfigError(f"data.root={root!r} applies to CelebA-128 data only; {spec!r} names "
                          "its images itself (use a task spec with data=PATH instead)")
    if kind == "celeba128":
        return celeba128(args[0], root=root, crop=crop, random_crop=random_crop,
                         seed=seed if random_crop else None, mode=mode)
    if kind == "folder":
        return ImageFolder(args[0], crop=crop, random_crop=random_crop,
                           seed=seed if random_crop else None, mode=mode)
    which, size = args
    if which == "patches":
        return NaturalPatches(size=crop or size, seed=0 if seed is None else seed, mode=mode)
    return natural_crops(size=crop or size, mode=mode)


@dataclass(frozen=True)
class Task:
    """An inverse problem: ``y = A x + n``, ``n ~ N(0, noise_sigma^2)``, on given images.

    Attributes:
        name: registry name (or ``"custom"``).
        kernel: blur kernel spec, e.g. ``"gaussian:5:5.0"`` (see the module docstring); only for
            ``op="blur"``, None otherwise.
        noise_sigma: standard deviation of the Gaussian noise, pixels in ``[0, 1]``.
        padding: boundary of the blur (and of the super-resolution filter): ``"zeros"``,
            ``"circular"``, ``"reflect"`` or ``"valid"`` (blur only).
        train_data: data spec of the training images (None: the task has none; written
            ``train=none`` by :meth:`to_spec`).
        val_data: data spec of the evaluation images.
        description: one line for ``jfb`` listings.
        op: operator spec (see the module docstring); ``"blur"`` by default.
    """

    name: str
    kernel: str | None
    noise_sigma: float
    padding: str = "zeros"
    train_data: str | None = None
    val_data: str = "celeba128:val"
    description: str = field(default="", compare=False)
    op: str = "blur"

    def __post_init__(self) -> None:
        kind, _ = _parse_op(self.op)
        if kind == "blur":
            _parse_kernel(self.kernel)  # type: ignore[arg-type]
        elif self.kernel is not None:
            raise ConfigError(f"kernel={self.kernel!r} applies to op=blur only, not op={self.op}")
        if kind == "sr" and self.padding == "valid":
            raise ConfigError("padding='valid' applies to op=blur only")
        if isinstance(self.noise_sigma, bool) or not isinstance(self.noise_sigma, (int, float)):
            raise ConfigError(f"noise must be a number, got {self.noise_sigma!r}")
        if not math.isfinite(self.noise_sigma) or self.noise_sigma < 0:
            raise ConfigError(f"noise must be a finite number >= 0, got {self.noise_sigma}")
        if self.padding not in PADDINGS:
            raise ConfigError(f"padding={self.padding!r}: expected one of {PADDINGS}")
        if self.train_data is not None:
            _parse_data(self.train_data)
        _parse_data(self.val_data)

    # ----------------------------------------------------------------------- forward model
    @property
    def op_kind(self) -> str:
        """The operator's kind: blur, denoise, sr, inpaint or radon."""
        return _parse_op(self.op)[0]

    def kernel_tensor(self) -> torch.Tensor:
        """The blur kernel as a float32 tensor summing to 1 (op=blur only): ``(kh, kw)``, or
        ``(3, kh, kw)`` for a per-channel ``file:`` kernel (a ``(1, kh, kw)`` file gives
        ``(kh, kw)``; other channel counts are refused with a ConfigError, as the pipeline's
        images are RGB)."""
        if self.kernel is None:
            raise ConfigError(f"task {self.name!r} (op={self.op}) has no blur kernel")
        kind, args = _parse_kernel(self.kernel)
        if kind == "gaussian":
            return kernels.gaussian(*args)
        if kind == "motion":
            size, seed, intensity = args
            return kernels.motion(size, seed=seed, intensity=intensity)
        if kind == "disk":
            return kernels.disk(*args)
        try:
            k = kernels.from_file(args[0])
        except DataError as exc:
            raise ConfigError(f"kernel={self.kernel!r}: {exc}") from exc
        if k.dim() == 3:
            from jfb.pipeline import CHANNELS

            if k.shape[0] not in (1, CHANNELS):
                raise ConfigError(
                    f"kernel={self.kernel!r}: a 3-D kernel (C, kh, kw) needs C = 1 or "
                    f"{CHANNELS} (one kernel per channel of the RGB images), got shape "
                    f"{tuple(k.shape)}")
            if k.shape[0] == 1:
                k = k[0].clone()
        return k

    def operator(self) -> LinearOperator:
        """The forward operator A named by ``op`` (blur: this task's kernel and boundary)."""
        kind, args = _parse_op(self.op)
        if kind == "blur":
            return Blur(self.kernel_tensor(), padding=self.padding)
        if kind == "denoise":
            return Identity()
        if kind == "sr":
            return Downsample(args[0], args[1], padding=self.padding)
        if kind == "inpaint":
            return RandomMask(args[1], seed=args[2]) if args[0] == "random" else BoxMask(args[1])
        from jfb.physics.radon import Radon

        return Radon(angles=args[0])

    def noise(self) -> GaussianNoise:
        """The noise model ``y -> y + noise_sigma * n``."""
        return GaussianNoise(self.noise_sigma)

    # -------------------------------------------------------------------------------- data
    def train_set(self, *, crop: int | None = None, seed: int | None = None,
                  mode: str = "rgb", root: str | None = None) -> Dataset:
        """Clean training images (random ``crop`` crops if given; ``root``: where CelebA-128
        lives, see :func:`open_dataset`)."""
        if self.train_data is None:
            raise ConfigError(f"task {self.name!r} has no training data; give train=PATH (a "
                              "folder of images) or data=PATH with train/ and val/ sub-folders")
        return open_dataset(self.train_data, train=True, crop=crop, seed=seed, mode=mode,
                            root=root)

    def val_set(self, *, limit: int | None = None, crop: int | None = None,
                mode: str = "rgb", root: str | None = None) -> Dataset:
        """Clean evaluation images in their fixed order; the first ``limit`` when given."""
        ds = open_dataset(self.val_data, train=False, crop=crop, mode=mode, root=root)
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ValueError(f"limit must be a positive int, got {limit!r}")
            ds = Subset(ds, range(min(limit, len(ds))))  # type: ignore[arg-type]
        return ds

    def train_pairs(self, **kwargs: Any) -> DegradedDataset:
        """``(x, y)`` training pairs with fresh noise on every read (``train_set(**kwargs)``)."""
        return DegradedDataset(self.train_set(**kwargs), self.operator(), self.noise(), seed=None)

    def val_pairs(self, *, seed: int = 0, **kwargs: Any) -> DegradedDataset:
        """``(x, y)`` evaluation pairs; image ``i``'s noise is seeded by ``seed + i``."""
        return DegradedDataset(self.val_set(**kwargs), self.operator(), self.noise(), seed=seed)

    def to_spec(self) -> str:
        """A string that :func:`parse_task` turns back into this task (description aside):
        ``parse_task(t.to_spec()) == t``. A task without training data is written
        ``train=none``. Raises ValueError when a value holds ``,`` or ``=``."""
        fields = [("name", self.name), ("op", self.op)]
        if self.kernel is not None:
            fields.append(("kernel", self.kernel))
        fields += [("noise", repr(self.noise_sigma)), ("padding", self.padding)]
        fields.append(("train", NO_TRAIN if self.train_data is None else self.train_data))
        fields.append(("val", self.val_data))
        for key, value in fields:
            if "," in value or "=" in value:
                raise ValueError(f"{key}={value!r} contains ',' or '=' and cannot be written as "
                                 "a task spec")
        return ",".join(f"{k}={v}" for k, v in fields)


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("celeba-gauss5", "gaussian:5:5.0", 0.005, "zeros", "celeba128:train",
             "celeba128:val", "CelebA-128, 5x5 Gaussian blur (sigma 5), noise 0.005 (the paper's)"),
        Task("celeba-motion", "motion:9:0", 0.01, "zeros", "celeba128:train", "celeba128:val",
             "CelebA-128, 9x9 motion blur (seed 0, not symmetric), noise 0.01"),
        Task("natural-gauss5", "gaussian:5:5.0", 0.005, "zeros", "natural:patches:64",
             "natural:crops:256",
             "scikit-image photos (256x256 centre crops), blur and noise of celeba-gauss5"),
        Task("demo", "gaussian:5:5.0", 0.005, "zeros", "natural:patches:48", "natural:crops:128",
             "small built-in demo: 48x48 natural patches, celeba-gauss5 blur and noise"),
        Task("celeba-denoise", None, 0.1, "zeros", "celeba128:train", "celeba128:val",
             "CelebA-128, denoising (A = I), noise 0.1", op="denoise"),
        Task("celeba-sr2", None, 0.005, "reflect", "celeba128:train", "celeba128:val",
             "CelebA-128, super-resolution x2 (Gaussian anti-aliasing, sigma 1), noise 0.005",
             op="sr:2"),
        Task("celeba-sr4", None, 0.005, "reflect", "celeba128:train", "celeba128:val",
             "CelebA-128, super-resolution x4 (Gaussian anti-aliasing, sigma 2), noise 0.005",
             op="sr:4"),
        Task("celeba-inpaint", None, 0.005, "zeros", "celeba128:train", "celeba128:val",
             "CelebA-128, inpainting: 70% of pixels missing (fixed random mask, seed 0), "
             "noise 0.005", op="inpaint:random:0.7:0"),
        Task("celeba-inpaint-box", None, 0.005, "zeros", "celeba128:train", "celeba128:val",
             "CelebA-128, inpainting: a centred square hole of 1/4 of the side, noise 0.005",
             op="inpaint:box:0.25"),
        Task("celeba-radon", None, 0.5, "zeros", "celeba128:train", "celeba128:val",
             "CelebA-128, parallel-beam tomography per channel: 60 angles, 128 detectors, "
             "noise 0.5 (sinogram values are line integrals: about 50 on average)", op="radon:60"),
    )
}

_KEYS = ("name", "op", "kernel", "noise", "padding", "data", "train", "val", "description")
#: ``train=none`` in a task spec: the task has no training images (``Task.train_data`` None).
NO_TRAIN = "none"
_DEFAULTS = TASKS["celeba-gauss5"]


def _data_value(value: str, key: str) -> str:
    """A ``train=``/``val=`` value: a data spec, or a folder path (-> ``folder:PATH``)."""
    kind = value.partition(":")[0]
    if kind in _DATA_KINDS:
        _parse_data(value)
        return value
    if not Path(value).is_dir():
        raise ConfigError(f"{key}={value!r}: not a data spec ({', '.join(_DATA_KINDS)}) nor an "
                          "existing folder")
    return f"folder:{value}"


def parse_task(spec: str) -> Task:
    """Build a task from ``"key=value,key=value"``.

    Keys: ``op`` (the operator, ``blur`` by default), ``kernel`` (op=blur only; see the module
    docstring), ``noise`` (sigma >= 0), ``padding``, ``data``
    (``celeba128``, ``natural``, or a folder: with ``train/`` and ``val/`` sub-folders these are
    the splits, otherwise the folder is the evaluation set and there is no training set),
    ``train`` / ``val`` (a data spec or a folder; override ``data``; ``train=none``: no
    training images, so a folder named ``none`` is ``train=folder:none`` or ``train=./none``),
    ``name``, ``description``. Missing keys take ``celeba-gauss5``'s values. Raises
    :class:`ConfigError` naming the bad field.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"task spec must be a non-empty string, got {spec!r}")
    values: dict[str, str] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq:
            raise ConfigError(f"task spec: {item!r} is not key=value (keys: {', '.join(_KEYS)})")
        if key not in _KEYS:
            raise ConfigError(f"task spec: unknown key {key!r}; expected one of {', '.join(_KEYS)}")
        if key in values:
            raise ConfigError(f"task spec: key {key!r} given twice")
        if not value:
            raise ConfigError(f"task spec: {key}= is empty")
        values[key] = value
    if not values:
        raise ConfigError(f"task spec {spec!r} has no key=value field")
    train: str | None = _DEFAULTS.train_data
    val = _DEFAULTS.val_data
    if "data" in values:
        d = values["data"]
        if d == "celeba128":
            train, val = "celeba128:train", "celeba128:val"
        elif d == "natural":
            train, val = "natural:patches:64", "natural:crops:256"
        else:
            p = Path(d)
            if not p.is_dir():
                raise ConfigError(f"data={d!r}: expected celeba128, natural or an existing folder")
            if (p / "train").is_dir() and (p / "val").is_dir():
                train, val = f"folder:{p / 'train'}", f"folder:{p / 'val'}"
            else:
                train, val = None, f"folder:{p}"
    if "train" in values:
        train = None if values["train"] == NO_TRAIN else _data_value(values["train"], "train")
    if "val" in values:
        val = _data_value(values["val"], "val")
    noise = _float(values["noise"], "noise") if "noise" in values else _DEFAULTS.noise_sigma
    if noise < 0:
        raise ConfigError(f"noise={values['noise']}: must be >= 0")
    op = values.get("op", "blur")
    op_kind, _ = _parse_op(op)
    if op_kind == "blur":
        kernel: str | None = values.get("kernel", _DEFAULTS.kernel)
        what = f"kernel {kernel}"
    else:
        if "kernel" in values:
            raise ConfigError(f"task spec: kernel= applies to op=blur only, not op={op}")
        kernel, what = None, f"op {op}"
    name = values.get("name", "custom")
    padding = values.get("padding", "reflect" if op_kind == "sr" else _DEFAULTS.padding)
    task = Task(name=name, kernel=kernel, noise_sigma=noise, padding=padding, train_data=train,
                val_data=val, description=values.get("description",
                                                     f"user task: {what}, noise {noise}"), op=op)
    if kernel is not None and _parse_kernel(kernel)[0] == "file":
        task.kernel_tensor()  # fail now, naming the field, rather than at training time
    return task


def get_task(name: str) -> Task:
    """The registered task ``name``; a string containing ``=`` is parsed by :func:`parse_task`."""
    if not isinstance(name, str):
        raise TypeError(f"task name must be a string, got {type(name).__name__}")
    if "=" in name:
        return parse_task(name)
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)} (or a spec "
                          "such as 'kernel=gaussian:7:2.0,noise=0.01,data=/path')") from None


def list_tasks() -> list[str]:
    """Names of the registered tasks, in registry order."""
    return list(TASKS)
