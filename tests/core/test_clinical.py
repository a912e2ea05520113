"""Tests of lvseg_core.clinical: volumes, EF, mass, ED/ES, cine curves."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lvseg_core.clinical import (
    cine_indices,
    clinical_indices,
    ejection_fraction,
    find_ed_es,
    myocardial_mass,
    stroke_volume,
    structure_volumes,
)
from lvseg_core.errors import LVSegError

from tests.conftest import acdc_frame

CLINICAL_KEYS = {"LV_EDV_ml", "LV_ESV_ml", "LV_SV_ml", "LV_EF_pct", "RV_EDV_ml",
                 "RV_ESV_ml", "RV_SV_ml", "RV_EF_pct", "Myo_mass_g", "Myo_mass_ES_g"}


def test_structure_volumes_block():
    mask = np.zeros((20, 20, 4), np.uint8)
    mask[2:12, 5:15, 1:3] = 3            # 10 x 10 x 2 = 200 voxels of LV
    mask[15:17, 0:5, 0] = 1              # 10 voxels of RV
    vols = structure_volumes(mask, (1.5, 1.5, 10.0))
    # 200 voxels * 22.5 mm^3 = 4500 mm^3 = 4.5 mL
    assert vols == {"RV": pytest.approx(0.225), "Myo": 0.0, "LV": pytest.approx(4.5)}
    assert all(type(v) is float for v in vols.values())


def test_structure_volumes_rejects_bad_input():
    with pytest.raises(LVSegError, match="3D"):
        structure_volumes(np.zeros((4, 4), np.uint8), (1, 1, 1))
    with pytest.raises(LVSegError, match="spacing"):
        structure_volumes(np.zeros((4, 4, 2), np.uint8), (1, 1))
    with pytest.raises(LVSegError, match="spacing"):
        structure_volumes(np.zeros((4, 4, 2), np.uint8), (1, 0, 1))
    with pytest.raises(LVSegError, match="outside"):
        structure_volumes(np.full((4, 4, 2), 7, np.uint8), (1, 1, 1))


def test_ef_sv_mass():
    assert ejection_fraction(120.0, 50.0) == pytest.approx(70 / 120 * 100)
    assert ejection_fraction(100.0, 100.0) == 0.0
    assert ejection_fraction(50.0, 60.0) == pytest.approx(-20.0)     # not clipped
    assert math.isnan(ejection_fraction(0.0, 0.0))
    assert math.isnan(ejection_fraction(-5.0, 1.0))
    assert math.isnan(ejection_fraction(float("nan"), 1.0))
    assert stroke_volume(120.0, 50.0) == 70.0
    assert myocardial_mass(100.0) == pytest.approx(105.0)
    assert myocardial_mass(100.0, density=1.0) == 100.0


def test_find_ed_es():
    assert find_ed_es([100.0, 120.0, 80.0, 60.0, 90.0]) == (1, 3)
    assert find_ed_es(np.array([5.0])) == (0, 0)
    assert find_ed_es([10.0, 10.0, 3.0, 3.0]) == (0, 2)               # first on ties
    assert find_ed_es([float("nan"), 7.0, 9.0]) == (2, 1)              # NaN skipped
    assert all(type(i) is int for i in find_ed_es([1.0, 2.0]))
    with pytest.raises(LVSegError, match="empty"):
        find_ed_es([])
    with pytest.raises(LVSegError, match="NaN"):
        find_ed_es([float("nan")])


def test_clinical_indices_hand_computed():
    spacing = (2.0, 2.0, 5.0)             # 20 mm^3 = 0.02 mL per voxel
    ed = np.zeros((10, 10, 2), np.uint8)
    es = np.zeros((10, 10, 2), np.uint8)
    ed[0:5, 0:10, :] = 3                  # LV 100 voxels = 2.0 mL
    es[0:2, 0:10, :] = 3                  # LV 40 voxels = 0.8 mL
    ed[5:7, 0:10, :] = 2                  # Myo 40 voxels = 0.8 mL
    es[5:8, 0:10, :] = 2                  # Myo 60 voxels = 1.2 mL
    ed[8:10, 0:10, :] = 1                 # RV 40 voxels = 0.8 mL
    es[9:10, 0:5, :] = 1                  # RV 10 voxels = 0.2 mL
    out = clinical_indices(ed, es, spacing)
    assert set(out) == CLINICAL_KEYS
    assert out["LV_EDV_ml"] == pytest.approx(2.0)
    assert out["LV_ESV_ml"] == pytest.approx(0.8)
    assert out["LV_SV_ml"] == pytest.approx(1.2)
    assert out["LV_EF_pct"] == pytest.approx(60.0)
    assert out["RV_EDV_ml"] == pytest.approx(0.8)
    assert out["RV_ESV_ml"] == pytest.approx(0.2)
    assert out["RV_EF_pct"] == pytest.approx(75.0)
    assert out["Myo_mass_g"] == pytest.approx(0.8 * 1.05)
    assert out["Myo_mass_ES_g"] == pytest.approx(1.2 * 1.05)
    json.dumps(out)


def _beating_heart(radii: list[float], shape=(40, 40, 3)) -> np.ndarray:
    """A 4D (x, y, z, t) label map whose LV disc has the given radius per frame."""
    x, y = np.mgrid[: shape[0], : shape[1]]
    r = np.hypot(x - 20, y - 20)
    masks = np.zeros((*shape, len(radii)), np.uint8)
    for t, radius in enumerate(radii):
        frame = np.zeros(shape[:2], np.uint8)
        frame[(r >= radius) & (r < radius + 4)] = 2
        frame[r < radius] = 3
        frame[np.hypot(x - 20, y - 3) < 3 + radius / 4] = 1
        masks[..., t] = frame[..., None]
    return masks


def test_cine_indices_synthetic():
    radii = [12.0, 11.0, 9.0, 7.0, 8.0, 10.0, 11.5]       # shrinks then grows
    masks = _beating_heart(radii)
    spacing = (1.5, 1.5, 8.0)
    out = cine_indices(masks, spacing)
    assert out["ED_frame"] == 0 and out["ES_frame"] == 3
    lv = out["LV_volumes_ml"]
    assert len(lv) == len(radii) and all(type(v) is float for v in lv)
    assert lv == pytest.approx([structure_volumes(masks[..., t], spacing)["LV"]
                                for t in range(len(radii))])
    assert np.argmax(lv) == 0 and np.argmin(lv) == 3
    assert len(out["RV_volumes_ml"]) == len(out["Myo_volumes_ml"]) == len(radii)
    expected = clinical_indices(masks[..., 0], masks[..., 3], spacing)
    for key, value in expected.items():
        assert out[key] == pytest.approx(value)
    assert 0 < out["LV_EF_pct"] < 100
    json.dumps(out)
    # user-chosen frames override the automatic choice; a 4th spacing value is ignored
    chosen = cine_indices(masks, (1.5, 1.5, 8.0, 30.0), ed=6, es=2)
    assert (chosen["ED_frame"], chosen["ES_frame"]) == (6, 2)
    assert chosen["LV_EDV_ml"] == pytest.approx(lv[6])
    assert chosen["LV_ESV_ml"] == pytest.approx(lv[2])


def test_cine_indices_rejects_bad_input():
    masks = _beating_heart([10.0, 8.0])
    with pytest.raises(LVSegError, match="4D"):
        cine_indices(masks[..., 0], (1, 1, 1))
    with pytest.raises(LVSegError, match="ED frame"):
        cine_indices(masks, (1, 1, 1), ed=2)
    with pytest.raises(LVSegError, match="ES frame"):
        cine_indices(masks, (1, 1, 1), es=-1)


def test_acdc_patient002_plausible(acdc_dir):
    nib = pytest.importorskip("nibabel")
    folder = acdc_dir / "patient002"
    ed_img = nib.load(acdc_frame(folder, "ED", label=True))
    ed = np.asarray(ed_img.dataobj)
    es = np.asarray(nib.load(acdc_frame(folder, "ES", label=True)).dataobj)
    spacing = tuple(float(z) for z in ed_img.header.get_zooms()[:3])
    out = clinical_indices(ed, es, spacing)
    for key in ("LV_EDV_ml", "LV_ESV_ml", "RV_EDV_ml", "RV_ESV_ml", "Myo_mass_g"):
        assert out[key] > 0, key
    assert 0 < out["LV_EF_pct"] < 90
    assert out["LV_EDV_ml"] > out["LV_ESV_ml"]
    cine = cine_indices(np.stack([ed, es], axis=-1), spacing)
    assert (cine["ED_frame"], cine["ES_frame"]) == (0, 1)
    assert cine["LV_EF_pct"] == pytest.approx(out["LV_EF_pct"])


def test_rv_ef_caution_from_the_weights_own_evaluation():
    from lvseg_core.clinical import rv_ef_caution

    unet = {"eval_rv_ef_abs_error": 9.43, "eval_cases": 20.0, "eval_split": "validation"}
    text = rv_ef_caution([unet])
    assert text.startswith("RV EF: on 10 ACDC validation patients this model's RV EF was")
    assert "off by 9.4 points" in text and "basal ES slice" in text
    assert "its ACDC evaluation" in rv_ef_caution([{"eval_rv_ef_abs_error": 5}])
    # An ensemble: the range of its members' recorded errors.
    both = rv_ef_caution([unet, {**unet, "eval_rv_ef_abs_error": 12.25}, {}])
    assert "this ensemble's models was off by 9.4-12.2 points" in both
    assert "off by 9.4 points" in rv_ef_caution([unet, {}])
    for figures in ([], [{}], [{"eval_rv_ef_abs_error": None}],
                    [{"eval_rv_ef_abs_error": float("nan")}], [{"eval_rv_ef_abs_error": "9"}],
                    [{"eval_rv_ef_abs_error": True}], [{}, {}]):
        assert rv_ef_caution(figures) is None, figures
