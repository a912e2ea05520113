"""Linked patient folders in an ACDC folder: a link leading outside the input
folder is skipped with a one-line warning (nothing read there); a link inside it
is followed. Real links, real ACDC patients, the bundled U-Net."""

from __future__ import annotations

import json
import os
import shutil

from lvseg_core import cli
from lvseg_core.data import dataset_problems, find_cases

MODEL = ["--model", "unet", "--device", "cpu"]
WHY = "symbolic link to a place outside the input folder"


def build(acdc_dir, tmp_path):
    """``inputs/acdc`` with patient061 (a folder), patient090 (a link to
    ``store/`` inside the input) and patient078 (a link to a folder outside)."""
    root = tmp_path / "inputs" / "acdc"
    for patient, parent in (("patient061", root), ("patient090", root / "store"),
                            ("patient078", tmp_path / "elsewhere")):
        shutil.copytree(acdc_dir / patient, parent / patient)
    os.symlink(root / "store" / "patient090", root / "patient090", target_is_directory=True)
    os.symlink(tmp_path / "elsewhere" / "patient078", root / "patient078",
               target_is_directory=True)
    # Outside, a broken Info.cfg: reading it would show up as a dataset problem.
    (tmp_path / "elsewhere" / "patient078" / "Info.cfg").write_text("ED: x\n")
    return root


def test_find_cases_skips_links_leading_outside(tmp_path, acdc_dir):
    root = build(acdc_dir, tmp_path)
    notes: list[str] = []
    cases = find_cases(root, notes=notes)
    assert sorted({c.patient for c in cases}) == ["patient061", "patient090"]
    assert notes == [f"acdc/patient078 skipped: {WHY}"]
    assert all(root.resolve() in c.image.resolve().parents for c in cases)
    assert dataset_problems(root) == []  # the outside Info.cfg was never read


def test_predict_and_evaluate_warn_once(tmp_path, acdc_dir, capsys):
    root = build(acdc_dir, tmp_path)
    shutil.rmtree(root / "store" / "patient090")  # keep the run small: a broken inner link
    assert cli.main(["predict", str(root), *MODEL, "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err.splitlines()
    warnings = [line for line in err if line.startswith("warning:")]
    assert f"warning: acdc/patient078 skipped: {WHY}" in warnings
    assert "warning: acdc/patient090 skipped: broken link or unreadable entry" in warnings
    assert not list((tmp_path / "out").glob("patient078*"))
    assert {p.name.split("_")[0] for p in (tmp_path / "out").glob("*_seg.nii.gz")} == {
        "patient061"}

    assert cli.main(["evaluate", "--data", str(root), *MODEL, "--json",
                     str(tmp_path / "eval.json")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "patient078" in line] == [
        f"warning: acdc/patient078 skipped: {WHY}"]
    result = json.loads((tmp_path / "eval.json").read_text())
    assert {c["patient"] for c in result["per_case"]} == {"patient061"}
    assert result["warnings"][0] == f"acdc/patient078 skipped: {WHY}"
