"""Clinical outputs through the command line, with the bundled U-Net on real data:
AHA table and report of an ACDC patient, masks in the M&Ms label map, DICOM SEG
of a DICOM series and of a messy DICOM cine, evaluate on an M&Ms-2 folder."""

from __future__ import annotations

import csv
import json

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from lvseg_core import cli, settings
from lvseg_core.io import load_dicom_series, load_label, load_nifti, save_dicom_series
from lvseg_core.data.layouts import LABEL_MAPS, convert_labels
from lvseg_core.metrics import evaluate_segmentation
from lvseg_core.scan import Scan

from tests.conftest import acdc_frame
from tests.core.test_layouts import build_acdc, build_mnms

MODEL = ["--model", "unet", "--device", "cpu"]


def summary_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_label_map_choices_match():
    assert cli.LABEL_MAP_CHOICES == tuple(LABEL_MAPS)


def test_predict_acdc_patient_aha_report_mnms_labels(tmp_path, acdc_dir, capsys):
    out = tmp_path / "out"
    code = cli.main(["predict", str(acdc_dir / "patient021"), *MODEL, "--out", str(out),
                     "--report", "--label-map", "mnms", "--dicom-seg"])
    assert code == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "thickest wall" in text and "mass/BSA" in text
    rows = {r["kind"]: r for r in summary_rows(out / "summary.csv")}
    patient = rows["patient"]
    assert float(patient["BSA_m2"]) > 1.0
    assert patient["LV_mass_index_g_m2_flag"] in ("normal", "high", "low")
    assert float(patient["wall_max_ed_mm"]) > 12.0  # HCM
    assert "not DICOM" in rows["frame"]["notes"]  # --dicom-seg on NIfTI: a note, no SEG
    with open(out / "patient021_aha.csv", newline="") as fh:
        aha = list(csv.DictReader(fh))
    assert len(aha) == 16 and aha[0]["name"] == "basal anterior"
    page = (out / "patient021_report.html").read_text(encoding="utf-8")
    assert "AHA 16-segment" in page and "bundled:unet" in page
    # The bundled weights' own evaluation recorded the RV EF error: the page says it.
    rv_ef = json.loads((settings.weights_dir() / "unet" / "config.json").read_text())[
        "metrics"]["eval_rv_ef_abs_error"]
    assert f"this model&#x27;s RV EF was off by {rv_ef:.1f} points" in page
    # Masks in the M&Ms convention: 1 is the LV cavity, 3 the RV.
    ed_image = load_nifti(acdc_frame(acdc_dir / "patient021", "ED"))
    mask_path = out / f"{acdc_frame(acdc_dir / 'patient021', 'ED').name[:-7]}_seg.nii.gz"
    written = load_label(mask_path, ed_image)
    truth = load_label(acdc_frame(acdc_dir / "patient021", "ED", label=True), ed_image)
    as_acdc = convert_labels(written, "mnms", "acdc")
    assert evaluate_segmentation(as_acdc, truth, ed_image.spacing)["dice"]["LV"] > 0.85
    assert evaluate_segmentation(written, truth, ed_image.spacing)["dice"]["LV"] < 0.2


def read_seg_pixels(paths):
    out = {}
    for path in paths:
        seg = hd.seg.segread(str(path))
        assert seg.number_of_segments == 3
        uids = [u for _, _, u in seg.get_source_image_uids()]
        for uid, frame in zip(uids, seg.get_pixels_by_source_instance(
                source_sop_instance_uids=uids, segment_numbers=[1, 2, 3])):
            out[uid] = frame
    return out


