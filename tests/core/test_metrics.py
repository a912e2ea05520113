"""Tests of lvseg_core.metrics: hand-computed cases, empty cases, MONAI parity."""

from __future__ import annotations

import json
import math
import time
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage

from lvseg_core.errors import LVSegError
from lvseg_core.metrics import (
    KEYS,
    METRICS,
    SegmentationMetrics,
    assd,
    count_valid,
    dice,
    evaluate_segmentation,
    f1,
    hausdorff95,
    iou,
    overlap_metrics,
    precision,
    recall,
    summarise,
    surface_metrics,
)

from tests.conftest import acdc_frame, make_heart

nan = float("nan")


def blob(shape: tuple[int, ...], seed: int, threshold: float = 0.05) -> np.ndarray:
    """A random smooth blobby boolean mask."""
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.normal(size=shape), 2.0) > threshold


def same(a: float, b: float) -> bool:
    """Equality that treats NaN == NaN."""
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)


# ----------------------------------------------------------------------------
# overlap metrics, hand computed
# ----------------------------------------------------------------------------

def test_overlap_hand_computed():
    gt = np.zeros((4, 4), np.uint8)
    pred = np.zeros((4, 4), np.uint8)
    gt[0, :4] = 3                 # 4 voxels of LV
    pred[0, :3] = 3               # 3 of them found (TP = 3, FN = 1)
    pred[1, :2] = 3               # 2 false positives
    assert dice(pred, gt, "LV") == pytest.approx(6 / 9)
    assert iou(pred, gt, "LV") == pytest.approx(3 / 6)
    assert precision(pred, gt, "LV") == pytest.approx(3 / 5)
    assert recall(pred, gt, "LV") == pytest.approx(3 / 4)
    assert f1(pred, gt, "LV") == pytest.approx(6 / 9)
    # label value, and binary-mask mode, give the same answer
    assert dice(pred, gt, 3) == dice(pred == 3, gt == 3) == dice(pred, gt, "LV")
    with pytest.raises(LVSegError, match="unknown structure"):
        dice(pred, gt, "Aorta")
    # another structure, absent from both: perfect agreement
    assert overlap_metrics(pred, gt, "RV") == {m: 1.0 for m in
                                                ("dice", "iou", "precision", "recall", "f1")}


@pytest.mark.parametrize(
    "pred_any, gt_any, expected",
    [
        (False, False, dict(dice=1.0, iou=1.0, precision=1.0, recall=1.0, f1=1.0)),
        (True, False, dict(dice=0.0, iou=0.0, precision=0.0, recall=nan, f1=0.0)),
        (False, True, dict(dice=0.0, iou=0.0, precision=nan, recall=0.0, f1=0.0)),
    ],
)
def test_overlap_empty_conventions(pred_any, gt_any, expected):
    pred = np.zeros((5, 5, 2), bool)
    gt = np.zeros((5, 5, 2), bool)
    pred[1, 1, 0] = pred_any
    gt[3, 3, 1] = gt_any
    got = overlap_metrics(pred, gt)
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert same(got[name], value), name


def test_dice_matches_monai():
    from monai.metrics import compute_dice

    heart = make_heart(shape=(48, 44, 4))[1]
    pred = heart.copy()
    pred = np.roll(pred, 2, axis=0)
    pred[ndimage.binary_dilation(pred == 2) & (pred == 0)] = 2
    def one_hot(labels: np.ndarray) -> torch.Tensor:
        stacked = np.stack([labels == k for k in range(4)])[None]
        return torch.from_numpy(stacked.astype(np.float32))

    expected = compute_dice(one_hot(pred), one_hot(heart), include_background=False)[0].numpy()
    got = evaluate_segmentation(pred, heart, (1.5, 1.5, 8.0))["dice"]
    for k, name in enumerate(("RV", "Myo", "LV")):
        assert got[name] == pytest.approx(float(expected[k]), abs=1e-6)
        assert got[name] == pytest.approx(dice(pred, heart, name))


# ----------------------------------------------------------------------------
# surface distances
# ----------------------------------------------------------------------------

def test_surface_single_voxels_anisotropic():
    pred = np.zeros((6, 8), bool)
    gt = np.zeros((6, 8), bool)
    pred[2, 2] = True
    gt[2, 5] = True                     # 3 voxels along axis 1
    assert hausdorff95(pred, gt, (2.0, 3.0)) == pytest.approx(9.0)
    assert assd(pred, gt, (2.0, 3.0)) == pytest.approx(9.0)
    gt3 = np.zeros((4, 4, 3), bool)
    pred3 = np.zeros((4, 4, 3), bool)
    gt3[1, 1, 0] = pred3[1, 1, 2] = True
    assert hausdorff95(pred3, gt3, (1.5, 1.5, 10.0)) == pytest.approx(20.0)


