"""DICOM Segmentation objects (highdicom) of a mask on a DICOM series' own grid.

The mask is ACDC-labelled ``(x, y, z)`` or ``(x, y, z, t)`` as read by
:func:`lvseg_core.io.load_dicom_series`: ``mask[:, :, z, t].T`` is the
``(rows, columns)`` frame of the image file ``scan.meta["source_files"][z][t]``.

One SEG object holds one phase of one frame of reference: a 3D series gives
one SEG, a cine series one SEG per cardiac phase (each referencing that
phase's images at every slice position), and a series whose slices carry
different FrameOfReferenceUIDs (some exports give every slice its own) one
SEG per frame of reference, since a SEG's frames share one frame of
reference. Each SEG has three BINARY segments with SNOMED CT codes:

=========  ===============  =================================  ======================
label      segment          category / segmented property      anatomic region
=========  ===============  =================================  ======================
1 (RV)     RV cavity        Tissue / SCT 87612001 "Blood"       SCT 53085002 "Right
                                                                ventricle"
2 (Myo)    LV myocardium    Tissue / SCT 49848007 "Left         SCT 87878005 "Left
                            Ventricle Myocardium"               ventricle"
3 (LV)     LV cavity        Tissue / SCT 87612001 "Blood"       SCT 87878005 "Left
                                                                ventricle"
=========  ===============  =================================  ======================

DICOM PS3.16 has no code for a ventricle's cavity (blood pool): its
"Cardiac Structure Segmentation Types" (CID 7152) name only the whole
ventricles (SCT 87878005, 53085002), which would not tell a cavity from its
wall. So a cavity is coded as the standard composes one: segmented property
"Blood" (CID 7191 "Tissue Segmentation Property Types", under category
"Tissue", CID 7150) with the ventricle as its anatomic region (CID 4
"Anatomic Region"); the myocardium has its own code (CID 12305). Every code
is taken from ``pydicom.sr.codedict.codes`` (pydicom's copy of PS3.16), none
typed in. The segmentation algorithm is
identified as LVSeg (family "Artificial Intelligence", DICOM CID 7162) with
its version, model, weights source and weights SHA-256.

Real exports are messy; highdicom is given sanitised copies of the source
headers (the source files are never modified): dates that are not valid DICOM
DA/DT values (e.g. the anonymised ``20120000``) are emptied, and missing
patient and study attributes (PatientName, PatientID, PatientBirthDate,
PatientSex, StudyID, AccessionNumber, ReferringPhysicianName, StudyDate,
StudyTime) are added empty.
"""

from __future__ import annotations

import copy
import datetime as _dt
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from ..errors import LVSegError
from ..labels import LABEL_OF
from ..provenance import Provenance
from ._common import as_path, reason

#: Attributes added empty when a source header lacks them.
_EMPTY_IF_MISSING: tuple[str, ...] = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID",
    "AccessionNumber", "ReferringPhysicianName", "StudyDate", "StudyTime",
)

#: Ending of every written SEG file.
SEG_SUFFIX = "_seg.dcm"


def segment_codes() -> list[tuple[int, str, object, object, object]]:
    """(label value, segment label, category, property type, anatomic region) per
    segment (see the module docstring for why a cavity is "Blood" in a ventricle)."""
    from pydicom.sr.codedict import codes

    sct = codes.SCT
    return [
        (LABEL_OF["RV"], "RV cavity", sct.Tissue, sct.Blood, sct.RightVentricle),
        (LABEL_OF["Myo"], "LV myocardium", sct.Tissue, sct.LeftVentricleMyocardium,
         sct.LeftVentricle),
        (LABEL_OF["LV"], "LV cavity", sct.Tissue, sct.Blood, sct.LeftVentricle),
    ]


def _valid_date(value: str, vr: str) -> bool:
    text = str(value).strip()
    if not text:
        return True
    try:
        if vr == "DA":
            _dt.datetime.strptime(text, "%Y%m%d")
        else:  # DT: at least a full date, then optional time digits
            pydicom.valuerep.DT(text)
            _dt.datetime.strptime(text[:8], "%Y%m%d")
    except (ValueError, TypeError):
        return False
    return True


def sanitised_copy(ds: Dataset) -> tuple[Dataset, list[str]]:
    """A deep copy of ``ds`` that highdicom accepts, and what was changed.

    Invalid DA/DT values (top level) are emptied; the attributes of
    :data:`_EMPTY_IF_MISSING` are added empty when missing.
    """
    out = copy.deepcopy(ds)
    changes: list[str] = []
    for element in list(out):
        if element.VR in ("DA", "DT") and element.VM <= 1:
            raw = element.value
            if raw not in (None, "") and not _valid_date(str(raw), element.VR):
                changes.append(f"{element.keyword} {str(raw)!r} is not a valid date; emptied")
                element.value = ""
    for keyword in _EMPTY_IF_MISSING:
        if keyword not in out:
            setattr(out, keyword, "")
            changes.append(f"{keyword} missing; added empty")
    return out, changes


