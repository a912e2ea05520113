"""QC status on every kind of ``predict --report`` page: an ACDC patient folder,
a NIfTI pair (``<name>_ED`` / ``<name>_ES`` files) and a single volume; with the
bundled U-Net on real ACDC data."""

from __future__ import annotations

import csv
import html
import os

from lvseg_core import cli
from lvseg_core.workflows import Input, collect_inputs

from tests.conftest import acdc_frame
from tests.core.test_layouts import build_acdc

MODEL = ["--model", "unet", "--device", "cpu"]

#: First words of the QC sentence for each status (lvseg_core.qc.QCResult.message).
LEAD = {"ok": "Quality control found no problem", "check": "Check this result",
        "fail": "Do not use this result"}


def rows_by_name(path):
    with open(path, newline="") as fh:
        return {row["name"]: row for row in csv.DictReader(fh)}


def qc_section(page: str) -> str:
    start = page.index("<h2>Quality control</h2>")
    return html.unescape(page[start:page.index("<h2>", start + 10)])


def test_nifti_pairs_are_found_by_name(tmp_path):
    names = ["A0S9V9_SA_ED.nii.gz", "A0S9V9_SA_ES.nii.gz", "case-ed.nii", "case-es.nii",
             "lone_ED.nii.gz", "other.nii.gz", "two_ED.nii.gz", "two-ED.nii.gz",
             "two_ES.nii.gz"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    found = {i.name: i for i in collect_inputs([tmp_path / n for n in names])}
    assert (found["A0S9V9_SA_ED"].patient, found["A0S9V9_SA_ED"].phase) == ("A0S9V9_SA", "ED")
    assert (found["A0S9V9_SA_ES"].patient, found["A0S9V9_SA_ES"].phase) == ("A0S9V9_SA", "ES")
    assert (found["case-ed"].patient, found["case-es"].phase) == ("case", "ES")
    # No partner, or two candidates for one phase: not a pair.
    for name in ("lone_ED", "other", "two_ED", "two_ES"):
        assert found[name] == Input(tmp_path / f"{name}.nii.gz", name), name


def test_qc_status_on_every_report(tmp_path, acdc_dir, capsys):
    acdc = build_acdc(acdc_dir, tmp_path / "acdc", ("patient061",))
    pair = tmp_path / "pair"
    pair.mkdir()
    for phase in ("ED", "ES"):
        os.symlink(acdc_frame(acdc_dir / "patient078", phase), pair / f"M078_SA_{phase}.nii.gz")
    single = acdc_frame(acdc_dir / "patient002", "ES")
    out = tmp_path / "out"
    assert cli.main(["predict", str(acdc), str(pair / "M078_SA_ED.nii.gz"),
                     str(pair / "M078_SA_ES.nii.gz"), str(single), *MODEL, "--out", str(out),
                     "--report"]) == 0, capsys.readouterr().err
    rows = rows_by_name(out / "summary.csv")
    single_name = single.name[:-len(".nii.gz")]
    studies = {"patient061": "patient", "M078_SA": "patient", single_name: "frame"}
    for name, kind in studies.items():
        row = rows[name]
        assert row["kind"] == kind and row["qc"] in LEAD, name
        assert row["report"] == str(out / f"{name}_report.html"), name
        section = qc_section((out / f"{name}_report.html").read_text())
        assert "QC not run" not in section, name
        assert LEAD[row["qc"]] in section, name
        if row["qc"] != "ok":  # the reason shown is the row's
            assert row["qc_reason"] in section, name
        page = (out / f"{name}_report.html").read_text()
        assert ("ES overlay" in page) == (kind == "patient"), name
        assert ("Volume, slice" in page) == (kind == "frame"), name  # not called ED
    # The pair is one study: EF on its row, an AHA table, no per-frame reports.
    assert rows["M078_SA"]["LV_EF_pct"] and (out / "M078_SA_aha.csv").is_file()
    assert rows["M078_SA_ED"]["phase"] == "ED" and not rows["M078_SA_ED"]["report"]
    assert not (out / "M078_SA_ED_report.html").exists()
    assert not any(rows[n]["report"] for n in rows if n.startswith("patient061_frame"))
