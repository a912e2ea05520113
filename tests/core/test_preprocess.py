"""Tests of lvseg_core.preprocess: intensity normalisation and the invertible plan."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lvseg_core.labels import NUM_CLASSES
from lvseg_core.preprocess import (
    PreprocessPlan,
    fit_to_grid,
    normalise_intensity,
    prepare,
    resize_slices,
    restore,
)
from tests.conftest import make_heart

PLAN_SPACING = (1.5625, 1.5625)


# --------------------------------------------------------------------------- #
# normalise_intensity
# --------------------------------------------------------------------------- #

def test_normalise_invariant_under_positive_affine_change():
    scan, _ = make_heart(shape=(64, 64, 5), seed=3)
    raw = scan.array  # raw-like units, about 150..1300
    minmax = (raw - raw.min()) / (raw.max() - raw.min())  # a [0, 1] copy, like the ACDC data
    affine = raw * 3.7 + 250.0
    a = normalise_intensity(raw)
    b = normalise_intensity(minmax)
    c = normalise_intensity(affine)
    assert a.dtype == np.float32 and a.shape == raw.shape
    np.testing.assert_allclose(a, b, atol=1e-4)
    np.testing.assert_allclose(a, c, atol=1e-4)
    # it is a z-score of the clipped volume
    assert abs(float(a.mean())) < 1e-4
    assert abs(float(a.std()) - 1.0) < 1e-3
    # the clipping really clips: the extremes are the 0.5/99.5 percentiles
    lo, hi = np.percentile(raw, (0.5, 99.5))
    assert a.max() == pytest.approx(a[raw >= hi].min(), abs=1e-5)
    assert a.min() == pytest.approx(a[raw <= lo].max(), abs=1e-5)


def test_normalise_not_invariant_under_negative_scale():
    # sanity: the invariance above is not trivially true for any transform
    scan, _ = make_heart(shape=(32, 32, 3), seed=1)
    a = normalise_intensity(scan.array)
    b = normalise_intensity(-scan.array)
    assert not np.allclose(a, b, atol=1e-2)


@pytest.mark.parametrize("value", [0.0, 1.0, 1234.5, -7.0])
def test_normalise_constant_volume_gives_zeros(value):
    out = normalise_intensity(np.full((16, 12, 3), value, np.float32))
    assert out.shape == (16, 12, 3)
    assert out.dtype == np.float32
    assert np.array_equal(out, np.zeros((16, 12, 3), np.float32))


def test_normalise_handles_nan_and_inf():
    scan, _ = make_heart(shape=(48, 48, 4), seed=2)
    volume = scan.array.copy()
    volume[0, 0, 0] = np.nan
    volume[5:8, 5:8, 1] = np.nan
    volume[10, 10, 2] = np.inf
    volume[11, 11, 2] = -np.inf
    out = normalise_intensity(volume)
    assert out.shape == volume.shape
    assert np.isfinite(out).all()
    # the finite voxels are hardly affected by a handful of bad ones
    clean = normalise_intensity(scan.array)
    good = np.isfinite(volume)
    assert np.corrcoef(out[good], clean[good])[0, 1] > 0.99


def test_normalise_all_nan_gives_zeros():
    out = normalise_intensity(np.full((8, 8, 2), np.nan, np.float32))
    assert np.isfinite(out).all() and not out.any()


def test_normalise_integer_input():
    vol = np.arange(4 * 5 * 6, dtype=np.uint16).reshape(4, 5, 6) * 10
    out = normalise_intensity(vol)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, normalise_intensity(vol.astype(np.float64) / 10.0), atol=1e-4)


# --------------------------------------------------------------------------- #
# prepare / restore round trips
# --------------------------------------------------------------------------- #

def prepare_labels(labels: np.ndarray, spacing, plan: PreprocessPlan, prepared) -> torch.Tensor:
    """Put a label map ``(x, y, z)`` on the network grid the way ``prepare`` puts the image."""
    from lvseg_core.preprocess import resampled_size

    slices = torch.from_numpy(np.ascontiguousarray(labels.transpose(2, 0, 1)))[:, None].float()
    size = resampled_size(labels.shape[:2], spacing[:2], plan.spacing_mm)
    assert size == prepared.resampled
    slices = resize_slices(slices, size, mode="nearest")
    target = tuple(prepared.image.shape[-2:])
    slices = fit_to_grid(slices, prepared.offsets, target, 0.0)
    if prepared.z_pad:
        slices = torch.cat([slices, slices.new_zeros((prepared.z_pad, *slices.shape[1:]))])
    return slices[:, 0].round().long()  # (z + z_pad, X, Y)


def one_hot(label_slices: torch.Tensor) -> torch.Tensor:
    """(N, X, Y) long -> (N, C, X, Y) float."""
    return F.one_hot(label_slices, NUM_CLASSES).permute(0, 3, 1, 2).float()


def random_labels(shape, seed) -> np.ndarray:
    """A label map with blocks of every class reaching the borders (so crops matter)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, NUM_CLASSES, size=(max(1, shape[0] // 4), max(1, shape[1] // 4), shape[2]))
    labels = np.repeat(np.repeat(coarse, 4, axis=0), 4, axis=1)
    out = np.zeros(shape, np.uint8)
    out[: labels.shape[0], : labels.shape[1]] = labels[: shape[0], : shape[1]]
    return out


def crop_window(prepared, axis: int) -> slice:
    """Input indices along ``axis`` that survive the centre crop (same spacing)."""
    pad, crop = prepared.offsets[axis]
    n = prepared.in_shape[axis]
    target = prepared.image.shape[-2 + axis]
    keep = min(n - crop, target - pad)
    return slice(crop, crop + keep)


# shapes: odd sizes, smaller and bigger than `size`, z not a multiple of 8
CASES = [
    # (shape, plan)
    ((37, 53, 3), PreprocessPlan(spacing_mm=PLAN_SPACING)),
    ((64, 64, 1), PreprocessPlan(spacing_mm=PLAN_SPACING)),
    ((65, 31, 5), PreprocessPlan(spacing_mm=PLAN_SPACING, divisor=16)),
    ((45, 51, 4), PreprocessPlan(spacing_mm=PLAN_SPACING, size=(64, 64))),      # pad
    ((81, 97, 3), PreprocessPlan(spacing_mm=PLAN_SPACING, size=(64, 64))),      # crop
    ((81, 41, 2), PreprocessPlan(spacing_mm=PLAN_SPACING, size=(64, 64))),      # crop x, pad y
    ((33, 79, 6), PreprocessPlan(spacing_mm=PLAN_SPACING, size=(48, 48))),      # pad x, crop y
    ((39, 47, 5), PreprocessPlan(spacing_mm=PLAN_SPACING, divisor=8, z_divisor=8)),  # V-Net
    ((50, 42, 9), PreprocessPlan(spacing_mm=PLAN_SPACING, divisor=8, z_divisor=8)),
    ((29, 35, 3), PreprocessPlan(spacing_mm=None)),
]


@pytest.mark.parametrize("shape,plan", CASES)
def test_prepare_shapes(shape, plan):
    volume = np.random.default_rng(0).normal(500, 100, shape).astype(np.float32)
    prepared = prepare(volume, (*PLAN_SPACING, 10.0), plan)
    n, c, X, Y = prepared.image.shape
    assert c == 1 and prepared.image.dtype == torch.float32
    assert n % plan.z_divisor == 0 and n - prepared.z_pad == shape[2]
    assert 0 <= prepared.z_pad < plan.z_divisor
    if plan.size is not None:
        assert (X, Y) == tuple(plan.size)
    else:
        assert X % plan.divisor == 0 and Y % plan.divisor == 0
        assert X - shape[0] < plan.divisor and Y - shape[1] < plan.divisor
    assert prepared.in_shape == shape
    assert torch.isfinite(prepared.image).all()


@pytest.mark.parametrize("shape,plan", CASES)
def test_round_trip_same_spacing_exact(shape, plan):
    spacing = (*PLAN_SPACING, 10.0)
    labels = random_labels(shape, seed=sum(shape))
    volume = labels.astype(np.float32) * 300 + 100
    prepared = prepare(volume, spacing, plan)
    on_grid = prepare_labels(labels, spacing, plan, prepared)
    assert on_grid.shape == (prepared.image.shape[0], *prepared.image.shape[-2:])
    back = restore(one_hot(on_grid), prepared)
    assert back.shape == (NUM_CLASSES, *shape)
    restored = back.argmax(0).numpy().astype(np.uint8)

    expected = np.zeros_like(labels)
    wx, wy = crop_window(prepared, 0), crop_window(prepared, 1)
    expected[wx, wy] = labels[wx, wy]  # voxels cropped away become background
    assert np.array_equal(restored, expected)
    if plan.size is None or all(s <= t for s, t in zip(shape[:2], plan.size)):
        assert np.array_equal(restored, labels)  # nothing cropped: exact
    # and the restored one-hot is exactly one-hot
    assert torch.equal(back, one_hot(torch.from_numpy(expected.transpose(2, 0, 1)).long())
                       .permute(1, 2, 3, 0))


@pytest.mark.parametrize("shape,plan", [
    ((64, 64, 4), PreprocessPlan(spacing_mm=PLAN_SPACING)),
    ((77, 69, 3), PreprocessPlan(spacing_mm=PLAN_SPACING)),
    ((75, 61, 5), PreprocessPlan(spacing_mm=PLAN_SPACING, divisor=8, z_divisor=8)),
    ((71, 71, 3), PreprocessPlan(spacing_mm=PLAN_SPACING, size=(48, 48))),
])
def test_round_trip_resampled(shape, plan):
    """1.2 mm -> 1.5625 mm and back: the heart comes back almost unchanged."""
    scan, labels = make_heart(shape=shape, spacing=(1.2, 1.2, 8.0))
    prepared = prepare(scan.array, scan.spacing, plan)
    assert prepared.resampled == tuple(round(n * 1.2 / 1.5625) for n in shape[:2])
    on_grid = prepare_labels(labels, scan.spacing, plan, prepared)
    back = restore(one_hot(on_grid), prepared)
    assert back.shape == (NUM_CLASSES, *shape)
    torch.testing.assert_close(back.sum(0), torch.ones(shape), atol=1e-5, rtol=0)
    restored = back.argmax(0).numpy()
    assert (restored == labels).mean() >= 0.97
    for value in (1, 2, 3):
        a, b = restored == value, labels == value
        dice = 2 * (a & b).sum() / (a.sum() + b.sum())
        assert dice >= 0.85, (value, dice)


@pytest.mark.parametrize("shape,plan,spacing", [
    ((81, 97, 3), PreprocessPlan(size=(64, 64)), (1.5625, 1.5625, 10.0)),   # cropped
    ((81, 41, 2), PreprocessPlan(size=(64, 64)), (1.3, 1.7, 10.0)),         # crop x, pad y
    ((90, 90, 3), PreprocessPlan(size=(48, 48)), (1.2, 1.2, 10.0)),         # resample + crop
    ((39, 47, 5), PreprocessPlan(divisor=8, z_divisor=8), (2.0, 1.1, 8.0)),
    ((37, 53, 3), PreprocessPlan(), (1.5625, 1.5625, 10.0)),
])
def test_restored_probabilities_sum_to_one(shape, plan, spacing):
    volume = np.random.default_rng(1).normal(300, 50, shape).astype(np.float32)
    prepared = prepare(volume, spacing, plan)
    logits = torch.randn(prepared.image.shape[0], NUM_CLASSES, *prepared.image.shape[-2:],
                         generator=torch.Generator().manual_seed(0)) * 3
    probs = torch.softmax(logits, dim=1)
    back = restore(probs, prepared)
    assert back.shape == (NUM_CLASSES, *shape)
    assert back.dtype == torch.float32
    assert (back >= -1e-6).all()
    torch.testing.assert_close(back.sum(0), torch.ones(shape), atol=1e-5, rtol=0)

    cropped = any(c > 0 for _, c in prepared.offsets)
    if cropped and prepared.resampled == shape[:2]:
        # same spacing: voxels outside the crop window are background, probability 1
        wx, wy = crop_window(prepared, 0), crop_window(prepared, 1)
        outside = np.ones(shape[:2], bool)
        outside[wx, wy] = False
        assert outside.any()
        assert torch.equal(back[0][torch.from_numpy(outside)], torch.ones(int(outside.sum()), shape[2]))
        assert not back[1:][:, torch.from_numpy(outside)].any()
    if cropped and prepared.resampled != shape[:2]:
        # resampled: the border rows/columns far outside the window are still pure background
        assert torch.allclose(back[0, 0], torch.ones(shape[1], shape[2]))
        assert torch.allclose(back[0, -1], torch.ones(shape[1], shape[2]))


def test_restore_accepts_float16_probabilities():
    shape = (40, 36, 3)
    plan = PreprocessPlan(size=(32, 32))
    prepared = prepare(np.random.default_rng(0).random(shape).astype(np.float32),
                       (1.5625, 1.5625, 10.0), plan)
    probs = torch.softmax(torch.randn(3, NUM_CLASSES, 32, 32), 1).half()
    back = restore(probs, prepared)
    assert back.dtype == torch.float32
    torch.testing.assert_close(back.sum(0), torch.ones(shape), atol=2e-3, rtol=0)


@pytest.mark.parametrize("z,min_depth,z_divisor", [(1, 8, 2), (3, 8, 2), (5, 7, 2), (2, 4, 1)])
def test_thin_stack_padded_to_min_depth_by_repeating_end_slices(z, min_depth, z_divisor):
    plan = PreprocessPlan(spacing_mm=None, divisor=8, z_divisor=z_divisor, min_depth=min_depth)
    volume = np.random.default_rng(z).normal(500, 100, (24, 24, z)).astype(np.float32)
    prepared = prepare(volume, (1.5, 1.5, 8.0), plan)
    depth = prepared.image.shape[0]
    assert depth >= min_depth and depth % z_divisor == 0
    assert prepared.z_before + z + prepared.z_pad == depth
    assert abs(prepared.z_before - prepared.z_pad) <= 1 and prepared.z_before > 0
    first, last = prepared.image[prepared.z_before], prepared.image[prepared.z_before + z - 1]
    for k in range(prepared.z_before):
        torch.testing.assert_close(prepared.image[k], first)
    for k in range(prepared.z_before + z, depth):
        torch.testing.assert_close(prepared.image[k], last)
    # restore keeps exactly the input's slices, in order
    marks = torch.arange(depth, dtype=torch.float32)[:, None, None, None].expand(
        depth, NUM_CLASSES, *prepared.image.shape[-2:])
    back = restore(marks, prepared)
    assert back.shape == (NUM_CLASSES, 24, 24, z)
    for k in range(z):
        assert float(back[0, 12, 12, k]) == prepared.z_before + k


def test_stack_as_deep_as_min_depth_is_not_padded_before():
    plan = PreprocessPlan(spacing_mm=None, divisor=8, z_divisor=2, min_depth=8)
    prepared = prepare(np.ones((16, 16, 9), np.float32), (1.5, 1.5, 8.0), plan)
    assert prepared.z_before == 0 and prepared.z_pad == 1


def test_prepare_rejects_non_3d():
    with pytest.raises(ValueError):
        prepare(np.zeros((8, 8)), (1.0, 1.0), PreprocessPlan())


# --------------------------------------------------------------------------- #
# PreprocessPlan serialisation
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("plan", [
    PreprocessPlan(),
    PreprocessPlan(divisor=8, z_divisor=8),
    PreprocessPlan(spacing_mm=(1.25, 1.4), size=(160, 176), clip_percentiles=(1.0, 99.0)),
    PreprocessPlan(spacing_mm=None, divisor=16),
    PreprocessPlan(divisor=8, z_divisor=2, min_depth=8),
])
def test_plan_json_round_trip(plan):
    text = json.dumps(plan.to_dict())
    back = PreprocessPlan.from_dict(json.loads(text))
    assert back == plan
    assert hash(back) == hash(plan)
    for key in ("spacing_mm", "size", "clip_percentiles"):
        value = getattr(back, key)
        assert value is None or isinstance(value, tuple)


def test_plan_from_dict_defaults_and_unknown_keys():
    assert PreprocessPlan.from_dict(None) == PreprocessPlan()
    assert PreprocessPlan.from_dict({}) == PreprocessPlan()
    plan = PreprocessPlan.from_dict({"divisor": 8, "z_divisor": 8, "future_option": True})
    assert plan == PreprocessPlan(divisor=8, z_divisor=8)
