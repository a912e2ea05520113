"""A per-study HTML report: one self-contained page (no external URL).

The page holds the ED and ES overlays of a mid-ventricular slice (PNG data
URIs), the LV/RV volume curve of a cine series, the clinical indices with the
BSA-indexed values, their reference ranges and flags, the QC status when
given, the AHA bullseye of ED wall thickness and thickening, and the
provenance (LVSeg version, model, weights and their SHA-256, date).

Every string that comes from a file (patient name, IDs, file names, notes)
is HTML-escaped: a hostile header cannot inject markup.
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import LVSegError
from .files import write_text
from .labels import LABEL_OF
from .provenance import Provenance

#: Clinical indices shown, with their display names and units.
INDEX_ROWS: tuple[tuple[str, str, str], ...] = (
    ("LV_EDV_ml", "LV end-diastolic volume", "mL"),
    ("LV_ESV_ml", "LV end-systolic volume", "mL"),
    ("LV_SV_ml", "LV stroke volume", "mL"),
    ("LV_EF_pct", "LV ejection fraction", "%"),
    ("Myo_mass_g", "LV mass (ED)", "g"),
    ("RV_EDV_ml", "RV end-diastolic volume", "mL"),
    ("RV_ESV_ml", "RV end-systolic volume", "mL"),
    ("RV_EF_pct", "RV ejection fraction", "%"),
    ("LV_ml", "LV cavity volume", "mL"),
    ("Myo_ml", "LV myocardium volume", "mL"),
    ("RV_ml", "RV cavity volume", "mL"),
    ("LV_EDV_index_ml_m2", "LV EDV / BSA", "mL/m²"),
    ("LV_ESV_index_ml_m2", "LV ESV / BSA", "mL/m²"),
    ("LV_SV_index_ml_m2", "LV SV / BSA", "mL/m²"),
    ("LV_mass_index_g_m2", "LV mass / BSA", "g/m²"),
)


@dataclass
class StudyReport:
    """What one study's page shows.

    Attributes:
        name: study name (a file name part; escaped on the page).
        provenance: how the masks were made.
        ed_image, ed_mask, es_image, es_mask: ``(x, y, z)`` arrays (images as
            read, masks ACDC labels); ES may be None.
        indices: :func:`lvseg_core.clinical.clinical_indices` values.
        indexed: :func:`lvseg_core.indexed.indexed_values`, or None.
        aha_rows: :func:`lvseg_core.regional.aha_wall_thickness` rows, or None.
        lv_curve, rv_curve: volumes per cine frame (mL), or None.
        qc: QC status (a short text, or a mapping of checks to results), or None.
        details: header facts (e.g. PatientName, PatientID, StudyDate, source).
        cautions: sentences shown under the indices (e.g.
            :func:`lvseg_core.clinical.rv_ef_caution`).
    """

    name: str
    provenance: Provenance
    ed_image: np.ndarray
    ed_mask: np.ndarray
    es_image: np.ndarray | None = None
    es_mask: np.ndarray | None = None
    indices: Mapping[str, float] = field(default_factory=dict)
    indexed: Mapping[str, Any] | None = None
    aha_rows: Sequence[Mapping] | None = None
    lv_curve: Sequence[float] | None = None
    rv_curve: Sequence[float] | None = None
    qc: str | Mapping[str, Any] | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    cautions: Sequence[str] = ()


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 1) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return f"{number:.{digits}f}" if math.isfinite(number) else "n/a"


def mid_slice(mask: np.ndarray) -> int:
    """The middle one of the slices holding LV myocardium (else the middle slice)."""
    slices = [z for z in range(mask.shape[2]) if (mask[:, :, z] == LABEL_OF["Myo"]).any()]
    return slices[len(slices) // 2] if slices else mask.shape[2] // 2


def _overlay_uri(image: np.ndarray, mask: np.ndarray, z: int) -> str:
    from .render import overlay_rgb, png_data_uri

    return png_data_uri(overlay_rgb(image[:, :, z], mask[:, :, z]))


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _curve_png(lv: Sequence[float], rv: Sequence[float] | None) -> bytes:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .bullseye import figure_png

    fig, ax = plt.subplots(figsize=(5, 2.6), dpi=100)
    ax.plot(range(len(lv)), lv, marker="o", label="LV", color="#ea4335")
    if rv is not None:
        ax.plot(range(len(rv)), rv, marker="o", label="RV", color="#4285f4")
    ax.set_xlabel("frame")
    ax.set_ylabel("volume (mL)")
    ax.legend()
    ax.grid(alpha=0.3)
    return figure_png(fig)


def _indices_table(report: StudyReport) -> str:
    values = dict(report.indices)
    indexed = dict(report.indexed or {})
    values.update({k: v for k, v in indexed.items() if not k.endswith(("_range", "_flag"))})
    rows = []
    for key, label, unit in INDEX_ROWS:
        if key not in values:
            continue
        low_high = indexed.get(f"{key}_range")
        ref = f"{_num(low_high[0], 0)}-{_num(low_high[1], 0)}" if low_high else ""
        flag = indexed.get(f"{key}_flag", "")
        css = f' class="flag-{_e(flag)}"' if flag in ("low", "high") else ""
        rows.append(f"<tr{css}><td>{_e(label)}</td><td>{_num(values[key])}</td>"
                    f"<td>{_e(unit)}</td><td>{_e(ref)}</td><td>{_e(flag)}</td></tr>")
    head = ("<tr><th>index</th><th>value</th><th>unit</th><th>reference</th>"
            "<th>flag</th></tr>")
    note = ""
    if indexed:
        note = (f"<p class=\"note\">BSA {_num(indexed.get('BSA_m2'), 2)} m² (Mosteller); "
                f"sex {_e(indexed.get('sex') or 'unknown')}; reference: "
                f"{_e(indexed.get('reference', ''))}</p>")
    cautions = "".join(f"<p class=\"caution\">{_e(c)}</p>" for c in report.cautions)
    return f"<table>{head}{''.join(rows)}</table>{note}{cautions}"


def _qc_html(qc: str | Mapping[str, Any] | None) -> str:
    if qc is None:
        return "<p>QC not run.</p>"
    if isinstance(qc, Mapping):
        items = "".join(f"<li>{_e(k)}: {_e(v)}</li>" for k, v in qc.items())
        return f"<ul>{items}</ul>"
    return f"<p>{_e(qc)}</p>"


def _aha_html(rows: Sequence[Mapping] | None) -> str:
    if not rows:
        return "<p>AHA segments need both ED and ES masks.</p>"
    from .bullseye import bullseye_png, segment_values

    ed = bullseye_png(segment_values(rows, "wall_thickness_ed_mm"),
                      title="ED wall thickness", unit="mm")
    thick = bullseye_png(segment_values(rows, "thickening_pct"), title="Systolic thickening",
                         unit="%", cmap="RdYlGn")
    table = "".join(
        f"<tr><td>{int(r['segment'])}</td><td>{_e(r['name'])}</td>"
        f"<td>{_num(r['wall_thickness_ed_mm'])}</td><td>{_num(r['wall_thickness_es_mm'])}</td>"
        f"<td>{_num(r['thickening_pct'])}</td></tr>" for r in rows)
    return (f"<div class=\"row\"><img alt=\"ED wall thickness bullseye\" src=\"{_png_uri(ed)}\">"
            f"<img alt=\"thickening bullseye\" src=\"{_png_uri(thick)}\"></div>"
            "<table><tr><th>segment</th><th>name</th><th>ED mm</th><th>ES mm</th>"
            f"<th>thickening %</th></tr>{table}</table>")


_STYLE = """
body{font-family:sans-serif;margin:24px;color:#222;max-width:1000px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left;font-size:13px}.flag-low td,.flag-high td{background:#fde2e1}
.row{display:flex;gap:16px;flex-wrap:wrap;align-items:flex-start}.row img{max-width:460px}
figure{margin:0}.note{font-size:12px;color:#555}h1{font-size:22px}h2{font-size:17px}
.caution{font-size:13px;background:#fff4d6;border-left:4px solid #e0a800;padding:4px 8px}
"""


def render_html(report: StudyReport) -> str:
    """The report page as one self-contained HTML string."""
    ed_mask = np.asarray(report.ed_mask)
    if ed_mask.ndim != 3 or np.asarray(report.ed_image).shape != ed_mask.shape:
        raise LVSegError(f"{report.name}: ED image and mask must be (x, y, z) of one shape")
    z = mid_slice(ed_mask)
    study = report.es_image is not None and report.es_mask is not None
    figures = [("ED" if study else "Volume", _overlay_uri(np.asarray(report.ed_image),
                                                          ed_mask, z))]
    if study:
        figures.append(("ES", _overlay_uri(np.asarray(report.es_image),
                                           np.asarray(report.es_mask), z)))
    overlays = "".join(f"<figure><img alt=\"{phase} overlay\" src=\"{uri}\"><figcaption>"
                       f"{phase}, slice {z}</figcaption></figure>" for phase, uri in figures)
    curve = ""
    if report.lv_curve is not None and len(report.lv_curve) > 1:
        curve = (f"<h2>Volume curve</h2><img alt=\"volume curve\" src=\""
                 f"{_png_uri(_curve_png(report.lv_curve, report.rv_curve))}\">")
    details = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>"
                      for k, v in report.details.items())
    prov = report.provenance.as_dict()
    provenance = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in prov.items())
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>LVSeg report: {_e(report.name)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>LVSeg report: {_e(report.name)}</h1>"
        f"<table>{details}</table>"
        f"<h2>Segmentation</h2><div class=\"row\">{overlays}</div>"
        "<p class=\"note\">RV cavity blue, LV myocardium green, LV cavity red.</p>"
        f"{curve}<h2>Indices</h2>{_indices_table(report)}"
        f"<h2>Quality control</h2>{_qc_html(report.qc)}"
        f"<h2>AHA 16-segment wall thickness</h2>{_aha_html(report.aha_rows)}"
        f"<h2>Provenance</h2><table>{provenance}</table>"
        "<p class=\"note\">Research software; not a medical device.</p></body></html>")


def write_report(report: StudyReport, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write :func:`render_html` to ``path`` (refuses to replace it unless ``overwrite``)."""
    path = Path(os.fspath(path)).expanduser()
    if path.exists() and not overwrite:
        raise LVSegError(f"{path}: already exists; pass --overwrite to replace it")
    return write_text(path, render_html(report))
