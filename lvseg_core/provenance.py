"""Where a result came from: LVSeg version, model, weights and their SHA-256, date."""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass


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
                try:
                    sha = info.sha256
                except OSError:
                    sha = ""
        created = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        return cls(__version__, model, weights, sha, created)

    def as_dict(self) -> dict[str, str]:
        return asdict(self)
