"""Datasets of clean images and of (clean, degraded) pairs.

Every clean dataset returns float32 tensors ``(C, H, W)`` in ``[0, 1]``. ``DegradedDataset`` turns
one into pairs ``(x, y)`` with ``y = noise(A x)``; with a ``seed`` the noise of item ``i`` is drawn
from ``torch.Generator().manual_seed(seed + i)``, so evaluation numbers are identical on every run.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from jfb.data.images import IMAGE_EXTENSIONS, load_image, to_mode
from jfb.errors import DataError

__all__ = [
    "CELEBA_ENV",
    "DegradedDataset",
    "ImageFiles",
    "ImageFolder",
    "celeba128",
    "celeba128_root",
    "celeba_original",
    "celeba_preprocess",
    "center_crop",
    "collate_images",
    "resize_shorter",
]

#: Environment variable naming the folder that holds CelebA-128's ``train/`` and ``val/``.
CELEBA_ENV = "JFB_CELEBA_ROOT"
_ON_ERROR = ("raise", "skip")


def _size2(value: int | Sequence[int] | None, name: str) -> tuple[int, int] | None:
    """None, an int s (-> (s, s)) or a pair (h, w) of positive ints."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or (h, w), got {value!r}")
    if isinstance(value, (int, np.integer)):
        pair = (int(value), int(value))
    elif isinstance(value, Sequence) and len(value) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value
    ):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair (h, w) of ints, got {value!r}")
    if min(pair) < 1:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return pair


def center_crop(x: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """Central ``(h, w)`` window of a ``(..., H, W)`` image (offsets ``(H-h)//2, (W-w)//2``)."""
    h, w = _size2(size, "crop")  # type: ignore[misc]
    H, W = x.shape[-2:]
    if h > H or w > W:
        raise DataError(f"cannot crop {h}x{w} from an image of size {H}x{W}")
    top, left = (H - h) // 2, (W - w) // 2
    return x[..., top : top + h, left : left + w]


def resize_shorter(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``(C, H, W)`` so that its shorter side is ``size`` (bicubic, antialiased, clamped).

    The longer side becomes ``round(long * size / short)``; the aspect ratio is kept.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"resize must be a positive int, got {size!r}")
    H, W = x.shape[-2:]
    if min(H, W) == size:
        return x
    if H <= W:
        new = (int(size), max(1, round(W * size / H)))
    else:
        new = (max(1, round(H * size / W)), int(size))
    y = F.interpolate(x[None], size=new, mode="bicubic", antialias=True, align_corners=False)
    return y[0].clamp(0.0, 1.0)


def _item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU generator for item ``index`` of ``epoch``, well mixed by numpy's SeedSequence."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


class ImageFiles(Dataset):
    """Images read from an explicit list of files, as float32 ``(C, H, W)`` in ``[0, 1]``.

    Per item: load (see :func:`jfb.data.load_image`, ``mode``) -> ``preprocess`` (if given) ->
    resize the shorter side to ``resize`` (if given) -> crop to ``crop`` (centre crop; random
    crop with ``random_crop=True``). Images smaller than ``crop`` raise :class:`DataError`.

    Random crops draw their offsets from ``torch``'s global generator when ``seed`` is None
    (``torch.manual_seed`` makes them reproducible; each DataLoader worker has its own stream),
    or from a generator seeded by ``(seed, epoch, index)`` when ``seed`` is an int: the same
    crops in every run, new crops each epoch after :meth:`set_epoch`.

    ``on_error="raise"``: an unreadable file raises :class:`DataError` when its item is read.
    ``on_error="skip"``: every file is decoded once at construction (a full pass over the data)
    and unreadable ones are left out; ``skipped`` counts them and ``skipped_files`` lists
    ``(path, reason)``.
    """

    def __init__(
        self,
        files: Sequence[str | os.PathLike[str]],
        *,
        mode: str = "rgb",
        crop: int | Sequence[int] | None = None,
        resize: int | None = None,
        random_crop: bool = False,
        seed: int | None = None,
        on_error: str = "raise",
        preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if mode not in ("rgb", "grey", "keep"):
            raise ValueError(f"mode must be 'rgb', 'grey' or 'keep', got {mode!r}")
        if on_error not in _ON_ERROR:
            raise ValueError(f"on_error must be one of {_ON_ERROR}, got {on_error!r}")
        if resize is not None and (isinstance(resize, bool)
                                   or not isinstance(resize, (int, np.integer)) or resize < 1):
            raise ValueError(f"resize must be a positive int or None, got {resize!r}")
        if random_crop and crop is None:
            raise ValueError("random_crop=True needs a crop size (crop=...)")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                                 or seed < 0):
            raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
        self.mode = mode
        self.crop = _size2(crop, "crop")
        self.resize = None if resize is None else int(resize)
        self.random_crop = bool(random_crop)
        self.seed = None if seed is None else int(seed)
        self.epoch = 0
        self.on_error = on_error
        self.preprocess = preprocess
        self.files: list[Path] = [Path(f) for f in files]
        self.skipped_files: list[tuple[Path, str]] = []
        if on_error == "skip":
            kept = []
            for f in self.files:
                try:
                    self._load(f)
                except DataError as exc:
                    self.skipped_files.append((f, str(exc)))
                else:
                    kept.append(f)
            self.files = kept
            if self.skipped_files:
                warnings.warn(f"skipped {len(self.skipped_files)} unreadable image file(s), "
                              f"e.g. {self.skipped_files[0][1]}", stacklevel=2)

    @property
    def skipped(self) -> int:
        """Number of files left out because they could not be read (``on_error="skip"``)."""
        return len(self.skipped_files)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random crops are drawn (only matters with an int ``seed``)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, path: Path) -> torch.Tensor:
        x = load_image(path, mode="keep")
        if self.preprocess is not None:
            x = self.preprocess(x)
        x = to_mode(x, self.mode)
        if self.resize is not None:
            x = resize_shorter(x, self.resize)
        if self.crop is not None:
            h, w = self.crop
            H, W = x.shape[-2:]
            if h > H or w > W:
                raise DataError(f"{path}: image of size {H}x{W} is smaller than the crop {h}x{w}"
                                " (pass a smaller crop, or resize=...)")
        return x

    def __getitem__(self, index: int) -> torch.Tensor:
        n = len(self.files)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        index = index % n
        path = self.files[index]
        x = self._load(path)
        if self.crop is None:
            return x.contiguous()
        h, w = self.crop
        if not self.random_crop:
            return center_crop(x, (h, w)).contiguous()
        H, W = x.shape[-2:]
        g = None if self.seed is None else _item_generator(self.seed, self.epoch, index)
        top = int(torch.randint(0, H - h + 1, (), generator=g))
        left = int(torch.randint(0, W - w + 1, (), generator=g))
        return x[:, top : top + h, left : left + w].contiguous()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({len(self)} images, mode={self.mode!r}, crop={self.crop},"
                f" resize={self.resize}, random_crop={self.random_crop})")


