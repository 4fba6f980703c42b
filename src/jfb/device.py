"""Devices: turn a device spec into a ``torch.device``, name the hardware, wait for its work."""

from __future__ import annotations

import platform
from typing import Any

import torch

from jfb.errors import ConfigError

__all__ = [
    "amp_dtype",
    "device_name",
    "hardware_name",
    "resolve_device",
    "synchronize",
    "use_channels_last",
]


def resolve_device(spec: str | torch.device, dist_info: Any = None) -> torch.device:
    """``"auto"`` -> the local CUDA device if available, else CPU; ``"cuda"`` must exist.

    A CUDA device without an index is this process's ``local_rank`` when ``dist_info`` (a
    :class:`jfb.train.distributed.DistInfo`, or anything with ``distributed`` and
    ``local_rank``) says the run is distributed, else the current CUDA device.
    """
    if isinstance(spec, torch.device):
        device = spec
    elif spec == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(spec)
        except (RuntimeError, TypeError) as exc:
            raise ConfigError(f"train.device: {spec!r} is not a device") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                "train.device: 'cuda' requested but CUDA is not available "
                "(use device='cpu' or 'auto')"
            )
        if device.index is None:
            distributed = dist_info is not None and dist_info.distributed
            device = torch.device(
                "cuda", dist_info.local_rank if distributed else torch.cuda.current_device()
            )
    return device


def device_name(device: torch.device) -> str:
    """A readable name of the device, e.g. 'NVIDIA H100 80GB HBM3' or 'cpu (2 threads)'."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads)"


def hardware_name(device: torch.device) -> str:
    """The chip behind the device: the GPU's name, or the CPU's model (from ``/proc/cpuinfo``,
    else what :mod:`platform` knows), e.g. 'AMD EPYC 7B13'."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def synchronize(device: torch.device) -> None:
    """Wait until every kernel queued on ``device`` has finished (CUDA); a no-op on the CPU.
    Timings read the clock only after it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def amp_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``: bf16 on CUDA only, else None (no autocast)."""
    if amp == "bf16" and device.type == "cuda":
        return torch.bfloat16
    if amp not in ("none", "bf16"):
        raise ConfigError(f"train.amp: expected 'none' or 'bf16', got {amp!r}")
    return None


def use_channels_last(device: torch.device, flag: bool) -> bool:
    """Channels-last memory format is used on CUDA only."""
    return bool(flag) and device.type == "cuda"