def test_surface_hand_computed_asymmetric():
    # gt: one voxel; pred: that voxel and one 4 voxels away (spacing 1 mm).
    # pred->gt distances {0, 4}; gt->pred {0}. ASSD = 4 / 3.
    # Directed 95th percentile of {0, 4} (linear) = 3.8; of {0} = 0; HD95 = 3.8.
    pred = np.zeros((1, 9), bool)
    gt = np.zeros((1, 9), bool)
    gt[0, 1] = pred[0, 1] = pred[0, 5] = True
    assert assd(pred, gt, 1.0) == pytest.approx(4 / 3)
    assert hausdorff95(pred, gt, 1.0) == pytest.approx(3.8)


def test_surface_identical_and_empty():
    mask = blob((20, 20, 4), seed=1)
    assert hausdorff95(mask, mask, (1, 1, 5)) == 0.0
    assert assd(mask, mask, (1, 1, 5)) == 0.0
    empty = np.zeros_like(mask)
    assert surface_metrics(empty, empty, (1, 1, 5)) == {"hd95_mm": 0.0, "assd_mm": 0.0}
    for a, b in ((mask, empty), (empty, mask)):
        got = surface_metrics(a, b, (1, 1, 5))
        assert math.isnan(got["hd95_mm"]) and math.isnan(got["assd_mm"])


