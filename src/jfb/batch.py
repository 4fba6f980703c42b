"""Many image files restored in one run (`jfb restore|deblur a.png b.jpg ... -o outdir/`, or a
folder of them): the model loaded once, each result named after its input in the output folder.

Every output path is planned and checked before any work: two inputs that would write one file,
or an output that is one of the inputs (however spelt), refuse the whole run. An output that
exists is skipped unless ``force``; results are written atomically (:mod:`jfb.atomic`), so a run
that was interrupted is resumed by running it again. A file that fails (unreadable, corrupt, the
wrong size for the mask...) is reported in one line and the others are still done.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from jfb.data import IMAGE_EXTENSIONS, IMAGE_SUFFIXES, output_suffix, resolve_output
from jfb.deblur import (
    blur_operator,
    load_restorer,
    read_mask,
    read_measurement,
    restore_to_file,
)
from jfb.errors import INPUT_ERRORS, DataError, TrustWarning, one_line
from jfb.physics import LinearOperator
from jfb.progress import ProgressBar, progress_bar
from jfb.tasks import Task

__all__ = ["BatchResult", "is_batch", "restore_images"]

#: What a folder given as input contributes: its files with these endings (any case).
INPUT_SUFFIXES: tuple[str, ...] = (*(f".{e}" for e in IMAGE_EXTENSIONS), ".npy")


_SEPARATORS = tuple(sep for sep in (os.sep, os.altsep) if sep)


@dataclass
class BatchResult:
    """What a run of :func:`restore_images` did: the files written, the outputs skipped because
    they existed, and the inputs that failed with their one-line reasons."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def summary(self) -> str:
        """``"3 done, 1 skipped (output exists), 1 failed"``."""
        skipped = f"{len(self.skipped)} skipped"
        if self.skipped:
            skipped += " (output exists)" if len(self.skipped) == 1 else " (outputs exist)"
        return f"{len(self.written)} done, {skipped}, {len(self.failed)} failed"


def is_batch(inputs: Iterable[str | os.PathLike[str]], output: str | os.PathLike[str]) -> bool:
    """Whether ``inputs -o output`` is a batch: several inputs, an input folder, or an output
    spelt as a folder (``out/``). One input file with ``-o`` anything else is
    :func:`jfb.deblur.restore_file`'s (an existing folder spelt without its slash is refused
    there, as it always was)."""
    inputs = list(inputs)
    return (len(inputs) != 1 or Path(inputs[0]).is_dir()
            or os.fspath(output).endswith(_SEPARATORS))


