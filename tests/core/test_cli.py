"""Tests of the command line (``python -m lvseg_core``) and lvseg_core.workflows.

No trained weights are needed: random-init models are saved into tmp folders
with ``save_pretrained`` and passed with ``--weights``. The networks are built
narrow (fewer decoder channels) so that each volume takes well under a second
on a shared CPU; the CLI and the workflows do not depend on the widths.
A few cases run the real CLI in a subprocess; the rest call ``cli.main`` or
the workflow functions in-process (importing torch + MONAI takes seconds).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from lvseg_core import cli
from lvseg_core.clinical import clinical_indices
from lvseg_core.errors import LVSegError
from lvseg_core.inference import Segmenter
from lvseg_core.io import load_label, load_nifti, load_scan, save_dicom_series
from lvseg_core.models import ARCHITECTURES, create_model
from lvseg_core.scan import Scan
from lvseg_core.workflows import (SUMMARY_COLUMNS, collect_inputs, evaluate_dataset,
                                  json_safe, predict_inputs, write_json)
from tests.conftest import ROOT, acdc_frame, link_patients, make_heart

#: Narrow variants of each architecture, for speed.
SMALL = {
    "unet": {"encoder_depth": 3, "decoder_channels": (16, 8, 8)},
    "attention_unet": {"channels": (8, 16, 32)},
    "vnet": {"base_channels": 4},
}
METRIC_KEYS = ("dice", "iou", "precision", "recall", "f1", "hd95_mm", "assd_mm")


# ------------------------------------------------------------------ fixtures / helpers


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> dict[str, Path]:
    """Random-init weights folders for every architecture, plus ``"lv"``: a U-Net
    whose head predicts LV everywhere (deterministic volumes: EF exactly 0)."""
    root = tmp_path_factory.mktemp("weights")
    folders = {}
    torch.manual_seed(0)
    for arch, kwargs in SMALL.items():
        create_model(arch, **kwargs).save_pretrained(root / arch)
        folders[arch] = root / arch
    model = create_model("unet", **SMALL["unet"])
    head = model.net.segmentation_head[0]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 10.0]))
    model.save_pretrained(root / "lv")
    folders["lv"] = root / "lv"
    return folders


@pytest.fixture(scope="session")
def segmenter(weights) -> Segmenter:
    return Segmenter.from_source("unet", str(weights["unet"]), device="cpu")


def oblique_affine() -> np.ndarray:
    affine = np.eye(4)
    a = np.deg2rad(20.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    affine[:3, :3] = rot @ np.diag([1.4, 1.4, 8.0])
    affine[:3, 3] = (-61.3, 17.25, 40.5)
    return affine


def write_heart(path: Path, shape=(64, 56, 4), seed=0, four_d: int = 0) -> Path:
    """A synthetic heart as NIfTI; ``four_d`` frames of changing size if > 0."""
    if four_d:
        frames = [make_heart(shape, seed=seed + t)[0].array * (1 + 0.1 * t)
                  for t in range(four_d)]
        array = np.stack(frames, axis=-1)
    else:
        array = make_heart(shape, seed=seed)[0].array
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.float32), oblique_affine()), str(path))
    return path


def run_cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m lvseg_core ARGS`` in a subprocess (offline)."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [full_env.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, "-m", "lvseg_core", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=300)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def read_summary(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def strict_json(path: Path):
    def reject(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(Path(path).read_text(), parse_constant=reject)


# ------------------------------------------------------------------ argument parsing


def test_model_choices_match_registry():
    assert cli.MODEL_CHOICES == tuple(ARCHITECTURES)


def test_unknown_model_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["predict", "x.nii.gz", "--model", "resnet", "--out", "o"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown model 'resnet'" in err and "Traceback" not in err


def test_missing_input_one_line_error(tmp_path, capsys):
    code = cli.main(["predict", str(tmp_path / "nope.nii.gz"), "--model", "unet",
                     "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nope.nii.gz" in lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_missing_input_in_a_subprocess(tmp_path):
    """The real entry point: one error line, exit 1, no traceback."""
    result = run_cli("predict", "nope.nii.gz", "--model", "unet", "--out", "o", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nope.nii.gz" in lines[0]


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "predict" in capsys.readouterr().err


# ------------------------------------------------------------------ predict


def test_predict_nifti_subprocess(tmp_path, weights):
    scan_path = write_heart(tmp_path / "in" / "heart.nii.gz")
    result = run_cli("predict", str(scan_path), "--model", "unet", "--weights",
                     str(weights["unet"]), "--out", "out", "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    out = tmp_path / "out" / "heart_seg.nii.gz"
    assert out.is_file() and str(tmp_path / "out") in result.stdout
    src, mask = nib.load(str(scan_path)), nib.load(str(out))
    assert mask.shape == src.shape
    assert np.array_equal(mask.affine, src.affine)
    data = np.asanyarray(mask.dataobj)
    assert data.dtype == np.uint8 and data.max() <= 3
    rows = read_summary(tmp_path / "out" / "summary.csv")
    assert list(rows[0]) == list(SUMMARY_COLUMNS)
    assert [r["kind"] for r in rows] == ["frame"]
    assert rows[0]["shape"] == "64x56x4" and float(rows[0]["seconds"]) > 0
    assert all(float(rows[0][f"{s}_ml"]) >= 0 for s in ("RV", "Myo", "LV"))


def test_predict_4d_gives_4d_mask_and_cine_row(tmp_path, segmenter):
    scan_path = write_heart(tmp_path / "cine.nii.gz", four_d=3)
    seen = []
    report = predict_inputs(collect_inputs([scan_path]), segmenter, tmp_path / "out",
                            progress=lambda done, total, name: seen.append((done, total, name)))
    assert report.ok and seen == [(1, 1, "cine")]
    mask = nib.load(str(tmp_path / "out" / "cine_seg.nii.gz"))
    assert mask.shape == (64, 56, 4, 3)
    assert np.array_equal(mask.affine, nib.load(str(scan_path)).affine)
    row = read_summary(report.summary_path)[0]
    assert row["kind"] == "cine" and row["frames"] == "3"
    assert row["ED_frame"] in "012" and row["ES_frame"] in "012"
    for key in ("LV_EDV_ml", "LV_ESV_ml", "LV_SV_ml", "RV_EDV_ml", "Myo_mass_g"):
        assert row[key] != ""


def test_folder_with_corrupt_file(tmp_path, weights, capsys):
    folder = tmp_path / "scans"
    write_heart(folder / "good.nii.gz")
    (folder / "bad.nii.gz").write_bytes(b"this is not a NIfTI file")
    (folder / "notes.txt").write_text("ignored")
    code = cli.main(["predict", str(folder), "--model", "unet", "--weights",
                     str(weights["unet"]), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1
    skipped = [line for line in err.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 1 and skipped[0].startswith("skipped bad: ")
    assert "Traceback" not in err
    assert (tmp_path / "out" / "good_seg.nii.gz").is_file()
    assert not (tmp_path / "out" / "bad_seg.nii.gz").exists()
    rows = read_summary(tmp_path / "out" / "summary.csv")
    assert sorted(r["kind"] for r in rows) == ["failed", "frame"]


def test_predict_never_overwrites(tmp_path, weights, capsys):
    folder = tmp_path / "scans"
    scan = write_heart(folder / "a.nii.gz")
    existing = folder / "a_seg.nii.gz"   # a user's own file, named like our output
    existing.write_bytes(b"precious")
    before = scan.read_bytes()
    args = ["--model", "unet", "--weights", str(weights["unet"]), "--out", str(folder)]

    assert cli.main(["predict", str(folder), *args]) == 1
    err = capsys.readouterr().err
    assert "skipped a: " in err and "already exists" in err
    assert existing.read_bytes() == b"precious" and scan.read_bytes() == before

    # A second batch into the same folder refuses the existing summary.csv.
    assert cli.main(["predict", str(scan), *args]) == 1
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and err.startswith("error: ") and "summary.csv" in err

    # Even with --overwrite an output never replaces an input file.
    assert cli.main(["predict", str(scan), str(existing), *args, "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "skipped a: " in err and "input file" in err
    assert existing.read_bytes() == b"precious" and scan.read_bytes() == before
    assert (folder / "a_seg_seg.nii.gz").is_file() is False  # a_seg is not a valid NIfTI


def test_output_name_collisions_get_suffix(tmp_path, segmenter):
    a = write_heart(tmp_path / "x" / "heart.nii.gz", seed=1)
    b = write_heart(tmp_path / "y" / "heart.nii", seed=2)
    report = predict_inputs(collect_inputs([a, b, a]), segmenter, tmp_path / "out")
    assert report.ok
    assert [p.name for p in report.outputs] == ["heart_seg.nii.gz", "heart_2_seg.nii.gz"]


def _crop(scan: Scan, x0=80, y0=80, z0=2, size=(64, 64, 4)) -> Scan:
    affine = scan.affine.copy()
    affine[:3, 3] = scan.affine[:3, :3] @ np.array([x0, y0, z0]) + scan.affine[:3, 3]
    array = scan.array[x0:x0 + size[0], y0:y0 + size[1], z0:z0 + size[2]]
    return Scan(array, affine, name="p002")


def test_dicom_series_and_zip(tmp_path, acdc_dir, weights, capsys):
    volume = load_nifti(acdc_frame(acdc_dir / "patient002", "ED"))
    study = tmp_path / "study"
    files = save_dicom_series(_crop(volume), study / "series")
    with zipfile.ZipFile(study / "series.zip", "w") as archive:
        for path in files:
            archive.write(path, f"series/{path.name}")
    expected = load_scan(study / "series")

    inputs = collect_inputs([study])
    assert sorted(i.kind for i in inputs) == ["dicom-folder", "file"]
    code = cli.main(["predict", str(study), "--model", "unet", "--weights",
                     str(weights["unet"]), "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    written = sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz"))
    assert written == ["series_2_seg.nii.gz", "series_seg.nii.gz"]
    for name in written:
        mask = nib.load(str(tmp_path / "out" / name))
        assert mask.shape == expected.array.shape == (64, 64, 4)
        assert np.allclose(mask.affine, expected.affine, atol=1e-4)
        assert np.asanyarray(mask.dataobj).dtype == np.uint8


def test_collect_and_predict_acdc_layout(tmp_path, segmenter):
    patient = tmp_path / "data" / "patient001"
    write_heart(patient / "patient001_frame01.nii.gz", seed=1)
    write_heart(patient / "patient001_frame03.nii.gz", seed=3)
    write_heart(patient / "patient001_frame05.nii.gz", seed=5)
    write_heart(patient / "patient001_frame01_gt.nii.gz", seed=9)
    (patient / "Info.cfg").write_text("ED: 1\nES: 5\nGroup: NOR\n")

    inputs = collect_inputs([tmp_path / "data"])
    assert [(i.name, i.phase, i.group) for i in inputs] == [
        ("patient001_frame01", "ED", "NOR"), ("patient001_frame03", "", "NOR"),
        ("patient001_frame05", "ES", "NOR")]
    report = predict_inputs(inputs, segmenter, tmp_path / "out")
    rows = read_summary(report.summary_path)
    assert [r["kind"] for r in rows] == ["frame", "frame", "frame", "patient"]
    patient_row = rows[-1]
    ed, es = rows[0], rows[2]
    assert float(patient_row["LV_EDV_ml"]) == pytest.approx(float(ed["LV_ml"]), abs=1e-3)
    assert float(patient_row["LV_ESV_ml"]) == pytest.approx(float(es["LV_ml"]), abs=1e-3)
    assert patient_row["group"] == "NOR"


@pytest.mark.parametrize("arch", ["attention_unet", "vnet"])
def test_predict_other_architectures(tmp_path, weights, arch):
    scan_path = write_heart(tmp_path / "heart.nii.gz", shape=(48, 40, 3))
    seg = Segmenter.from_source(arch, str(weights[arch]), device="cpu")
    report = predict_inputs(collect_inputs([scan_path]), seg, tmp_path / "out")
    assert report.ok
    assert nib.load(str(report.outputs[0])).shape == (48, 40, 3)


def test_weights_for_another_architecture(tmp_path, weights, capsys):
    scan_path = write_heart(tmp_path / "heart.nii.gz")
    code = cli.main(["predict", str(scan_path), "--model", "vnet", "--weights",
                     str(weights["unet"]), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and error_lines(err) == [error_lines(err)[0]]
    assert err.startswith("error: ") and "unet" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_requested_without_cuda(tmp_path, weights, capsys):
    scan_path = write_heart(tmp_path / "heart.nii.gz")
    code = cli.main(["predict", str(scan_path), "--model", "unet", "--weights",
                     str(weights["unet"]), "--out", str(tmp_path / "out"), "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 1 and "CUDA is not available" in err and len(error_lines(err)) == 1


def test_unreachable_hub_repo_offline(tmp_path, monkeypatch, capsys):
    # In-process (a subprocess costs ~10 s of imports): offline through the env
    # variable and huggingface_hub's constant, which it read at import.
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    scan_path = write_heart(tmp_path / "heart.nii.gz")
    for repo in ("not/a/repo", "lvseg-test/no-such-repo"):
        code = cli.main(["predict", str(scan_path), "--model", "unet", "--weights", repo,
                         "--out", str(tmp_path / repo.replace("/", "_"))])
        lines = error_lines(capsys.readouterr().err)
        if code == 0:  # only possible as a fallback to bundled weights, with a warning
            assert any(line.startswith("warning: ") and repo in line for line in lines)
        else:
            assert code == 1
            assert len(lines) == 1 and lines[0].startswith("error: ")
            assert repo in lines[0] or "bundled" in lines[0]


def test_collect_inputs_errors(tmp_path):
    with pytest.raises(LVSegError, match="no such file"):
        collect_inputs([tmp_path / "missing.nii.gz"])
    with pytest.raises(LVSegError):
        collect_inputs([])


# ------------------------------------------------------------------ evaluate


def test_evaluate_small_acdc(tmp_path, acdc_dir, weights, capsys):
    patients = ["patient002"] + [p.name for p in sorted(acdc_dir.glob("patient*"))
                                 if p.name != "patient002"][:1]
    data = link_patients(acdc_dir, tmp_path / "acdc", patients)
    out = tmp_path / "reports" / "nested" / "eval.json"
    code = cli.main(["evaluate", "--data", str(data), "--model", "unet", "--weights",
                     str(weights["lv"]), "--json", str(out), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Dice" in captured.out and str(out) in captured.out

    report = strict_json(out)
    for key in ("model", "weights", "device", "cases", *METRIC_KEYS, "counts", "ef_abs_error",
                "ef", "seconds_per_volume", "per_case", "by_phase", "by_group"):
        assert key in report, key
    assert report["model"] == "unet" and report["weights"].startswith("local:")
    assert report["inference_precision"] in ("fp32", "bf16") and report["tta"] is False
    assert report["cases"] == 4 and len(report["per_case"]) == 4
    for key in METRIC_KEYS:
        assert set(report[key]) == {"RV", "Myo", "LV", "mean"}
        assert set(report["counts"][key]) == {"RV", "Myo", "LV", "mean"}
    assert report["seconds_per_volume"] > 0
    assert set(report["by_phase"]) == {"ED", "ES"}
    assert all(v["cases"] == 2 and "dice" in v and "hd95_mm" in v
               for v in report["by_phase"].values())
    assert sum(v["cases"] for v in report["by_group"].values()) == 4
    case = report["per_case"][0]
    assert {"patient", "frame", "phase", "group", "metrics", "volumes", "seconds"} <= set(case)

    # The model predicts LV everywhere, so predicted EF is 0 and the error is the manual EF.
    assert isinstance(report["ef_abs_error"], float)
    manual = []
    for name in patients:
        folder = data / name
        ed = load_nifti(acdc_frame(folder, "ED"))
        labels = [load_label(acdc_frame(folder, phase, label=True), ed) for phase in ("ED", "ES")]
        manual.append(clinical_indices(labels[0], labels[1], ed.spacing))
    assert report["ef_abs_error"] == pytest.approx(np.mean([m["LV_EF_pct"] for m in manual]),
                                                   rel=1e-6)
    assert len(report["ef"]) == 2
    assert report["ef"][0]["predicted"]["LV_EF_pct"] == 0.0
    # Both ventricles' manual indices come from the expert labels; no RV is
    # predicted, so its EF (0 / 0) and EF error are undefined (null).
    for row, expected in zip(report["ef"], manual):
        for key in ("RV_EDV_ml", "RV_ESV_ml", "RV_EF_pct", "LV_EDV_ml"):
            assert row["manual"][key] == pytest.approx(expected[key], rel=1e-6), key
        assert row["manual"]["RV_EDV_ml"] > row["manual"]["RV_ESV_ml"] > 0
        assert row["predicted"]["RV_EDV_ml"] == 0.0 and row["RV_EF_abs_error"] is None
    assert report["rv_ef_abs_error"] is None
    # RV/Myo are never predicted: their precision is undefined (null), counted as 0 valid.
    assert report["precision"]["RV"] is None and report["counts"]["precision"]["RV"] == 0


def test_evaluate_ef_rows_give_both_ventricles_errors():
    """EF errors per patient from the per-case volumes: LV and RV, in points."""
    from lvseg_core.workflows import _ef_rows

    def case(phase, manual, predicted):
        return {"patient": "p1", "phase": phase, "group": "NOR",
                "volumes": {"manual": manual, "predicted": predicted}}

    ed = {"RV_ml": 100.0, "Myo_ml": 100.0, "LV_ml": 120.0}
    rows = _ef_rows([
        case("ED", ed, ed),
        case("ES", {"RV_ml": 40.0, "Myo_ml": 100.0, "LV_ml": 48.0},     # EF 60 % both
             {"RV_ml": 50.0, "Myo_ml": 100.0, "LV_ml": 54.0})])         # RV 50 %, LV 55 %
    (row,) = rows
    assert row["manual"]["RV_EF_pct"] == pytest.approx(60.0)
    assert row["predicted"]["RV_ESV_ml"] == pytest.approx(50.0)
    assert row["RV_EF_abs_error"] == pytest.approx(10.0)
    assert row["LV_EF_abs_error"] == pytest.approx(5.0)


def test_evaluate_without_labels(tmp_path, capsys):
    patient = tmp_path / "data" / "patient001"
    write_heart(patient / "patient001_frame01.nii.gz")
    (patient / "Info.cfg").write_text("ED: 1\nES: 2\nGroup: NOR\n")
    code = cli.main(["evaluate", "--data", str(tmp_path / "data"), "--model", "unet",
                     "--json", str(tmp_path / "e.json")])
    err = capsys.readouterr().err
    assert code == 1
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "labelled" in lines[0]
    assert not (tmp_path / "e.json").exists()


def test_evaluate_dataset_records_bad_frames(tmp_path, segmenter):
    patient = tmp_path / "data" / "patient001"
    write_heart(patient / "patient001_frame01.nii.gz")
    nib.save(nib.Nifti1Image(make_heart((64, 56, 4))[1], oblique_affine()),
             str(patient / "patient001_frame01_gt.nii.gz"))
    write_heart(patient / "patient001_frame02.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 2), np.uint8), np.eye(4)),  # wrong shape
             str(patient / "patient001_frame02_gt.nii.gz"))
    (patient / "Info.cfg").write_text("ED: 1\nES: 2\nGroup: NOR\n")
    calls = []
    result = evaluate_dataset(tmp_path / "data", segmenter,
                              progress=lambda *a: calls.append(a))
    assert result["cases"] == 1 and len(calls) == 2
    assert result["failed"][0]["name"] == "patient001_frame02"
    assert "shape" in result["failed"][0]["error"]
    assert result["weights"].startswith("local:")
    assert result["ef"] == []
    path = write_json(result, tmp_path / "r.json")
    assert strict_json(path)["ef_abs_error"] is None


def test_json_safe():
    data = {"a": float("nan"), "b": [np.float32(1.5), np.int64(2), float("inf")],
            "c": (Path("x"), np.bool_(True))}
    assert json_safe(data) == {"a": None, "b": [1.5, 2, None], "c": ["x", True]}


def test_evaluate_keeps_an_existing_report_unless_overwrite(tmp_path, capsys):
    patient = tmp_path / "data" / "patient001"
    write_heart(patient / "patient001_frame01.nii.gz")
    nib.save(nib.Nifti1Image(make_heart((64, 56, 4))[1], np.diag([1.5, 1.5, 8.0, 1.0])),
             str(patient / "patient001_frame01_gt.nii.gz"))
    (patient / "Info.cfg").write_text("ED: 1\nES: 2\nGroup: NOR\n")
    out = tmp_path / "kept.json"
    out.write_text('{"earlier": true}\n')
    args = ["evaluate", "--data", str(tmp_path / "data"), "--model", "unet", "--json", str(out),
            "--device", "cpu", "--no-qc-flip"]
    assert cli.main(args) == 1
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "exists; pass --overwrite" in lines[0]
    assert out.read_text() == '{"earlier": true}\n'
    assert cli.main([*args, "--overwrite"]) == 0, capsys.readouterr().err
    assert strict_json(out)["cases"] == 1