def _monai_surface(pred: np.ndarray, gt: np.ndarray, spacing) -> tuple[float, float]:
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    def t(mask: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(mask[None, None].astype(np.float32))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(t(pred), t(gt), include_background=True,
                                        percentile=95, spacing=spacing)
        sd = compute_average_surface_distance(t(pred), t(gt), include_background=True,
                                              symmetric=True, spacing=spacing)
    return float(hd.item()), float(sd.item())


@pytest.mark.parametrize("seed", range(5))
def test_surface_matches_monai_3d(seed):
    spacing = (1.25, 0.8, 5.0)
    pred = blob((40, 36, 8), seed)
    gt = blob((40, 36, 8), seed + 100)
    hd, sd = _monai_surface(pred, gt, spacing)
    assert hausdorff95(pred, gt, spacing) == pytest.approx(hd, abs=1e-4)
    assert assd(pred, gt, spacing) == pytest.approx(sd, abs=1e-4)


@pytest.mark.parametrize("seed", range(3))
def test_surface_matches_monai_small_offcentre_and_2d(seed):
    # small masks far from each other, touching the array border: checks cropping
    pred = np.zeros((50, 40, 6), bool)
    gt = np.zeros((50, 40, 6), bool)
    pred[:12, :10, :] = blob((12, 10, 6), seed)
    gt[30:45, 25:40, 2:] = blob((15, 15, 4), seed + 7, threshold=0.0)
    spacing = (1.5625, 1.5625, 10.0)
    hd, sd = _monai_surface(pred, gt, spacing)
    assert hausdorff95(pred, gt, spacing) == pytest.approx(hd, abs=1e-4)
    assert assd(pred, gt, spacing) == pytest.approx(sd, abs=1e-4)
    p2, g2 = blob((60, 50), seed + 20), blob((60, 50), seed + 40)
    hd, sd = _monai_surface(p2, g2, (0.7, 1.3))
    assert hausdorff95(p2, g2, (0.7, 1.3)) == pytest.approx(hd, abs=1e-4)
    assert assd(p2, g2, (0.7, 1.3)) == pytest.approx(sd, abs=1e-4)


# ----------------------------------------------------------------------------
# whole-case evaluation
# ----------------------------------------------------------------------------

def test_evaluate_layout_and_perfect():
    gt = make_heart()[1]
    result = evaluate_segmentation(gt, gt, (1.5, 1.5, 8.0))
    assert tuple(result) == METRICS
    for metric in METRICS:
        assert tuple(result[metric]) == KEYS
        assert all(type(v) is float for v in result[metric].values())
    for key in KEYS:
        for metric in ("dice", "iou", "precision", "recall", "f1"):
            assert result[metric][key] == 1.0
        assert result["hd95_mm"][key] == 0.0
        assert result["assd_mm"][key] == 0.0
    json.dumps(result)


def test_evaluate_matches_single_functions():
    gt = make_heart(seed=1)[1]
    pred = np.roll(gt, (2, -1), axis=(0, 1))
    pred[ndimage.binary_dilation(pred == 3, iterations=2) & (pred != 1)] = 3
    spacing = (1.5, 1.2, 8.0)
    result = evaluate_segmentation(pred, gt, spacing)
    for name in ("RV", "Myo", "LV"):
        assert result["dice"][name] == pytest.approx(dice(pred, gt, name))
        assert result["precision"][name] == pytest.approx(precision(pred, gt, name))
        assert result["recall"][name] == pytest.approx(recall(pred, gt, name))
        p, g = pred == {"RV": 1, "Myo": 2, "LV": 3}[name], gt == {"RV": 1, "Myo": 2, "LV": 3}[name]
        assert result["hd95_mm"][name] == pytest.approx(hausdorff95(p, g, spacing))
        assert result["assd_mm"][name] == pytest.approx(assd(p, g, spacing))
        assert 0 < result["dice"][name] < 1
    assert result["dice"]["mean"] == pytest.approx(
        np.mean([result["dice"][s] for s in ("RV", "Myo", "LV")]))


def test_evaluate_empty_structures_and_nan_mean():
    gt = np.zeros((10, 10, 2), np.uint8)
    pred = np.zeros((10, 10, 2), np.uint8)
    gt[2:5, 2:5, :] = 3                  # LV in both
    pred[2:5, 2:6, :] = 3
    pred[7:9, 7:9, 0] = 2                # Myo predicted but absent from gt
    # RV absent from both
    r = evaluate_segmentation(pred, gt, (1.0, 1.0, 5.0))
    assert r["dice"]["RV"] == 1.0 and r["hd95_mm"]["RV"] == 0.0
    assert r["dice"]["Myo"] == 0.0 and r["precision"]["Myo"] == 0.0
    assert math.isnan(r["recall"]["Myo"]) and math.isnan(r["hd95_mm"]["Myo"])
    assert r["recall"]["LV"] == 1.0 and r["precision"]["LV"] == pytest.approx(18 / 24)
    assert r["recall"]["mean"] == pytest.approx((1.0 + 1.0) / 2)          # NaN ignored
    assert r["hd95_mm"]["mean"] == pytest.approx((0.0 + r["hd95_mm"]["LV"]) / 2)
    assert r["hd95_mm"]["LV"] == pytest.approx(1.0)
    json.dumps(r)  # NaN is allowed by the default encoder


def test_evaluate_rejects_bad_input():
    a = np.zeros((4, 4, 2), np.uint8)
    with pytest.raises(LVSegError, match="shape"):
        evaluate_segmentation(a, np.zeros((4, 4, 3), np.uint8), (1, 1, 1))
    with pytest.raises(LVSegError, match="outside"):
        evaluate_segmentation(a + 4, a, (1, 1, 1))
    with pytest.raises(LVSegError, match="spacing"):
        evaluate_segmentation(a, a, (1, 1))
    with pytest.raises(LVSegError, match="non-integer"):
        evaluate_segmentation(a + 0.5, a, (1, 1, 1))
    # float label maps with integer values (as nibabel's get_fdata gives) are fine
    assert evaluate_segmentation(a.astype(np.float64), a, (1, 1, 1))["dice"]["LV"] == 1.0


# ----------------------------------------------------------------------------
# summaries
# ----------------------------------------------------------------------------

def _record(value: float, hd: float) -> dict:
    rec = {m: {"RV": value, "Myo": value, "LV": value, "mean": value} for m in METRICS}
    rec["hd95_mm"] = {"RV": hd, "Myo": 1.0, "LV": 1.0, "mean": 1.0}
    return rec


def test_summarise_and_counts():
    records = [_record(0.5, nan), _record(1.0, 4.0), _record(0.0, nan)]
    summary = summarise(records)
    assert summary["dice"]["LV"] == pytest.approx(0.5)
    assert summary["hd95_mm"]["RV"] == pytest.approx(4.0)
    counts = count_valid(records)
    assert counts["hd95_mm"]["RV"] == 1 and counts["dice"]["LV"] == 3
    all_nan = summarise([_record(0.5, nan)])
    assert math.isnan(all_nan["hd95_mm"]["RV"])
    with pytest.raises(LVSegError):
        summarise([])


def test_segmentation_metrics_class():
    _, gt = make_heart(shape=(40, 40, 3))
    metric = SegmentationMetrics(spacing=(1.5, 1.5, 8.0))
    first = metric(gt, gt)
    second = metric(np.zeros_like(gt), gt)
    assert len(metric) == 2
    assert first["dice"]["LV"] == 1.0 and second["dice"]["LV"] == 0.0
    summary = metric.aggregate()
    assert summary["dice"]["LV"] == pytest.approx(0.5)
    assert summary["hd95_mm"]["LV"] == 0.0          # second case NaN, ignored
    assert metric.counts()["hd95_mm"]["LV"] == 1
    metric.reset()
    assert len(metric) == 0
    with pytest.raises(LVSegError, match="spacing"):
        SegmentationMetrics()(gt, gt)


def test_evaluation_is_fast():
    _, gt = make_heart(shape=(256, 256, 10), spacing=(1.5625, 1.5625, 10.0))
    pred = np.roll(gt, 3, axis=0)
    start = time.perf_counter()
    for _ in range(10):
        evaluate_segmentation(pred, gt, (1.5625, 1.5625, 10.0))
    assert time.perf_counter() - start < 5.0     # ~0.02 s per case on one core


# ----------------------------------------------------------------------------
# real data
# ----------------------------------------------------------------------------

def test_acdc_gt_against_itself_and_other_frame(acdc_dir):
    nib = pytest.importorskip("nibabel")
    img = nib.load(acdc_frame(acdc_dir / "patient002", "ED", label=True))
    gt = np.asarray(img.dataobj)
    spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
    result = evaluate_segmentation(gt, gt, spacing)
    for key in KEYS:
        assert result["dice"][key] == 1.0
        assert result["hd95_mm"][key] == 0.0
    es = np.asarray(nib.load(acdc_frame(acdc_dir / "patient002", "ES", label=True)).dataobj)
    cross = evaluate_segmentation(es, gt, spacing)
    assert 0.3 < cross["dice"]["LV"] < 1.0
    assert 0.0 < cross["hd95_mm"]["LV"] < 50.0
