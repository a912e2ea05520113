"""Scans and label maps given as bytes (an upload), read through :func:`load_scan`.

The bytes are written to a private temporary folder under a sanitised name, so
every format and every safety check of the file readers applies (zips go
through the safe extraction: no paths outside the folder, links, bombs).
The size limit is :func:`lvseg_core.settings.max_upload_bytes`.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np

from .. import settings
from ..errors import ScanReadError
from ..labels import check_labels
from ..scan import Scan

#: File endings accepted for an uploaded scan (without the dot).
SCAN_TYPES: tuple[str, ...] = ("nii", "gz", "zip", "dcm", "png", "jpg", "jpeg")

#: File endings accepted for an uploaded ground truth.
LABEL_TYPES: tuple[str, ...] = ("nii", "gz")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_file_name(name: str, default: str = "upload") -> str:
    """The base name of an uploaded file, reduced to ``[A-Za-z0-9._-]``."""
    base = re.split(r"[\\/]", str(name or ""))[-1]
    base = _UNSAFE.sub("_", base).lstrip(".")
    return base[:120] or default


def _check_size(name: str, data: bytes) -> None:
    if len(data) == 0:
        raise ScanReadError(f"{name}: the file is empty")
    limit = settings.max_upload_bytes()
    if len(data) > limit:
        raise ScanReadError(f"{name}: {len(data) / 2**20:.0f} MB is over the upload limit of "
                            f"{limit / 2**20:.0f} MB")


def load_uploaded_scan(name: str, data: bytes, spacing_mm: float | None = None,
                       series_uid: str | None = None) -> Scan:
    """Read an uploaded scan (NIfTI 3D/4D, DICOM series as .zip, .dcm, PNG/JPEG)
    with :func:`~lvseg_core.io.load_scan`.

    Args:
        name: the file name as uploaded (only its ending and stem are used).
        data: the file content.
        spacing_mm: pixel size of a PNG/JPEG picture (None: 1 mm, flagged).
        series_uid: the DICOM series to read from a zip that holds several.

    Raises:
        ScanReadError: empty, too large, unsupported or unreadable
            (:class:`~lvseg_core.errors.SeriesChoiceError` when several
            series could be meant).
    """
    clean = safe_file_name(name, "scan")
    _check_size(clean, data)
    with tempfile.TemporaryDirectory(prefix="lvseg-upload-") as tmp:
        path = Path(tmp) / clean
        path.write_bytes(data)
        from . import load_scan

        scan = load_scan(path, spacing_mm=spacing_mm, series_uid=series_uid)
    scan.source = f"upload:{clean}"
    return scan


def load_uploaded_label(name: str, data: bytes, like: Scan) -> np.ndarray:
    """Read an uploaded ground-truth label map for ``like``.

    Returns uint8 labels ``(x, y, z)``; for a cine scan either one frame
    ``(x, y, z)`` or the whole series ``(x, y, z, t)`` (same shape as the scan).

    Raises:
        ScanReadError: unreadable, wrong shape or label values outside 0..3.
    """
    clean = safe_file_name(name, "label.nii.gz")
    _check_size(clean, data)
    with tempfile.TemporaryDirectory(prefix="lvseg-upload-") as tmp:
        path = Path(tmp) / clean
        path.write_bytes(data)
        from .nifti import load_label, load_nifti

        if like.is_cine:
            series = load_nifti(path)
            if series.array.shape == like.array.shape:
                return check_labels(series.array, clean)
        frame = like.frame(0) if like.is_cine else like
        return load_label(path, frame)
