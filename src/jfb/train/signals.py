"""Stop signals: SIGINT/SIGTERM ask the loop to stop after its step; DataLoader workers ignore them.

The loop installs :class:`StopSignals` for the length of ``fit``: the first SIGINT or SIGTERM is
recorded (``requested``) and the loop checkpoints and returns after the current step; a second
SIGINT interrupts at once. A Ctrl-C sent to the whole process group must not kill the DataLoader
workers meanwhile: they are forked with the signals blocked (:func:`start_loader`) and ignore
them from their first instruction (:func:`ignore_stop_signals`, their ``worker_init_fn``).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader

__all__ = ["STOP_SIGNALS", "StopSignals", "ignore_stop_signals", "start_loader"]

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class StopSignals:
    """The loop's handler of SIGINT/SIGTERM: ``requested`` is the first signal received (None
    until then)."""

    def __init__(self) -> None:
        self.requested: int | None = None

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.requested = signum

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Handle the stop signals for the block (from the main thread only; elsewhere Python
        cannot install handlers and the block runs without), then restore the previous ones."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in previous:
            signal.signal(s, self._on_signal)
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers ignore SIGINT/SIGTERM: a Ctrl-C sent to the whole process group must
    reach only the main process, which finishes its step and shuts the workers down itself.
    Workers are forked with these signals blocked (:func:`start_loader`), so one that arrived
    while the worker started stays pending until here, where it is discarded."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def start_loader(loader: DataLoader) -> Iterator[Any]:
    """``iter(loader)``, forking its workers with SIGINT/SIGTERM blocked.

    Without this a stop signal sent to the process group while a worker starts (every epoch)
    reaches the worker before :func:`ignore_stop_signals` makes it ignore the signal, kills it,
    and crashes the main process instead of letting it checkpoint. The main process gets any
    signal that arrived meanwhile when the mask is restored.
    """
    if loader.num_workers == 0 or not hasattr(signal, "pthread_sigmask"):
        return iter(loader)
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        return iter(loader)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