def _list_images(root: Path, recursive: bool, extensions: Sequence[str]) -> list[Path]:
    exts = {e.lower().lstrip(".") for e in extensions}
    it = root.rglob("*") if recursive else root.iterdir()
    found = []
    for p in it:
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue  # hidden files and folders (.DS_Store, ._x.jpg, .git, ...)
        if p.suffix.lower().lstrip(".") in exts and p.is_file():
            found.append(p)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


class ImageFolder(ImageFiles):
    """All images under ``root`` (sub-folders too with ``recursive``), in sorted path order.

    Files are matched by extension, case-insensitively; hidden files and folders (names starting
    with ``.``) are ignored. The order (sorted relative POSIX paths) is the same on every machine,
    so item ``i`` is a fixed image (the evaluation noise is seeded by it). Images of different
    sizes are fine as long as ``crop`` (with ``resize`` if some are too small) makes them equal
    before batching; :func:`collate_images` explains the problem if not. See :class:`ImageFiles`
    for ``mode``, ``crop``, ``resize``, ``random_crop``, ``seed`` and ``on_error``.

    Raises:
        DataError: ``root`` does not exist or holds no image with one of ``extensions``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        recursive: bool = True,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        mode: str = "rgb",
        crop: int | Sequence[int] | None = None,
        resize: int | None = None,
        random_crop: bool = False,
        seed: int | None = None,
        on_error: str = "raise",
    ) -> None:
        root = Path(root)
        if isinstance(extensions, str):
            extensions = (extensions,)
        if not root.exists():
            raise DataError(f"image folder not found: {root}")
        if not root.is_dir():
            raise DataError(f"not a folder: {root}")
        files = _list_images(root, recursive, extensions)
        if not files:
            where = "under" if recursive else "directly in"
            raise DataError(f"no images ({', '.join(extensions)}) {where} {root}")
        self.root = root
        super().__init__(files, mode=mode, crop=crop, resize=resize, random_crop=random_crop,
                         seed=seed, on_error=on_error)
        if not self.files:
            raise DataError(f"none of the {self.skipped} image files under {root} could be read; "
                            f"first error: {self.skipped_files[0][1]}")

    def __repr__(self) -> str:
        return f"ImageFolder({str(self.root)!r}, {len(self)} images, crop={self.crop})"


def collate_images(batch: list[Any]) -> Any:
    """``collate_fn`` for DataLoaders: stack tensors (or tuples of tensors) into batches.

    Items whose type has a ``stack`` classmethod batch themselves (the physics of the samples,
    :meth:`jfb.physics.Physics.stack`: one blur each, into one). Unlike the default collate,
    images of different sizes raise a :class:`DataError` that says which sizes met and how to
    fix it (``crop=`` / ``resize=``).
    """
    if not batch:
        raise DataError("cannot collate an empty batch")
    first = batch[0]
    if isinstance(first, torch.Tensor):
        shapes = sorted({tuple(t.shape) for t in batch})
        if len(shapes) > 1:
            raise DataError(
                f"images in a batch have different sizes {shapes[:4]}"
                f"{' ...' if len(shapes) > 4 else ''}; give the dataset crop=SIZE (and resize=SIZE"
                " for images smaller than the crop), or use batch size 1")
        return torch.stack(batch)
    stack = getattr(type(first), "stack", None)
    if callable(stack):  # items that batch themselves, e.g. a Physics (a blur per sample)
        return stack(batch)
    if isinstance(first, (tuple, list)):
        return type(first)(collate_images(list(parts)) for parts in zip(*batch, strict=True))
    return torch.utils.data.default_collate(batch)


# ---------------------------------------------------------------------------------- CelebA


def _repo_root() -> Path:
    # .../src/jfb/data/datasets.py -> parents: data, jfb, src, <repository>
    return Path(__file__).resolve().parents[3]


def celeba128_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Locate the CelebA-128 folder (the one holding ``train/`` and ``val/``).

    Order: the ``root`` argument; the ``JFB_CELEBA_ROOT`` environment variable;
    ``../shared/data/celeba128`` relative to the current folder; then, relative to the
    repository this package lives in, ``../shared/data/celeba128`` and ``shared/data/celeba128``.
    """
    hint = (f"point to it with root=..., the environment variable {CELEBA_ENV}=/path/to/celeba128"
            ", or place it at ../shared/data/celeba128 beside the repository (see "
            "celeba128/README.md: folders train/ and val/ of 128x128 JPEGs)")
    if root is not None:
        p = Path(root)
        if not p.is_dir():
            raise DataError(f"CelebA-128 folder not found: {p}; {hint}")
        return p
    env = os.environ.get(CELEBA_ENV)
    if env:
        p = Path(env)
        if not p.is_dir():
            raise DataError(f"{CELEBA_ENV}={env} is not a folder; {hint}")
        return p
    repo = _repo_root()
    candidates = [Path.cwd() / ".." / "shared" / "data" / "celeba128",
                  repo / ".." / "shared" / "data" / "celeba128",
                  repo / "shared" / "data" / "celeba128"]
    for c in candidates:
        if (c / "train").is_dir() or (c / "val").is_dir():
            return c.resolve()
    tried = ", ".join(str(c.resolve()) for c in candidates)
    raise DataError(f"CelebA-128 not found (looked in {tried}); {hint}")


