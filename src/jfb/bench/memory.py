"""The memory measure: bytes of the tensors that live autograd graphs hold for backward
(:class:`SavedTensorMeter`, :func:`saved_tensor_bytes`), the graph size every gradient strategy
is compared on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


class _Held:
    """A saved tensor as the autograd graph holds it; releases its count when the graph does."""

    __slots__ = ("key", "meter", "tensor")

    def __init__(self, meter: SavedTensorMeter | None, key: int, tensor: torch.Tensor) -> None:
        self.meter, self.key, self.tensor = meter, key, tensor

    def __del__(self) -> None:
        if self.meter is not None:
            self.meter._release(self.key)


class SavedTensorMeter:
    """Bytes of the distinct storages that live autograd graphs hold for backward.

    Used as a context manager around a forward pass: every tensor autograd saves for the
    backward (``torch.autograd.graph.saved_tensors_hooks``) is counted once per storage for as
    long as some graph node holds it, so ``current`` is the size of the graph alive now and
    ``peak`` its largest value during the block. Parameters (``exclude``) are not counted: they
    exist whatever the strategy. This is the quantity that grows with the iterations for
    Unrolled; it leaves out the solver's own working memory (no-grad iterates, Anderson history)
    and whatever the backward allocates (IFT's linear solve), which ``max_memory_allocated``
    on CUDA includes.
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self._exclude = {_storage_key(t) for t in exclude}
        self._live: dict[int, list[int]] = {}  # storage key -> [holders, nbytes]
        self.current = 0
        self.peak = 0
        self._hooks: Any = None

    def _pack(self, t: torch.Tensor) -> _Held:
        key = _storage_key(t)
        if key in self._exclude or t.device.type == "meta":
            return _Held(None, key, t)
        entry = self._live.get(key)
        if entry is None:
            nbytes = int(t.untyped_storage().nbytes())
            self._live[key] = [1, nbytes]
            self.current += nbytes
            self.peak = max(self.peak, self.current)
        else:
            entry[0] += 1
        return _Held(self, key, t)

    @staticmethod
    def _unpack(held: _Held) -> torch.Tensor:
        return held.tensor

    def _release(self, key: int) -> None:
        entry = self._live.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            self.current -= entry[1]
            del self._live[key]

    def __enter__(self) -> SavedTensorMeter:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)
        self._hooks = None


def _storage_key(t: torch.Tensor) -> int:
    try:
        return int(t.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):  # tensors without a storage (e.g. subclasses)
        return id(t)


def saved_tensor_bytes(
    fn: Callable[[], torch.Tensor], exclude: Iterable[torch.Tensor] = ()
) -> int:
    """Peak bytes of tensors saved for backward while ``fn()`` builds its graph (see the meter)."""
    meter = SavedTensorMeter(exclude)
    with meter:
        out = fn()
    del out
    return meter.peak
