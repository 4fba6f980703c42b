"""Checkpoints as single ``.safetensors`` files: safe to load (never unpickled), atomic to write.

Layout of one file:

* tensors: ``model/<state-dict key>``, ``optim/<param index>/<state key>`` (e.g. Adam's
  ``exp_avg``), ``rng/torch`` (uint8 CPU generator state), ``rng/cuda/<device>``;
* metadata (str -> str): ``format`` = ``"jfb-checkpoint"``, ``version``, ``meta`` (JSON: step,
  config, extra, optimizer param groups and non-tensor state, scheduler state, python/numpy RNG
  states) and ``sha256``: the SHA-256 of ``meta`` followed by every tensor (sorted by name:
  name, dtype, shape, raw bytes), checked on every load so that an edited file is refused.

Writes go to a temporary file in the same directory, are flushed and fsync'ed, then renamed over
the target with ``os.replace`` (:func:`jfb.atomic.write_bytes`): a crash at any point leaves
either the old or the new file.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from jfb.atomic import write_bytes
from jfb.config import MODEL_DEFINING_KEYS
from jfb.errors import CheckpointError

__all__ = [
    "FORMAT",
    "VERSION",
    "capture_rng_state",
    "load_checkpoint",
    "load_weights",
    "restore_rng_state",
    "save_checkpoint",
    "unwrap_model",
]

FORMAT = "jfb-checkpoint"
VERSION = 1
_MAX_LISTED = 8


# ---------------------------------------------------------------------- helpers
def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def capture_rng_state() -> dict[str, Any]:
    """RNG states of python, numpy, torch (CPU) and every CUDA device."""
    py = random.getstate()
    np_state = np.random.get_state()  # noqa: NPY002 - the legacy global RNG is what we save
    return {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states only when the device count matches)."""
    if state.get("python") is not None:
        v, s, g = state["python"]
        random.setstate((v, tuple(s), g))
    if state.get("numpy") is not None:
        name, keys, pos, has_gauss, cached = state["numpy"]
        legacy = (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached)
        np.random.set_state(legacy)  # noqa: NPY002 - restores the legacy global RNG
    if state.get("torch") is not None:
        torch.set_rng_state(state["torch"].to(dtype=torch.uint8, device="cpu"))
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([t.to(dtype=torch.uint8, device="cpu") for t in cuda])


def _as_saveable(t: torch.Tensor) -> torch.Tensor:
    # clone: safetensors refuses tensors that share storage (tied weights, views).
    return t.detach().to("cpu").contiguous().clone()


def _digest(meta_json: str, tensors: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    h.update(meta_json.encode("utf-8"))
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(b"\0" + name.encode("utf-8") + b"\0" + str(t.dtype).encode() + b"\0")
        h.update(repr(tuple(t.shape)).encode())
        if t.numel():
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple | set):
        return list(obj)
    raise TypeError(f"checkpoint metadata: {type(obj).__name__} is not JSON-serialisable")


# ---------------------------------------------------------------------- save
def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    step: int,
    config: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
    rng: Mapping[str, Any] | None | bool = True,
) -> None:
    """Write model (+ optimizer, scheduler, RNG) state to ``path`` atomically.

    ``config`` is the plain-dict config (``Config.to_dict()``); ``extra`` any JSON-serialisable
    dict. ``rng=True`` stores the current global RNG states, a dict stores that state (from
    :func:`capture_rng_state`), ``False``/``None`` stores none. DDP / compiled models are
    unwrapped so the names are those of the plain module.
    """
    tensors: dict[str, torch.Tensor] = {}
    for key, value in unwrap_model(model).state_dict().items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state_dict entry {key!r} is not a tensor ({type(value).__name__})")
        tensors[f"model/{key}"] = _as_saveable(value)

    meta: dict[str, Any] = {
        "step": int(step),
        "config": dict(config),
        "extra": dict(extra or {}),
    }
    if optimizer is not None:
        osd = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for pid, pstate in osd["state"].items():
            for key, value in pstate.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim/{pid}/{key}"] = _as_saveable(value)
                else:
                    scalars.setdefault(str(pid), {})[key] = value
        meta["optimizer"] = {"param_groups": osd["param_groups"], "scalars": scalars,
                             "class": type(optimizer).__name__}
    if scheduler is not None:
        meta["scheduler"] = scheduler.state_dict()
    if rng is True:
        rng = capture_rng_state()
    if rng:
        meta["rng"] = {"python": rng.get("python"), "numpy": rng.get("numpy"),
                       "cuda_devices": len(rng.get("cuda") or [])}
        if rng.get("torch") is not None:
            tensors["rng/torch"] = _as_saveable(rng["torch"])
        for i, t in enumerate(rng.get("cuda") or []):
            tensors[f"rng/cuda/{i}"] = _as_saveable(t)

    meta_json = json.dumps(meta, default=_json_default, sort_keys=True)
    metadata = {
        "format": FORMAT,
        "version": str(VERSION),
        "meta": meta_json,
        "sha256": _digest(meta_json, tensors),
    }
    from safetensors.torch import save

    write_bytes(path, save(tensors, metadata=metadata))