def input_files(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The files ``inputs`` name, in order, each once: a file as given (even one that does not
    exist: it fails in its turn), a folder as its image and ``.npy`` files, by name (hidden ones
    left out). DataError when that is none."""
    given = [Path(item) for item in inputs]
    files: list[Path] = []
    seen: set[Path] = set()
    for path in given:
        found = [path]
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                           and p.suffix.lower() in INPUT_SUFFIXES)
        for p in found:
            key = p.resolve()
            if key not in seen:
                seen.add(key)
                files.append(p)
    if not files:
        raise DataError(f"no image files in {', '.join(map(str, given)) or 'no input'}")
    return files


def plan_outputs(files: list[Path], out_dir: str | os.PathLike[str], *,
                 suffixes: Iterable[str] = IMAGE_SUFFIXES) -> list[Path]:
    """The output of each input file in ``out_dir`` (created if missing): its name, with its
    suffix when that can be written, else ``.png`` (:func:`jfb.data.output_suffix`). Checks
    only: DataError when ``out_dir`` is not a folder, two inputs would write one file, or an
    output is one of the inputs, before anything is read."""
    folder = Path(out_dir)
    suffixes = tuple(suffixes)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"output {folder} is a file: the results of several inputs go into a "
                        "folder")
    if (not folder.exists() and output_suffix(folder, suffixes) == folder.suffix
            and not os.fspath(out_dir).endswith(_SEPARATORS)):
        raise DataError(f"output {folder} names a file, but several inputs go into a folder "
                        f"(write {folder}{os.sep} to create a folder of that name)")
    outputs = [folder / (src.stem + output_suffix(src, suffixes)) for src in files]
    first: dict[Path, Path] = {}
    for src, dst in zip(files, outputs, strict=True):
        key = dst.resolve()
        if key in first:
            raise DataError(f"{first[key]} and {src} would both be written to {dst}: give them "
                            "other names or folders")
        first[key] = src
    known = {key: src for src in files for key in _identities(src)}
    for dst in outputs:
        src = next((known[key] for key in _identities(dst) if key in known), None)
        if src is not None:
            raise DataError(f"output {dst} is the input file {src}: write into another folder")
    folder.mkdir(parents=True, exist_ok=True)
    return [resolve_output(src, dst, force=True, suffixes=suffixes)
            for src, dst in zip(files, outputs, strict=True)]


def _identities(path: Path) -> list[object]:
    """What makes ``path`` one file however spelt: its resolved path, and its device and inode
    when it exists (hard links, case-insensitive file systems)."""
    keys: list[object] = [path.resolve()]
    try:
        st = os.stat(path)
    except OSError:
        return keys
    return [*keys, (st.st_dev, st.st_ino)]


def restore_images(
    inputs: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    op: LinearOperator | Callable[[Task], LinearOperator] | None = None,
    kernel: str | None = None,
    padding: str | None = None,
    mask: str | os.PathLike[str] | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
    noise: float | str | None = None,
    max_memory: float | None = None,
    tile: int | None = None,
    margin: int | None = None,
    device: str = "auto",
    force: bool = False,
    report: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
    error: Callable[[str], None] | None = None,
    progress: bool = False,
) -> BatchResult:
    """Restore every file ``inputs`` names (files, or folders of image and ``.npy`` files) into
    the folder ``out_dir``, each as :func:`jfb.deblur.restore_file` does, with one model loaded
    once; return what was written, skipped and failed.

    Each output is ``out_dir`` / the input's name (``.png`` for a suffix that cannot be
    written, such as ``.npy``); all are checked before any work (see :func:`plan_outputs`). An
    existing output is skipped unless ``force``, so a run interrupted is finished by running it
    again. A file that fails with an input error (:data:`jfb.errors.INPUT_ERRORS`) is given
    to ``error`` as one line naming it, and the others are still done; a failure to load the
    model stops the run. ``report`` receives ``written: PATH``, ``skipped: PATH exists`` and the
    notes on each file, ``warn`` the warnings that a result may not be trusted, each line
    naming its file. ``progress`` shows one progress bar over the files, with each file's
    tiles. The other keywords are :func:`jfb.deblur.restore_file`'s; ``mask`` serves every file.
    """
    say = report if report is not None else (lambda _msg: None)
    files = input_files([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)
    outputs = plan_outputs(files, out_dir)
    result = BatchResult()
    todo = []
    for src, dst in zip(files, outputs, strict=True):
        if os.path.lexists(dst) and not force:
            result.skipped.append(dst)
            say(f"skipped: {dst} exists")
        else:
            todo.append((src, dst))
    if not todo:
        return result
    observed = read_mask(mask)
    loaded = load_restorer(checkpoint, op=blur_operator(kernel, padding, op=op),
                           max_iter=max_iter, tol=tol, device=device)
    with progress_bar(len(todo), "restoring", unit="file", enabled=progress) as bar:
        for src, dst in todo:
            bar.set_description(f"restoring {src.name}")
            bar.update(0, force=True, tile=None)
            named = _Lines(bar, src.name)
            try:
                photo, y = read_measurement(src, dst, named.plain(report))
                restore_to_file(loaded, src, photo, y, dst, noise=noise, mask=observed,
                                say=named.plain(report), max_memory=max_memory, tile=tile,
                                margin=margin, report=named.prefixed(report),
                                warn=named.prefixed(warn or _trust_warning), progress=False,
                                on_tile=lambda done, n: bar.update(0, force=True,
                                                                   tile=f"{done}/{n}"))
            except INPUT_ERRORS as exc:
                line = one_line(exc)
                line = line if str(src) in line else f"{src}: {line}"
                result.failed.append((src, line))
                named.plain(error)(line)
            else:
                result.written.append(dst)
                named.plain(report)(f"written: {dst}")
            bar.update(1, tile=None)
    return result


def _trust_warning(line: str) -> None:
    """``line`` as a :class:`jfb.errors.TrustWarning` (what ``restore_tensor`` does without
    ``warn``)."""
    warnings.warn(line, TrustWarning, stacklevel=2)


class _Lines:
    """The callbacks of one file of a batch: each line given to the caller's function with the
    progress bar's live line cleared, and, for :meth:`prefixed`, after the file's name."""

    def __init__(self, bar: ProgressBar, name: str) -> None:
        self.bar = bar
        self.name = name

    def plain(self, to: Callable[[str], None] | None) -> Callable[[str], None]:
        """``to`` (None: nothing) called with the bar out of the way."""
        def send(line: str) -> None:
            if to is not None:
                with self.bar.paused():
                    to(line)
        return send

    def prefixed(self, to: Callable[[str], None] | None) -> Callable[[str], None] | None:
        """``to`` called with ``NAME: line``; None for None."""
        if to is None:
            return None
        send = self.plain(to)
        return lambda line: send(f"{self.name}: {line}")
