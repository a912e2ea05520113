"""Batch work behind the command line and the app: predict a batch, evaluate a dataset.

Nothing here prints. Progress is reported through an optional ``progress``
argument: a ``tqdm`` bar (its ``update(1)`` is called after each scan, its
``total`` is set) or a callable ``progress(done, total, name)``.

Errors caused by one input (an unreadable scan, an existing output file) are
recorded and the batch goes on; errors that concern the whole batch (an output
folder that cannot be created, an existing ``summary.csv``) raise
:class:`~lvseg_core.errors.LVSegError`.
"""

from __future__ import annotations

import contextlib
import csv
import io as _io
import math
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Collection, Callable, Iterable, Sequence

import numpy as np

from .clinical import clinical_indices, indices_from_volumes, rv_ef_caution
from .data import (
    dataset_problems,
    ed_es_pairs,
    find_cases,
    is_acdc_folder,
    record_key,
    select,
)
from .data.layouts import LABEL_MAPS, convert_labels, find_layout_cases
from .errors import LVSegError, one_line
from .files import write_text
from .io import DICOM_SUFFIXES, is_scan_file, load_label, load_nifti, load_scan, save_mask
from .io._common import skip_reason
from .io.nifti import is_nifti_name, load_label_frame, load_nifti_frame, nifti_stem
from .labels import STRUCTURES
from .metrics import count_valid, summarise
from .pipeline import ScanResult, run_scan
from .qc import QC_FLIPS, STATUSES, combine
from .provenance import Provenance
from .scan import Scan
from .study import STUDY_COLUMNS, study_outputs, volume_report

#: Name of the per-batch table written beside the masks.
SUMMARY_NAME = "summary.csv"

#: Ending of every written mask file.
MASK_SUFFIX = "_seg.nii.gz"

#: Columns of ``summary.csv``, in order. ``kind`` is ``frame`` (a 3D scan),
#: ``cine`` (a 4D scan), ``patient`` (EF from the ED and ES frames of one ACDC
#: patient) or ``failed``. Volumes in mL, EF in %, mass in g, seconds of
#: inference (model load and file reading excluded). ``ED_frame``/``ES_frame``
#: are 0-based frame indices of a cine scan, found from the LV volume curve.
#: Study rows (``patient``, ``cine``) add BSA-indexed values with their flags and
#: wall-thickness figures (:data:`~lvseg_core.study.STUDY_COLUMNS`); ``label_map``
#: is the convention of the written mask, ``dicom_seg`` the written SEG files.
#: ``qc`` is ``ok``, ``check`` or ``fail`` and ``qc_reason`` says why
#: (:mod:`lvseg_core.qc`; a patient row checks both frames and the EF).
SUMMARY_COLUMNS: tuple[str, ...] = (
    "kind", "name", "source", "output", "patient", "phase", "group", "shape", "frames",
    "seconds", "device", "RV_ml", "Myo_ml", "LV_ml", "ED_frame", "ES_frame",
    "LV_EDV_ml", "LV_ESV_ml", "LV_SV_ml", "LV_EF_pct",
    "RV_EDV_ml", "RV_ESV_ml", "RV_SV_ml", "RV_EF_pct", "Myo_mass_g", "qc", "qc_reason",
    *STUDY_COLUMNS, "label_map", "dicom_seg", "notes", "error",
    "weights", "weights_sha256",
)

#: Lock file that keeps two ``predict`` runs out of one output folder.
LOCK_NAME = ".lvseg-predict.lock"

#: Metrics reported per phase and per pathology group by :func:`evaluate_dataset`.
GROUP_METRICS: tuple[str, ...] = ("dice", "hd95_mm")

Progress = Callable[[int, int, str], None]


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Input:
    """One scan of a batch.

    Attributes:
        path: a scan file, or a folder read as one DICOM series.
        name: output name (no extension), e.g. ``"patient002_frame01"``.
        kind: ``"file"``, ``"dicom-folder"`` or ``"acdc"`` (a frame of an
            ACDC-layout folder).
        patient, frame, phase, group: ACDC facts (empty / None otherwise).
    """

    path: Path
    name: str
    kind: str = "file"
    patient: str = ""
    frame: int | None = None
    phase: str = ""
    group: str = ""


def _hidden(path: Path) -> bool:
    return path.name.startswith(".") or path.name == "__MACOSX"


def _file_name(path: Path) -> str:
    """Output name of a scan file: its name without the scan ending."""
    name = path.name
    if is_nifti_name(name):
        return nifti_stem(name)
    lower = name.lower()
    for suffix in (".zip", *DICOM_SUFFIXES):
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return path.stem or name


def _is_zip(path: Path) -> bool:
    return path.is_file() and not _hidden(path) and path.name.lower().endswith(".zip")


