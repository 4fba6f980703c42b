"""Progress of long work on stderr: count, rate and ETA on one self-overwriting line.

    with progress_bar(len(tiles), "restoring photo.png", unit="tile") as bar:
        for tile in tiles:
            ...
            bar.update()                   # or bar.update(n, psnr=31.2): n units done, postfix

On a terminal this draws ``restoring photo.png, tile 12/40 [#####.....] 30% | 2.1 tile/s |
ETA 00:13`` on one line of stderr, redrawn at most every ``min_interval`` seconds; the line stays
when the bar closes. When stderr is not a terminal (a file, a pipe, CI), when ``enabled=False``,
or inside :func:`silenced` (``jfb --quiet``), :func:`progress_bar` returns a :class:`NullProgress`
that writes nothing. The rate, and so the ETA, is measured over the last ``rate_window`` seconds,
so that a job whose speed changes (pre-training, then the fixed-point phase) gets an ETA at the
speed it runs at now.

No dependency; one implementation, which the trainer's progress line
(:class:`jfb.train.log.Progress`) specialises.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TextIO

__all__ = ["NullProgress", "ProgressBar", "format_duration", "format_postfix", "is_silenced",
           "progress_bar", "silenced"]

_silenced = False  # set by silenced(): `jfb --quiet` turns every progress_bar into a NullProgress


@contextlib.contextmanager
def silenced(on: bool = True) -> Iterator[None]:
    """Within the block, :func:`progress_bar` returns a :class:`NullProgress` (``on=False``:
    no change). The command line wraps each ``--quiet`` command in it."""
    global _silenced
    before = _silenced
    _silenced = before or bool(on)
    try:
        yield
    finally:
        _silenced = before


def is_silenced() -> bool:
    """Whether the caller runs inside :func:`silenced`."""
    return _silenced


def format_duration(seconds: float) -> str:
    """``"07:05"`` (minutes:seconds) or ``"2:03:07"`` (hours:minutes:seconds)."""
    s = int(round(max(0.0, seconds)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def format_postfix(fields: Mapping[str, Any]) -> str:
    """``"loss 0.00123 | psnr 28.4"``: "name value" pairs, floats with 4 significant digits;
    None values are left out."""
    parts = []
    for key, value in fields.items():
        if value is None:
            continue
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"{key} {text}")
    return " | ".join(parts)


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (ValueError, OSError):  # a closed stream
        return False


def _terminal_width(stream: TextIO, default: int = 100) -> int:
    """``COLUMNS`` if set (as the shell exports it), else the width of ``stream``'s terminal."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return default


