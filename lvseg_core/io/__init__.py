"""Scan input/output: one entry point, :func:`load_scan`, for every format.

Formats: NIfTI (``.nii``, ``.nii.gz``), a folder of DICOM files (one series),
a single DICOM file (``.dcm``), a zip archive of a DICOM series (or of one
NIfTI file), and 2D pictures (PNG, JPEG, BMP, TIFF). Every scan has a float32
array ``(x, y, z)`` or ``(x, y, z, t)`` and an affine in mm (RAS+).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import ScanReadError
from ..scan import Scan
from ._common import as_path
from .archive import MAX_FILES, MAX_TOTAL_BYTES, safe_extract_zip
from .dicom import load_dicom_file, load_dicom_series, save_dicom_series
from .image import IMAGE_SUFFIXES, load_image
from .nifti import (NIFTI_SUFFIXES, is_nifti_name, load_label, load_nifti, nifti_stem,
                    save_mask)

__all__ = [
    "DICOM_SUFFIXES", "IMAGE_SUFFIXES", "KINDS", "LABEL_ENDINGS", "NIFTI_SUFFIXES",
    "SUPPORTED_SUFFIXES", "is_scan_file", "load_dicom_file", "load_dicom_series",
    "load_image", "load_label", "load_nifti", "load_scan", "safe_extract_zip",
    "save_dicom_series", "save_mask",
]

#: Endings of single DICOM files (lower case).
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".ima")
#: Every file ending :func:`load_scan` recognises.
SUPPORTED_SUFFIXES: tuple[str, ...] = (*NIFTI_SUFFIXES, ".zip", *DICOM_SUFFIXES,
                                       *IMAGE_SUFFIXES)
#: Values accepted for ``load_scan(kind=...)``.
KINDS: tuple[str, ...] = ("nifti", "dicom", "zip", "image")
#: NIfTI name endings (before ``.nii[.gz]``) of label maps, not scans.
LABEL_ENDINGS: tuple[str, ...] = ("_gt", "_seg")


def _kind_of(path: Path) -> str | None:
    """The format implied by ``path``'s name, or None."""
    name = path.name.lower()
    if is_nifti_name(name):
        return "nifti"
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(DICOM_SUFFIXES):
        return "dicom"
    if name.endswith(IMAGE_SUFFIXES):
        return "image"
    return None


def _load_zip(path: Path, series_uid: str | None) -> Scan:
    """A scan from a zip: its only NIfTI file, else its DICOM series."""
    stem = path.name[:-4] if path.name.lower().endswith(".zip") else path.stem
    with tempfile.TemporaryDirectory(prefix="lvseg-zip-") as tmp:
        root = safe_extract_zip(path, tmp, MAX_TOTAL_BYTES, MAX_FILES)
        files = [p for p in root.rglob("*")
                 if p.is_file() and not any(part.startswith(".") or part == "__MACOSX"
                                            for part in p.relative_to(root).parts)]
        niftis = [p for p in files if is_nifti_name(p.name)]
        if len(niftis) == 1 and len(files) == 1:
            try:
                scan = load_nifti(niftis[0])
            except ScanReadError as exc:
                raise ScanReadError(f"{path.name}/{exc}") from None
            scan.name = nifti_stem(niftis[0].name)
        else:
            scan = load_dicom_series(root, series_uid, name=path.name)
            scan.name = stem
    scan.source = str(path)
    scan.meta["archive"] = str(path)
    return scan


def load_scan(path: str | os.PathLike, kind: str | None = None, *,
              series_uid: str | None = None, spacing_mm: float | None = None) -> Scan:
    """Read a scan from a file or a DICOM folder.

    ``kind`` (one of :data:`KINDS`) overrides the format guessed from the file
    ending, e.g. ``kind="dicom"`` for an extension-less DICOM file.
    ``series_uid`` picks one series of a DICOM folder or zip; ``spacing_mm``
    is the pixel size of a 2D picture. Returns a :class:`Scan` with a float32
    ``(x, y, z)`` or ``(x, y, z, t)`` array and an affine in mm.
    """
    path = as_path(path)
    if kind is not None and kind not in KINDS:
        raise ScanReadError(f"{path.name}: unknown scan kind {kind!r}; "
                            f"use one of {', '.join(KINDS)}")
    if not path.exists():
        raise ScanReadError(f"{path.name or path}: file or folder not found ({path})")
    if path.is_dir():
        if kind not in (None, "dicom"):
            raise ScanReadError(f"{path.name}: is a folder; only a DICOM series can be "
                                f"read from a folder, not {kind}")
        return load_dicom_series(path, series_uid)
    kind = kind or _kind_of(path)
    if kind == "nifti":
        return load_nifti(path)
    if kind == "zip":
        return _load_zip(path, series_uid)
    if kind == "dicom":
        return load_dicom_file(path)
    if kind == "image":
        return load_image(path, spacing_mm)
    raise ScanReadError(f"{path.name}: unsupported file type; supported: "
                        f"{', '.join(SUPPORTED_SUFFIXES)} or a folder of DICOM files")


def is_scan_file(path: str | os.PathLike) -> bool:
    """True for a NIfTI or picture file that is a scan (not hidden, not a
    ``*_gt``/``*_seg`` label map); used to pick scans from a folder."""
    path = as_path(path)
    name = path.name
    if not name or name.startswith(".") or path.is_dir():
        return False
    lower = name.lower()
    if is_nifti_name(lower):
        return not nifti_stem(lower).endswith(LABEL_ENDINGS)
    return lower.endswith(IMAGE_SUFFIXES)