def looks_like_dicom_file(path: Path) -> bool:
    """True for a file with a DICOM ending, a ``DICM`` preamble marker, or a
    preamble-less DICOM start (group 0x0008 tag). Reads at most 132 bytes."""
    if _hidden(path) or not path.is_file():
        return False
    if path.name.lower().endswith(DICOM_SUFFIXES):
        return True
    if path.name.upper() == "DICOMDIR":
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    if len(head) == 132 and head[128:132] == b"DICM":
        return True
    return len(head) >= 4 and head[:2] == b"\x08\x00" and head[3] == 0


def is_dicom_folder(folder: Path, max_files: int = 200) -> bool:
    """True when ``folder`` (searched recursively, at most ``max_files`` files
    looked at) holds a file that looks like DICOM."""
    seen = 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__MACOSX")
        for name in sorted(files):
            if looks_like_dicom_file(Path(root) / name):
                return True
            seen += 1
            if seen >= max_files:
                return False
    return False


def _folder_inputs(folder: Path, notes: list[str]) -> list[Input]:
    """The scans of a folder that is not in ACDC layout (see :func:`collect_inputs`)."""
    try:
        entries = sorted(p for p in folder.iterdir() if not _hidden(p))
    except OSError as err:
        raise LVSegError(f"{folder}: cannot list folder ({err.strerror or err})") from None
    root = folder.resolve()
    kept = []
    for entry in entries:
        why = skip_reason(entry, root)
        if not why:
            kept.append(entry)
        elif entry.is_dir() or is_scan_file(entry) or entry.name.lower().endswith(".zip"):
            # what would have been an input; other files are noted by the DICOM reader
            notes.append(f"{folder.name}/{entry.name} skipped: {why}")
    entries = kept
    files = [p for p in entries if is_scan_file(p) or _is_zip(p)]
    items = [Input(p, _file_name(p)) for p in files]
    series_name = folder.resolve().name or "dicom"
    if any(looks_like_dicom_file(p) for p in entries if p.is_file()):
        # Loose DICOM files: the folder is a series (its reader searches sub-folders too).
        return items + [Input(folder, series_name, "dicom-folder")]
    items += [Input(d, d.name, "dicom-folder") for d in entries
              if d.is_dir() and is_dicom_folder(d)]
    if not items:
        # Nothing recognisable: try the folder as a DICOM series, so that loading
        # it gives the user the precise reason.
        items.append(Input(folder, series_name, "dicom-folder"))
    return items


def collect_inputs(paths: Iterable[str | os.PathLike],
                   notes: list[str] | None = None) -> list[Input]:
    """Expand user inputs into the list of scans to process.

    - a scan file (NIfTI, ``.zip``, ``.dcm``, PNG/JPEG/...) is itself;
    - an ACDC-layout folder (:func:`~lvseg_core.data.is_acdc_folder`) gives its
      frame images (never the ``_gt`` label files) with patient, frame, phase
      (ED/ES) and group;
    - another folder gives the scan files directly inside it
      (:func:`~lvseg_core.io.is_scan_file`, plus ``.zip`` archives) and its
      sub-folders that hold DICOM files, each as one series; a folder with
      loose DICOM files, or with nothing else recognisable, is read as one
      DICOM series itself.

    Two NIfTI files named ``<study>_ED...`` and ``<study>_ES...`` are a pair:
    they get ``patient`` (the study name) and ``phase``, and are one study.
    The same file given twice is kept once. Entries of a folder that are links
    leading outside it, or FIFOs and other special files, are skipped; a
    one-line note for each is appended to ``notes``.

    Raises:
        LVSegError: a path does not exist, or no paths were given.
    """
    inputs: list[Input] = []
    seen: set[Path] = set()
    given = list(paths)
    if not given:
        raise LVSegError("no input given")
    for raw in given:
        path = Path(os.fspath(raw)).expanduser()
        if not path.exists():
            raise LVSegError(f"{path}: no such file or folder")
        if path.is_dir():
            if is_acdc_folder(path):
                found = [Input(c.image, c.name, "acdc", c.patient, c.frame, c.phase, c.group)
                         for c in find_cases(path, notes=notes)]
            else:
                found = _folder_inputs(path, notes if notes is not None else [])
        else:
            found = [Input(path, _file_name(path))]
        for item in found:
            key = item.path.resolve()
            if key not in seen:
                seen.add(key)
                inputs.append(item)
    return _nifti_pairs(inputs)


#: ``<study>_ED<rest>`` / ``<study>_ES<rest>`` file names (``_`` or ``-``, any case).
_PAIR_NAME = re.compile(r"^(?P<head>.+?)[_-](?P<phase>ED|ES)(?P<tail>[_-].*)?$", re.IGNORECASE)


