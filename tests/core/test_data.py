"""Tests of lvseg_core.data: the ACDC folder layout and the patient split."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvseg_core.data import (
    VALIDATION_PATIENTS,
    Case,
    find_cases,
    is_acdc_folder,
    patient_cases,
    read_info,
    split_cases,
)
from lvseg_core.errors import LVSegError

#: ACDC pathology group of each block of 20 patients (README of the data set).
GROUPS = ("DCM", "HCM", "MINF", "NOR", "RV")


def group_of(patient: str) -> str:
    return GROUPS[(int(patient.removeprefix("patient")) - 1) // 20]


# --------------------------------------------------------------------------- #
# the real ACDC folder
# --------------------------------------------------------------------------- #

@pytest.fixture(scope="module")
def real_cases(acdc_dir) -> list[Case]:
    return find_cases(acdc_dir, require_labels=True)


def test_real_case_count(acdc_dir, real_cases):
    patients = sorted(p.name for p in acdc_dir.glob("patient*") if p.is_dir())
    assert patients
    assert len(real_cases) == 2 * len(patients)
    if len(patients) == 80:
        assert len(real_cases) == 160
    assert sorted({c.patient for c in real_cases}) == patients
    # without require_labels: the same frames (every frame is labelled)
    assert len(find_cases(acdc_dir)) == len(real_cases)
    assert len({c.name for c in real_cases}) == len(real_cases)


def test_real_phases_and_groups(real_cases):
    for case in real_cases:
        assert case.image.is_file() and case.label is not None and case.label.is_file()
        assert case.label.name == case.image.name.replace(".nii.gz", "_gt.nii.gz")
        assert case.name == case.image.name.removesuffix(".nii.gz")
        # the phase follows the frame numbers of the patient's own Info.cfg
        info = read_info(case.image.parent / "Info.cfg")
        assert case.phase == {int(info["ED"]): "ED", int(info["ES"]): "ES"}[case.frame], case
        assert case.group == group_of(case.patient), case
    by_patient = {}
    for case in real_cases:
        by_patient.setdefault(case.patient, []).append(case.phase)
    assert all(sorted(phases) == ["ED", "ES"] for phases in by_patient.values())


def test_real_info_cfg(acdc_dir):
    info = read_info(acdc_dir / "patient002" / "Info.cfg")
    assert info["ED"] == "1" and info["ES"] == "12" and info["Group"] == "DCM"
    assert float(info["Height"]) > 100 and float(info["Weight"]) > 20
    assert int(info["NbFrame"]) >= int(info["ES"])


def test_real_split(acdc_dir, real_cases):
    train, val = split_cases(real_cases)
    assert len(train) + len(val) == len(real_cases)
    val_patients = {c.patient for c in val}
    train_patients = {c.patient for c in train}
    assert not val_patients & train_patients
    present = {p.name for p in acdc_dir.glob("patient*")}
    assert val_patients == set(VALIDATION_PATIENTS) & present
    if set(VALIDATION_PATIENTS) <= present:
        assert val_patients == set(VALIDATION_PATIENTS)
        assert len(val) == 20
        # every pathology group is represented in validation
        assert {c.group for c in val} == set(GROUPS)


def test_real_folder_is_acdc(acdc_dir):
    assert is_acdc_folder(acdc_dir)
    assert is_acdc_folder(acdc_dir / "patient002")
    assert not is_acdc_folder(acdc_dir / "patient002" / "Info.cfg")
    one = find_cases(acdc_dir / "patient002")
    info = read_info(acdc_dir / "patient002" / "Info.cfg")
    frames = sorted({int(info["ED"]), int(info["ES"])})
    assert [c.name for c in one] == [f"patient002_frame{f:02d}" for f in frames]
    assert [c.frame for c in one] == frames


def test_validation_patients_constant():
    assert len(VALIDATION_PATIENTS) == 10 == len(set(VALIDATION_PATIENTS))
    assert VALIDATION_PATIENTS[0] == "patient002"
    assert all(p.startswith("patient") and len(p) == 10 for p in VALIDATION_PATIENTS)


# --------------------------------------------------------------------------- #
# temporary ACDC-like folders
# --------------------------------------------------------------------------- #

def make_patient(root: Path, number: int, frames=(1, 12), labelled=(1, 12),
                 info: str | None = None, group: str = "NOR") -> Path:
    folder = root / f"patient{number:03d}"
    folder.mkdir(parents=True)
    if info is None:
        info = f"ED: {frames[0]}\nES: {frames[-1]}\nGroup: {group}\nHeight: 180.0\nNbFrame: 30\n"
    (folder / "Info.cfg").write_text(info)
    for frame in frames:
        (folder / f"patient{number:03d}_frame{frame:02d}.nii.gz").write_bytes(b"")
        if frame in labelled:
            (folder / f"patient{number:03d}_frame{frame:02d}_gt.nii.gz").write_bytes(b"")
    (folder / f"patient{number:03d}_4d.nii.gz").write_bytes(b"")  # full cine: not a frame
    return folder


def test_missing_label_excluded(tmp_path):
    make_patient(tmp_path, 1, frames=(1, 12), labelled=(1, 12), group="DCM")
    make_patient(tmp_path, 2, frames=(1, 12), labelled=(1,), group="HCM")
    make_patient(tmp_path, 3, frames=(1, 5, 12), labelled=(), group="RV")
    every = find_cases(tmp_path)
    assert [c.name for c in every] == [
        "patient001_frame01", "patient001_frame12", "patient002_frame01", "patient002_frame12",
        "patient003_frame01", "patient003_frame05", "patient003_frame12"]
    labelled = find_cases(tmp_path, require_labels=True)
    assert [c.name for c in labelled] == [
        "patient001_frame01", "patient001_frame12", "patient002_frame01"]
    missing = [c for c in every if c.name == "patient002_frame12"][0]
    assert missing.label is None
    phases = {c.name: (c.phase, c.group) for c in every}
    assert phases["patient001_frame01"] == ("ED", "DCM")
    assert phases["patient001_frame12"] == ("ES", "DCM")
    assert phases["patient003_frame05"] == ("", "RV")


def test_frames_without_info_values(tmp_path):
    make_patient(tmp_path, 7, frames=(1, 9), labelled=(1, 9), info="Weight: 70\n")
    cases = find_cases(tmp_path / "patient007")
    assert [(c.phase, c.group) for c in cases] == [("", ""), ("", "")]


def test_split_never_shares_a_patient(tmp_path):
    for n in (1, 2, 19, 30):
        make_patient(tmp_path, n)
    train, val = split_cases(find_cases(tmp_path))
    assert {c.patient for c in val} == {"patient002", "patient019", "patient030"}
    assert {c.patient for c in train} == {"patient001"}
    train, val = split_cases(find_cases(tmp_path), validation=("patient001",))
    assert {c.patient for c in val} == {"patient001"}
    assert len(train) == 6


def test_empty_folder(tmp_path):
    with pytest.raises(LVSegError) as err:
        find_cases(tmp_path)
    assert "\n" not in str(err.value)


def test_missing_folder(tmp_path):
    with pytest.raises(LVSegError, match="no such folder"):
        find_cases(tmp_path / "nowhere")


def test_no_labelled_frames(tmp_path):
    make_patient(tmp_path, 4, labelled=())
    assert len(find_cases(tmp_path)) == 2
    with pytest.raises(LVSegError, match="labelled"):
        find_cases(tmp_path, require_labels=True)


def test_folder_of_unrelated_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "patient001").mkdir()  # no Info.cfg
    (tmp_path / "patient001" / "patient001_frame01.nii.gz").write_bytes(b"")
    assert not is_acdc_folder(tmp_path)
    with pytest.raises(LVSegError):
        find_cases(tmp_path)


def test_patient_cases_single_folder(tmp_path):
    folder = make_patient(tmp_path, 42, frames=(1, 8), labelled=(8,), group="MINF")
    cases = patient_cases(folder)
    assert [(c.frame, c.phase, c.label is not None) for c in cases] == [
        (1, "ED", False), (8, "ES", True)]
    assert all(c.group == "MINF" for c in cases)
