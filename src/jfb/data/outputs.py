"""Output paths, checked before any work: a command that will write a file learns at once that
the name is wrong, not after minutes of computation.

``resolve_output(src, dst, force=...)`` completes a name without a suffix and refuses folders,
unknown suffixes, missing or read-only folders, the input itself and, without ``force``, an
existing file; each refusal is a one-line :class:`jfb.errors.DataError` naming the path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from jfb.data.images import WRITE_FORMATS
from jfb.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "output_suffix", "resolve_output"]

#: The suffixes an image result can be written as (see ``jfb.data.images.WRITE_FORMATS``).
IMAGE_SUFFIXES: tuple[str, ...] = tuple(WRITE_FORMATS)


def _same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` both exist and are one file (same device and inode): covers
    symlinks, ``..``, hard links and case-insensitive file systems."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _refuse_folder(path: Path | str) -> None:
    raise DataError(f"output {path} is a folder: give a file name")


def _normalised(suffixes: Iterable[str]) -> tuple[str, ...]:
    """``suffixes`` lower case, each with its dot; ValueError when there is none."""
    allowed = tuple(s.lower() if s.startswith(".") else f".{s.lower()}" for s in suffixes)
    if not allowed:
        raise ValueError("suffixes must name at least one file type")
    return allowed


def output_suffix(src: str | os.PathLike[str], suffixes: Iterable[str] = IMAGE_SUFFIXES) -> str:
    """The suffix a result of ``src`` takes when none is given: ``src``'s own (as spelt) when it
    is one of ``suffixes`` (any case), else ``.png`` (or the first of ``suffixes`` when ``.png``
    is not one)."""
    allowed = _normalised(suffixes)
    suffix = Path(src).suffix
    if suffix.lower() in allowed:
        return suffix
    return ".png" if ".png" in allowed else allowed[0]


def resolve_output(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, force: bool,
                   suffixes: Iterable[str] = IMAGE_SUFFIXES) -> Path:
    """The file to write the result of ``src`` to, for the user's ``dst``; checks only, writes
    nothing.

    Rules, in order:

    - ``dst`` naming a folder (existing, or written with a trailing slash) is refused;
    - ``dst`` without a suffix takes ``src``'s suffix when that is one of ``suffixes``, else
      ``.png`` (or the first of ``suffixes`` when ``.png`` is not one), and the completed name
      is returned (tell the user); a suffix not in ``suffixes`` (any case) is refused, the
      message listing ``suffixes``;
    - the folder must exist, be a folder, and be writable;
    - the file must not be ``src`` itself, however spelt (symlinks, ``..``, hard links, a
      missing suffix), not even with ``force``;
    - an existing file (or link) is refused unless ``force``.

    Args:
        src: the input file.
        dst: the output the user asked for.
        force: allow replacing an existing file other than ``src``.
        suffixes: the endings the caller can write, with or without the dot, e.g.
            ``(*IMAGE_SUFFIXES, ".npy")`` for a command that also writes arrays.

    Raises:
        DataError: one line naming the path refused and why.
    """
    allowed = _normalised(suffixes)
    raw = os.fspath(dst)
    out = Path(raw)
    if raw.endswith(tuple(sep for sep in (os.sep, os.altsep) if sep)) or out.is_dir():
        _refuse_folder(raw)
    if out.suffix == "":
        out = out.with_name(out.name + output_suffix(src, allowed))
        if out.is_dir():
            _refuse_folder(out)
    elif out.suffix.lower() not in allowed:
        raise DataError(f"output {out}: cannot write {out.suffix} files; give one of "
                        f"{', '.join(allowed)}")
    folder = out.parent
    if not folder.exists():
        raise DataError(f"output folder {folder} does not exist (for {out})")
    if not folder.is_dir():
        raise DataError(f"output folder {folder} is not a folder (for {out})")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DataError(f"output folder {folder} is not writable (for {out})")
    if _same_file(Path(src), out):
        raise DataError(f"output {out} is the input file {src}: choose another name")
    if os.path.lexists(out) and not force:
        raise DataError(f"output {out} exists: pass --force to overwrite it")
    return out
