"""File digests that identify weights and builds."""

from __future__ import annotations

import os

#: Weights file whose hash identifies a model.
WEIGHTS_FILE = "model.safetensors"


def read_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file, read now in 1 MiB blocks (no cache)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
