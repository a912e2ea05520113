"""Tests of lvseg_core.cohort: the resumable manifest and the Ray Data engine.

Ray runs for real, as a local cluster of 2 CPUs.
"""

from __future__ import annotations

import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from lvseg_core.cohort import MANIFEST_NAME, SegmenterSpec, read_manifest, run_cohort
from lvseg_core.data import VALIDATION_PATIENTS
from lvseg_core.errors import LVSegError
from lvseg_core.models import create_model
from lvseg_core.workflows import collect_inputs
from tests.conftest import acdc_frame


@pytest.fixture()
def scans(acdc_dir, tmp_path):
    """Three real ACDC frames copied into a folder of their own."""
    folder = tmp_path / "scans"
    folder.mkdir()
    for patient in VALIDATION_PATIENTS[:2]:
        shutil.copy(acdc_frame(acdc_dir / patient, "ED"), folder)
    shutil.copy(acdc_frame(acdc_dir / VALIDATION_PATIENTS[0], "ES"), folder)
    return folder


@pytest.fixture()
def small_weights(tmp_path):
    torch.manual_seed(0)
    folder = tmp_path / "weights"
    create_model("unet", decoder_channels=(32, 16, 8, 8)).save_pretrained(folder)
    return folder


def _masks(out):
    return {p.name: np.asanyarray(nib.load(p).dataobj) for p in sorted(out.glob("*_seg.nii.gz"))}


def _mtimes(out):
    return {p.name: p.stat().st_mtime_ns for p in out.glob("*_seg.nii.gz")}


def test_resume_skips_done_and_redoes_changed(scans, small_weights, tmp_path):
    spec = SegmenterSpec("unet", str(small_weights), device="cpu", backend="torch")
    out = tmp_path / "out"
    inputs = collect_inputs([scans])
    first = run_cohort(inputs, spec, out)
    assert len(first.outputs) == 3 and first.ok
    assert len(read_manifest(out)) == 3
    with pytest.raises(LVSegError, match="--resume"):
        run_cohort(inputs, spec, out)
    before = _mtimes(out)
    lines = (out / MANIFEST_NAME).read_text().splitlines()
    again = run_cohort(inputs, spec, out, resume=True)
    assert _mtimes(out) == before  # nothing rewritten
    assert (out / MANIFEST_NAME).read_text().splitlines() == lines
    assert len(again.rows) == len(first.rows) and again.summary_path.is_file()

    changed = sorted(scans.glob("*.nii.gz"))[0]
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    run_cohort(inputs, spec, out, resume=True)
    after = _mtimes(out)
    redone = [n for n in after if after[n] != before[n]]
    assert redone == [changed.name.replace(".nii.gz", "_seg.nii.gz")]

    torch.manual_seed(1)  # new weights: everything is redone
    create_model("unet", decoder_channels=(32, 16, 8, 8)).save_pretrained(small_weights)
    run_cohort(inputs, spec, out, resume=True)
    assert all(_mtimes(out)[n] != after[n] for n in after)
    shas = {e["weights_sha256"] for e in read_manifest(out).values()}
    assert len(shas) == 1


def test_interrupted_manifest_line_is_ignored(scans, small_weights, tmp_path):
    spec = SegmenterSpec("unet", str(small_weights), device="cpu", backend="torch")
    out = tmp_path / "out"
    inputs = collect_inputs([scans])
    run_cohort(inputs, spec, out)
    lines = (out / MANIFEST_NAME).read_text().splitlines()
    (out / MANIFEST_NAME).write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])  # cut short
    before = _mtimes(out)
    run_cohort(inputs, spec, out, resume=True)
    after = _mtimes(out)
    assert sum(after[n] != before[n] for n in after) == 1
    assert all(json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines()[3:])


def test_ray_engine_writes_the_same_masks_as_local(scans, tmp_path, monkeypatch):
    pytest.importorskip("ray.data")
    monkeypatch.setenv("LVSEG_ONNX_CACHE", str(tmp_path / "cache"))
    spec = SegmenterSpec("unet", device="cpu", backend="onnx")  # bundled U-Net
    inputs = collect_inputs([scans])
    local = run_cohort(inputs, spec, tmp_path / "local")
    ray_run = run_cohort(inputs, spec, tmp_path / "ray", engine="ray", workers=2)
    assert local.ok and ray_run.ok
    a, b = _masks(tmp_path / "local"), _masks(tmp_path / "ray")
    assert a.keys() == b.keys() and len(a) == 3
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert [r["name"] for r in local.rows] == [r["name"] for r in ray_run.rows]
    before = _mtimes(tmp_path / "ray")
    run_cohort(inputs, spec, tmp_path / "ray", engine="ray", workers=2, resume=True)
    assert _mtimes(tmp_path / "ray") == before


def test_cli_predict_resume(scans, small_weights, tmp_path, capsys):
    from lvseg_core import cli

    args = ["predict", str(scans), "--model", "unet", "--weights", str(small_weights),
            "--device", "cpu", "--backend", "torch", "--out", str(tmp_path / "out")]
    assert cli.main(args + ["--resume"]) == 0
    assert "segmented 3 of 3" in capsys.readouterr().out
    before = _mtimes(tmp_path / "out")
    assert cli.main(args + ["--resume"]) == 0
    assert _mtimes(tmp_path / "out") == before
    assert cli.main(args + ["--engine", "ray", "--workers", "0"]) == 1
    assert "--workers must be at least 1" in capsys.readouterr().err
