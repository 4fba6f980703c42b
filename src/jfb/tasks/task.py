"""The :class:`Task` value: an operator, a noise level and data, with its specs parsed once."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from jfb.data import DegradedDataset
from jfb.data.open import open_dataset
from jfb.errors import ConfigError
from jfb.physics import (
    Blur,
    BoxMask,
    Downsample,
    GaussianNoise,
    Identity,
    LinearOperator,
    RandomMask,
)
from jfb.physics.blur import PADDINGS
from jfb.specs import DataSpec, KernelSpec, OpSpec, parse_data, parse_kernel, parse_op
from jfb.tasks.degradations import RandomDegradations

__all__ = ["NO_TRAIN", "Task"]

#: ``train=none`` in a task spec: the task has no training images (``Task.train_data`` None).
NO_TRAIN = "none"


@dataclass(frozen=True)
class Task:
    """An inverse problem: ``y = A x + n``, ``n ~ N(0, noise_sigma^2)``, on given images.

    Attributes:
        name: registry name (or ``"custom"``).
        kernel: blur kernel spec, e.g. ``"gaussian:5:5.0"`` (see :mod:`jfb.specs`); only for
            ``op="blur"``, None otherwise.
        noise_sigma: standard deviation of the Gaussian noise, pixels in ``[0, 1]``.
        padding: boundary of the blur (and of the super-resolution filter): ``"zeros"``,
            ``"circular"``, ``"reflect"`` or ``"valid"`` (blur only).
        train_data: data spec of the training images (None: the task has none; written
            ``train=none`` by :meth:`to_spec`).
        val_data: data spec of the evaluation images.
        description: one line for ``jfb`` listings.
        op: operator spec (see :mod:`jfb.specs`); ``"blur"`` by default.

    Parsed when the task is made (a ConfigError names the bad field), and not compared:
    ``op_spec``, ``kernel_spec`` (None unless op=blur; a ``file:`` kernel is read from disk
    then, once), ``train_spec`` (None without training data) and ``val_spec``.
    """

    name: str
    kernel: str | None
    noise_sigma: float
    padding: str = "zeros"
    train_data: str | None = None
    val_data: str = "celeba128:val"
    description: str = field(default="", compare=False)
    op: str = "blur"
    op_spec: OpSpec = field(init=False, repr=False, compare=False)
    kernel_spec: KernelSpec | None = field(init=False, repr=False, compare=False)
    train_spec: DataSpec | None = field(init=False, repr=False, compare=False)
    val_spec: DataSpec = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        op_spec = parse_op(self.op)
        kernel_spec = None
        if op_spec.kind == "blur":
            kernel_spec = parse_kernel(self.kernel)  # type: ignore[arg-type]
        elif self.kernel is not None:
            raise ConfigError(f"kernel={self.kernel!r} applies to op=blur only, not op={self.op}")
        if op_spec.kind == "sr" and self.padding == "valid":
            raise ConfigError("padding='valid' applies to op=blur only")
        if isinstance(self.noise_sigma, bool) or not isinstance(self.noise_sigma, (int, float)):
            raise ConfigError(f"noise must be a number, got {self.noise_sigma!r}")
        if not math.isfinite(self.noise_sigma) or self.noise_sigma < 0:
            raise ConfigError(f"noise must be a finite number >= 0, got {self.noise_sigma}")
        if self.padding not in PADDINGS:
            raise ConfigError(f"padding={self.padding!r}: expected one of {PADDINGS}")
        train_spec = None if self.train_data is None else parse_data(self.train_data)
        val_spec = parse_data(self.val_data)
        if kernel_spec is not None:  # last: a file is read once the cheap checks have passed
            kernel_spec = kernel_spec.read()
        for name, value in (("op_spec", op_spec), ("kernel_spec", kernel_spec),
                            ("train_spec", train_spec), ("val_spec", val_spec)):
            object.__setattr__(self, name, value)

    # ----------------------------------------------------------------------- forward model
    @property
    def op_kind(self) -> str:
        """The operator's kind: blur, denoise, sr, inpaint or radon."""
        return self.op_spec.kind

    def kernel_tensor(self) -> torch.Tensor:
        """The blur kernel as a float32 tensor summing to 1 (op=blur only): ``(kh, kw)``, or
        ``(3, kh, kw)`` for a per-channel ``file:`` kernel (a ``(1, kh, kw)`` file gives
        ``(kh, kw)``; other channel counts are refused with a ConfigError when the task is
        made, as the pipeline's images are RGB)."""
        if self.kernel_spec is None:
            raise ConfigError(f"task {self.name!r} (op={self.op}) has no blur kernel")
        return self.kernel_spec.tensor()

    @property
    def is_family(self) -> bool:
        """Whether every image draws its own blur and noise level (``kernel=random:MAXSIZE``:
        the noise std of each image is uniform in [0, ``noise_sigma``])."""
        return self.kernel_spec is not None and self.kernel_spec.kind == "random"

    def operator(self) -> LinearOperator:
        """The forward operator A named by ``op`` (blur: this task's kernel and boundary)."""
        if self.is_family:
            raise ConfigError(f"task {self.name!r} draws a blur per image (kernel={self.kernel}): "
                              "its operator is in each sample's physics")
        kind, args = self.op_spec.kind, self.op_spec.args
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
        lives, see :func:`jfb.data.open_dataset`)."""
        if self.train_spec is None:
            raise ConfigError(f"task {self.name!r} has no training data; give train=PATH (a "
                              "folder of images) or data=PATH with train/ and val/ sub-folders")
        return open_dataset(self.train_spec, train=True, crop=crop, seed=seed, mode=mode,
                            root=root)

    def val_set(self, *, limit: int | None = None, crop: int | None = None,
                mode: str = "rgb", root: str | None = None) -> Dataset:
        """Clean evaluation images in their fixed order; the first ``limit`` when given."""
        ds = open_dataset(self.val_spec, train=False, crop=crop, mode=mode, root=root)
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ValueError(f"limit must be a positive int, got {limit!r}")
            ds = Subset(ds, range(min(limit, len(ds))))  # type: ignore[arg-type]
        return ds

    def _pairs(self, clean: Dataset, seed: int | None) -> Dataset:
        if self.is_family:
            return RandomDegradations(clean, max_kernel=self.kernel_spec.args[0],  # type: ignore
                                      max_noise=self.noise_sigma, padding=self.padding, seed=seed)
        return DegradedDataset(clean, self.operator(), self.noise(), seed=seed)

    def train_pairs(self, **kwargs: Any) -> Dataset:
        """``(x, y)`` training pairs with fresh noise on every read (``train_set(**kwargs)``);
        ``(x, y, physics)`` triples with a fresh blur too for a family (:attr:`is_family`)."""
        return self._pairs(self.train_set(**kwargs), None)

    def val_pairs(self, *, seed: int = 0, **kwargs: Any) -> Dataset:
        """``(x, y)`` evaluation pairs (triples for a family); image ``i``'s noise (and blur)
        is seeded by ``seed + i``."""
        return self._pairs(self.val_set(**kwargs), seed)

    def to_spec(self) -> str:
        """A string that :func:`jfb.tasks.parse_task` turns back into this task (description
        aside): ``parse_task(t.to_spec()) == t``. A task without training data is written
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