def shared_data(name: str) -> Path:
    """The folder ``data/NAME`` of the project's shared data: ``../shared`` beside the current
    folder, else beside the repository this package lives in."""
    candidates = [Path.cwd() / ".." / "shared" / "data" / name,
                  _repo_root() / ".." / "shared" / "data" / name]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    tried = ", ".join(str(c.resolve()) for c in candidates)
    raise DataError(f"shared data {name!r} not found (looked in {tried})")


def celeba128(split: str = "train", root: str | os.PathLike[str] | None = None,
              **kwargs: Any) -> ImageFolder:
    """CelebA-128 split ``"train"`` (000001..008000.jpg) or ``"val"`` (008001..009000.jpg).

    ``<root>/<split>/*.jpg`` as an :class:`ImageFolder` (sorted by file name); ``root`` is found
    by :func:`celeba128_root` when not given. Other keyword arguments go to :class:`ImageFolder`
    (``crop``, ``random_crop``, ``seed``, ``mode``, ``on_error``, ...).
    """
    if split not in ("train", "val"):
        raise ValueError(f"CelebA-128 split must be 'train' or 'val', got {split!r}")
    base = celeba128_root(root)
    folder = base / split
    if not folder.is_dir():
        raise DataError(f"CelebA-128 split folder not found: {folder}")
    return ImageFolder(folder, recursive=False, extensions=("jpg", "jpeg"), **kwargs)


_CELEBA_SPLITS = {"train": 0, "val": 1, "test": 2}