def _nifti_pairs(inputs: list[Input]) -> list[Input]:
    """``inputs`` with each NIfTI pair of files (one ``<study>_ED``, one
    ``<study>_ES``, e.g. ``A0S9V9_SA_ED.nii.gz`` and ``A0S9V9_SA_ES.nii.gz``)
    marked as the ED and ES of study ``<study><rest>`` (``patient``, ``phase``)."""
    found: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, item in enumerate(inputs):
        match = _PAIR_NAME.match(item.name)
        if item.kind == "file" and is_nifti_name(item.path.name) and match:
            study = match.group("head") + (match.group("tail") or "")
            found[study][match.group("phase").upper()].append(i)
    out = list(inputs)
    for study, phases in found.items():
        if len(phases.get("ED", ())) == len(phases.get("ES", ())) == 1:
            for phase in ("ED", "ES"):
                i = phases[phase][0]
                out[i] = replace(inputs[i], patient=study, phase=phase)
    return out


def load_input(item: Input, series_uid: str | None = None) -> Scan:
    """Read the scan of one input (raises :class:`LVSegError` when it cannot);
    ``series_uid`` picks the series of a DICOM folder or zip."""
    if item.kind == "acdc":
        scan = load_nifti(item.path)
    elif item.kind == "dicom-folder":
        scan = load_scan(item.path, "dicom", series_uid=series_uid)
    else:
        scan = load_scan(item.path, series_uid=series_uid)
    scan.name = item.name
    if item.kind == "acdc":
        scan.meta.update({"patient": item.patient, "frame": item.frame,
                          "phase": item.phase, "group": item.group})
    return scan


# ---------------------------------------------------------------- helpers


def _report(progress: Any, done: int, total: int, name: str) -> None:
    """Tell ``progress`` (a tqdm bar or a callable) that one more item is done."""
    if progress is None:
        return
    if hasattr(progress, "update"):
        if getattr(progress, "total", None) != total:
            progress.total = total
        if hasattr(progress, "set_postfix_str"):
            progress.set_postfix_str(name, refresh=False)
        progress.update(1)
    else:
        progress(done, total, name)


def _finite_or_nan(value: Any) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return value if math.isfinite(value) else float("nan")


def _nanmean(values: Iterable[float]) -> float:
    kept = [v for v in (_finite_or_nan(x) for x in values) if not math.isnan(v)]
    return float(sum(kept) / len(kept)) if kept else float("nan")


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN/infinity as None, numpy values as Python values,
    paths as strings and tuples as lists, so that ``json.dumps(...,
    allow_nan=False)`` writes strict JSON."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def write_json(data: Any, path: str | os.PathLike) -> Path:
    """Write ``data`` as strict JSON (NaN as null), creating parent folders;
    replaces an existing file atomically. Returns the path."""
    import json

    path = Path(os.fspath(path)).expanduser()
    if path.is_dir():
        raise LVSegError(f"{path}: is a folder; give a file name for the JSON report")
    write_text(path, json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")
    return path


def _fmt(value: Any) -> str:
    """A CSV cell: floats rounded to 4 decimals, NaN/None empty."""
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return repr(round(value, 4)) if math.isfinite(value) else ""
    return str(value)


def summary_csv_text(rows: Sequence[dict]) -> str:
    """``rows`` as CSV text with the :data:`SUMMARY_COLUMNS` header."""
    buffer = _io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k)) for k in SUMMARY_COLUMNS})
    return buffer.getvalue()


def _notes(scan: Scan) -> str:
    notes = []
    if scan.meta.get("assumed_spacing"):
        notes.append("pixel spacing unknown, 1 mm assumed")
    if scan.meta.get("assumed_slice_thickness"):
        notes.append("slice thickness unknown, 1 mm assumed")
    if scan.meta.get("non_finite_voxels"):
        notes.append(f"{scan.meta['non_finite_voxels']} non-finite voxels set to 0")
    for series in scan.meta.get("skipped_series", []):
        n = series["n_images"]
        notes.append(f"skipped DICOM series '{series['description']}' ({n} image"
                     f"{'s' if n != 1 else ''}, {series['series_uid']})")
    for name, why in scan.meta.get("skipped_files", []):
        notes.append(f"skipped {name}: {why}")
    return "; ".join(notes)


