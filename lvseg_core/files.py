"""Writing files so that a reader never sees a half-written one.

A file is written to a temporary name in its own folder and renamed over the
target when complete (``os.replace`` is atomic on one file system); on any
error the temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import LVSegError


@contextmanager
def replacing(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` (ending in ``suffix``) to write to; it replaces
    ``path`` when the block ends without an error. Creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically.

    Raises:
        LVSegError: the file or its folder cannot be written (one line).
    """
    path = Path(path)
    try:
        with replacing(path) as tmp:
            with open(tmp, "w", encoding="utf-8", newline="") as handle:
                handle.write(text)
    except OSError as err:
        raise LVSegError(f"{path}: cannot write ({err.strerror or err})") from None
    return path


def copy_file(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Copy ``source`` to ``target`` atomically (contents only, as :func:`shutil.copyfile`)."""
    with replacing(target) as tmp:
        shutil.copyfile(source, tmp)
    return Path(target)
