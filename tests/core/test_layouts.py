"""M&Ms-2 layout and acdc <-> mnms label maps, on folders built from the ACDC data."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lvseg_core.errors import LVSegError
from lvseg_core.data.layouts import (LABEL_MAPS, convert_labels, detect_layout,
                                find_layout_cases, is_mnms_folder)

from tests.conftest import acdc_frame, link_patients

PATIENTS = ("patient002", "patient061")


def build_mnms(acdc: Path, out: Path, patients=PATIENTS) -> Path:
    """An M&Ms-2-layout copy of ACDC patients: images as they are, labels
    relabelled to the mnms convention (1 LV, 2 Myo, 3 RV)."""
    for patient in patients:
        case_id = f"C{patient[-3:]}"
        folder = out / case_id
        folder.mkdir(parents=True)
        for phase in ("ED", "ES"):
            image = nib.load(acdc_frame(acdc / patient, phase))
            label = nib.load(acdc_frame(acdc / patient, phase, label=True))
            nib.save(image, folder / f"{case_id}_SA_{phase}.nii.gz")
            mnms = convert_labels(np.asarray(label.dataobj), "acdc", "mnms")
            nib.save(nib.Nifti1Image(mnms, label.affine, label.header),
                     folder / f"{case_id}_SA_{phase}_gt.nii.gz")
        (folder / f"{case_id}_LA_ED.nii.gz").write_bytes(b"ignored")  # long axis: not read
    return out


def build_acdc(acdc: Path, out: Path, patients=PATIENTS) -> Path:
    """An ACDC-layout copy (links to the real files)."""
    return link_patients(acdc, out, patients)


def test_convert_labels_round_trip():
    acdc = np.array([[0, 1, 2, 3]], np.uint8)
    mnms = convert_labels(acdc, "acdc", "mnms")
    assert mnms.tolist() == [[0, 3, 2, 1]]
    assert convert_labels(mnms, "mnms", "acdc").tolist() == acdc.tolist()
    assert convert_labels(acdc, "acdc", "acdc").tolist() == acdc.tolist()
    for name, mapping in LABEL_MAPS.items():
        assert sorted(mapping.values()) == ["LV", "Myo", "RV"], name
    with pytest.raises(LVSegError, match="unknown label map"):
        convert_labels(acdc, "acdc", "kits")
    with pytest.raises(LVSegError, match="outside"):
        convert_labels(np.array([4]), "mnms", "acdc")


def test_layouts_built_from_acdc(tmp_path, acdc_dir):
    mnms_root = build_mnms(acdc_dir, tmp_path / "mnms")
    acdc_root = build_acdc(acdc_dir, tmp_path / "acdc")
    assert detect_layout(mnms_root) == "mnms" and is_mnms_folder(mnms_root / "C002")
    assert detect_layout(acdc_root) == "acdc"
    assert detect_layout(tmp_path) is None

    layout, cases = find_layout_cases(mnms_root, require_labels=True)
    assert layout == "mnms"
    assert sorted(c.name for c in cases) == ["C002_SA_ED", "C002_SA_ES", "C061_SA_ED",
                                             "C061_SA_ES"]
    assert {c.label_map for c in cases} == {"mnms"}
    for case in cases:
        patient = acdc_dir / f"patient{case.patient[1:]}"
        original = np.asarray(nib.load(acdc_frame(patient, case.phase, label=True)).dataobj)
        relabelled = np.asarray(nib.load(case.label).dataobj)
        assert not np.array_equal(relabelled, original)  # the conventions differ
        assert np.array_equal(convert_labels(relabelled, "mnms", "acdc"), original)

    layout, cases = find_layout_cases(acdc_root, require_labels=True)
    assert layout == "acdc" and len(cases) == 4
    assert {c.label_map for c in cases} == {"acdc"}
    assert cases[0].name.startswith("patient002_frame")
    # A forced layout that does not fit is a clear error.
    with pytest.raises(LVSegError, match="no labelled M&Ms cases"):
        find_layout_cases(acdc_root, layout="mnms", require_labels=True)
    with pytest.raises(LVSegError, match="unknown layout"):
        find_layout_cases(acdc_root, layout="kits")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LVSegError, match="neither an ACDC folder"):
        find_layout_cases(tmp_path / "empty")
