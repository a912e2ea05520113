"""Small helpers shared by the readers: one-line error reasons and path checks."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import ScanReadError, one_line

#: Longest reason copied from a library exception into a user message.
_MAX_REASON = 160


def reason(exc: BaseException) -> str:
    """A short one-line description of ``exc`` for a user message."""
    return one_line(exc, _MAX_REASON)


def as_path(path: str | os.PathLike) -> Path:
    """``path`` as a :class:`Path` (user ``~`` expanded)."""
    return Path(os.fspath(path)).expanduser()


def require_file(path: Path, what: str) -> None:
    """Raise :class:`ScanReadError` unless ``path`` is an existing file."""
    if not path.exists():
        raise ScanReadError(f"{path.name}: {what} not found ({path})")
    if path.is_dir():
        raise ScanReadError(f"{path.name}: expected a {what}, got a folder ({path})")
    if not path.is_file():
        raise ScanReadError(f"{path.name}: expected a {what}, got a special file "
                            "(not a regular file)")


def strip_suffixes(name: str, suffixes: tuple[str, ...]) -> str:
    """``name`` without the first matching suffix (case-insensitive)."""
    lower = name.lower()
    for suffix in suffixes:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def skip_reason(path: Path, root: Path) -> str:
    """Why a file met while walking the input folder ``root`` (resolved) must not
    be opened, or "" when it may: a link leading outside ``root`` (reading it
    would read outside the input), a broken link, or a FIFO, socket or device
    (opening one can block for ever)."""
    try:
        target = path.resolve(strict=True)
        mode = os.stat(target).st_mode
    except (OSError, RuntimeError):
        return "broken link or unreadable entry"
    if path.is_symlink() and target != root and root not in target.parents:
        return "symbolic link to a place outside the input folder"
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        return "not a regular file (FIFO, socket or device)"
    return ""
