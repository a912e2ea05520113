"""The M&Ms-1 release layout (4D cines, ED/ES from the CSV or the labels) in
``evaluate``, on folders built from real ACDC patients."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lvseg_core import cli
from lvseg_core.data import read_info
from lvseg_core.data.layouts import LAYOUTS, convert_labels, detect_layout, find_layout_cases
from lvseg_core.io.nifti import load_label_frame, load_nifti_frame

from tests.conftest import acdc_frame
from tests.core.test_layouts import build_acdc

MODEL = ["--model", "unet", "--device", "cpu"]

#: Small ACDC patients; patient090's ED is frame 4, not 1.
PATIENTS = ("patient090", "patient070")

CSV_NAME = "211230_M&Ms_Dataset_information_diagnosis_opendataset.csv"


def case_id(patient: str) -> str:
    return f"M{patient[-3:]}"


def write_csv(root: Path, rows: list[dict], columns=("External code", "VendorName", "Vendor",
                                                      "Centre", "ED", "ES")) -> Path:
    """The release's table: an unnamed index column first, then ``columns``."""
    lines = ["," + ",".join(columns)]
    lines += [f"{i}," + ",".join(str(row[c]) for c in columns) for i, row in enumerate(rows)]
    path = root / CSV_NAME
    path.write_text("\n".join(lines) + "\n")
    return path


def build_mnms1(acdc: Path, root: Path, patients=PATIENTS, with_csv: bool = True) -> Path:
    """An M&Ms-1 release copy of ACDC patients: per patient a 4D cine of its
    NbFrame frames with the real ED and ES images at their real positions
    (ACDC frame numbers are 1-based, M&Ms indices 0-based) and a mirrored ED
    image in the other frames, a 4D label file (mnms labels) holding only ED
    and ES, and the CSV that names the frames."""
    rows = []
    for patient in patients:
        info = read_info(acdc / patient / "Info.cfg")
        ed, es, frames = int(info["ED"]) - 1, int(info["ES"]) - 1, int(info["NbFrame"])
        ed_img = nib.load(acdc_frame(acdc / patient, "ED"))
        images = {ed: np.asarray(ed_img.dataobj),
                  es: np.asarray(nib.load(acdc_frame(acdc / patient, "ES")).dataobj)}
        labels = {t: convert_labels(np.asarray(nib.load(
                      acdc_frame(acdc / patient, phase, label=True)).dataobj), "acdc", "mnms")
                  for t, phase in ((ed, "ED"), (es, "ES"))}
        other = images[ed][::-1].copy()  # a real-looking image that is not ED or ES
        cine = np.stack([images.get(t, other) for t in range(frames)], axis=-1)
        gt = np.stack([labels.get(t, np.zeros_like(labels[ed])) for t in range(frames)], -1)
        folder = root / "Training" / "Labeled" / case_id(patient)
        folder.mkdir(parents=True)
        nib.save(nib.Nifti1Image(cine.astype(np.float32), ed_img.affine),
                 folder / f"{case_id(patient)}_sa.nii.gz")
        nib.save(nib.Nifti1Image(gt.astype(np.uint8), ed_img.affine),
                 folder / f"{case_id(patient)}_sa_gt.nii.gz")
        rows.append({"External code": case_id(patient), "VendorName": "Siemens",
                     "Vendor": "A", "Centre": 1, "ED": ed, "ES": es})
    if with_csv:
        write_csv(root, rows)
    return root


def test_layout_choices_match():
    assert cli.LAYOUT_CHOICES == tuple(LAYOUTS)


def test_mnms1_cases_frames_from_csv_and_from_labels(tmp_path, acdc_dir):
    root = build_mnms1(acdc_dir, tmp_path / "mnms1")
    assert detect_layout(root) == "mnms1"
    layout, cases = find_layout_cases(root, require_labels=True)
    assert layout == "mnms1"
    by_name = {c.name: c for c in cases}
    assert sorted(by_name) == ["M070_ED", "M070_ES", "M090_ED", "M090_ES"]
    assert (by_name["M090_ED"].time_index, by_name["M090_ES"].time_index) == (3, 10)
    assert by_name["M090_ED"].vendor == "A" and not any(c.problem or c.note for c in cases)
    for case in cases:  # the frame read is the ACDC frame, image and labels
        patient = acdc_dir / f"patient{case.patient[1:]}"
        scan = load_nifti_frame(case.image, case.time_index)
        assert scan.shape3d == scan.array.shape
        assert np.array_equal(scan.array, np.asarray(
            nib.load(acdc_frame(patient, case.phase)).dataobj, np.float32))
        truth = convert_labels(load_label_frame(case.label, case.time_index, scan), "mnms",
                               "acdc")
        assert np.array_equal(truth, np.asarray(
            nib.load(acdc_frame(patient, case.phase, label=True)).dataobj))

    # Without the CSV: the labelled frames, ED the one with the larger LV, said so.
    (root / CSV_NAME).unlink()
    _, cases = find_layout_cases(root, require_labels=True)
    assert {c.name: c.time_index for c in cases} == {n: c.time_index for n, c in
                                                      by_name.items()}
    assert all("taken from the labelled frames" in c.note for c in cases)


