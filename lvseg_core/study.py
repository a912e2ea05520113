"""Study-level outputs from ED and ES masks: AHA table, indexed values, HTML report.

A study is one ACDC patient (its ED and ES frames), one NIfTI pair (``<name>_ED``
and ``<name>_ES`` files) or one cine series (ED and ES found from the LV volume
curve). :func:`study_outputs` writes ``<name>_aha.csv`` and, when asked,
``<name>_report.html`` into the output folder, and returns the values that go
into ``summary.csv``. A single volume gets a report of its own
(:func:`volume_report`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import LVSegError
from .files import write_text
from .indexed import BodySize, indexed_values
from .provenance import Provenance
from .regional import aha_csv_text, aha_wall_thickness, thickness_summary
from .report import StudyReport, write_report
from .scan import Scan

#: Endings of the study files.
AHA_SUFFIX = "_aha.csv"
REPORT_SUFFIX = "_report.html"

#: summary.csv columns a study adds.
STUDY_COLUMNS: tuple[str, ...] = (
    "BSA_m2", "LV_EDV_index_ml_m2", "LV_EDV_index_ml_m2_flag", "LV_ESV_index_ml_m2",
    "LV_ESV_index_ml_m2_flag", "LV_SV_index_ml_m2", "LV_SV_index_ml_m2_flag",
    "LV_mass_index_g_m2", "LV_mass_index_g_m2_flag", "LV_EF_pct_flag",
    "wall_max_ed_mm", "wall_mid_ed_mm", "thickening_mean_pct", "aha_csv", "report",
)


def body_size_of(scan: Scan) -> BodySize:
    """Height, weight and sex: the ``Info.cfg`` beside an ACDC frame, else the
    DICOM header facts of the series (``meta["header"]``), else unknown."""
    from .data import read_info

    if scan.source:
        source = Path(scan.source)
        for info in (source / "Info.cfg", source.parent / "Info.cfg"):  # folder or frame
            if info.is_file():
                return BodySize.from_info(read_info(info))
    return BodySize.from_dicom(scan.meta.get("header") or {})


def details_of(scan: Scan) -> dict[str, str]:
    """Facts for the report header: source, DICOM patient/study fields, ACDC group."""
    out = {"source": str(scan.source)}
    out.update({k: str(v) for k, v in (scan.meta.get("header") or {}).items()
                if k not in ("PatientSize", "PatientWeight")})
    for key in ("patient", "group"):
        if scan.meta.get(key):
            out[key] = str(scan.meta[key])
    return out


@dataclass
class StudyResult:
    """What :func:`study_outputs` wrote and computed."""

    values: dict[str, Any] = field(default_factory=dict)
    aha_rows: list[dict] = field(default_factory=list)
    aha_csv: Path | None = None
    report: Path | None = None
    notes: list[str] = field(default_factory=list)


def study_outputs(name: str, out_dir: str | os.PathLike, ed: Scan, ed_mask: np.ndarray,
                  es: Scan, es_mask: np.ndarray, indices: Mapping[str, float],
                  provenance: Provenance, *, report: bool = False,
                  curves: Mapping[str, Sequence[float]] | None = None, qc: Any = None,
                  body: BodySize | None = None, details: Mapping[str, str] | None = None,
                  cautions: Sequence[str] = (), overwrite: bool = False) -> StudyResult:
    """Write ``<name>_aha.csv`` (and ``<name>_report.html``) for one study.

    Args:
        name: study name (ACDC patient, cine scan name).
        out_dir: output folder.
        ed, es: the ED and ES frames as 3D scans (images, spacing, affine).
        ed_mask, es_mask: their ACDC label maps ``(x, y, z)``.
        indices: :func:`lvseg_core.clinical.clinical_indices` of the study.
        provenance: how the masks were made.
        report: also write the HTML report.
        curves: ``LV_volumes_ml`` / ``RV_volumes_ml`` of a cine series.
        qc: QC status for the report.
        body, details: patient size and header facts when they cannot be read
            from ``ed`` (:func:`body_size_of`, :func:`details_of`).
        cautions: sentences for the report under its indices.
        overwrite: replace existing study files.

    Returns:
        The values for ``summary.csv`` (:data:`STUDY_COLUMNS`), the AHA rows,
        the written paths and notes (e.g. why the AHA table is missing).
    """
    out_dir = Path(os.fspath(out_dir)).expanduser()
    result = StudyResult()
    body = body if body is not None else body_size_of(ed)
    indexed = indexed_values(indices, body)
    result.values.update({k: v for k, v in indexed.items() if k in STUDY_COLUMNS})
    try:
        rows = aha_wall_thickness(ed_mask, es_mask, ed.spacing, ed.affine)
    except LVSegError as err:
        rows = []
        result.notes.append(f"no AHA segments: {err}")
    if rows:
        summary = thickness_summary(rows)
        result.values.update({"wall_max_ed_mm": summary["max_ed_mm"],
                              "wall_mid_ed_mm": summary["mid_ed_mm"],
                              "thickening_mean_pct": summary["mean_thickening_pct"]})
        target = out_dir / f"{name}{AHA_SUFFIX}"
        if target.exists() and not overwrite:
            raise LVSegError(f"{target}: already exists; pass --overwrite to replace it")
        write_text(target, aha_csv_text(rows))
        result.aha_csv = target
        result.values["aha_csv"] = str(target)
    result.aha_rows = rows
    if report:
        page = StudyReport(
            name=name, provenance=provenance, ed_image=ed.array, ed_mask=ed_mask,
            es_image=es.array, es_mask=es_mask, indices=dict(indices), indexed=indexed,
            aha_rows=rows or None,
            lv_curve=(curves or {}).get("LV_volumes_ml"),
            rv_curve=(curves or {}).get("RV_volumes_ml"), qc=qc,
            details=dict(details) if details is not None else details_of(ed),
            cautions=tuple(cautions))
        result.report = write_report(page, out_dir / f"{name}{REPORT_SUFFIX}", overwrite)
        result.values["report"] = str(result.report)
    return result


def volume_report(name: str, out_dir: str | os.PathLike, scan: Scan, mask: np.ndarray,
                  volumes: Mapping[str, float], provenance: Provenance, *, qc: Any = None,
                  overwrite: bool = False) -> Path:
    """Write ``<name>_report.html`` for one 3D volume: its overlay, the volumes of
    ``volumes`` (``{"LV", "Myo", "RV"}`` in mL), its QC status and provenance."""
    page = StudyReport(name=name, provenance=provenance, ed_image=scan.array, ed_mask=mask,
                       indices={f"{s}_ml": v for s, v in volumes.items()}, qc=qc,
                       details=details_of(scan))
    return write_report(page, Path(os.fspath(out_dir)).expanduser() / f"{name}{REPORT_SUFFIX}",
                        overwrite)