class ProgressBar:
    """Count, rate and ETA of ``total`` units of work (None: unknown) on one line of ``stream``.

    ``update(n)`` adds ``n`` units done, ``update_to(count)`` sets the count (it may go back, as
    after a training rollback: the rate is then measured afresh); keyword arguments of either
    replace the postfix (shown through ``fields``, default :func:`format_postfix`).
    On a terminal (``is_tty``, default: ``stream.isatty()``) the line is redrawn at most every
    ``min_interval`` seconds, always when forced or complete. Elsewhere nothing is drawn, unless
    ``log_lines``: then a plain line (no bar) on each forced update and on completion.
    ``enabled=False``: nothing is ever written. ``clock``: seconds, monotonic (tests pass a fake).
    """

    BAR_WIDTH = 20

    def __init__(
        self,
        total: int | None,
        desc: str = "",
        *,
        unit: str = "it",
        stream: TextIO | None = None,
        is_tty: bool | None = None,
        log_lines: bool = False,
        enabled: bool = True,
        initial: int = 0,
        min_interval: float = 0.2,
        rate_window: float = 30.0,
        fields: Callable[[Mapping[str, Any]], str] = format_postfix,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = None if total is None else int(total)
        self.desc = desc
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.is_tty = _is_terminal(self.stream) if is_tty is None else bool(is_tty)
        self.log_lines = log_lines
        self.enabled = enabled
        self.min_interval = min_interval
        self.rate_window = rate_window
        self.fields = fields
        self.clock = clock
        self.count = int(initial)
        self.postfix: dict[str, Any] = {}
        self._line_open = False  # a live line is on the terminal (to clear or end)
        self._last_draw = -math.inf
        self._start = clock() if enabled else 0.0
        self._history: deque[tuple[float, int]] = deque([(self._start, self.count)])

    # ------------------------------------------------------------------ counting
    def update(self, n: int = 1, *, force: bool = False, **postfix: Any) -> None:
        """``n`` more units done; ``postfix`` (if any) replaces the shown fields."""
        self.update_to(self.count + n, force=force, **postfix)

    def update_to(self, count: int, *, force: bool = False, **postfix: Any) -> None:
        """The count is now ``count``; ``postfix`` (if any) replaces the shown fields."""
        if not self.enabled:
            return
        if count < self.count:  # gone back: measure the rate from here
            self._history = deque([(self.clock(), int(count))])
        self.count = int(count)
        if postfix:
            self.postfix = postfix
        self._maybe_draw(force)

    def set_description(self, desc: str) -> None:
        """Change the text before the count (shown at the next draw)."""
        self.desc = desc

    def reset(self, count: int = 0) -> None:
        """Start afresh at ``count``: elapsed time, rate and ETA are measured from now."""
        if not self.enabled:
            return
        self.count = int(count)
        self._start = self.clock()
        self._history = deque([(self._start, self.count)])

    @property
    def done(self) -> bool:
        return self.total is not None and self.count >= self.total

    # ------------------------------------------------------------------ rate and ETA
    def rate(self, now: float | None = None) -> float | None:
        """Units per second over the last ``rate_window`` seconds (None before any time passed)."""
        now = self.clock() if now is None else now
        t0, n0 = self._history[0]
        if now <= t0:
            return None
        return (self.count - n0) / (now - t0)

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left at the current rate; None when unknown (no total, no progress yet)."""
        if self.total is None:
            return None
        if self.done:
            return 0.0
        rate = self.rate(now)
        if not rate or rate <= 0:
            return None
        return (self.total - self.count) / rate

    def _sample(self, now: float) -> None:
        """Record (now, count) for the rate; keep the newest point at least ``rate_window`` old."""
        self._history.append((now, self.count))
        while len(self._history) > 2 and self._history[1][0] <= now - self.rate_window:
            self._history.popleft()

    # ------------------------------------------------------------------ drawing
    def render(self, now: float | None = None, *, bar: bool = True) -> str:
        """The line: description, count, bar and percentage, rate, ETA (or time taken), postfix."""
        now = self.clock() if now is None else now
        unit = f"{self.unit} " if self.unit else ""
        if self.total is not None:
            width = len(str(self.total))
            head = f"{unit}{self.count:>{width}d}/{self.total}"
        else:
            head = f"{unit}{self.count}"
        parts = [f"{self.desc}, {head}" if self.desc else head]
        if bar and self.total:
            frac = min(1.0, max(0.0, self.count / self.total))
            filled = int(frac * self.BAR_WIDTH)
            parts[0] += f" [{'#' * filled}{'.' * (self.BAR_WIDTH - filled)}] {100 * frac:3.0f}%"
        rate = self.rate(now)
        if rate:
            name = self.unit or "it"
            parts.append(f"{rate:.3g} {name}/s" if rate >= 1 else f"{1 / rate:.3g} s/{name}")
        if self.done:
            parts.append(f"done in {format_duration(now - self._start)}")
        elif self.total is not None:
            eta = self.eta(now)
            parts.append("ETA ?" if eta is None else f"ETA {format_duration(eta)}")
        else:
            parts.append(f"{format_duration(now - self._start)} elapsed")
        text = self.fields(self.postfix) if self.postfix else ""
        if text:
            parts.append(text)
        return " | ".join(parts)

    def _maybe_draw(self, force: bool) -> None:
        if not (self.is_tty or self.log_lines):
            return
        now = self.clock()
        if self.is_tty:
            if not (force or self.done) and now - self._last_draw < self.min_interval:
                return
        elif not (force or self.done):
            return
        self._last_draw = now
        self._sample(now)
        self._draw(now)

    def _draw(self, now: float) -> None:
        if self.is_tty:
            line = self.render(now)[: _terminal_width(self.stream) - 1]
            self.stream.write("\r\x1b[2K" + line)
            self._line_open = True
        else:
            self.stream.write(self.render(now, bar=False) + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        """A line that stays (printed above the live line on a terminal); with ``log_lines`` or
        on a terminal only, like the progress itself."""
        if not self.enabled or not (self.is_tty or self.log_lines):
            return
        if self._line_open:
            self.stream.write("\r\x1b[2K")
        self.stream.write(text + "\n")
        if self._line_open:
            self._draw(self.clock())
        self.stream.flush()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Within the block the live line is cleared, so that lines written elsewhere (stdout on
        the same terminal) do not run into it; it is drawn again after."""
        if not (self.enabled and self._line_open):
            yield
            return
        self.stream.write("\r\x1b[2K")
        self.stream.flush()
        self._line_open = False
        try:
            yield
        finally:
            self._draw(self.clock())

    def close(self) -> None:
        """Draw the final state and end the line, which a terminal keeps. Idempotent; messages
        may follow."""
        if self.enabled and self.is_tty and self._line_open:
            self._draw(self.clock())
            self.stream.write("\n")
            self.stream.flush()
        self._line_open = False

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NullProgress(ProgressBar):
    """A progress bar that shows nothing (same methods): what :func:`progress_bar` returns when
    there is nothing to show it on."""

    def __init__(self, total: int | None = None, desc: str = "", **_: Any) -> None:
        super().__init__(total, desc, enabled=False, is_tty=False)


def progress_bar(
    total: int | None,
    desc: str = "",
    *,
    unit: str = "it",
    enabled: bool = True,
    stream: TextIO | None = None,
    **options: Any,
) -> ProgressBar:
    """A :class:`ProgressBar` of ``total`` units on ``stream`` (default stderr) when it is a
    terminal, ``enabled`` and not :func:`silenced`; else a :class:`NullProgress`.
    ``options``: the other keywords of :class:`ProgressBar`."""
    stream = stream if stream is not None else sys.stderr
    is_tty = options.pop("is_tty", None)
    is_tty = _is_terminal(stream) if is_tty is None else is_tty
    if not enabled or _silenced or not (is_tty or options.get("log_lines")):
        return NullProgress(total, desc)
    return ProgressBar(total, desc, unit=unit, stream=stream, is_tty=is_tty, **options)
