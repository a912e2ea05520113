"""Clinical outputs in the app: AHA bullseyes on the Segment page, report and DICOM SEG
downloads; with the bundled U-Net on a real ACDC patient (its DICOM export too)."""

from __future__ import annotations

import io
import os
import zipfile

import highdicom as hd
import numpy as np
import pytest

from lvseg_app import clinical as clin
from lvseg_app.analysis import analyse, list_samples, load_sample
from lvseg_core.inference import Segmenter
from lvseg_core.io import load_nifti, save_dicom_series
from tests.conftest import ROOT, acdc_frame

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest
PATIENT = "patient021"


@pytest.fixture(scope="module")
def samples(acdc_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("samples")
    (root / PATIENT).mkdir()
    for f in (acdc_dir / PATIENT).iterdir():
        os.symlink(f, root / PATIENT / f.name)
    return root


@pytest.fixture(scope="module")
def segmenter():
    return Segmenter.from_source("unet", None, device="cpu")


@pytest.fixture(scope="module")
def analysis(samples, segmenter):
    scan, truth = load_sample(list_samples(samples)[0], "ED + ES")
    return analyse(scan, segmenter, truth)


def test_aha_report_and_indexed_of_a_sample(analysis, segmenter):
    assert clin.has_study(analysis)
    rows = clin.aha_rows(analysis)
    assert len(rows) == 16 and max(r["wall_thickness_ed_mm"] for r in rows) > 12.0  # HCM
    ed_png, thick_png = clin.bullseyes(rows)
    assert ed_png[:8] == b"\x89PNG\r\n\x1a\n" and thick_png[:8] == b"\x89PNG\r\n\x1a\n"
    values = clin.indexed(analysis)
    assert values["BSA_m2"] > 1.0  # Height and Weight from the sample's Info.cfg
    page = clin.report_html(analysis, segmenter)
    assert page.startswith("<!DOCTYPE html>") and segmenter.weights.sha256 in page
    assert "AHA 16-segment" in page and "LV mass / BSA" in page
    assert analysis.qc is not None and analysis.qc.message in page  # QC reaches the page
    assert "QC not run" not in page
    # The bundled weights recorded their RV EF error; the analysis keeps it for the page.
    assert analysis.validation == segmenter.members_validation_metrics
    assert analysis.validation[0]["eval_rv_ef_abs_error"] > 0
    assert '<p class="caution">RV EF: on 10 ACDC validation patients' in page


def test_seg_download_of_a_dicom_upload(tmp_path, acdc_dir, segmenter):
    image = load_nifti(acdc_frame(acdc_dir / PATIENT, "ED"))
    files = save_dicom_series(image, tmp_path / "series")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for f in files:
            zf.write(f, f"study/{f.name}")
    from lvseg_core.io.upload import load_uploaded_scan

    scan = load_uploaded_scan("study.zip", buffer.getvalue())
    a = analyse(scan, segmenter)
    assert not clin.has_study(a)
    name, data, mime = clin.seg_download(a, "study.zip", buffer.getvalue(), segmenter)
    assert name == "study_seg.dcm" and mime == "application/dicom"
    page = clin.report_html(a, segmenter)  # a single volume's report has its QC too
    assert a.qc is not None and a.qc.message in page and "QC not run" not in page
    path = tmp_path / name
    path.write_bytes(data)
    seg = hd.seg.segread(str(path))
    assert seg.number_of_segments == 3
    uids = [u for _, _, u in seg.get_source_image_uids()]
    assert len(uids) == len(files)
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids,
                                               segment_numbers=[1, 2, 3])
    import pydicom

    z_of = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: z
            for z, f in enumerate(files)}
    for uid, frame in zip(uids, pixels):
        z = z_of[uid]
        for k in range(3):
            assert np.array_equal(frame[..., k] > 0, a.mask[:, :, z].T == k + 1)


def test_segment_page_draws_bullseyes_and_offers_downloads(samples, monkeypatch):
    monkeypatch.setenv("LVSEG_WEIGHTS_DIR", str(ROOT / "weights"))
    monkeypatch.setenv("LVSEG_SAMPLES", str(samples))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    at.button(key="segment_sample_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "AHA 16-segment wall thickness" in [s.value for s in at.subheader]
    assert len(at.get("image")) >= 2  # the two bullseyes
    aha = [d.value for d in at.dataframe if "wall_thickness_ed_mm" in d.value.columns]
    assert len(aha) == 1 and len(aha[0]) == 16
    labels = [b.proto.label for b in at.get("download_button")]
    assert any("Report (HTML" in label for label in labels)
    assert not any("DICOM SEG" in label for label in labels)  # a NIfTI sample: no SEG