def _read_sources(files: Sequence[Sequence[str]]) -> list[list[Dataset]]:
    try:
        # Headers only: the SEG needs the images' attributes, not their pixels.
        return [[pydicom.dcmread(str(f), force=True, stop_before_pixels=True) for f in row]
                for row in files]
    except Exception as exc:  # unreadable or vanished source file
        raise LVSegError(f"cannot read the source DICOM images ({reason(exc)})") from None


def _algorithm(provenance: Provenance):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    parameters = {k: v for k, v in (("model", provenance.model),
                                    ("weights_sha256", provenance.weights_sha256)) if v}
    version = f"{provenance.lvseg_version} {provenance.model}".strip()[:64]
    return hd.AlgorithmIdentificationSequence(
        name="LVSeg", family=codes.cid7162.ArtificialIntelligence, version=version,
        source=(provenance.weights or "unknown")[:64], parameters=parameters or None)


def _descriptions(provenance: Provenance):
    import highdicom as hd

    algorithm = _algorithm(provenance)
    return [hd.seg.SegmentDescription(number, label, category, kind,
                                      hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                                      algorithm_identification=algorithm,
                                      anatomic_regions=[region])
            for number, (_, label, category, kind, region)
            in enumerate(segment_codes(), start=1)]


def _binary_frames(frames: np.ndarray) -> np.ndarray:
    """(n, rows, cols) label frames -> (n, rows, cols, 3) binary segment masks."""
    return np.stack([frames == value for value, *_ in segment_codes()], axis=-1).astype(np.uint8)


def seg_groups(files: Sequence[Sequence[str]], datasets: list[list[Dataset]]
               ) -> list[tuple[int, list[int]]]:
    """(phase t, slice indices z) of each SEG to write: one per phase and frame of
    reference, slices in stack order."""
    n_frames = len(files[0])
    groups = []
    for t in range(n_frames):
        by_frame: dict[str, list[int]] = {}
        for z, row in enumerate(datasets):
            by_frame.setdefault(str(row[t].get("FrameOfReferenceUID", "")), []).append(z)
        groups.extend((t, zs) for zs in by_frame.values())
    return groups


def seg_file_names(name: str, groups: list[tuple[int, list[int]]], n_frames: int) -> list[str]:
    """``<name>_seg.dcm``; ``_tNN`` per cine phase, ``_forNN`` per frame of reference."""
    per_phase: dict[int, int] = {}
    names = []
    for t, _ in groups:
        per_phase[t] = per_phase.get(t, 0) + 1
    seen: dict[int, int] = {}
    for t, _ in groups:
        seen[t] = seen.get(t, 0) + 1
        parts = [name]
        if n_frames > 1:
            parts.append(f"t{t:02d}")
        if per_phase[t] > 1:
            parts.append(f"for{seen[t]:02d}")
        names.append("_".join(parts) + SEG_SUFFIX)
    return names


