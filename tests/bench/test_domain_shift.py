"""bench.domain_shift: the simulated scanners and the side-by-side table."""

from __future__ import annotations

import numpy as np
import pytest

from bench.domain_shift import CONDITIONS, FOV_MM, markdown, restrict, thin_stack
from lvseg_core.errors import LVSegError
from tests.conftest import make_heart


@pytest.fixture(scope="module")
def heart():
    return make_heart((200, 180, 8), (1.25, 1.25, 10.0), seed=4)


@pytest.mark.parametrize("condition", [c for c in CONDITIONS if c.apply is not None],
                         ids=lambda c: c.key)
def test_condition_keeps_image_and_labels_aligned(condition, heart):
    scan, labels = heart
    image, cut = condition.apply(scan, labels, 7)
    assert image.array.shape == cut.shape
    assert np.isfinite(image.array).all()
    assert set(np.unique(cut)) <= {0, 1, 2, 3} and (cut > 0).any()
    assert not (image.array.shape == scan.array.shape
                and np.allclose(image.array, scan.array)), "the scan must change"


def _get(key):
    return next(c for c in CONDITIONS if c.key == key)


def test_specific_conditions(heart):
    scan, labels = heart
    inverted, _ = _get("inverted").apply(scan, labels)
    assert np.corrcoef(inverted.array.ravel(), scan.array.ravel())[0, 1] < -0.99
    for key, n in (("slices_3", 3), ("slices_1", 1)):
        image, cut = _get(key).apply(scan, labels)
        assert image.array.shape[2] == n == cut.shape[2]
        assert all(cut[..., k].any() for k in range(n)), "thin stacks keep labelled slices"
    image, cut = _get("fov_160").apply(scan, labels)
    assert image.array.shape[:2] == (128, 128)   # 160 mm / 1.25 mm
    assert (cut == 3).sum() == (labels == 3).sum(), "the centred FOV keeps the whole LV"
    shifted, cut = _get("fov_shifted").apply(scan, labels)
    assert shifted.array.shape[0] <= int(round(FOV_MM / 1.25))
    lv_x = np.nonzero(cut == 3)[0].mean()
    assert lv_x < shifted.array.shape[0] / 2 - 20, "the heart is off centre"
    spacing, cut = _get("spacing_2mm").apply(scan, labels)
    assert spacing.spacing[:2] == pytest.approx((2.0, 2.0))


def test_thin_stack_is_centred_on_slices_holding_both_ventricles(heart):
    """As a one-slice scan is planned: through both ventricles, never a slice
    whose ground truth has no RV (where one stray voxel would score RV Dice 0)."""
    scan, labels = heart
    labels = labels.copy()
    rv_slices = [k for k in range(labels.shape[2]) if (labels[..., k] == 1).any()]
    labels[..., rv_slices[len(rv_slices) // 2]:][labels[..., rv_slices[len(rv_slices) // 2]:]
                                                 == 1] = 0      # the RV ends mid-stack
    both = [k for k in range(labels.shape[2])
            if all((labels[..., k] == v).any() for v in (1, 2, 3))]
    any_label = [k for k in range(labels.shape[2]) if labels[..., k].any()]
    assert any_label[len(any_label) // 2] not in both, "the old centre had no RV"
    for count in (1, 3):
        image, cut = thin_stack(scan, labels, count)
        assert image.array.shape[2] == cut.shape[2] == count
        assert (cut[..., count // 2] == 1).any(), "the centre slice holds an RV"
        start = both[len(both) // 2] - count // 2
        assert np.array_equal(image.array, scan.array[..., start:start + count])
    # A stack that ends at its last labelled slice still has ``count`` slices.
    edge = labels.copy()
    edge[..., :-1] = 0
    image, cut = thin_stack(scan, edge, 3)
    assert cut.shape[2] == 3 and cut[..., -1].any()


def _report(volumes, value):
    rows = {"unet": {c.key: [{"RV": value + i, "Myo": value, "LV": value, "mean": value + i / 3}
                             for i, _ in enumerate(volumes)] for c in CONDITIONS}}
    from bench.robustness import _mean_scores

    return {"kind": "domain_shift", "volumes": list(volumes),
            "conditions": [{"key": c.key, "label": c.label} for c in CONDITIONS],
            "results": {"unet": {c.key: {"label": c.label,
                                         "dice": _mean_scores(rows["unet"][c.key])}
                                 for c in CONDITIONS}},
            "per_case": rows}


def test_compare_on_the_same_volumes():
    old = _report(["a", "b", "c"], 0.5)
    new = _report(["b"], 0.9)
    same = restrict(old, ["b"])
    assert same["results"]["unet"]["clean"]["dice"]["RV"] == pytest.approx(1.5)
    table = markdown(new, old, ("old", "new"))
    assert "U-Net old" in table and "U-Net new" in table
    assert "**0.833**" in table     # old, volume b only: 0.5 + 1/3
    with pytest.raises(LVSegError, match="no results for d"):
        restrict(old, ["d"])
