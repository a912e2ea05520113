"""Dataset exploration (lvseg_core.explore) and the base-to-apex order it relies on."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from lvseg_core import explore
from lvseg_core.data import find_cases
from lvseg_core.labels import LABEL_OF, base_at_low_z
from tests.conftest import make_heart


def test_base_is_the_end_with_the_larger_lv():
    _, labels = make_heart()                     # the LV tapers with z: base at z = 0
    assert base_at_low_z(labels)
    assert not base_at_low_z(labels[:, :, ::-1])
    # Only the slices asked for count: the last four alone taper the same way.
    assert base_at_low_z(labels, [2, 3, 4, 5]) and not base_at_low_z(labels, [5, 4, 3, 2])
    assert base_at_low_z(np.zeros((8, 8, 4), np.uint8))          # nothing labelled


def _write_patient(root, labels_ed, labels_es):
    folder = root / "patient001"
    folder.mkdir(parents=True)
    (folder / "Info.cfg").write_text("ED: 1\nES: 9\nGroup: NOR\nHeight: 180\n"
                                     "NbFrame: 30\nWeight: 80\n")
    for frame, labels in ((1, labels_ed), (9, labels_es)):
        affine = np.diag([1.5, 1.5, 8.0, 1.0])
        name = folder / f"patient001_frame{frame:02d}"
        nib.save(nib.Nifti1Image(labels.astype(np.float32) * 100, affine), f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(labels, affine), f"{name}_gt.nii.gz")


def test_end_slices_report_the_basal_rv_in_either_slice_order(tmp_path):
    _, ed = make_heart()
    es = ed.copy()
    es[:, :, 0][es[:, :, 0] == LABEL_OF["RV"]] = 0    # no RV on the basal ES slice
    es[:, :, 5] = 0                                   # and one slice fewer at the apex
    # The ES frame is stored apex first: the base must still be found.
    _write_patient(tmp_path, ed, np.ascontiguousarray(es[:, :, ::-1]))
    table = explore.end_slices(find_cases(tmp_path)).set_index("phase")
    assert table.loc["ED", "basal_RV"] and not table.loc["ES", "basal_RV"]
    assert table.loc["ES", "basal_LV"] and table.loc["ES", "basal_Myo"]
    assert table.loc["ED", "slices"] == 6 and table.loc["ES", "slices"] == 5
    assert table.loc["ES", "apical_RV"] and table.loc["ED", "apical_LV"]


def test_end_slices_on_the_real_data(acdc_dir):
    """On ACDC the experts leave the RV out of the most basal ES slice far more often
    than at ED (the right atrium lies there once the base has descended)."""
    table = explore.end_slices(find_cases(acdc_dir, require_labels=True))
    assert set(table["phase"]) == {"ED", "ES"}
    share = table.groupby("phase")["basal_RV"].mean()
    assert table["basal_LV"].all()
    if len(table) == 160:
        assert share["ED"] > 0.7 and share["ES"] < 0.4, share
