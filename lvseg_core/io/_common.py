"""Small helpers shared by the readers: one-line error reasons and path checks."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ScanReadError

#: Longest reason copied from a library exception into a user message.
_MAX_REASON = 160


def reason(exc: BaseException) -> str:
    """A short one-line description of ``exc`` for a user message."""
    text = " ".join(str(exc).split())
    if not text:
        text = type(exc).__name__
    if len(text) > _MAX_REASON:
        text = text[: _MAX_REASON - 3] + "..."
    return text


def as_path(path: str | os.PathLike) -> Path:
    """``path`` as a :class:`Path` (user ``~`` expanded)."""
    return Path(os.fspath(path)).expanduser()


def require_file(path: Path, what: str) -> None:
    """Raise :class:`ScanReadError` unless ``path`` is an existing file."""
    if not path.exists():
        raise ScanReadError(f"{path.name}: {what} not found ({path})")
    if not path.is_file():
        raise ScanReadError(f"{path.name}: expected a {what}, got a folder ({path})")


def strip_suffixes(name: str, suffixes: tuple[str, ...]) -> str:
    """``name`` without the first matching suffix (case-insensitive)."""
    lower = name.lower()
    for suffix in suffixes:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name
