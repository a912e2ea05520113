"""The per-study HTML report: self-contained, escaped, with every section."""

from __future__ import annotations

import numpy as np
import pytest

from lvseg_core.clinical import cine_indices, clinical_indices
from lvseg_core.data import read_info
from lvseg_core.errors import LVSegError
from lvseg_core.indexed import BodySize, indexed_values
from lvseg_core.io import load_nifti
from lvseg_core.provenance import Provenance
from lvseg_core.regional import aha_wall_thickness
from lvseg_core.report import StudyReport, render_html, write_report

from tests.conftest import acdc_frame

HOSTILE = '<script>alert("x")</script><img src=http://evil.example/x onerror=alert(1)>'


def acdc_report(patient_dir, **extra) -> StudyReport:
    ed_img = load_nifti(acdc_frame(patient_dir, "ED"))
    es_img = load_nifti(acdc_frame(patient_dir, "ES"))
    ed = load_nifti(acdc_frame(patient_dir, "ED", label=True)).array.astype(np.uint8)
    es = load_nifti(acdc_frame(patient_dir, "ES", label=True)).array.astype(np.uint8)
    indices = clinical_indices(ed, es, ed_img.spacing)
    info = read_info(patient_dir / "Info.cfg")
    return StudyReport(
        name=patient_dir.name, provenance=Provenance.of(model="expert", weights="labels"),
        ed_image=ed_img.array, ed_mask=ed, es_image=es_img.array, es_mask=es,
        indices=indices, indexed=indexed_values(indices, BodySize.from_info(info)),
        aha_rows=aha_wall_thickness(ed, es, ed_img.spacing, ed_img.affine),
        details={"PatientName": HOSTILE, "group": info.get("Group", "")}, **extra)


def test_report_is_self_contained_and_escaped(tmp_path, acdc_dir):
    report = acdc_report(acdc_dir / "patient002", qc={"status": "pass", "note": HOSTILE})
    report.cautions = ("RV EF: check the basal ES slice.", HOSTILE)
    page = render_html(report)
    assert '<p class="caution">RV EF: check the basal ES slice.</p>' in page
    assert "<script" not in page.lower()
    assert "<img src=http" not in page  # the hostile tag appears only escaped
    assert html_escaped(HOSTILE) in page
    tags = parsed_tags(page)
    assert [t for t, _ in tags if t == "script"] == []
    sources = [dict(a).get("src") for t, a in tags if t == "img"]
    assert len(sources) == 4  # ED + ES overlays, two bullseyes
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    # Nothing is fetched: no attribute of a real tag points outside the page.
    assert not [v for _, a in tags for k, v in a if k in ("src", "href") and
                not str(v).startswith("data:")]
    assert "<link" not in page and "@import" not in page
    for section in ("Segmentation", "Indices", "Quality control", "AHA 16-segment",
                    "Provenance"):
        assert section in page
    # Indices with reference ranges and flags (DCM patient: dilated, low EF).
    assert "LV EDV / BSA" in page and "Kawel-Boehm" in page
    assert 'class="flag-high"' in page and 'class="flag-low"' in page
    assert "basal anterior" in page and "apical lateral" in page
    assert report.provenance.lvseg_version in page
    path = write_report(report, tmp_path / "p2_report.html")
    assert path.read_text(encoding="utf-8") == page
    with pytest.raises(LVSegError, match="already exists"):
        write_report(report, path)


def parsed_tags(page: str) -> list[tuple[str, list]]:
    """(tag, attributes) of every start tag, as a browser's parser sees them."""
    from html.parser import HTMLParser

    found = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, attrs))

    Collect().feed(page)
    return found


def html_escaped(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def test_report_of_a_cine_without_es(heart):
    scan, labels = heart
    cine = np.stack([labels, labels], axis=-1)
    curves = cine_indices(cine, scan.spacing)
    report = StudyReport(name='cine"<b>', provenance=Provenance.of(model="unet"),
                         ed_image=scan.array, ed_mask=labels, lv_curve=curves["LV_volumes_ml"],
                         rv_curve=curves["RV_volumes_ml"], indices=curves)
    page = render_html(report)
    assert "cine&quot;&lt;b&gt;" in page and 'cine"<b>' not in page
    assert "Volume curve" in page and "QC not run" in page
    assert "AHA segments need both ED and ES masks" in page
    with pytest.raises(LVSegError, match="one shape"):
        render_html(StudyReport(name="x", provenance=report.provenance,
                                ed_image=scan.array[..., :2], ed_mask=labels))
