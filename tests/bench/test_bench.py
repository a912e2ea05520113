"""Benchmark building blocks: agreement statistics, perturbations, slice positions, models."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench import agreement
from bench.accuracy import slice_positions, slice_records, volume_error_by_slice
from bench.common import resolve_models, split_patients
from bench.document import md_table
from bench.report import README_END, README_START, pick_slices, update_readme
from bench.robustness import PERTURBATIONS, Perturbation, perturb, resample_spacing

# ---------------------------------------------------------------- agreement

REF = [10.0, 20.0, 30.0, 40.0]
PRED = [12.0, 19.0, 33.0, 44.0]


def test_bland_altman_against_hand_computed_values():
    # differences 2, -1, 3, 4: mean 2; deviations 0, -3, 1, 2 -> SD = sqrt(14 / 3)
    stats = agreement.bland_altman(REF, PRED)
    sd = math.sqrt(14 / 3)
    assert stats["n"] == 4
    assert stats["bias"] == pytest.approx(2.0)
    assert stats["sd"] == pytest.approx(sd)
    assert stats["sd"] == pytest.approx(2.160247, abs=1e-6)
    assert stats["loa_low"] == pytest.approx(2.0 - 1.96 * sd)
    assert stats["loa_high"] == pytest.approx(2.0 + 1.96 * sd)
    assert stats["loa_low"] == pytest.approx(-2.234084, abs=1e-6)
    assert stats["loa_high"] == pytest.approx(6.234084, abs=1e-6)
    assert stats["mean_abs"] == pytest.approx(2.5)
    assert stats["mean_reference"] == pytest.approx(25.0)


def test_pearson_against_hand_computed_value():
    # centred: ref -15 -5 5 15, pred -15 -8 6 17 -> 550 / sqrt(500 * 614)
    r = agreement.pearson_r(REF, PRED)
    assert r == pytest.approx(550 / math.sqrt(500 * 614))
    assert r == pytest.approx(0.992644, abs=1e-6)
    assert agreement.pearson_r([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert agreement.pearson_r(REF, PRED) == pytest.approx(np.corrcoef(REF, PRED)[0, 1])


def test_agreement_drops_missing_pairs_and_handles_degenerate_input():
    stats = agreement.agreement([*REF, None, 7.0], [*PRED, 5.0, float("nan")])
    assert stats["n"] == 4 and stats["bias"] == pytest.approx(2.0)
    assert stats["r"] == pytest.approx(0.992644, abs=1e-6)
    one = agreement.bland_altman([1.0], [3.0])
    assert one["n"] == 1 and one["bias"] == 2.0 and math.isnan(one["sd"])
    assert agreement.bland_altman([], [])["n"] == 0
    assert math.isnan(agreement.pearson_r([1, 1, 1], [1, 2, 3]))     # constant
    assert math.isnan(agreement.pearson_r([1], [2]))
    with pytest.raises(ValueError):
        agreement.bland_altman([1, 2], [1])


def test_clinical_agreement_reads_evaluate_dataset_rows():
    rows = [{"manual": {"LV_EF_pct": m, "LV_EDV_ml": 100.0, "LV_ESV_ml": 50.0,
                        "Myo_mass_g": 120.0, "RV_EDV_ml": 150.0, "RV_ESV_ml": 70.0,
                        "RV_EF_pct": m},
             "predicted": {"LV_EF_pct": p, "LV_EDV_ml": 110.0, "LV_ESV_ml": 45.0,
                           "Myo_mass_g": 118.0, "RV_EDV_ml": 140.0, "RV_ESV_ml": 80.0,
                           "RV_EF_pct": p - 9.0}}
            for m, p in zip(REF, PRED)]
    stats = agreement.clinical_agreement(rows)
    assert set(stats) == set(agreement.INDICES)
    assert {"RV_EDV_ml", "RV_ESV_ml", "RV_EF_pct"} <= set(stats)
    assert stats["LV_EF_pct"]["bias"] == pytest.approx(2.0)
    assert stats["LV_EDV_ml"]["bias"] == pytest.approx(10.0)
    assert stats["LV_EDV_ml"]["sd"] == pytest.approx(0.0)
    assert stats["Myo_mass_g"]["bias"] == pytest.approx(-2.0)
    assert stats["RV_EF_pct"]["bias"] == pytest.approx(-7.0)
    assert stats["RV_ESV_ml"]["bias"] == pytest.approx(10.0)
    # Rows of an older report (LV only) leave the RV indices without pairs.
    older = [{k: {i: v for i, v in row[k].items() if not i.startswith("RV")}
              for k in ("manual", "predicted")} for row in rows]
    assert agreement.clinical_agreement(older)["RV_EF_pct"]["n"] == 0


def test_bland_altman_axes_draws(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    stats = agreement.bland_altman_axes(ax, REF, PRED, title="EF", unit="%")
    assert stats["bias"] == pytest.approx(2.0)
    lines = sorted(round(line.get_ydata()[0], 4) for line in ax.get_lines())
    assert round(stats["loa_low"], 4) in lines and round(stats["loa_high"], 4) in lines
    fig.savefig(tmp_path / "ba.png")
    plt.close(fig)
    assert (tmp_path / "ba.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- perturbations


@pytest.mark.parametrize("p", [p for p in PERTURBATIONS if p.kind != "spacing"],
                         ids=lambda p: f"{p.kind}-{p.strength}")
def test_intensity_perturbations_change_the_image_only(heart, p):
    scan, labels = heart
    out, out_labels = perturb(scan, labels, p, seed=3)
    assert out.array.shape == scan.array.shape and out.array.dtype == np.float32
    assert np.isfinite(out.array).all()
    assert not np.allclose(out.array, scan.array)
    np.testing.assert_array_equal(out.affine, scan.affine)
    assert out_labels is labels
    again, _ = perturb(scan, labels, p, seed=3)
    np.testing.assert_array_equal(again.array, out.array)       # deterministic


def test_strong_perturbations_change_more_than_mild(heart):
    scan, labels = heart
    for kind in ("bias_field", "noise", "gamma", "low_resolution"):
        mild, strong = [p for p in PERTURBATIONS if p.kind == kind]
        d_mild = np.abs(perturb(scan, labels, mild)[0].array - scan.array).mean()
        d_strong = np.abs(perturb(scan, labels, strong)[0].array - scan.array).mean()
        assert d_strong > d_mild, kind


def test_spacing_change_updates_affine_consistently(heart):
    scan, labels = heart                    # 1.5 x 1.5 x 8 mm, 96 x 88 x 6
    affine = scan.affine.copy()
    affine[:3, 3] = (10.0, -20.0, 5.0)
    scan.affine = affine
    for mm in (1.0, 2.0):
        out, out_labels = resample_spacing(scan, labels, (mm, mm))
        assert out.spacing == pytest.approx((mm, mm, 8.0))
        # same directions and origin (first voxel centre), same field of view
        np.testing.assert_allclose(out.affine[:3, :3] / np.array([mm, mm, 8.0]),
                                   affine[:3, :3] / np.array([1.5, 1.5, 8.0]), atol=1e-9)
        np.testing.assert_allclose(out.affine[:3, 3], affine[:3, 3], atol=1e-6)
        for axis in (0, 1):
            fov_old = (scan.array.shape[axis] - 1) * 1.5
            fov_new = (out.array.shape[axis] - 1) * mm
            assert abs(fov_new - fov_old) <= mm
        assert out.array.shape[2] == scan.array.shape[2]
        assert out_labels.shape == out.array.shape and out_labels.dtype == np.uint8
        assert set(np.unique(out_labels)) <= {0, 1, 2, 3}
        # the labelled volume (mL) is preserved up to the resampling of the borders
        for value in (1, 2, 3):
            before = (labels == value).sum() * 1.5 * 1.5
            after = (out_labels == value).sum() * mm * mm
            assert after == pytest.approx(before, rel=0.15)
    p = Perturbation("spacing", "strong", 2.0, "2.0 mm")
    out, out_labels = perturb(scan, labels, p)
    assert out.spacing[0] == pytest.approx(2.0) and out_labels.shape == out.array.shape


# ---------------------------------------------------------------- accuracy helpers


def test_slice_positions_base_is_the_larger_lv_end():
    gt = np.zeros((8, 8, 8), np.uint8)
    for k, size in enumerate([6, 6, 5, 5, 4, 3, 2, 0]):     # base first, empty last slice
        gt[:size, :size, k] = 3
    positions = slice_positions(gt)
    assert positions == ["basal", "basal", "basal", "mid", "mid", "apical", "apical", None]
    assert slice_positions(gt[..., ::-1]) == positions[::-1]
    assert slice_positions(np.zeros((4, 4, 3), np.uint8)) == [None, None, None]


def test_slice_records_score_structures_and_outside_slices():
    gt = np.zeros((6, 6, 3), np.uint8)
    gt[1:3, 1:3, 0] = 3
    gt[1:3, 1:3, 1] = 3
    pred = gt.copy()
    pred[4, 4, 2] = 1                               # a prediction where there is no label
    case = {"name": "c", "patient": "p", "phase": "ES", "group": "NOR"}
    rows = slice_records(pred, gt, case)
    assert [r["slice"] for r in rows] == [0, 1, 2]
    assert rows[0]["dice"]["LV"] == 1.0 and math.isnan(rows[0]["dice"]["RV"])
    assert rows[2]["position"] == "outside" and rows[2]["dice"]["RV"] == 0.0
    assert "ml" not in rows[0]                      # no spacing, no volumes


def test_volume_error_by_slice_finds_volume_on_slices_without_the_structure():
    gt = np.zeros((10, 10, 3), np.uint8)
    gt[2:6, 2:6, 1:] = 1                            # RV on slices 1-2 (16 voxels each)
    gt[6:8, 6:8, :] = 3                             # LV on every slice
    pred = gt.copy()
    pred[2:5, 2:5, 0] = 1                           # 9 RV voxels where the expert drew none
    pred[2:6, 2:4, 2] = 0                           # 8 RV voxels missed on slice 2
    case = {"name": "c", "patient": "p", "phase": "ES", "group": "NOR",
            "spacing_mm": [2.0, 2.0, 5.0]}          # 20 uL per voxel
    rows = slice_records(pred, gt, case)
    assert rows[0]["ml"]["predicted"]["RV"] == pytest.approx(0.18)
    assert rows[1]["ml"]["manual"]["RV"] == pytest.approx(0.32)
    split = volume_error_by_slice(rows, "RV", "ES")
    assert split["volumes"] == 1
    assert split["error_ml"] == pytest.approx((9 - 8) * 0.02)
    assert split["unlabelled_ml"] == pytest.approx(0.18)
    assert split["labelled_ml"] == pytest.approx(-0.16)
    assert volume_error_by_slice(rows, "LV", "ES")["error_ml"] == pytest.approx(0.0)
    assert volume_error_by_slice(rows, "RV", "ED")["volumes"] == 0


def test_rv_ef_without_the_basal_es_rv_removes_exactly_that_slice():
    from bench.accuracy import rv_ef_without_basal_es_rv
    from lvseg_core.labels import LABEL_OF
    from tests.conftest import make_heart

    _, labels = make_heart()                         # base at z = 0, RV on every slice
    es_gt = labels.copy()
    es_gt[:, :, 0][es_gt[:, :, 0] == LABEL_OF["RV"]] = 0   # the expert's basal ES slice
    es_pred = labels.copy()
    es_pred[:, :, 3][es_pred[:, :, 3] == LABEL_OF["RV"]] = 0   # and one RV missed mid-stack
    rows = []
    for phase, pred, gt in (("ED", labels, labels),            # ES stored apex first
                            ("ES", es_pred[:, :, ::-1], es_gt[:, :, ::-1])):
        rows += slice_records(pred, gt, {"name": f"p1_{phase}", "patient": "p1", "phase": phase,
                                         "group": "NOR", "spacing_mm": [1.5, 1.5, 8.0]})
    rows += slice_records(labels, labels, {"name": "p2_ED", "patient": "p2", "phase": "ED",
                                           "group": "NOR", "spacing_mm": [1.5, 1.5, 8.0]})
    # The RV area per slice varies (the myocardium overlaps it more at the base).
    rv = [(labels[:, :, k] == LABEL_OF["RV"]).sum() for k in range(6)]

    def ef(ed, es):
        return 100.0 * (ed - es) / ed

    manual = ef(sum(rv), sum(rv[1:]))
    result = rv_ef_without_basal_es_rv(rows)
    assert result["patients"] == 1                   # p2 has no ES frame
    as_is = ef(sum(rv), sum(rv) - rv[3]) - manual    # basal RV kept, slice 3 missed
    without = ef(sum(rv), sum(rv) - rv[3] - rv[0]) - manual
    assert result["bias"] == pytest.approx(as_is) and result["error"] == pytest.approx(abs(as_is))
    assert result["bias_without"] == pytest.approx(without) and without > 0
    # Without the missed mid slice, the basal RV is the whole error, and removing it fixes it.
    rows = [r for r in rows if r["patient"] == "p1" and r["phase"] == "ED"] + slice_records(
        labels[:, :, ::-1], es_gt[:, :, ::-1], {"name": "p1_ES", "patient": "p1", "phase": "ES",
                                                "group": "NOR", "spacing_mm": [1.5, 1.5, 8.0]})
    result = rv_ef_without_basal_es_rv(rows)
    assert result["bias"] == pytest.approx(ef(sum(rv), sum(rv)) - manual) and result["bias"] < 0
    assert result["error_without"] == pytest.approx(0.0, abs=1e-9)
    assert rv_ef_without_basal_es_rv([])["patients"] == 0


def test_pick_slices_gives_at_least_five_examples():
    gt = np.zeros((6, 6, 4), np.uint8)
    gt[1:4, 1:4, :] = 3
    gt[4, 1:4, :] = 1
    pred = gt.copy()
    pred[1, 1, 2] = 0
    per_case, slices, masks = [], [], {}
    for i, phase in enumerate(("ED", "ES")):
        name = f"case{i}"
        case = {"name": name, "patient": "p", "phase": phase, "group": "NOR",
                "metrics": {"dice": {"mean": 0.9 - 0.1 * i}}}
        per_case.append(case)
        slices += slice_records(pred, gt, case)
        masks[name] = (pred, gt)
    picks = pick_slices({"per_case": per_case, "per_slice": slices}, masks, minimum=5)
    assert len(picks) >= 5
    assert len({(c, k) for c, k, _ in picks}) == len(picks)
    assert picks[0][2] == "worst volume" and picks[0][0] == "case1"


# ---------------------------------------------------------------- models, data, markdown


def test_models_without_weights_are_skipped_with_a_note(tmp_path):
    from lvseg_core import create_model

    create_model("attention_unet", channels=(4, 8, 16)).save_pretrained(
        tmp_path / "attention_unet")
    specs = resolve_models(["unet", "attention_unet"], weights_dir=tmp_path)
    assert not specs[0].available and "no trained weights" in specs[0].note
    assert specs[1].available and specs[1].folder == tmp_path / "attention_unet"
    assert len(specs[1].fingerprint()["sha256"]) == 64
    # weights of another architecture are not used
    create_model("attention_unet", channels=(4, 8, 16)).save_pretrained(tmp_path / "unet")
    spec = resolve_models(["unet"], weights_dir=tmp_path)[0]
    assert not spec.available and "unusable" in spec.note


def test_split_patients_keeps_whole_patients(tmp_path):
    for n in (2, 3, 19):
        folder = tmp_path / f"patient{n:03d}"
        folder.mkdir()
        (folder / "Info.cfg").write_text("ED: 1\nES: 2\nGroup: NOR\n")
        for frame in (1, 2):
            for suffix in ("", "_gt"):
                (folder / f"patient{n:03d}_frame{frame:02d}{suffix}.nii.gz").write_bytes(b"")
    assert split_patients(tmp_path) == ["patient002", "patient019"]
    assert split_patients(tmp_path, cases=3) == ["patient002"]
    assert split_patients(tmp_path, "all") == ["patient002", "patient003", "patient019"]


def test_markdown_table_and_readme_block(tmp_path):
    assert md_table(["a", "b"], [[1, 2]]) == "| a | b |\n|---|---|\n| 1 | 2 |"
    readme = tmp_path / "README.md"
    readme.write_text(f"# X\n\n## Results\n\n{README_START}\nold\n{README_END}\n\ntail\n")
    assert update_readme(readme, f"{README_START}\nnew\n{README_END}")
    text = readme.read_text()
    assert "new" in text and "old" not in text and text.endswith("tail\n")
    plain = tmp_path / "plain.md"
    plain.write_text("no markers\n")
    assert not update_readme(plain, "x") and plain.read_text() == "no markers\n"


def test_noise_has_the_stated_strength(heart):
    scan, labels = heart
    scale = float(np.percentile(scan.array, 99.5))
    for p in (p for p in PERTURBATIONS if p.kind == "noise"):
        out, _ = perturb(scan, labels, p, seed=0)
        assert np.std(out.array - scan.array) == pytest.approx(p.value * scale, rel=0.05)
