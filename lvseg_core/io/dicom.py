"""DICOM series reading and writing (classic one-image-per-file MR series).

Arrays are ``(x, y, z)`` or ``(x, y, z, t)``: ``x`` runs along the image
columns (first ImageOrientationPatient cosine), ``y`` along the rows, ``z``
along the slice normal, ``t`` over cardiac phases. Affines are in mm, nibabel
RAS+ convention (the DICOM LPS affine with its first two rows negated).

Several series in one folder: the series with the most images is read; the
others are listed in ``meta["skipped_series"]``. When two or more series tie
for most images a :class:`ScanReadError` lists them; pass ``series_uid`` to
choose.
"""

from __future__ import annotations

import datetime as _dt
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import format_number_as_ds

from ..errors import LVSegError, ScanReadError, SeriesChoiceError
from ..policy import check_data_size
from ..scan import Scan
from ._common import as_path, reason, require_file, skip_reason, strip_suffixes

#: Media Storage SOP class of a DICOMDIR index file.
_DICOMDIR_UID = "1.2.840.10008.1.3.10"
#: Most files looked at in one folder tree.
MAX_FILES = 50_000
#: Images closer than this along the slice normal share a slice position (mm).
_POSITION_TOL = 0.01
#: Allowed relative deviation of a slice gap from the median gap.
_GAP_TOL = 0.1
#: Header attributes kept in ``meta["header"]`` (body size for indexed values,
#: patient and study facts for reports).
HEADER_FACTS: tuple[str, ...] = ("PatientName", "PatientID", "PatientSex", "PatientSize",
                                 "PatientWeight", "StudyDate", "StudyDescription",
                                 "SeriesDescription", "Manufacturer")
#: LPS <-> RAS: negate the first two world axes.
_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])
_PYDICOM_MAJOR = int(pydicom.__version__.split(".")[0])
#: Threads that read the files of one series (file I/O and decompression
#: overlap; parsing holds the GIL). Fewer than 8 files are read in turn.
READ_THREADS = 4

_T = TypeVar("_T")
_R = TypeVar("_R")


def _read_all(fn: Callable[[_T], _R], items: Iterable[_T]) -> Iterator[_R]:
    """``map(fn, items)`` in order, on :data:`READ_THREADS` threads."""
    items = list(items)
    if len(items) < 8:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="dicom") as pool:
        yield from pool.map(fn, items)


@dataclass
class _Image:
    """Geometry and ordering facts of one DICOM image file."""

    path: Path
    label: str
    rows: int
    cols: int
    row_cos: np.ndarray  # direction of increasing column index (x)
    col_cos: np.ndarray  # direction of increasing row index (y)
    ipp: np.ndarray  # position of the first voxel (mm, LPS)
    spacing: tuple[float, float]  # (between rows -> y, between columns -> x) mm
    trigger: float | None
    instance: int | None
    thickness: float | None


# ---------------------------------------------------------------- reading


