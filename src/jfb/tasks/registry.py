"""Names and task specs to :class:`~jfb.tasks.task.Task` values: the registry and ``parse_task``."""

from __future__ import annotations

from pathlib import Path

from jfb.errors import ConfigError
from jfb.specs import DATA_KINDS, parse_data, parse_op, spec_float
from jfb.tasks.task import NO_TRAIN, Task

__all__ = ["SPEC_KEYS", "TASKS", "get_task", "list_tasks", "parse_task"]

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
        Task("natural-anyblur", "random:31", 0.05, "circular", "shared:cbsd432", "shared:cbsd68",
             "BSDS photos, a blur per image (Gaussian, anisotropic, camera shake, disk; up to "
             "31x31, circular) and noise std uniform in [0, 0.05], the model told both"),
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

#: The keys of a task spec ``key=value,...``.
SPEC_KEYS = ("name", "op", "kernel", "noise", "padding", "data", "train", "val", "description")
_DEFAULTS = TASKS["celeba-gauss5"]


def _data_value(value: str, key: str) -> str:
    """A ``train=``/``val=`` value: a data spec, or a folder path (-> ``folder:PATH``)."""
    kind = value.partition(":")[0]
    if kind in DATA_KINDS:
        parse_data(value)
        return value
    if not Path(value).is_dir():
        raise ConfigError(f"{key}={value!r}: not a data spec ({', '.join(DATA_KINDS)}) nor an "
                          "existing folder")
    return f"folder:{value}"


def _split_spec(spec: str) -> dict[str, str]:
    """``"k=v,k=v"`` -> {k: v}; ConfigError for an unknown, repeated or empty key."""
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
            raise ConfigError(f"task spec: {item!r} is not key=value (keys: "
                              f"{', '.join(SPEC_KEYS)})")
        if key not in SPEC_KEYS:
            raise ConfigError(f"task spec: unknown key {key!r}; expected one of "
                              f"{', '.join(SPEC_KEYS)}")
        if key in values:
            raise ConfigError(f"task spec: key {key!r} given twice")
        if not value:
            raise ConfigError(f"task spec: {key}= is empty")
        values[key] = value
    if not values:
        raise ConfigError(f"task spec {spec!r} has no key=value field")
    return values


def _data_splits(values: dict[str, str]) -> tuple[str | None, str]:
    """The (train, val) data specs of ``data=``/``train=``/``val=`` (celeba-gauss5's unless
    given)."""
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
    return train, val


def parse_task(spec: str) -> Task:
    """Build a task from ``"key=value,key=value"``.

    Keys: ``op`` (the operator, ``blur`` by default), ``kernel`` (op=blur only; see
    :mod:`jfb.specs`), ``noise`` (sigma >= 0), ``padding``, ``data``
    (``celeba128``, ``natural``, or a folder: with ``train/`` and ``val/`` sub-folders these are
    the splits, otherwise the folder is the evaluation set and there is no training set),
    ``train`` / ``val`` (a data spec or a folder; override ``data``; ``train=none``: no
    training images, so a folder named ``none`` is ``train=folder:none`` or ``train=./none``),
    ``name``, ``description``. Missing keys take ``celeba-gauss5``'s values. Raises
    :class:`ConfigError` naming the bad field (a ``file:`` kernel is read here, once).
    """
    values = _split_spec(spec)
    train, val = _data_splits(values)
    noise = spec_float(values["noise"], "noise") if "noise" in values else _DEFAULTS.noise_sigma
    if noise < 0:
        raise ConfigError(f"noise={values['noise']}: must be >= 0")
    op = values.get("op", "blur")
    op_kind = parse_op(op).kind
    if op_kind == "blur":
        kernel: str | None = values.get("kernel", _DEFAULTS.kernel)
        what = f"kernel {kernel}"
    else:
        if "kernel" in values:
            raise ConfigError(f"task spec: kernel= applies to op=blur only, not op={op}")
        kernel, what = None, f"op {op}"
    padding = values.get("padding", "reflect" if op_kind == "sr" else _DEFAULTS.padding)
    return Task(name=values.get("name", "custom"), kernel=kernel, noise_sigma=noise,
                padding=padding, train_data=train, val_data=val,
                description=values.get("description", f"user task: {what}, noise {noise}"), op=op)


def get_task(name: str) -> Task:
    """The registered task ``name``; a string containing ``=`` is parsed by :func:`parse_task`.
    Call it once per run and pass the Task on (``jfb.pipeline.Run.task``)."""
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