@contextlib.contextmanager
def output_lock(out_dir: Path):
    """Hold an exclusive ``flock`` on ``out_dir``/:data:`LOCK_NAME` for the block,
    so that a second ``predict`` into the same folder refuses at once instead
    of overwriting the first one's ``summary.csv``."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        yield
        return
    try:
        handle = open(out_dir / LOCK_NAME, "a")
    except OSError as err:
        raise LVSegError(f"{out_dir}: cannot create the lock file ({err.strerror or err})") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LVSegError(f"{out_dir}: output folder in use by another predict run; "
                             "wait for it to finish or choose another --out") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------- predict


@dataclass
class Failure:
    """An input that could not be processed, with a one-line reason."""

    input: Input
    message: str

    @property
    def name(self) -> str:
        return self.input.name


@dataclass
class PredictReport:
    """What :func:`predict_inputs` did.

    Attributes:
        out_dir: the output folder.
        outputs: written mask files, in input order.
        rows: the rows of ``summary.csv`` (dicts keyed by :data:`SUMMARY_COLUMNS`).
        failures: inputs that were skipped, with their reason.
        summary_path: the written ``summary.csv`` (None if nothing was written).
    """

    out_dir: Path
    outputs: list[Path] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    summary_path: Path | None = None

    @property
    def ok(self) -> bool:
        """True when every input was segmented."""
        return not self.failures


def output_names(inputs: Sequence[Input]) -> list[str]:
    """Mask file names ``<name>_seg.nii.gz``; names that collide (ignoring case)
    get a ``_2``, ``_3``... suffix in input order."""
    used: set[str] = set()
    names = []
    for item in inputs:
        base = item.name or "scan"
        candidate, n = base, 1
        while f"{candidate}{MASK_SUFFIX}".lower() in used:
            n += 1
            candidate = f"{base}_{n}"
        used.add(f"{candidate}{MASK_SUFFIX}".lower())
        names.append(f"{candidate}{MASK_SUFFIX}")
    return names


def _resolve(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()


def _patient_row(patient: str, group: str, ed: dict, es: dict) -> dict:
    row = {"kind": "patient", "name": patient, "patient": patient, "group": group,
           "source": f"{ed['name']} (ED) + {es['name']} (ES)"}
    row.update(indices_from_volumes(ed["volumes"], es["volumes"]))
    quality = combine([("ED", ed["qc"]), ("ES", es["qc"])], {"LV_EF_pct": row["LV_EF_pct"]})
    row.update(qc=quality.status, qc_reason=quality.reason)
    if ed["shape"] != es["shape"] or not np.allclose(ed["spacing"], es["spacing"]):
        row["notes"] = "ED and ES frames have different grids"
    return row


@dataclass(frozen=True)
class StudyOptions:
    """Extra outputs of :func:`predict_inputs`.

    Attributes:
        dicom_seg: write DICOM SEG object(s) beside the mask of DICOM inputs.
        report: write ``<study>_report.html`` for studies with ED and ES.
        label_map: convention of the written masks (``acdc`` or ``mnms``).
        qc: QC status per study name, shown on the report (optional).
        cautions: sentences under every report's indices; None (default):
            what the segmenter's own evaluation says of them
            (:func:`lvseg_core.clinical.rv_ef_caution`).
    """

    dicom_seg: bool = False
    report: bool = False
    label_map: str = "acdc"
    qc: dict = field(default_factory=dict)
    cautions: tuple[str, ...] | None = None


def predict_inputs(inputs: Sequence[Input], segmenter, out_dir: str | os.PathLike,
                   overwrite: bool = False, progress: Any = None,
                   series_uid: str | None = None,
                   options: StudyOptions | None = None,
                   qc_flips: Sequence[tuple[int, ...]] = QC_FLIPS) -> PredictReport:
    """Segment each input and write ``<name>_seg.nii.gz`` plus ``summary.csv``.

    Each mask has exactly its scan's grid (shape, or 4D shape for a cine scan,
    and affine), uint8 ACDC labels. A 4D scan is segmented frame by frame and
    its ED/ES frames are found from the LV volume curve. For ACDC frames, a
    patient whose ED and ES frames are both in the batch gets a ``patient`` row
    with LV/RV EDV, ESV, SV, EF and myocardial mass.

    Safety: a mask is never written over an input file (even with
    ``overwrite``), and an existing mask is an error for that scan unless
    ``overwrite``. ``summary.csv`` is written atomically at the end; an
    existing one stops the batch before any work unless ``overwrite``, and a
    second run into the same folder refuses while the first one works
    (:func:`output_lock`). Every row names the weights (``weights``,
    ``weights_sha256`` of ``model.safetensors``).
    A scan that fails (:class:`LVSegError`) is recorded with its one-line
    reason (in :attr:`PredictReport.failures` and as a ``failed`` row) and the
    batch goes on.

    Studies: an ACDC patient with both ED and ES frames, a NIfTI pair
    (:func:`collect_inputs`) and every cine scan get ``<name>_aha.csv`` (AHA
    16-segment wall thickness), BSA-indexed values with reference-range flags
    in their row and, with ``options.report``, ``<name>_report.html``; with
    ``options.report`` every other 3D volume gets a report of its own. Every
    report shows the QC status of what it covers (a study's: its frames and
    EF combined, as on its ``patient`` row). With ``options.dicom_seg`` a DICOM input also gets
    ``<name>[_tNN][_forNN]_seg.dcm`` (:mod:`lvseg_core.io.dicom_seg`). A study
    or SEG output that cannot be made is a note on the row (the mask stays).

    Args:
        inputs: from :func:`collect_inputs`.
        segmenter: a :class:`~lvseg_core.inference.Segmenter`.
        out_dir: output folder (created if needed).
        overwrite: replace existing masks and ``summary.csv``.
        progress: a tqdm bar or ``progress(done, total, name)``.
        series_uid: the DICOM series to read from folders and zips holding several.
        options: DICOM SEG, report and label-map choices (:class:`StudyOptions`).
        qc_flips: flipped passes of quality control (``()``: none, half the time);
            each row gets ``qc`` and ``qc_reason`` (:mod:`lvseg_core.qc`).

    Raises:
        LVSegError: the output folder cannot be used or is in use, or
            ``summary.csv`` exists and ``overwrite`` is False.
    """
    out_dir = Path(os.fspath(out_dir)).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise LVSegError(f"{out_dir}: output path exists and is not a folder")
    summary_path = out_dir / SUMMARY_NAME
    if summary_path.exists() and not overwrite:
        raise LVSegError(f"{summary_path}: already exists; choose another output folder "
                         "or pass --overwrite")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LVSegError(f"{out_dir}: cannot create output folder "
                         f"({err.strerror or err})") from None
    with output_lock(out_dir):
        if summary_path.exists() and not overwrite:  # written while we waited for the lock
            raise LVSegError(f"{summary_path}: already exists; choose another output folder "
                             "or pass --overwrite")
        options = options or StudyOptions()
        if options.cautions is None:
            caution = rv_ef_caution(getattr(segmenter, "members_validation_metrics", None) or [])
            options = replace(options, cautions=(caution,) if caution else ())
        return _predict_locked(inputs, segmenter, out_dir, overwrite, progress, series_uid,
                               options, qc_flips)


def _predict_locked(inputs: Sequence[Input], segmenter, out_dir: Path, overwrite: bool,
                    progress: Any, series_uid: str | None,
                    options: StudyOptions,
                    qc_flips: Sequence[tuple[int, ...]]) -> PredictReport:
    """:func:`predict_inputs` once the output folder is locked."""
    if options.label_map not in LABEL_MAPS:
        raise LVSegError(f"unknown label map {options.label_map!r}; use one of "
                         f"{', '.join(LABEL_MAPS)}")
    options = replace(options, qc=dict(options.qc))   # QC of each study added below
    summary_path = out_dir / SUMMARY_NAME
    report = PredictReport(out_dir=out_dir)
    provenance = Provenance.of(segmenter)
    pending: dict[str, dict[str, tuple[Scan, np.ndarray]]] = defaultdict(dict)
    studies: dict[str, dict] = {}              # patient -> study values and notes
    protected = {_resolve(item.path) for item in inputs}
    frames: list[dict] = []                    # ACDC ED/ES frames, for the patient rows
    total = len(inputs)
    for done, (item, file_name) in enumerate(zip(inputs, output_names(inputs)), start=1):
        target = out_dir / file_name
        try:
            if _resolve(target) in protected:
                raise LVSegError(f"{file_name}: output would replace an input file; "
                                 "choose another output folder")
            if target.exists() and not overwrite:
                raise LVSegError(f"{target}: already exists; pass --overwrite to replace it")
            scan = load_input(item, series_uid)
            result = run_scan(scan, segmenter, qc_flips=qc_flips)
            save_mask(convert_labels(result.mask, "acdc", options.label_map), scan, target,
                      overwrite=overwrite)
        except LVSegError as err:
            _fail(report, item, one_line(err))
        except MemoryError:
            _fail(report, item, "out of memory")
        else:
            report.outputs.append(target)
            row = _scan_row(item, result, target)
            row["label_map"] = options.label_map
            report.rows.append(row)
            stem = file_name[: -len(MASK_SUFFIX)]
            if options.dicom_seg:
                _dicom_seg(row, item, scan, result.mask, out_dir, stem, provenance, overwrite)
            if scan.is_cine and result.ed is not None:
                options.qc[stem] = result.qc.message
                _study(row, stem, out_dir, scan.frame(result.ed), result.mask_at(result.ed),
                       scan.frame(result.es), result.mask_at(result.es), provenance, options,
                       overwrite, result.indices)
            if (item.kind == "acdc" or item.phase) and not scan.is_cine:
                frames.append({
                    "patient": item.patient, "phase": item.phase, "group": item.group,
                    "name": item.name, "volumes": {s: row[f"{s}_ml"] for s in STRUCTURES},
                    "shape": scan.shape3d, "spacing": scan.spacing, "qc": result.qc})
                if item.phase in ("ED", "ES"):
                    pending[item.patient][item.phase] = (scan, result.mask, result.qc)
                    phases = pending[item.patient]
                    if len(phases) == 2:  # the study is complete: write it, free the volumes
                        (ed_scan, ed_mask, ed_qc), (es_scan, es_mask, es_qc) = (
                            phases["ED"], phases["ES"])
                        studies[item.patient] = {}
                        if ed_scan.shape3d == es_scan.shape3d:
                            _study(studies[item.patient], item.patient, out_dir, ed_scan,
                                   ed_mask, es_scan, es_mask, provenance, options, overwrite,
                                   frame_qc=[("ED", ed_qc), ("ES", es_qc)])
                        del pending[item.patient]
            if options.report and not scan.is_cine and not item.phase:
                _volume_report(row, stem, out_dir, scan, result, provenance, overwrite)
        _report(progress, done, total, item.name)

    for patient, (ed, es) in ed_es_pairs(frames, record_key).items():
        row = _patient_row(patient, es["group"], ed, es)
        study = studies.get(patient, {})
        notes = "; ".join(filter(None, [row.get("notes", ""), study.pop("notes", "")]))
        row.update(study)
        if notes:
            row["notes"] = notes
        report.rows.append(row)
    weights = getattr(segmenter, "weights", None)
    for row in report.rows:
        row["weights"] = weights.description if weights is not None else "in-memory"
        row["weights_sha256"] = weights.sha256 if weights is not None else ""
    if report.rows:
        write_text(summary_path, summary_csv_text(report.rows))
        report.summary_path = summary_path
    return report


def _fail(report: PredictReport, item: Input, message: str) -> None:
    report.failures.append(Failure(item, message))
    report.rows.append({"kind": "failed", "name": item.name, "source": str(item.path),
                        "patient": item.patient, "phase": item.phase, "group": item.group,
                        "error": message})


def _add_note(row: dict, note: str) -> None:
    row["notes"] = "; ".join(filter(None, [row.get("notes", ""), note]))


def _study(row: dict, name: str, out_dir: Path, ed: Scan, ed_mask: np.ndarray, es: Scan,
           es_mask: np.ndarray, provenance: Provenance, options: StudyOptions,
           overwrite: bool, curves: dict | None = None,
           frame_qc: Sequence[tuple[str, Any]] = ()) -> None:
    """AHA table, indexed values and report of one study, into its row. The
    report's QC: ``options.qc[name]``, else the row's, else ``frame_qc`` (the
    ED and ES frames' results) combined with the study's EF, as on its
    ``patient`` row."""
    qc = options.qc.get(name)
    if qc is None and row.get("qc"):  # a QC status already on the row (a cine scan)
        qc = {"status": row["qc"], "reason": row.get("qc_reason", "")}
    try:
        indices = clinical_indices(ed_mask, es_mask, ed.spacing)
        if qc is None and frame_qc:
            qc = combine(list(frame_qc), {"LV_EF_pct": indices["LV_EF_pct"]}).message
        result = study_outputs(name, out_dir, ed, ed_mask, es, es_mask, indices, provenance,
                               report=options.report, curves=curves, qc=qc,
                               cautions=options.cautions or (), overwrite=overwrite)
    except LVSegError as err:
        _add_note(row, one_line(err))
        return
    row.update(result.values)
    for note in result.notes:
        _add_note(row, note)


def _volume_report(row: dict, name: str, out_dir: Path, scan: Scan, result: ScanResult,
                   provenance: Provenance, overwrite: bool) -> None:
    """The report of a 3D volume outside any study (its QC included), into its row."""
    try:
        qc = result.qc.message if result.qc is not None else None
        path = volume_report(name, out_dir, scan, result.mask, result.volumes[0], provenance,
                             qc=qc, overwrite=overwrite)
    except LVSegError as err:
        _add_note(row, f"no report: {one_line(err)}")
        return
    row["report"] = str(path)


def _dicom_seg(row: dict, item: Input, scan: Scan, mask: np.ndarray, out_dir: Path,
               stem: str, provenance: Provenance, overwrite: bool) -> None:
    """DICOM SEG object(s) of a DICOM input beside its mask (a note otherwise)."""
    from .io.dicom_seg import write_dicom_seg, write_dicom_seg_for

    if scan.meta.get("source_format") != "dicom":
        _add_note(row, "no DICOM SEG: the input is not DICOM")
        return
    files = scan.meta.get("source_files") or []
    try:
        if files and all(Path(f).is_file() for r in files for f in r):
            paths, notes = write_dicom_seg(mask, files, out_dir, stem, provenance, overwrite)
        else:  # read from a temporary folder (a zip): read the series again
            paths, notes = write_dicom_seg_for(item.path, mask, out_dir, stem, provenance,
                                               overwrite, scan.meta.get("series_uid"))
    except LVSegError as err:
        _add_note(row, f"no DICOM SEG: {one_line(err)}")
        return
    row["dicom_seg"] = ";".join(str(p) for p in paths)
    if len(paths) > 1:
        _add_note(row, f"{len(paths)} DICOM SEG files (one per cardiac phase and frame of "
                       "reference)")
    for note in notes:
        _add_note(row, f"SEG: {note}")


def _scan_row(item: Input, result: ScanResult, target: Path) -> dict:
    """The ``summary.csv`` row of one segmented input (see :data:`SUMMARY_COLUMNS`)."""
    scan, seg = result.scan, result.segmentation
    row: dict[str, Any] = {
        "kind": "cine" if scan.is_cine else "frame",
        "name": item.name, "source": str(item.path), "output": str(target),
        "patient": item.patient, "phase": item.phase, "group": item.group,
        "shape": "x".join(str(s) for s in scan.array.shape), "frames": scan.n_frames,
        "seconds": seg.seconds, "device": seg.device,
        "notes": "; ".join(filter(None, [_notes(scan), *result.notes])),
    }
    if result.qc is not None:
        row.update(qc=result.qc.status, qc_reason=result.qc.reason)
    if scan.is_cine:
        row.update({k: v for k, v in (result.indices or {}).items() if k in SUMMARY_COLUMNS})
    else:
        row.update({f"{s}_ml": v for s, v in result.volumes[0].items()})
    return row


# ---------------------------------------------------------------- evaluate


def _volumes_json(volumes: dict[str, float]) -> dict[str, float]:
    return {f"{s}_ml": volumes[s] for s in STRUCTURES}


def _subset_summary(records: list[dict]) -> dict:
    summary = summarise(records)
    out: dict[str, Any] = {"cases": len(records)}
    out.update({m: summary[m] for m in GROUP_METRICS})
    return out


def _grouped(per_case: list[dict], records: list[dict], key: str) -> dict[str, dict]:
    buckets: dict[str, list[dict]] = defaultdict(list)
    for case, record in zip(per_case, records):
        if case[key]:
            buckets[case[key]].append(record)
    return {name: _subset_summary(recs) for name, recs in sorted(buckets.items())}


def evaluate_dataset(root: str | os.PathLike, segmenter, progress: Any = None,
                     patients: Collection[str] | None = None,
                     layout: str | None = None,
                     qc_flips: Sequence[tuple[int, ...]] = QC_FLIPS) -> dict:
    """Segment every labelled frame of an ACDC-, M&Ms-2- or M&Ms-1-layout folder and score it.

    ``layout`` (``acdc``, ``mnms`` or ``mnms1``; default: detected,
    :func:`~lvseg_core.data.layouts.find_layout_cases`) also fixes the label map of
    the manual labels, which are converted to ACDC labels before scoring.

    For each frame: the image and its label map are read (shapes checked),
    the image is segmented (only this is timed: ``Segmentation.seconds``) and
    scored with :func:`~lvseg_core.metrics.evaluate_segmentation` using the
    scan's voxel spacing; predicted and manual volumes are recorded. For each
    patient with both ED and ES labelled, manual and predicted LV EF, EDV, ESV
    and myocardial mass are compared.

    A frame that cannot be read is listed in ``failed`` and skipped; so is a
    patient folder whose Info.cfg is missing or invalid
    (:func:`~lvseg_core.data.dataset_problems`).
    ``patients`` restricts the evaluation to those patient folders (e.g.
    :data:`~lvseg_core.data.VALIDATION_PATIENTS`).

    Returns:
        A JSON-serialisable dict (NaN where undefined; write it with
        :func:`write_json`, which turns NaN into null): ``model``, ``weights``,
        ``device``, ``postprocess``, ``data``, ``cases``, ``dice``, ``iou``,
        ``precision``, ``recall``, ``f1``, ``hd95_mm``, ``assd_mm`` (each
        ``{"RV", "Myo", "LV", "mean"}``, NaN-ignoring means over cases),
        ``counts`` (non-NaN cases behind each mean), ``ef_abs_error`` (mean
        absolute LV EF error, percentage points), ``rv_ef_abs_error`` (the
        same for the RV), ``ef_patients``, ``ef`` (per patient: manual and
        predicted EDV, ESV, EF of both ventricles and mass),
        ``seconds_per_volume``, ``by_phase``, ``by_group`` (``cases``,
        ``dice`` and ``hd95_mm`` per ED/ES and per pathology group;
        ``by_vendor`` per M&Ms vendor), ``qc`` (cases per QC status),
        ``per_case`` (each with its ``qc``: status, reason, score, issues and
        signals), ``failed``, ``notes`` (e.g. M&Ms-1 ED/ES taken from the
        labels), ``warnings`` (patient folders skipped: links leading
        outside ``root``) and ``layout``. ``qc_flips`` as for :func:`predict_inputs`.

    Raises:
        LVSegError: no labelled frames in ``root``, or none could be evaluated.
    """
    root = Path(os.fspath(root)).expanduser()
    skipped: list[str] = []
    layout, cases = find_layout_cases(root, layout, require_labels=True, notes=skipped)
    cases = select(cases, patients=patients)
    if not cases:
        raise LVSegError(f"{root}: none of the requested patients has labelled frames")
    records: list[dict] = []
    per_case: list[dict] = []
    failed: list[dict] = [p for p in (dataset_problems(root) if layout == "acdc" else [])
                          if patients is None or p["name"] in patients]
    notes = list(dict.fromkeys(f"{c.patient}: {c.note}" for c in cases if c.note))
    for done, case in enumerate(cases, start=1):
        try:
            if case.problem:
                raise LVSegError(case.problem)
            if case.time_index is None:
                scan = load_nifti(case.image).require_3d()
                label = load_label(case.label, scan)
            else:  # one frame of a 4D cine and of its 4D labels
                scan = load_nifti_frame(case.image, case.time_index)
                label = load_label_frame(case.label, case.time_index, scan)
            scan.name = case.name
            truth = convert_labels(label, case.label_map, "acdc")
            result = run_scan(scan, segmenter, truth=truth, qc_flips=qc_flips)
        except LVSegError as err:
            failed.append({"name": case.name, "error": one_line(err)})
        else:
            metrics = result.metrics[0]
            records.append(metrics)
            per_case.append({
                "name": case.name, "patient": case.patient, "frame": case.frame,
                "phase": case.phase, "group": case.group, "vendor": case.vendor,
                "centre": case.centre, "shape": list(scan.shape3d),
                "spacing_mm": list(scan.spacing), "metrics": metrics,
                "volumes": {"predicted": _volumes_json(result.volumes[0]),
                            "manual": _volumes_json(result.manual_volumes[0])},
                "seconds": result.segmentation.seconds, "qc": result.qc.to_dict(),
            })
        _report(progress, done, len(cases), case.name)
    if not records:
        reason = f" (first error: {failed[0]['error']})" if failed else ""
        raise LVSegError(f"{root}: no labelled frame could be evaluated{reason}")

    summary = summarise(records)
    ef_rows = _ef_rows(per_case)
    weights = getattr(segmenter, "weights", None)
    result: dict[str, Any] = {
        "model": segmenter.architecture,
        "weights": weights.description if weights is not None else "in-memory",
        "device": segmenter.device_label,
        "inference_precision": segmenter.precision_label,
        "postprocess": bool(segmenter.postprocess),
        "tta": bool(getattr(segmenter, "tta", False)),
        "data": str(root),
        "layout": layout,
        "cases": len(records),
    }
    result.update(summary)
    result["counts"] = count_valid(records)
    result["ef_abs_error"] = _nanmean(r["LV_EF_abs_error"] for r in ef_rows)
    result["rv_ef_abs_error"] = _nanmean(r["RV_EF_abs_error"] for r in ef_rows)
    result["ef_patients"] = sum(not math.isnan(_finite_or_nan(r["LV_EF_abs_error"]))
                                for r in ef_rows)
    result["ef"] = ef_rows
    result["seconds_per_volume"] = float(np.mean([c["seconds"] for c in per_case]))
    result["by_phase"] = _grouped(per_case, records, "phase")
    result["by_group"] = _grouped(per_case, records, "group")
    result["by_vendor"] = _grouped(per_case, records, "vendor")
    result["qc"] = {status: sum(c["qc"]["status"] == status for c in per_case)
                    for status in STATUSES}
    result["per_case"] = per_case
    result["failed"] = failed
    result["notes"] = notes
    result["warnings"] = skipped
    return result


#: The indices of each patient's manual and predicted row in ``evaluate``'s ``ef``.
EF_ROW_INDICES = ("LV_EF_pct", "LV_EDV_ml", "LV_ESV_ml", "RV_EF_pct", "RV_EDV_ml",
                  "RV_ESV_ml", "Myo_mass_g")


def _ef_rows(per_case: list[dict]) -> list[dict]:
    """Manual vs predicted LV and RV indices for each patient with ED and ES
    evaluated, and the absolute LV and RV EF errors (percentage points)."""
    rows = []
    for patient, (ed_case, es_case) in sorted(ed_es_pairs(per_case, record_key).items()):
        values = {}
        for source in ("manual", "predicted"):
            ed = {s: ed_case["volumes"][source][f"{s}_ml"] for s in STRUCTURES}
            es = {s: es_case["volumes"][source][f"{s}_ml"] for s in STRUCTURES}
            indices = indices_from_volumes(ed, es)
            values[source] = {k: indices[k] for k in EF_ROW_INDICES}
        errors = {f"{side}_EF_abs_error": abs(values["predicted"][f"{side}_EF_pct"]
                                              - values["manual"][f"{side}_EF_pct"])
                  for side in ("LV", "RV")}
        rows.append({"patient": patient, "group": ed_case["group"],
                     "manual": values["manual"], "predicted": values["predicted"], **errors})
    return rows
