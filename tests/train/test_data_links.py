"""Training data: a patient folder linked from outside the data folder is skipped
with a warning, the others are split as usual (real ACDC patients, real links)."""

from __future__ import annotations

import os
import shutil

from train.data import split_dataset


def test_split_skips_patient_links_leading_outside(tmp_path, acdc_dir, capsys):
    data = tmp_path / "data"
    for patient in ("patient061", "patient070"):
        shutil.copytree(acdc_dir / patient, data / patient)
    shutil.copytree(acdc_dir / "patient078", tmp_path / "elsewhere" / "patient078")
    os.symlink(tmp_path / "elsewhere" / "patient078", data / "patient078",
               target_is_directory=True)
    train, val = split_dataset(data, val_patients=["patient070"])
    assert {c.patient for c in train} == {"patient061"}
    assert {c.patient for c in val} == {"patient070"}
    err = capsys.readouterr().err.splitlines()
    assert err == ["warning: data/patient078 skipped: symbolic link to a place outside the "
                   "input folder"]