def test_mnms1_hostile_csv_and_labels(tmp_path, acdc_dir):
    root = build_mnms1(acdc_dir, tmp_path / "mnms1", patients=("patient090",))
    write_csv(root, [{"External code": "M090", "Vendor": "A", "ED": 3}],
              columns=("External code", "Vendor", "ED"))
    with pytest.raises(Exception, match="no column 'ES'") as err:
        find_layout_cases(root)
    assert "\n" not in str(err.value)
    for ed, why in (("40", "outside the cine's 12 frames"), ("x3", "not a frame index"),
                    ("-1", "outside")):
        write_csv(root, [{"External code": "M090", "ED": ed, "ES": 10}],
                  columns=("External code", "ED", "ES"))
        cases = {c.name: c for c in find_layout_cases(root)[1]}
        assert why in cases["M090_ED"].problem and "\n" not in cases["M090_ED"].problem
        assert not cases["M090_ES"].problem and cases["M090_ES"].time_index == 10
    # No CSV and a third labelled frame: ED/ES cannot be told, one problem.
    (root / CSV_NAME).unlink()
    gt = root / "Training" / "Labeled" / "M090" / "M090_sa_gt.nii.gz"
    img = nib.load(gt)
    data = np.asarray(img.dataobj).copy()
    data[..., 0] = data[..., 3]
    nib.save(nib.Nifti1Image(data, img.affine), gt)
    [case] = find_layout_cases(root)[1]
    assert "3 labelled frame(s), not 2" in case.problem


def test_evaluate_mnms1_equals_acdc_scoring(tmp_path, acdc_dir, capsys):
    root = build_mnms1(acdc_dir, tmp_path / "mnms1")
    acdc = build_acdc(acdc_dir, tmp_path / "acdc", PATIENTS)
    assert cli.main(["evaluate", "--data", str(root), *MODEL, "--json",
                     str(tmp_path / "mnms1.json")]) == 0, capsys.readouterr().err
    assert "mnms1 layout" in capsys.readouterr().out
    assert cli.main(["evaluate", "--data", str(acdc), *MODEL, "--json",
                     str(tmp_path / "acdc.json")]) == 0
    mnms1 = json.loads((tmp_path / "mnms1.json").read_text())
    reference = json.loads((tmp_path / "acdc.json").read_text())
    assert mnms1["layout"] == "mnms1" and mnms1["cases"] == reference["cases"] == 4
    assert mnms1["by_vendor"]["A"]["cases"] == 4
    ref = {(c["patient"][-3:], c["phase"]): c for c in reference["per_case"]}
    for case in mnms1["per_case"]:
        expected = ref[(case["patient"][-3:], case["phase"])]
        for s in ("RV", "Myo", "LV", "mean"):
            assert abs(case["metrics"]["dice"][s] - expected["metrics"]["dice"][s]) <= 0.005
    assert abs(mnms1["dice"]["mean"] - reference["dice"]["mean"]) <= 0.005
    assert abs(mnms1["ef_abs_error"] - reference["ef_abs_error"]) <= 0.5

    # A CSV frame outside the cine: that frame is skipped with one line, the rest scored.
    write_csv(root, [{"External code": "M090", "ED": 40, "ES": 10},
                     {"External code": "M070", "ED": 0, "ES": 9}],
              columns=("External code", "ED", "ES"))
    assert cli.main(["evaluate", "--data", str(root), *MODEL, "--json",
                     str(tmp_path / "bad.json"), "--layout", "mnms1"]) == 1
    err = capsys.readouterr().err
    skipped = [line for line in err.splitlines() if line.startswith("skipped")]
    assert skipped == ["skipped M090_ED: " + CSV_NAME + ": ED frame 40 is outside the "
                       "cine's 12 frames (0 to 11)"]
    assert json.loads((tmp_path / "bad.json").read_text())["cases"] == 3
    # A CSV without the needed columns: one error line, exit 1.
    write_csv(root, [{"External code": "M090", "ED": 3}], columns=("External code", "ED"))
    assert cli.main(["evaluate", "--data", str(root), *MODEL, "--json",
                     str(tmp_path / "x.json")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "no column 'ES'" in err[0]
