"""Study outputs: AHA csv, indexed values and report for an ACDC patient and a DICOM cine."""

from __future__ import annotations

import csv

import numpy as np
import pydicom
import pytest

from lvseg_core.clinical import cine_indices, clinical_indices
from lvseg_core.errors import LVSegError
from lvseg_core.io import load_dicom_series, load_nifti, save_dicom_series
from lvseg_core.provenance import Provenance
from lvseg_core.regional import AHA_COLUMNS
from lvseg_core.scan import Scan
from lvseg_core.study import body_size_of, study_outputs

from tests.conftest import acdc_frame

PROV = Provenance("0.1.0", "unet", "bundled:unet", "cd" * 32, "2026-12-01 00:00 UTC")


def test_acdc_patient_study(tmp_path, acdc_dir):
    patient = acdc_dir / "patient021"  # HCM
    ed, es = load_nifti(acdc_frame(patient, "ED")), load_nifti(acdc_frame(patient, "ES"))
    ed_mask = load_nifti(acdc_frame(patient, "ED", label=True)).array.astype(np.uint8)
    es_mask = load_nifti(acdc_frame(patient, "ES", label=True)).array.astype(np.uint8)
    indices = clinical_indices(ed_mask, es_mask, ed.spacing)
    result = study_outputs("patient021", tmp_path, ed, ed_mask, es, es_mask, indices, PROV,
                           report=True)
    with open(result.aha_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["segment"] for r in rows] == [str(i) for i in range(1, 17)]
    assert list(rows[0]) == list(AHA_COLUMNS)
    assert result.values["BSA_m2"] == pytest.approx(body_size_of(ed).bsa_m2)
    assert result.values["LV_mass_index_g_m2_flag"] == "high"  # hypertrophic
    assert result.values["wall_max_ed_mm"] > 13.0
    assert result.report.name == "patient021_report.html"
    assert "patient021" in result.report.read_text(encoding="utf-8")
    with pytest.raises(LVSegError, match="already exists"):
        study_outputs("patient021", tmp_path, ed, ed_mask, es, es_mask, indices, PROV)


def test_dicom_cine_study_reads_body_size_and_header(tmp_path, heart):
    scan, labels = heart
    shrink = labels.copy()
    shrink[(labels == 3) & (np.roll(labels, 2, axis=0) != 3)] = 2  # thicker wall at "ES"
    cine = Scan(np.stack([scan.array, scan.array], -1), scan.affine, name="cine",
                meta={"trigger_times": [0.0, 400.0]})
    folder = tmp_path / "series"
    save_dicom_series(cine, folder)
    for f in folder.iterdir():
        ds = pydicom.dcmread(str(f))
        ds.PatientSize, ds.PatientWeight, ds.PatientSex = "1.80", "80", "F"
        ds.PatientName = "<b>Evil</b>^Name"
        ds.save_as(str(f))
    read = load_dicom_series(folder)
    masks = np.stack([labels, shrink], -1)
    curves = cine_indices(masks, read.spacing)
    result = study_outputs("cine", tmp_path / "out", read.frame(0), labels, read.frame(1),
                           shrink, curves, PROV, report=True, curves=curves)
    assert result.values["BSA_m2"] == pytest.approx(2.0)
    page = result.report.read_text(encoding="utf-8")
    assert "&lt;b&gt;Evil&lt;/b&gt;^Name" in page and "<b>Evil" not in page
    assert "Volume curve" in page
    assert result.aha_csv is not None and result.values["thickening_mean_pct"] > 0