# ---------------------------------------------------------------------- load
def _sniff(path: Path) -> str | None:
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head[:4] == b"PK\x03\x04":
        return "a zip archive (torch.save format)"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle"
    return None


def _read(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify a checkpoint; returns (all tensors, decoded meta dict)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path is not a file: {path}")
    kind = _sniff(path)
    if kind is not None:
        raise CheckpointError(
            f"{path} is {kind}, not a safetensors checkpoint; jfb never unpickles files"
        )
    from safetensors import safe_open

    try:
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = fh.metadata() or {}
            for name in fh.keys():  # noqa: SIM118 - safe_open is not a dict
                tensors[name] = fh.get_tensor(name)
    except Exception as exc:  # safetensors raises its own error types for bad files
        raise CheckpointError(
            f"{path} is not a readable safetensors file (truncated or corrupt?): {exc}"
        ) from exc
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a jfb checkpoint "
                              f"(metadata format={metadata.get('format')!r})")
    try:
        version = int(metadata.get("version", ""))
    except ValueError:
        raise CheckpointError(f"{path}: bad checkpoint version "
                              f"{metadata.get('version')!r}") from None
    if version > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {version} is newer than this jfb "
                              f"(reads up to {VERSION})")
    meta_json = metadata.get("meta")
    if meta_json is None or "sha256" not in metadata:
        raise CheckpointError(f"{path}: checkpoint metadata is incomplete")
    if _digest(meta_json, tensors) != metadata["sha256"]:
        raise CheckpointError(f"{path}: SHA-256 mismatch: the file was modified or corrupted "
                              "after it was written")
    try:
        meta = json.loads(meta_json)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: checkpoint metadata is not valid JSON: {exc}") from exc
    return tensors, meta


def _prefixed(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    n = len(prefix)
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix)}


def _lookup(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, Mapping) or part not in d:
            return _MISSING
        d = d[part]
    return d


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


def _leaves(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_leaves(v, f"{prefix}.{k}"))
        return out
    return {prefix: value}


def config_mismatches(
    saved: Mapping[str, Any], expected: Mapping[str, Any],
    keys: Iterable[str] = MODEL_DEFINING_KEYS,
) -> list[str]:
    """Differences ``"key: checkpoint X, expected Y"`` between two config dicts on ``keys``."""
    out = []
    for key in keys:
        a, b = _lookup(saved, key), _lookup(expected, key)
        la = _leaves(a, key) if a is not _MISSING else {key: a}
        lb = _leaves(b, key) if b is not _MISSING else {key: b}
        for leaf in sorted(set(la) | set(lb)):
            va, vb = la.get(leaf, _MISSING), lb.get(leaf, _MISSING)
            if va != vb:
                out.append(f"{leaf}: checkpoint {va!r}, expected {vb!r}")
    return out


