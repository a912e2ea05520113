"""``--model ensemble`` / ``--model unet,vnet`` in predict and evaluate (in-process CLI)."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import torch

from lvseg_core import cli
from lvseg_core.models import create_model
from tests.conftest import link_patients, make_heart


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Random tiny U-Net and V-Net weights folders."""
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    create_model("unet", encoder_name="tu-resnet10t", encoder_depth=3,
                 decoder_channels=[16, 8, 8]).save_pretrained(root / "unet")
    create_model("vnet", base_channels=2).save_pretrained(root / "vnet")
    return root


@pytest.mark.parametrize("bad", ["unet,unet", "unet,resnet", ",", "unet,"])
def test_bad_model_lists_exit_2(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["predict", "x.nii.gz", "--model", bad, "--out", "o"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--model" in err and "Traceback" not in err


def test_one_folder_for_an_ensemble_is_a_one_line_error(tmp_path, tiny, capsys):
    scan, _ = make_heart()
    path = tmp_path / "scan.nii.gz"
    nib.Nifti1Image(scan.array, scan.affine).to_filename(str(path))
    code = cli.main(["predict", str(path), "--model", "unet,vnet", "--weights",
                     str(tiny / "unet"), "--out", str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and "one source per model" in err and "Traceback" not in err


def test_predict_with_two_models(tmp_path, tiny, capsys):
    scan, _ = make_heart((80, 72, 5), (1.4, 1.4, 8.0))
    path = tmp_path / "scan.nii.gz"
    nib.Nifti1Image(scan.array, scan.affine).to_filename(str(path))
    out = tmp_path / "out"
    code = cli.main(["predict", str(path), "--model", "unet,vnet", "--weights",
                     f"{tiny / 'unet'},{tiny / 'vnet'}", "--out", str(out), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    mask = nib.load(str(out / "scan_seg.nii.gz"))
    assert mask.shape == scan.array.shape
    np.testing.assert_allclose(mask.affine, scan.affine)
    with open(out / "summary.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    assert str(tiny / "unet") in row["weights"] and str(tiny / "vnet") in row["weights"]
    assert len(row["weights_sha256"].split("+")) == 2
    assert "ensemble(unet,vnet)" in captured.out


def test_evaluate_ensemble_of_bundled_models(tmp_path, acdc_dir, capsys):
    data = link_patients(acdc_dir, tmp_path / "acdc", ["patient078"])
    out = tmp_path / "eval.json"
    code = cli.main(["evaluate", "--data", str(data), "--model", "ensemble", "--json", str(out),
                     "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(out.read_text())
    assert report["model"] == "ensemble" and report["cases"] == 2
    assert report["weights"] == "bundled:unet + bundled:attention_unet + bundled:vnet"
    assert report["dice"]["LV"] >= 0.9 and report["dice"]["mean"] >= 0.85


def test_ensemble_report_states_its_members_rv_ef_errors(tmp_path, acdc_dir, capsys):
    """The study report of an ensemble gives the range of its members' recorded
    RV EF errors (an ensemble stores no evaluation of its own)."""
    from lvseg_core import settings

    data = link_patients(acdc_dir, tmp_path / "acdc", ["patient078"])
    out = tmp_path / "out"
    code = cli.main(["predict", str(data / "patient078"), "--model", "unet,attention_unet",
                     "--out", str(out), "--report", "--device", "cpu", "--no-qc-flip"])
    assert code == 0, capsys.readouterr().err
    errors = sorted(json.loads((settings.weights_dir() / a / "config.json").read_text())[
        "metrics"]["eval_rv_ef_abs_error"] for a in ("unet", "attention_unet"))
    page = (out / "patient078_report.html").read_text(encoding="utf-8")
    assert (f"the RV EF of this ensemble&#x27;s models was off by {errors[0]:.1f}-"
            f"{errors[1]:.1f} points") in page