class celeba_preprocess:  # noqa: N801 - used like a function; a class so that it pickles
    """The CelebA-128 preparation: centre square crop (178x178 of 178x218: rows 20..197), then a
    bicubic resize to ``size x size`` with Pillow on the 8-bit pixels, as the shared copy was made.

    ``celeba_preprocess(size)`` is a callable ``(C, H, W) -> (C, size, size)``; being a class
    instance (not a closure) it pickles, so DataLoader workers can receive it.
    """

    def __init__(self, size: int = 128) -> None:
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"size must be a positive int, got {size!r}")
        self.size = int(size)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from PIL import Image

        s = min(x.shape[-2:])
        sq = center_crop(x, s)
        arr = torch.round(sq * 255).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        im = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
        im = im.resize((self.size, self.size), Image.Resampling.BICUBIC)
        out = np.asarray(im)
        if out.ndim == 2:
            out = out[:, :, None]
        return torch.from_numpy(out.astype(np.float32) / 255.0).permute(2, 0, 1).contiguous()

    def __repr__(self) -> str:
        return f"celeba_preprocess(size={self.size})"


def celeba_original(root: str | os.PathLike[str], split: str = "train", *, size: int = 128,
                    **kwargs: Any) -> ImageFiles:
    """CelebA in its original layout, prepared like CelebA-128.

    ``root`` holds ``img_align_celeba/`` (the 178x218 JPEGs) and ``list_eval_partition.txt``
    (lines ``000001.jpg 0``: 0 train, 1 val, 2 test). Items are centre-cropped to a square and
    resized to ``size`` (see :func:`celeba_preprocess`), in file-name order. Other keyword
    arguments go to :class:`ImageFiles`.
    """
    if split not in _CELEBA_SPLITS:
        raise ValueError(f"split must be one of {tuple(_CELEBA_SPLITS)}, got {split!r}")
    root = Path(root)
    images = root / "img_align_celeba"
    part = root / "list_eval_partition.txt"
    if not images.is_dir():
        raise DataError(f"CelebA image folder not found: {images}")
    if not part.is_file():
        raise DataError(f"CelebA partition file not found: {part}")
    want = _CELEBA_SPLITS[split]
    names = []
    with open(part, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise DataError(f"{part}:{lineno}: expected '<file> <0|1|2>', got {line.strip()!r}")
            if int(fields[1]) == want:
                names.append(fields[0])
    if not names:
        raise DataError(f"{part} lists no image for split {split!r}")
    present = set(os.listdir(images))
    missing = [n for n in names if n not in present]
    if missing:
        raise DataError(f"{len(missing)} image(s) of split {split!r} listed in {part} are missing "
                        f"from {images}, e.g. {missing[0]}")
    files = [images / n for n in sorted(names)]
    return ImageFiles(files, preprocess=celeba_preprocess(size), **kwargs)


# ------------------------------------------------------------------------- degraded pairs


class DegradedDataset(Dataset):
    """Pairs ``(x, y)`` with ``y = noise(A x)`` for each clean image ``x`` of a dataset.

    The operator acts on a batch of one (``A(x[None])[0]``), without gradients, on the device of
    ``x`` (the clean dataset's tensors, usually CPU). With ``seed`` an int, item ``i`` draws its
    noise from ``torch.Generator().manual_seed(seed + i)``: every call, run and DataLoader worker
    sees the same ``y`` (evaluation). With ``seed=None`` the noise comes from torch's global
    generator and is fresh on every call (training).
    """

    def __init__(self, clean: Dataset, operator: Any, noise: Callable[..., torch.Tensor], *,
                 seed: int | None = None) -> None:
        if not hasattr(operator, "A"):
            raise TypeError(f"operator must have a method A(x) (a jfb.physics.LinearOperator), "
                            f"got {type(operator).__name__}")
        if not callable(noise):
            raise TypeError(f"noise must be callable as noise(y, generator=...), got {noise!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                                 or seed < 0):
            raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
        self.clean = clean
        self.operator = operator
        self.noise = noise
        self.seed = None if seed is None else int(seed)

    def __len__(self) -> int:
        return len(self.clean)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        index = index % n
        x = self.clean[index]
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            shape = tuple(x.shape) if hasattr(x, "shape") else ""
            raise DataError(f"clean dataset item {index} must be a (C, H, W) tensor, got "
                            f"{type(x).__name__}{shape}")
        g = None if self.seed is None else torch.Generator().manual_seed(self.seed + index)
        with torch.no_grad():
            y = self.noise(self.operator.A(x[None]), generator=g)[0]
        return x, y

    def __repr__(self) -> str:
        return (f"DegradedDataset({len(self)} items, operator={self.operator!r}, "
                f"noise={self.noise!r}, seed={self.seed})")