def write_dicom_seg(mask: np.ndarray, source_files: Sequence[Sequence[str | os.PathLike]],
                    out_dir: str | os.PathLike, name: str, provenance: Provenance,
                    overwrite: bool = False) -> tuple[list[Path], list[str]]:
    """Write the DICOM SEG object(s) of ``mask`` into ``out_dir``.

    Args:
        mask: ACDC labels ``(x, y, z)`` or ``(x, y, z, t)`` on the series' grid.
        source_files: ``[z][t]`` image files (``scan.meta["source_files"]``).
        out_dir: folder of the SEG files (created if needed).
        name: output name; files are ``<name>[_tNN][_forNN]_seg.dcm``.
        provenance: algorithm identification (version, model, weights).
        overwrite: replace existing SEG files.

    Returns:
        The written paths and the notes on sanitised source headers.

    Raises:
        LVSegError: the mask does not match the series, a source file cannot
            be read, an output exists (without ``overwrite``) or highdicom
            refuses the data.
    """
    import highdicom as hd

    mask = np.asarray(mask)
    volume = mask if mask.ndim == 4 else mask[..., np.newaxis]
    files = [[str(f) for f in row] for row in source_files]
    if not files or not files[0]:
        raise LVSegError(f"{name}: no source DICOM images for the SEG")
    nz, nt = len(files), len(files[0])
    if volume.ndim != 4 or volume.shape[2:] != (nz, nt):
        raise LVSegError(f"{name}: mask shape {mask.shape} does not match the series "
                         f"({nz} slices x {nt} phases)")
    sources = _read_sources(files)
    rows, cols = int(sources[0][0].Rows), int(sources[0][0].Columns)
    if volume.shape[:2] != (cols, rows):
        raise LVSegError(f"{name}: mask in-plane shape {volume.shape[:2]} does not match "
                         f"the images ({cols} columns x {rows} rows)")
    clean, notes = [], []
    for row in sources:
        clean_row = []
        for ds in row:
            fixed, changes = sanitised_copy(ds)
            clean_row.append(fixed)
            notes.extend(c for c in changes if c not in notes)
        clean.append(clean_row)

    out_dir = as_path(out_dir)
    groups = seg_groups(files, clean)
    targets = [out_dir / n for n in seg_file_names(name, groups, nt)]
    if not overwrite:
        for target in targets:
            if target.exists():
                raise LVSegError(f"{target}: already exists; pass --overwrite to replace it")
    descriptions = _descriptions(provenance)
    series_uid = hd.UID()
    written: list[Path] = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for number, ((t, zs), target) in enumerate(zip(groups, targets), start=1):
            images = [clean[z][t] for z in zs]
            frames = np.stack([volume[:, :, z, t].T for z in zs])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # e.g. one-component names
                seg = hd.seg.Segmentation(
                    source_images=images, pixel_array=_binary_frames(frames),
                    segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                    segment_descriptions=descriptions, series_instance_uid=series_uid,
                    series_number=900, sop_instance_uid=hd.UID(), instance_number=number,
                    manufacturer="LVSeg", manufacturer_model_name=provenance.model or "LVSeg",
                    software_versions=provenance.lvseg_version, device_serial_number="none",
                    series_description="LVSeg segmentation", omit_empty_frames=False)
            seg.save_as(str(target))
            written.append(target)
    except OSError as exc:
        raise LVSegError(f"{out_dir}: cannot write the DICOM SEG ({reason(exc)})") from None
    except (ValueError, TypeError, AttributeError) as exc:
        raise LVSegError(f"{name}: highdicom refused the DICOM SEG ({reason(exc)})") from None
    return written, notes


def write_dicom_seg_for(source: str | os.PathLike, mask: np.ndarray, out_dir: str | os.PathLike,
                        name: str, provenance: Provenance, overwrite: bool = False,
                        series_uid: str | None = None) -> tuple[list[Path], list[str]]:
    """:func:`write_dicom_seg` for a DICOM source given by path: a series folder,
    one ``.dcm`` file or a ``.zip`` of a series (extracted safely into a
    temporary folder for the time of writing). The series (``series_uid``, else
    the one the reader picks) is read again to find its image files; its grid
    must be the mask's.
    """
    import tempfile

    from . import load_scan
    from .archive import MAX_FILES, MAX_TOTAL_BYTES, safe_extract_zip

    source = as_path(source)
    with tempfile.TemporaryDirectory(prefix="lvseg-seg-") as tmp:
        if source.is_file() and source.name.lower().endswith(".zip"):
            scan = load_scan(safe_extract_zip(source, tmp, MAX_TOTAL_BYTES, MAX_FILES), "dicom",
                             series_uid=series_uid)
        else:
            scan = load_scan(source, "dicom", series_uid=series_uid)
        files = scan.meta.get("source_files")
        if not files:
            raise LVSegError(f"{name}: {source.name} is not a DICOM series")
        return write_dicom_seg(mask, files, out_dir, name, provenance, overwrite=overwrite)


def dicom_seg_download(file_name: str, data: bytes, mask: np.ndarray,
                       provenance: Provenance, name: str = "scan",
                       series_uid: str | None = None) -> tuple[str, bytes, str]:
    """The DICOM SEG of an uploaded DICOM scan (``.zip`` of a series or one ``.dcm``),
    as ``(download name, bytes, MIME type)``: one ``.dcm`` file, or a ``.zip`` of
    them when the series needs several (cine phases, frames of reference).

    The upload is written to a private temporary folder and read again; the
    mask must be on its grid.
    """
    import io as _io
    import tempfile
    import zipfile

    from ._common import strip_suffixes

    lower = file_name.lower()
    if not lower.endswith((".zip", ".dcm", ".dicom", ".ima")):
        raise LVSegError(f"{file_name}: a DICOM SEG needs a DICOM upload (.zip or .dcm)")
    suffix = ".zip" if lower.endswith(".zip") else ".dcm"
    stem = strip_suffixes(name or "scan", (".zip", ".dcm")) or "scan"
    with tempfile.TemporaryDirectory(prefix="lvseg-segdl-") as tmp:
        source = Path(tmp) / f"upload{suffix}"
        source.write_bytes(data)
        paths, _ = write_dicom_seg_for(source, mask, Path(tmp) / "out", stem, provenance,
                                       series_uid=series_uid)
        if len(paths) == 1:
            return paths[0].name, paths[0].read_bytes(), "application/dicom"
        buffer = _io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in paths:
                zf.write(path, path.name)
        return f"{stem}{SEG_SUFFIX[:-4]}.zip", buffer.getvalue(), "application/zip"
