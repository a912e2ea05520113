"""Quality control in the command line: ``qc`` / ``qc_reason`` in predict's
summary.csv and ``qc`` per case in evaluate's JSON, with the bundled U-Net on
real validation volumes and on inputs that are not cardiac MRI."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from lvseg_core import cli
from lvseg_core.workflows import SUMMARY_COLUMNS

from tests.conftest import link_patients


def _link_patient(acdc_dir, root, name="patient002"):
    return link_patients(acdc_dir, root, [name])


def test_summary_has_qc_columns_that_tell_good_from_broken(tmp_path, acdc_dir, capsys):
    from skimage.data import camera
    from skimage.transform import resize

    data = _link_patient(acdc_dir, tmp_path / "acdc")
    affine = np.diag([1.4, 1.4, 10.0, 1.0])
    constant = tmp_path / "constant.nii.gz"
    nib.save(nib.Nifti1Image(np.full((160, 160, 8), 250.0, np.float32), affine), str(constant))
    photo = resize(camera().astype(np.float32), (200, 200))
    stacked = tmp_path / "photo.nii.gz"
    nib.save(nib.Nifti1Image(np.repeat(photo[..., None], 8, axis=2), affine), str(stacked))

    code = cli.main(["predict", str(data), str(constant), str(stacked), "--model", "unet",
                     "--out", str(tmp_path / "out"), "--device", "cpu", "--no-qc-flip"])
    out = capsys.readouterr().out
    assert code == 0
    assert {"qc", "qc_reason"} <= set(SUMMARY_COLUMNS)
    with open(tmp_path / "out" / "summary.csv", newline="") as fh:
        rows = {r["name"]: r for r in csv.DictReader(fh)}
    frames = [r for r in rows.values() if r["patient"] == "patient002" and r["kind"] == "frame"]
    assert len(frames) == 2
    for row in frames:
        assert row["qc"] == "ok", row["qc_reason"]
        assert row["qc_reason"] == "no problem found"
    assert rows["patient002"]["kind"] == "patient" and rows["patient002"]["qc"] == "ok"
    assert rows["constant"]["qc"] == "fail"
    assert rows["constant"]["qc_reason"].startswith("the image is constant")
    assert rows["photo"]["qc"] == "fail"
    assert "copies of one picture" in rows["photo"]["qc_reason"]
    # the flagged scans are named on the console with their reason
    assert "constant: QC fail: the image is constant" in out
    assert "patient002_frame01: QC" not in out


def test_evaluate_json_has_qc_per_case(tmp_path, acdc_dir, capsys):
    data = _link_patient(acdc_dir, tmp_path / "acdc")
    out = tmp_path / "eval.json"
    code = cli.main(["evaluate", "--data", str(data), "--model", "unet", "--json", str(out),
                     "--device", "cpu"])
    assert code == 0
    assert "QC 2 ok, 0 check, 0 fail" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["qc"] == {"ok": 2, "check": 0, "fail": 0}
    for case in report["per_case"]:
        qc = case["qc"]
        assert qc["status"] == "ok" and qc["reason"] == "no problem found"
        assert qc["signals"]["agreement_dice"] > 0.8          # the flipped pass ran
        assert qc["signals"]["LV_ml"] == pytest.approx(case["volumes"]["predicted"]["LV_ml"])
