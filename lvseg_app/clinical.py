"""Clinical outputs of an app analysis: AHA segments, bullseyes, report, DICOM SEG.

Pages only draw; they call these with the :class:`~lvseg_app.analysis.Analysis`
of the Segment page.
"""

from __future__ import annotations

import numpy as np

from lvseg_core.bullseye import bullseye_png, segment_values
from lvseg_core.clinical import clinical_indices, rv_ef_caution
from lvseg_core.errors import LVSegError
from lvseg_core.indexed import indexed_values
from lvseg_core.io.dicom_seg import dicom_seg_download
from lvseg_core.io.upload import safe_file_name
from lvseg_core.provenance import Provenance
from lvseg_core.regional import aha_csv_text, aha_wall_thickness
from lvseg_core.report import StudyReport, render_html
from lvseg_core.study import body_size_of, details_of

from .analysis import Analysis

#: Upload endings that can give a DICOM SEG.
DICOM_UPLOADS: tuple[str, ...] = (".zip", ".dcm", ".dicom", ".ima")


def has_study(a: Analysis) -> bool:
    """True when the analysis has distinct ED and ES frames."""
    return a.ed is not None and a.es is not None and a.ed != a.es


def aha_rows(a: Analysis) -> list[dict]:
    """AHA 16-segment rows of the ED and ES frames (raises LVSegError without them)."""
    if not has_study(a):
        raise LVSegError("AHA segments need an end-diastolic and an end-systolic frame")
    return aha_wall_thickness(a.mask_at(a.ed), a.mask_at(a.es), a.scan.spacing, a.scan.affine)


def bullseyes(rows: list[dict]) -> tuple[bytes, bytes]:
    """PNG bullseyes of ED wall thickness (mm) and systolic thickening (%)."""
    return (bullseye_png(segment_values(rows, "wall_thickness_ed_mm"),
                         title="ED wall thickness", unit="mm"),
            bullseye_png(segment_values(rows, "thickening_pct"), title="Systolic thickening",
                         unit="%", cmap="RdYlGn"))


def aha_csv(rows: list[dict]) -> str:
    """The ``<name>_aha.csv`` text."""
    return aha_csv_text(rows)


def provenance(a: Analysis, segmenter=None) -> Provenance:
    """Provenance of the analysis (the segmenter adds the weights' SHA-256)."""
    if segmenter is not None and segmenter.architecture == a.architecture:
        return Provenance.of(segmenter)
    return Provenance.of(model=a.architecture, weights=a.weights)


def indexed(a: Analysis) -> dict:
    """BSA-indexed values with flags (body size from Info.cfg or the DICOM header)."""
    if not has_study(a):
        raise LVSegError("indexed values need an end-diastolic and an end-systolic frame")
    indices = clinical_indices(a.mask_at(a.ed), a.mask_at(a.es), a.scan.spacing)
    return indexed_values(indices, body_size_of(a.scan))


def report_html(a: Analysis, segmenter=None, qc=None) -> str:
    """The self-contained HTML report of the analysis, with ``qc`` or else the
    analysis's own QC status (a single volume, a pair or a cine alike)."""
    if qc is None and a.qc is not None:
        qc = a.qc.message
    ed = a.ed if a.ed is not None else 0
    study = has_study(a)
    indices = dict(a.indices or {})
    curves = a.indices or {}
    rows = None
    if study:
        try:
            rows = aha_rows(a)
        except LVSegError:  # e.g. no myocardium found: the page says so
            rows = None
    page = StudyReport(
        name=a.scan.name, provenance=provenance(a, segmenter), ed_image=a.image_at(ed),
        ed_mask=a.mask_at(ed), es_image=a.image_at(a.es) if study else None,
        es_mask=a.mask_at(a.es) if study else None, indices=indices,
        indexed=indexed(a) if study else None, aha_rows=rows,
        lv_curve=curves.get("LV_volumes_ml") if a.scan.n_frames > 2 else None,
        rv_curve=curves.get("RV_volumes_ml") if a.scan.n_frames > 2 else None, qc=qc,
        details=details_of(a.scan), cautions=_cautions(a) if study else ())
    return render_html(page)


def _cautions(a: Analysis) -> tuple[str, ...]:
    """What the weights' own evaluation says of the indices (the RV EF)."""
    caution = rv_ef_caution(a.validation)
    return (caution,) if caution else ()


def report_file_name(a: Analysis) -> str:
    return safe_file_name(f"{a.scan.name}_report.html")


def is_dicom_upload(file_name: str | None) -> bool:
    return bool(file_name) and str(file_name).lower().endswith(DICOM_UPLOADS)


def seg_download(a: Analysis, file_name: str, data: bytes, segmenter=None
                 ) -> tuple[str, bytes, str]:
    """The DICOM SEG of the uploaded DICOM scan: ``(file name, bytes, MIME type)``."""
    return dicom_seg_download(file_name, data, np.asarray(a.mask), provenance(a, segmenter),
                              safe_file_name(a.scan.name, "scan"),
                              a.scan.meta.get("series_uid"))