def _looks_like_raw_dicom(path: Path) -> bool:
    """True for a preamble-less DICOM file starting with a group 0x0008 tag."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return len(head) == 4 and head[:2] == b"\x08\x00" and head[3] == 0


def _read_header(path: Path, label: str) -> Dataset | None:
    """The header of a DICOM file (no pixels), or None for a non-DICOM file."""
    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True)
    except InvalidDicomError:
        if not _looks_like_raw_dicom(path):
            return None
        try:
            return pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
        except Exception:
            return None
    except Exception as exc:  # a DICOM file that is truncated or corrupt
        raise ScanReadError(f"{label}: corrupt DICOM file ({reason(exc)})") from None


def _candidate_files(folder: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """Regular files under ``folder`` (recursive), skipping hidden ones and
    DICOMDIR; also the skipped entries ``(relative path, reason)``: FIFOs and
    other special files (opening one would block) and links leading outside
    ``folder`` (linked folders are not descended)."""
    found: list[Path] = []
    skipped: list[tuple[str, str]] = []
    root_dir = folder.resolve()
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__MACOSX")
        for name in sorted(files):
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            path = Path(root) / name
            why = skip_reason(path, root_dir)
            if why:
                skipped.append((path.relative_to(folder).as_posix(), why))
                continue
            found.append(path)
            if len(found) > MAX_FILES:
                raise ScanReadError(f"{folder.name}: more than {MAX_FILES} files; "
                                    "point to the folder of one DICOM series")
    return found, skipped


def _is_image(ds: Dataset) -> bool:
    """True for a DICOM image (not a DICOMDIR, report or presentation state)."""
    sop = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", ""))
    return sop != _DICOMDIR_UID and "Rows" in ds and "Columns" in ds


def _floats(ds: Dataset, keyword: str, count: int, label: str) -> np.ndarray:
    """A multi-valued numeric tag as ``count`` finite floats."""
    value = ds.get(keyword)
    if value is None or value == "":
        raise ScanReadError(f"{label}: missing DICOM geometry tag {keyword}")
    items = [value] if isinstance(value, (str, bytes, float, int)) else list(value)
    try:
        values = np.array([float(v) for v in items], dtype=np.float64)
    except (TypeError, ValueError):
        raise ScanReadError(f"{label}: unreadable DICOM tag {keyword} = {value!r}") from None
    if values.size != count or not np.isfinite(values).all():
        raise ScanReadError(f"{label}: DICOM tag {keyword} must hold {count} numbers, "
                            f"got {list(values)}")
    return values


def _optional_float(ds: Dataset, keyword: str) -> float | None:
    """A single numeric tag as float, or None when absent or unreadable."""
    value = ds.get(keyword)
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def _image_facts(path: Path, ds: Dataset, label: str) -> _Image:
    """Validate one image header and extract its geometry."""
    frames = _optional_float(ds, "NumberOfFrames")
    if frames is not None and frames > 1:
        raise ScanReadError(f"{label}: multi-frame (enhanced) DICOM is not supported; "
                            "export the series as one image per file")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise ScanReadError(f"{label}: colour DICOM images are not supported")
    iop = _floats(ds, "ImageOrientationPatient", 6, label)
    ipp = _floats(ds, "ImagePositionPatient", 3, label)
    spacing = _floats(ds, "PixelSpacing", 2, label)
    if np.any(spacing <= 0):
        raise ScanReadError(f"{label}: PixelSpacing must be positive, got {list(spacing)}")
    row_cos, col_cos = iop[:3], iop[3:]
    norms = np.linalg.norm(row_cos), np.linalg.norm(col_cos)
    if min(norms) < 1e-6:
        raise ScanReadError(f"{label}: ImageOrientationPatient has a zero direction")
    row_cos, col_cos = row_cos / norms[0], col_cos / norms[1]
    if abs(float(row_cos @ col_cos)) > 1e-3:
        raise ScanReadError(f"{label}: ImageOrientationPatient directions are not "
                            "perpendicular")
    instance = _optional_float(ds, "InstanceNumber")
    rows, cols = int(ds.Rows), int(ds.Columns)
    if rows < 1 or cols < 1:
        raise ScanReadError(f"{label}: empty DICOM image ({rows} x {cols})")
    return _Image(path, label, rows, cols, row_cos, col_cos, ipp,
                  (float(spacing[0]), float(spacing[1])),
                  _optional_float(ds, "TriggerTime"),
                  None if instance is None else int(instance),
                  _optional_float(ds, "SliceThickness"))


def _series_key(ds: Dataset) -> str:
    return str(ds.get("SeriesInstanceUID", "") or "")


def _describe(uid: str, entries: list[tuple[Path, Dataset]]) -> str:
    desc = str(entries[0][1].get("SeriesDescription", "") or "").strip()
    return f"{uid or '(no UID)'} '{desc}' ({len(entries)} images)"


def _choose_series(groups: dict[str, list[tuple[Path, Dataset]]], series_uid: str | None,
                   label: str) -> tuple[str, list[dict]]:
    """Pick the series to read; returns its UID and a summary of the others."""
    if series_uid is not None:
        if series_uid not in groups:
            listed = "; ".join(_describe(u, e) for u, e in groups.items())
            raise ScanReadError(f"{label}: series {series_uid} not found; "
                                f"available: {listed}")
        chosen = series_uid
    else:
        most = max(len(e) for e in groups.values())
        best = [u for u, e in groups.items() if len(e) == most]
        if len(best) > 1:
            listed = "; ".join(_describe(u, groups[u]) for u in best)
            raise SeriesChoiceError(
                f"{label}: {len(best)} DICOM series have {most} images each, choose one "
                f"with --series-uid (series_uid): {listed}",
                [{"series_uid": u, "n_images": most,
                  "description": str(groups[u][0][1].get("SeriesDescription", "") or "")}
                 for u in best])
        chosen = best[0]
    skipped = [{"series_uid": u,
                "description": str(e[0][1].get("SeriesDescription", "") or ""),
                "n_images": len(e)} for u, e in groups.items() if u != chosen]
    return chosen, skipped


def _check_consistent(images: list[_Image]) -> None:
    """All images of a series must share size, orientation and pixel spacing."""
    ref = images[0]
    for im in images[1:]:
        if (im.rows, im.cols) != (ref.rows, ref.cols):
            raise ScanReadError(f"{im.label}: image size {im.rows} x {im.cols} differs "
                                f"from {ref.label} ({ref.rows} x {ref.cols})")
        if (np.abs(im.row_cos - ref.row_cos).max() > 1e-3
                or np.abs(im.col_cos - ref.col_cos).max() > 1e-3):
            raise ScanReadError(f"{im.label}: image orientation differs from {ref.label}; "
                                "the series is not one stack of parallel slices")
        if not np.allclose(im.spacing, ref.spacing, rtol=1e-3, atol=1e-4):
            raise ScanReadError(f"{im.label}: pixel spacing {im.spacing} differs from "
                                f"{ref.label} {ref.spacing}")


def _group_positions(images: list[_Image], normal: np.ndarray,
                     label: str) -> tuple[list[list[_Image]], np.ndarray]:
    """Images grouped by slice position (ascending along ``normal``), each group
    sorted by TriggerTime (else InstanceNumber); also the group positions."""
    pos = np.array([im.ipp @ normal for im in images])
    order = np.argsort(pos, kind="stable")
    groups: list[list[_Image]] = []
    starts: list[float] = []
    for i in order:
        if not groups or pos[i] - starts[-1] > _POSITION_TOL:
            groups.append([])
            starts.append(float(pos[i]))
        groups[-1].append(images[i])
    use_trigger = all(im.trigger is not None for im in images)

    def key(im: _Image) -> tuple:
        return (im.trigger if use_trigger else 0.0,
                im.instance if im.instance is not None else 0, str(im.path))

    for group in groups:
        group.sort(key=key)
    counts = sorted({len(g) for g in groups})
    if len(counts) > 1:
        raise ScanReadError(f"{label}: slice positions have different numbers of "
                            f"images ({', '.join(map(str, counts))}); the cine series "
                            "is incomplete or mixes acquisitions")
    return groups, np.array(starts)


def _stack_affine(groups: list[list[_Image]], positions: np.ndarray, normal: np.ndarray,
                  label: str) -> tuple[np.ndarray, dict]:
    """The RAS affine of a sorted stack, checking even slice spacing."""
    ref = groups[0][0]
    meta: dict = {}
    nz = len(groups)
    first = ref.ipp
    if nz > 1:
        gaps = np.diff(positions)
        median = float(np.median(gaps))
        if np.abs(gaps - median).max() > _GAP_TOL * median:
            raise ScanReadError(f"{label}: uneven slice spacing ({gaps.min():.3g} to "
                                f"{gaps.max():.3g} mm); slices are missing or the "
                                "series mixes stacks")
        step = (groups[-1][0].ipp - first) / (nz - 1)
        expected = first + np.arange(nz)[:, None] * step
        actual = np.array([g[0].ipp for g in groups])
        tol = 0.2 * min(ref.spacing[0], ref.spacing[1], median)
        if np.abs(actual - expected).max() > tol:
            raise ScanReadError(f"{label}: slice positions do not form one straight "
                                "stack")
    else:
        thickness = ref.thickness if ref.thickness and ref.thickness > 0 else None
        if thickness is None:
            thickness = 1.0
            meta["assumed_slice_thickness"] = True
        step = normal * thickness
    lps = np.eye(4)
    lps[:3, 0] = ref.row_cos * ref.spacing[1]
    lps[:3, 1] = ref.col_cos * ref.spacing[0]
    lps[:3, 2] = step
    lps[:3, 3] = first
    return _FLIP @ lps, meta


def _pixels(im: _Image) -> np.ndarray:
    """Pixel values of one image after RescaleSlope/Intercept, shape ``(x, y)``."""
    try:
        ds = pydicom.dcmread(str(im.path), force=True)
        raw = ds.pixel_array
    except Exception as exc:  # missing handler for a compressed syntax, truncated...
        raise ScanReadError(f"{im.label}: cannot read DICOM pixel data ({reason(exc)})") from None
    if raw.shape != (im.rows, im.cols):
        raise ScanReadError(f"{im.label}: pixel data shape {raw.shape} does not match "
                            f"Rows x Columns {im.rows} x {im.cols}")
    slope = _optional_float(ds, "RescaleSlope")
    intercept = _optional_float(ds, "RescaleIntercept")
    values = raw.astype(np.float32)
    if slope is not None and slope != 1.0:
        values *= np.float32(slope)
    if intercept:
        values += np.float32(intercept)
    return values.T


def _load_images(entries: list[tuple[Path, Dataset, str]], name: str, source: str,
                 series_uid: str | None) -> Scan:
    """Build a scan from (path, header, label) entries of DICOM images."""
    groups_by_uid: dict[str, list[tuple[Path, Dataset]]] = {}
    labels: dict[Path, str] = {}
    for path, ds, label in entries:
        groups_by_uid.setdefault(_series_key(ds), []).append((path, ds))
        labels[path] = label
    chosen, skipped = _choose_series(groups_by_uid, series_uid, name)
    series = groups_by_uid[chosen]
    images = [_image_facts(p, ds, labels[p]) for p, ds in series]
    _check_consistent(images)
    ref = images[0]
    normal = np.cross(ref.row_cos, ref.col_cos)
    groups, positions = _group_positions(images, normal, name)
    affine, meta = _stack_affine(groups, positions, normal, name)
    nz, nt = len(groups), len(groups[0])
    check_data_size((ref.cols, ref.rows, nz, nt), 4, name)
    array = np.empty((ref.cols, ref.rows, nz, nt), dtype=np.float32)
    where = [(z, t) for z, group in enumerate(groups) for t in range(len(group))]
    for (z, t), pixels in zip(where, _read_all(_pixels, (im for g in groups for im in g))):
        array[:, :, z, t] = pixels
    first_ds = series[0][1]
    meta.update({
        "source_format": "dicom",
        "series_uid": chosen,
        "series_description": str(first_ds.get("SeriesDescription", "") or ""),
        "n_images": len(images),
        # The image file of each frame: source_files[z][t] holds array[:, :, z, t].T.
        "source_files": [[str(im.path) for im in group] for group in groups],
        # Patient and study facts of the first image (strings; absent ones left out).
        "header": {k: str(first_ds.get(k)) for k in HEADER_FACTS
                   if first_ds.get(k) not in (None, "")},
    })
    if skipped:
        meta["skipped_series"] = skipped
    if nt > 1:
        if all(im.trigger is not None for im in groups[0]):
            meta["trigger_times"] = [float(im.trigger) for im in groups[0]]
        return Scan(array, affine, name=name, source=source, meta=meta)
    return Scan(array[..., 0], affine, name=name, source=source, meta=meta)


def load_dicom_series(folder: str | os.PathLike, series_uid: str | None = None, *,
                      name: str | None = None) -> Scan:
    """Read the DICOM image series in ``folder`` (searched recursively).

    Non-DICOM, hidden and DICOMDIR files are skipped; file names need no
    extension. Images are sorted along the slice normal; several images per
    position (cine) are ordered by TriggerTime (else InstanceNumber) and give
    a 4D ``(x, y, z, t)`` scan with ``meta["trigger_times"]`` in ms. Values
    have RescaleSlope/Intercept applied. ``name`` (default: the folder name)
    names the scan and prefixes error messages.
    """
    folder = as_path(folder)
    label = name or folder.name or str(folder)
    if not folder.exists():
        raise ScanReadError(f"{label}: DICOM folder not found ({folder})")
    if not folder.is_dir():
        raise ScanReadError(f"{label}: expected a folder of DICOM files ({folder})")
    files, skipped = _candidate_files(folder)
    if not files:
        raise ScanReadError(f"{label}: folder is empty, no DICOM files found")
    rels = [f"{label}/{path.relative_to(folder).as_posix()}" for path in files]
    headers = _read_all(lambda pair: _read_header(*pair), zip(files, rels))
    entries = [(path, ds, rel) for path, rel, ds in zip(files, rels, headers)
               if ds is not None and _is_image(ds)]
    if not entries:
        noun = "file" if len(files) == 1 else "files"
        raise ScanReadError(f"{label}: no DICOM image files found among {len(files)} {noun}")
    scan = _load_images(entries, label, str(folder), series_uid)
    if skipped:
        scan.meta["skipped_files"] = skipped
    return scan


def load_dicom_file(path: str | os.PathLike) -> Scan:
    """Read one DICOM image file as a one-slice scan ``(x, y, 1)``.

    The slice thickness (mm) comes from SliceThickness (1 mm when absent,
    flagged by ``meta["assumed_slice_thickness"]``).
    """
    path = as_path(path)
    require_file(path, "DICOM file")
    ds = _read_header(path, path.name)
    if ds is None:
        raise ScanReadError(f"{path.name}: not a DICOM file")
    if not _is_image(ds):
        raise ScanReadError(f"{path.name}: DICOM file holds no image")
    name = strip_suffixes(path.name, (".dcm", ".dicom", ".ima"))
    return _load_images([(path, ds, path.name)], name, str(path), None)


# ---------------------------------------------------------------- writing


def _ds(value: float) -> str:
    """``value`` as a valid (at most 16 character) DICOM decimal string."""
    return format_number_as_ds(float(value))


def _quantise(array: np.ndarray) -> tuple[np.ndarray, float, float]:
    """uint16 values and (slope, intercept) with ``array ~ raw * slope + intercept``."""
    finite = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    intercept = float(_ds(lo))
    span = hi - intercept
    slope = float(_ds(span / 65535.0)) if span > 0 else 1.0
    if slope <= 0:
        slope = 1.0
    raw = np.clip(np.rint((finite - intercept) / slope), 0, 65535).astype(np.uint16)
    return raw, slope, intercept


def _trigger_times(scan: Scan) -> list[float]:
    """Trigger times (ms) for each phase: ``meta["trigger_times"]`` if usable,
    else phases spread evenly over a nominal 1000 ms cycle."""
    nt = scan.n_frames
    times = scan.meta.get("trigger_times")
    try:
        values = [float(v) for v in times] if times is not None else []
    except (TypeError, ValueError):
        values = []
    if len(values) == nt and np.all(np.isfinite(values)) and np.all(np.diff(values) > 0):
        return values
    return [1000.0 * t / nt for t in range(nt)]


def _write(ds: Dataset, path: Path) -> None:
    """Save ``ds`` as a DICOM Part 10 file (preamble + file meta)."""
    if _PYDICOM_MAJOR < 3:
        ds.is_little_endian = True
        ds.is_implicit_VR = False
        ds.save_as(str(path), write_like_original=False)
    else:
        ds.save_as(str(path), enforce_file_format=True)


def save_dicom_series(scan: Scan, folder: str | os.PathLike,
                      series_description: str = "LVSeg") -> list[Path]:
    """Write ``scan`` as an MR DICOM series into the new or empty ``folder``.

    One file per slice (and per phase for a 4D scan, with TriggerTime in ms
    and InstanceNumber ``1 + z * t_count + t``); uint16 pixels with one
    RescaleSlope/Intercept for the whole series (error at most half a slope);
    geometry (IOP/IPP/PixelSpacing/SliceThickness, mm, LPS) from the affine.
    :func:`load_dicom_series` reads it back with the same array and affine,
    except that slices come back ordered along the slice normal
    ``row x column`` cosine: for a left-handed affine the z axis is reversed
    (same world geometry). Returns the written paths.
    """
    folder = as_path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise LVSegError(f"{folder.name}: output folder exists and is not empty")
    lps = _FLIP @ np.asarray(scan.affine, dtype=np.float64)
    sx, sy = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    step = lps[:3, 2]
    if sx == 0 or sy == 0:
        raise LVSegError(f"{scan.name}: affine has a zero in-plane voxel size")
    row_cos, col_cos = lps[:3, 0] / sx, lps[:3, 1] / sy
    if abs(float(row_cos @ col_cos)) > 1e-4:
        raise LVSegError(f"{scan.name}: affine has sheared in-plane axes, which DICOM "
                         "cannot store")
    normal = np.cross(row_cos, col_cos)
    thickness = float(np.linalg.norm(step))
    if abs(float(step @ normal)) < 1e-6 * max(thickness, 1.0):
        raise LVSegError(f"{scan.name}: affine slice axis lies in the image plane")

    array = scan.array if scan.is_cine else scan.array[..., np.newaxis]
    nx, ny, nz, nt = array.shape
    if nx > 65535 or ny > 65535:
        raise LVSegError(f"{scan.name}: image too large for DICOM ({nx} x {ny})")
    raw, slope, intercept = _quantise(array)
    times = _trigger_times(scan) if scan.is_cine else []
    lo, hi = intercept, intercept + slope * float(raw.max())

    now = _dt.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    iop = [_ds(v) for v in (*row_cos, *col_cos)]
    spacing = [_ds(sy), _ds(sx)]
    paths: list[Path] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for z in range(nz):
            ipp = lps[:3, 3] + z * step
            for t in range(nt):
                sop_uid = generate_uid()
                meta = FileMetaDataset()
                meta.MediaStorageSOPClassUID = MRImageStorage
                meta.MediaStorageSOPInstanceUID = sop_uid
                meta.TransferSyntaxUID = ExplicitVRLittleEndian
                ds = Dataset()
                ds.file_meta = meta
                ds.SpecificCharacterSet = "ISO_IR 100"
                ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
                ds.SOPClassUID = MRImageStorage
                ds.SOPInstanceUID = sop_uid
                ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
                ds.StudyTime = ds.SeriesTime = ds.ContentTime = time
                ds.AccessionNumber = ""
                ds.Modality = "MR"
                ds.Manufacturer = "LVSeg"
                ds.ReferringPhysicianName = ""
                ds.SeriesDescription = series_description[:64]
                ds.PatientName = "Anonymous"
                ds.PatientID = (scan.name or "LVSeg")[:64]
                ds.PatientBirthDate = ""
                ds.PatientSex = ""
                ds.ScanningSequence = "RM"
                ds.SequenceVariant = "NONE"
                ds.ScanOptions = ""
                ds.MRAcquisitionType = "2D"
                ds.SliceThickness = _ds(thickness)
                ds.SpacingBetweenSlices = _ds(thickness)
                ds.RepetitionTime = ""
                ds.EchoTime = ""
                ds.EchoTrainLength = ""
                ds.PatientPosition = ""
                ds.StudyInstanceUID = study_uid
                ds.SeriesInstanceUID = series_uid
                ds.StudyID = ""
                ds.SeriesNumber = 1
                ds.InstanceNumber = 1 + z * nt + t
                ds.ImagePositionPatient = [_ds(v) for v in ipp]
                ds.ImageOrientationPatient = iop
                ds.FrameOfReferenceUID = frame_uid
                ds.PositionReferenceIndicator = ""
                ds.SliceLocation = _ds(float(ipp @ normal))
                if scan.is_cine:
                    ds.TriggerTime = _ds(times[t])
                    ds.CardiacNumberOfImages = nt
                    ds.TemporalPositionIdentifier = t + 1
                    ds.NumberOfTemporalPositions = nt
                ds.SamplesPerPixel = 1
                ds.PhotometricInterpretation = "MONOCHROME2"
                ds.Rows = ny
                ds.Columns = nx
                ds.PixelSpacing = spacing
                ds.BitsAllocated = 16
                ds.BitsStored = 16
                ds.HighBit = 15
                ds.PixelRepresentation = 0
                ds.WindowCenter = _ds((lo + hi) / 2)
                ds.WindowWidth = _ds(max(hi - lo, 1e-6))
                ds.RescaleIntercept = _ds(intercept)
                ds.RescaleSlope = _ds(slope)
                ds.RescaleType = "US"
                ds.PixelData = np.ascontiguousarray(raw[:, :, z, t].T).astype("<u2").tobytes()
                suffix = f"_{t:03d}" if scan.is_cine else ""
                path = folder / f"IM{z:04d}{suffix}.dcm"
                _write(ds, path)
                paths.append(path)
    except OSError as exc:
        raise LVSegError(f"{folder.name}: cannot write DICOM series ({reason(exc)})") from None
    return paths
