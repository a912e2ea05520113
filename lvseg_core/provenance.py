"""Where a result came from: LVSeg version, model, weights and their SHA-256, date."""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from .hashing import WEIGHTS_FILE, read_sha256


@lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime: float) -> str:
    return read_sha256(path)


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file, cached by path, size and modification time;
    ``""`` when the file cannot be read."""
    path = Path(path)
    try:
        stat = path.stat()
        return _sha256(str(path), stat.st_size, stat.st_mtime)
    except OSError:
        return ""


@dataclass(frozen=True)
class Provenance:
    """Facts that identify how a result was made (all strings, for reports and DICOM)."""

    lvseg_version: str
    model: str
    weights: str
    weights_sha256: str
    created: str

    @classmethod
    def of(cls, segmenter=None, model: str = "", weights: str = "") -> "Provenance":
        """Provenance of a :class:`~lvseg_core.inference.Segmenter` (or of the
        given model / weights names when there is none, e.g. expert labels)."""
        from . import __version__

        sha = ""
        if segmenter is not None:
            model = segmenter.architecture
            info = getattr(segmenter, "weights", None)
            weights = info.description if info is not None else "in-memory"
            if info is not None:
                sha = file_sha256(Path(info.folder) / WEIGHTS_FILE)
        created = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        return cls(__version__, model, weights, sha, created)

    def as_dict(self) -> dict[str, str]:
        return asdict(self)
