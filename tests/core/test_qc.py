"""Tests of lvseg_core.qc: quality control without ground truth.

Real validation volumes (patient002, a validation patient never used for
calibration) with the bundled U-Net, and synthetic defects that each rule
must name.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lvseg_core import qc
from lvseg_core.io import load_label, load_nifti
from lvseg_core.labels import LABEL_OF
from lvseg_core.scan import Scan
from tests.conftest import ROOT, acdc_frame, make_heart

CALIBRATION = ROOT / "docs" / "qc" / "calibration_unet.json"


@pytest.fixture(scope="module")
def unet():
    from lvseg_core.inference import Segmenter

    return Segmenter.from_source("unet", device="cpu")


@pytest.fixture(scope="module")
def validation_ed(acdc_dir) -> tuple[Scan, np.ndarray]:
    """patient002 ED (a validation patient) and its expert labels."""
    patient = acdc_dir / "patient002"
    scan = load_nifti(acdc_frame(patient, "ED"))
    return scan, load_label(acdc_frame(patient, "ED", label=True), scan)


def _signals(issues: list[qc.Issue]) -> set[str]:
    return {i.signal for i in issues}


# ---------------------------------------------------------------- real volumes


def test_good_prediction_on_validation_volume_is_ok(unet, validation_ed):
    scan, truth = validation_ed
    from lvseg_core.pipeline import run_scan

    scanned = run_scan(scan, unet)
    result = scanned.qc
    assert scanned.segmentation.probabilities is None  # used by QC, then dropped
    assert result.status == "ok", result.reason
    assert result.reason == qc.OK_REASON and result.score < 1.0
    assert result.message == "Quality control found no problem."
    # the signals are real measurements of this heart
    s = result.signals
    assert s["agreement_dice"] > 0.9
    assert 50 < s["LV_ml"] < 400 and s["lv_myo_contrast"] > 0.1
    assert 4 < s["wall_thickness_mm"] < 15


def test_expert_labels_of_validation_volume_are_ok(validation_ed):
    scan, truth = validation_ed
    result = qc.assess(scan, truth)
    assert result.status == "ok", result.reason


def test_empty_prediction_fails(validation_ed):
    scan, _ = validation_ed
    result = qc.assess(scan, np.zeros(scan.shape3d, np.uint8))
    assert result.status == "fail"
    assert "no heart found" in result.reason


def test_open_ring_on_real_labels_names_the_slices(validation_ed):
    scan, truth = validation_ed
    broken = truth.copy()
    slices = [k for k in range(truth.shape[2]) if (truth[..., k] == LABEL_OF["LV"]).sum() > 200]
    for k in slices[:3]:
        lv = np.argwhere(broken[..., k] == LABEL_OF["LV"])
        cx = int(lv[:, 0].mean())
        wedge = (np.arange(truth.shape[0])[:, None] > cx) & (broken[..., k] == LABEL_OF["Myo"])
        broken[..., k][wedge] = 0                      # cut away half of the ring
    result = qc.assess(scan, broken)
    assert result.status in ("check", "fail")
    assert "the myocardium does not close around the LV on 3 slice(s)" in result.reason


def test_inverted_contrast_is_flagged(unet, validation_ed):
    scan, _ = validation_ed
    flipped = Scan(scan.array.max() + scan.array.min() - scan.array, scan.affine, "inverted")
    result = qc.check_segmentation(flipped, unet.segment(flipped, probabilities=True), unet)
    assert result.status == "fail", result.reason
    assert "background is not dark" in result.reason or "not brighter" in result.reason \
        or "no heart found" in result.reason


def test_photograph_stacked_into_a_volume_fails(unet, validation_ed):
    from skimage.data import camera
    from skimage.transform import resize

    scan, _ = validation_ed
    photo = resize(camera().astype(np.float32), scan.shape3d[:2])
    stacked = Scan(np.repeat(photo[..., None], scan.shape3d[2], axis=2), scan.affine, "photo")
    result = qc.check_segmentation(stacked, unet.segment(stacked, probabilities=True), unet)
    assert result.status == "fail"
    assert "copies of one picture" in result.reason


def test_single_photograph_is_flagged(unet):
    from skimage.data import camera

    picture = Scan(camera().astype(np.float32)[..., None], np.diag([1.0, 1.0, 1.0, 1.0]),
                   "camera")
    result = qc.check_segmentation(picture, unet.segment(picture, probabilities=True), unet)
    assert result.status in ("check", "fail"), result.signals


def test_constant_input_fails(unet):
    constant = Scan(np.full((128, 128, 8), 300.0, np.float32),
                    np.diag([1.5, 1.5, 10.0, 1.0]), "constant")
    result = qc.check_segmentation(constant, unet.segment(constant, probabilities=True), unet)
    assert result.status == "fail"
    assert result.reason.startswith("the image is constant")


# ---------------------------------------------------------------- synthetic defects


@pytest.fixture
def synthetic() -> tuple[Scan, np.ndarray]:
    return make_heart(shape=(96, 88, 5), spacing=(1.5, 1.5, 8.0))


def test_intact_synthetic_heart_has_no_anatomy_issue(synthetic):
    scan, labels = synthetic
    issues = qc.frame_issues(qc.frame_signals(scan.array, labels, scan.spacing))
    anatomy = {"open_slices", "LV_components", "heart_found", "lv_gaps", "rv_detached_slices"}
    assert not _signals(issues) & anatomy, [i.message for i in issues]


def test_synthetic_open_ring_is_flagged(synthetic):
    scan, labels = synthetic
    labels = labels.copy()
    x = np.arange(labels.shape[0])[:, None]
    for k in (1, 2, 3):
        labels[..., k][(x > 52) & (labels[..., k] == LABEL_OF["Myo"])] = 0
    result = qc.assess(scan, labels)
    assert result.status in ("check", "fail")
    assert result.message.startswith(("Check this result: ", "Do not use this result: "))
    assert "open_slices" in _signals(result.issues)
    assert "does not close around the LV on 3 slice(s)" in result.reason
    assert result.signals["open_slices"] == 3


def test_two_lv_components_are_flagged(synthetic):
    scan, labels = synthetic
    labels = labels.copy()
    labels[2:8, 2:8, 2:5] = LABEL_OF["LV"]            # a second LV, far from the heart
    result = qc.assess(scan, labels)
    assert result.status in ("check", "fail")
    assert result.signals["LV_components"] == 2
    assert "the LV cavity is in 2 separate pieces" in result.reason


def test_empty_synthetic_prediction_fails(synthetic):
    scan, _ = synthetic
    result = qc.assess(scan, np.zeros(scan.shape3d, np.uint8))
    assert result.status == "fail" and "no heart found" in result.reason


def test_disagreeing_extra_map_is_flagged(synthetic):
    scan, labels = synthetic
    probs = np.eye(4, dtype=np.float32)[labels].transpose(3, 0, 1, 2)
    shifted = np.roll(probs, 12, axis=1)               # another model, 18 mm off
    agree = qc.assess(scan, labels, probs, [probs]).signals["agreement_dice"]
    result = qc.assess(scan, labels, probs, [shifted])
    assert agree == pytest.approx(1.0)
    assert result.signals["agreement_dice"] < 0.6
    assert "agreement_dice" in _signals(result.issues) and result.status == "fail"


def test_one_structure_changing_under_a_flip_is_named(synthetic):
    """Only the RV moves in the extra map: the mean agreement stays high, the RV's
    own agreement does not, and the reason names the RV."""
    scan, labels = synthetic
    probs = np.eye(4, dtype=np.float32)[labels].transpose(3, 0, 1, 2)
    moved = labels.copy()
    rv = labels == LABEL_OF["RV"]
    moved[rv] = 0
    moved[np.roll(rv, 6, axis=1) & (labels == 0)] = LABEL_OF["RV"]   # RV 9 mm aside
    other = np.eye(4, dtype=np.float32)[moved].transpose(3, 0, 1, 2)
    result = qc.assess(scan, labels, probs, [other])
    s = result.signals
    assert s["LV_agreement"] == pytest.approx(1.0) and s["Myo_agreement"] == pytest.approx(1.0)
    assert s["RV_agreement"] < 0.6 < s["agreement_dice"]
    assert "RV_agreement" in _signals(result.issues) and result.status != "ok"
    assert "the RV outline changes when the image is flipped" in result.reason
    # Without flipped passes the per-structure signals are NaN and judge nothing.
    alone = qc.assess(scan, labels, probs)
    assert all(np.isnan(alone.signals[k]) for k in qc.AGREEMENT_SIGNALS)
    assert not _signals(alone.issues) & set(qc.AGREEMENT_SIGNALS)


def test_cine_checks_every_frame_and_the_ejection_fraction(synthetic):
    scan, labels = synthetic
    cine = Scan(np.stack([scan.array, scan.array], -1), scan.affine, "cine")
    same = np.stack([labels, labels], -1)              # ES identical to ED: EF 0 %
    result = qc.assess(cine, same, ed=0, es=1)
    assert result.signals["LV_EF_pct"] == pytest.approx(0.0)
    assert "LV_EF_pct" in _signals(result.issues) and result.status == "check"
    assert any(i.message == "the LV ejection fraction is implausibly low (0 %)"
               for i in result.issues)
    assert len(result.signals["frames"]) == 2
    # a problem of both frames is one message naming both
    both = [i.message for i in result.issues if i.message.startswith("frames 0, 1: ")]
    assert both and not any(i.message.startswith("frame 0: ") for i in result.issues
                            if i.message[len("frame 0: "):] in
                            [m[len("frames 0, 1: "):] for m in both])


# ---------------------------------------------------------------- the limits


def test_rule_severity_and_badness():
    rule = qc.Rule("x", True, 1.0, 3.0, 5.0, "x is {value}")
    assert rule.severity(2.9) == "ok" and rule.severity(3.1) == "check"
    assert rule.severity(5.1) == "fail"
    assert rule.badness(1.0) == 0.0 and rule.badness(3.0) == pytest.approx(1.0)
    low = qc.Rule("y", False, 10.0, 5.0, None, "y")
    assert low.severity(4.0) == "check" and low.severity(-100) == "check"


def test_calibrated_limits_lie_beyond_training_values():
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    typical, check, fail = qc.calibrated_limits(values, high=True)
    assert typical == 3.0 and check == pytest.approx(5.5) and fail == pytest.approx(7.0)
    _, check, fail = qc.calibrated_limits(values, high=False, kind="log")
    assert 0 < fail < check < 1.0
    assert qc.calibrated_limits([0, 0, 1], high=True, kind="count")[1:] == (1.5, 2.5)


def test_rules_match_the_calibration_file():
    if not CALIBRATION.is_file():
        pytest.skip(f"{CALIBRATION} not found (python -m bench.qc --calibrate)")
    limits = json.loads(CALIBRATION.read_text())["limits"]
    for rule in qc.RULES:
        cal = limits[rule.key]
        for name in ("typical", "check", "fail"):
            ours = getattr(rule, name)
            if ours is None:
                continue
            assert ours == pytest.approx(cal[name], rel=0.02, abs=1e-3), (rule.key, name)


# ---------------------------------------------------------------- each model's own limits


def test_model_rules_replace_only_the_prediction_limits():
    limits = {"entropy:high": {"typical": 0.2, "check": 0.4, "fail": 0.5},
              "LV_ml:high": {"typical": 1.0, "check": 2.0, "fail": 3.0}}   # not a model's own
    rules = {r.key: r for r in qc.model_rules(limits)}
    default = {r.key: r for r in qc.RULES}
    assert rules["entropy:high"].check == 0.4 and rules["entropy:high"].fail == 0.5
    assert rules["LV_ml:high"] == default["LV_ml:high"]
    assert rules["agreement_dice:low"] == default["agreement_dice:low"]
    signals = {"entropy": 0.3}
    assert _signals(qc.rule_issues(signals)) == {"entropy"}           # default: unsure
    assert qc.rule_issues(signals, tuple(rules.values())) == []        # this model: typical
    assert qc.model_rules(None) is qc.RULES and qc.model_rules({}) is qc.RULES


@pytest.mark.parametrize("limits", [
    ["entropy"],
    {"entropy:high": {"typical": 0.2, "check": "high", "fail": 0.5}},
    {"entropy:high": {"typical": 0.2, "check": 0.1, "fail": 0.5}},       # check below typical
    {"agreement_dice:low": {"typical": 0.9, "check": 0.95, "fail": 0.8}},
    {"entropy:high": {"typical": 0.2, "check": float("nan"), "fail": 0.5}},
    {"entropy:high": 0.3},
])
def test_model_rules_refuse_unusable_limits(limits):
    from lvseg_core.errors import WeightsError

    with pytest.raises(WeightsError, match="qc_limits"):
        qc.model_rules(limits, "x/config.json")


def _weights_with_limits(tmp_path: Path, limits: dict) -> Path:
    """A copy of the bundled U-Net whose config.json carries ``limits``."""
    from lvseg_core.hub import bundled_folder

    folder = tmp_path / "unet"
    folder.mkdir()
    source = bundled_folder("unet")
    (folder / "model.safetensors").write_bytes((source / "model.safetensors").read_bytes())
    config = json.loads((source / "config.json").read_text())
    config["qc_limits"] = limits
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_segmenter_rates_with_the_limits_its_weights_carry(validation_ed, tmp_path):
    from lvseg_core.errors import WeightsError
    from lvseg_core.inference import Segmenter
    from lvseg_core.pipeline import run_scan

    scan, _ = validation_ed
    strict = {"entropy:high": {"typical": 0.0, "check": 1e-6, "fail": 2e-6}}
    segmenter = Segmenter.from_source("unet", str(_weights_with_limits(tmp_path, strict)),
                                      device="cpu", backend="torch")
    assert {r.key: r for r in segmenter.qc_rules}["entropy:high"].check == 1e-6
    # Without the flipped pass too: the pipeline hands the model's rules on.
    result = run_scan(scan, segmenter, qc_flips=()).qc
    assert result.status == "fail" and "unsure" in result.reason
    bad = tmp_path / "bad"
    bad.mkdir()
    folder = _weights_with_limits(bad, {"entropy:high": {"typical": 1, "check": 0, "fail": 2}})
    with pytest.raises(WeightsError, match="qc_limits"):
        Segmenter.from_source("unet", str(folder), device="cpu", backend="torch")