def check_weights(
    path: str | Path,
    weights: Mapping[str, torch.Tensor],
    expected: nn.Module | Mapping[str, torch.Tensor],
    *,
    what: str = "this model",
    hint: str = "",
) -> None:
    """CheckpointError naming the missing, unexpected and mis-shaped tensors unless ``weights``
    (read from ``path``) fit ``expected`` (a model's state dict, or the model) exactly; ``what``
    names the model in the message and ``hint`` is appended to it."""
    own = expected.state_dict() if isinstance(expected, nn.Module) else expected
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(weights[k].shape)}, model {tuple(own[k].shape)}"
        for k in set(own) & set(weights)
        if isinstance(own[k], torch.Tensor) and tuple(own[k].shape) != tuple(weights[k].shape)
    )
    problems = []

    def listing(items: list[str]) -> str:
        more = f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
        return ", ".join(items[:_MAX_LISTED]) + more

    if missing:
        problems.append(f"missing weights: {listing(missing)}")
    if unexpected:
        problems.append(f"unexpected weights: {listing(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch: {listing(shapes)}")
    if problems:
        raise CheckpointError(f"{path} does not fit {what}: " + "; ".join(problems) + hint)


def load_checkpoint(
    path: str | Path,
    *,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    expected_config: Mapping[str, Any] | None = None,
    model_keys: Iterable[str] = MODEL_DEFINING_KEYS,
    restore_rng: bool = False,
) -> dict[str, Any]:
    """Verify ``path`` and load it into the given objects; never unpickles.

    Returns ``{"step", "config", "extra", "rng", "weights"}`` (``rng`` in the form of
    :func:`capture_rng_state` or None; ``weights`` the model state dict). ``expected_config``
    (a config dict) must agree with the saved one on ``model_keys``. ``restore_rng=True`` sets
    the global RNG states. Raises CheckpointError for a missing, corrupt, tampered, non-jfb or
    pickle file, a config mismatch, or weights that do not fit ``model``.
    """
    path = Path(path)
    tensors, meta = _read(path)
    config = meta.get("config", {})
    if expected_config is not None:
        diffs = config_mismatches(config, expected_config, model_keys)
        if diffs:
            raise CheckpointError(f"{path} was trained with a different model config: "
                                  + "; ".join(diffs))
    weights = _prefixed(tensors, "model/")
    if model is not None:
        target = unwrap_model(model)
        check_weights(path, weights, target)
        target.load_state_dict(weights, strict=True)
    if optimizer is not None:
        _load_optimizer(path, optimizer, tensors, meta)
    if scheduler is not None:
        if "scheduler" not in meta:
            raise CheckpointError(f"{path} holds no scheduler state")
        scheduler.load_state_dict(meta["scheduler"])
    rng = None
    if "rng" in meta:
        rmeta = meta["rng"]
        rng = {
            "python": rmeta.get("python"),
            "numpy": rmeta.get("numpy"),
            "torch": tensors.get("rng/torch"),
            "cuda": [tensors[f"rng/cuda/{i}"] for i in range(rmeta.get("cuda_devices", 0))],
        }
        if restore_rng:
            restore_rng_state(rng)
    elif restore_rng:
        raise CheckpointError(f"{path} holds no RNG state to restore")
    return {
        "step": int(meta.get("step", 0)),
        "config": config,
        "extra": meta.get("extra", {}),
        "rng": rng,
        "weights": weights,
    }


def _load_optimizer(path: Path, optimizer: torch.optim.Optimizer,
                    tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    if "optimizer" not in meta:
        raise CheckpointError(f"{path} holds no optimizer state")
    ometa = meta["optimizer"]
    if ometa.get("class") not in (None, type(optimizer).__name__):
        raise CheckpointError(f"{path}: optimizer state is for {ometa['class']}, "
                              f"not {type(optimizer).__name__}")
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim/"):
            _, pid, key = name.split("/", 2)
            state.setdefault(int(pid), {})[key] = value
    for pid, values in ometa.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(values)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": ometa["param_groups"]})
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: optimizer state does not fit this optimizer: "
                              f"{exc}") from exc


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Model weights and ``{"step", "config", "extra"}`` of a verified checkpoint (inference)."""
    tensors, meta = _read(path)
    info = {"step": int(meta.get("step", 0)), "config": meta.get("config", {}),
            "extra": meta.get("extra", {})}
    return _prefixed(tensors, "model/"), info