def test_predict_dicom_seg_of_a_messy_cine(tmp_path, acdc_dir):
    # A 2-phase DICOM cine from the ED and ES frames of a real patient, exported
    # the messy way: one frame of reference per slice, dates 20120000, no PatientID.
    patient = acdc_dir / "patient061"
    ed, es = load_nifti(acdc_frame(patient, "ED")), load_nifti(acdc_frame(patient, "ES"))
    cine = Scan(np.stack([ed.array, es.array], -1), ed.affine, name="cine",
                meta={"trigger_times": [0.0, 350.0]})
    folder = tmp_path / "cine"
    save_dicom_series(cine, folder)
    frame_of = {}
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(str(f))
        z = f.name.split("_")[0]
        ds.FrameOfReferenceUID = frame_of.setdefault(z, pydicom.uid.generate_uid())
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20120000"
        ds.PatientSize, ds.PatientWeight, ds.PatientSex = "1.70", "65", "M"
        del ds.PatientID
        ds.save_as(str(f))
    before = {f.name: f.read_bytes() for f in folder.iterdir()}
    out = tmp_path / "out"
    assert cli.main(["predict", str(folder), *MODEL, "--out", str(out), "--dicom-seg",
                     "--report"]) == 0
    row = [r for r in summary_rows(out / "summary.csv") if r["kind"] == "cine"][0]
    segs = row["dicom_seg"].split(";")
    nz = ed.shape3d[2]
    assert len(segs) == 2 * nz  # one per phase and frame of reference
    assert "20120000" in row["notes"] and float(row["BSA_m2"]) == pytest.approx(
        (170 * 65 / 3600) ** 0.5, abs=1e-3)
    assert (out / "cine_aha.csv").is_file() and (out / "cine_report.html").is_file()
    # Pixels per segment equal the NIfTI mask's, and every source image is referenced.
    scan = load_dicom_series(folder)
    mask = np.asarray(nib.load(out / "cine_seg.nii.gz").dataobj).astype(np.uint8)
    assert mask.shape == scan.array.shape
    frames = read_seg_pixels(segs)
    for z, files in enumerate(scan.meta["source_files"]):
        for t, f in enumerate(files):
            uid = pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
            for k in range(3):
                assert np.array_equal(frames[uid][..., k] > 0, mask[:, :, z, t].T == k + 1)
    assert len(frames) == nz * 2
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == before


def test_evaluate_mnms_layout_equals_acdc_scoring(tmp_path, acdc_dir, capsys):
    patients = ("patient061",)
    mnms = build_mnms(acdc_dir, tmp_path / "mnms", patients)
    acdc = build_acdc(acdc_dir, tmp_path / "acdc", patients)
    code = cli.main(["evaluate", "--data", str(mnms), *MODEL, "--json",
                     str(tmp_path / "mnms.json")])
    assert code == 0, capsys.readouterr().err
    assert "mnms layout" in capsys.readouterr().out
    result = json.loads((tmp_path / "mnms.json").read_text())
    assert result["layout"] == "mnms" and result["cases"] == 2
    # The same masks scored by hand against the labels converted to ACDC.
    assert cli.main(["predict", str(acdc), *MODEL, "--out", str(tmp_path / "pred")]) == 0
    for case in result["per_case"]:
        phase = case["phase"]
        image = load_nifti(acdc_frame(acdc / patients[0], phase))
        predicted = load_label(tmp_path / "pred" /
                               f"{acdc_frame(acdc / patients[0], phase).name[:-7]}_seg.nii.gz",
                               image)
        label = mnms / "C061" / f"C061_SA_{phase}_gt.nii.gz"
        by_hand = convert_labels(load_label(label, image), "mnms", "acdc")
        dice = evaluate_segmentation(predicted, by_hand, image.spacing)["dice"]
        for s in ("RV", "Myo", "LV"):
            assert abs(case["metrics"]["dice"][s] - dice[s]) <= 0.005, (phase, s)
    # --layout acdc on the M&Ms folder is a clear error.
    assert cli.main(["evaluate", "--data", str(mnms), *MODEL, "--json",
                     str(tmp_path / "x.json"), "--layout", "acdc"]) == 1
    assert "error:" in capsys.readouterr().err
