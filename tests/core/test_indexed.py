"""Body surface area, BSA-indexed LV values, reference ranges and flags."""

from __future__ import annotations

import math

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from lvseg_core.clinical import clinical_indices
from lvseg_core.data import patient_cases, read_info
from lvseg_core.errors import LVSegError
from lvseg_core.indexed import (REFERENCE_SOURCE, BodySize, body_surface_area, flag,
                                indexed_values, reference_range)
from lvseg_core.io import load_nifti


def test_mosteller():
    assert body_surface_area(180, 80) == pytest.approx(2.0)
    assert body_surface_area(160, 70) == pytest.approx(math.sqrt(160 * 70 / 3600))
    with pytest.raises(LVSegError):
        body_surface_area(0, 70)


def test_reference_ranges_by_sex():
    assert reference_range("LV_EDV_index_ml_m2", "M") == (57.0, 105.0)
    assert reference_range("LV_EDV_index_ml_m2", "F") == (56.0, 96.0)
    assert reference_range("LV_EDV_index_ml_m2") == (56.0, 105.0)  # unknown sex: union
    assert reference_range("LV_mass_index_g_m2", "F") == (41.0, 81.0)
    with pytest.raises(LVSegError):
        reference_range("nonsense")
    assert flag(100.0, 56.0, 96.0) == "high"
    assert flag(50.0, 56.0, 96.0) == "low"
    assert flag(70.0, 56.0, 96.0) == "normal"
    assert flag(float("nan"), 56.0, 96.0) == ""


def test_indexed_values_and_flags():
    indices = {"LV_EDV_ml": 200.0, "LV_ESV_ml": 50.0, "LV_SV_ml": 150.0,
               "LV_EF_pct": 75.0, "Myo_mass_g": 120.0}
    out = indexed_values(indices, BodySize(180.0, 80.0, "F"))
    assert out["BSA_m2"] == pytest.approx(2.0)
    assert out["LV_EDV_index_ml_m2"] == pytest.approx(100.0)
    assert out["LV_EDV_index_ml_m2_flag"] == "high"  # > 96 for women
    male = indexed_values(indices, BodySize(180.0, 80.0, "M"))
    assert male["LV_EDV_index_ml_m2_flag"] == "normal"  # <= 105 for men
    assert out["LV_SV_index_ml_m2"] == pytest.approx(75.0)
    assert out["LV_mass_index_g_m2"] == pytest.approx(60.0)
    assert out["LV_EF_pct_flag"] == "normal"
    assert out["reference"] == REFERENCE_SOURCE
    unknown = indexed_values(indices, BodySize(None, 80.0))
    assert math.isnan(unknown["BSA_m2"]) and unknown["LV_EDV_index_ml_m2_flag"] == ""
    assert unknown["LV_EF_pct_flag"] == "normal"  # EF needs no body size


def test_body_size_from_info_and_dicom():
    body = BodySize.from_info({"Height": "160.0", "Weight": "70.0"})
    assert body.known and body.sex is None
    assert BodySize.from_info({"Height": "0", "Weight": "70"}).known is False
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.PatientSize = "1.75"
    ds.PatientWeight = "70"
    ds.PatientSex = "M"
    body = BodySize.from_dicom(ds)
    assert body.height_cm == pytest.approx(175.0) and body.weight_kg == 70.0
    assert body.sex == "M"
    del ds.PatientWeight
    assert not BodySize.from_dicom(ds).known


def _patient_values(folder):
    frames = {c.phase: c for c in patient_cases(folder) if c.phase in ("ED", "ES")}
    ed, es = load_nifti(frames["ED"].label), load_nifti(frames["ES"].label)
    indices = clinical_indices(ed.array.astype(np.uint8), es.array.astype(np.uint8),
                               ed.spacing)
    return indexed_values(indices, BodySize.from_info(read_info(folder / "Info.cfg")))


def test_acdc_expert_labels_flag_dilated_hearts(acdc_dir):
    dcm = [_patient_values(acdc_dir / f"patient{n:03d}") for n in range(1, 21)
           if (acdc_dir / f"patient{n:03d}").is_dir()]
    if not dcm:
        pytest.skip("no DCM patients in the ACDC folder")
    assert all(math.isfinite(v["BSA_m2"]) for v in dcm)
    high = sum(v["LV_EDV_index_ml_m2_flag"] == "high" for v in dcm)
    assert high >= 0.8 * len(dcm), high  # dilated: EDV/BSA above 105 mL/m² (14 of 15 here)
    assert all(v["LV_EF_pct_flag"] == "low" for v in dcm)
