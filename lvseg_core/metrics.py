"""Segmentation metrics: overlap (Dice, IoU, ...) and surface distances (HD95, ASSD).

Inputs are label maps (ACDC convention, see :mod:`lvseg_core.labels`) or binary
masks, as numpy arrays of shape ``(x, y, z)`` (or 2D ``(x, y)``). Distances are
in mm, using the voxel ``spacing`` (one value per array axis, in mm).

Surface distances follow MONAI (``monai.metrics.compute_hausdorff_distance``
with ``percentile=95`` and ``compute_average_surface_distance`` with
``symmetric=True``): a surface is the mask minus its erosion (cross-shaped
structuring element, outside the array counts as background); HD95 is the
*maximum of the two directed* 95th percentiles (linear interpolation); ASSD is
the mean of the *pooled* directed distances. Values match MONAI to float32
precision for non-empty masks.

Empty-case conventions (MONAI differs here; ours are chosen so that summaries
never see infinities):

===========================  ====  ====  =========  ======  ====  ====  ====
case                         dice  iou   precision  recall  f1    hd95  assd
===========================  ====  ====  =========  ======  ====  ====  ====
pred and gt both empty       1.0   1.0   1.0        1.0     1.0   0.0   0.0
gt empty, pred not empty     0.0   0.0   0.0        NaN     0.0   NaN   NaN
pred empty, gt not empty     0.0   0.0   NaN        0.0     0.0   NaN   NaN
===========================  ====  ====  =========  ======  ====  ====  ====

NaN means "undefined" (recall without any true structure, precision without any
prediction, a distance to a surface that does not exist). Every mean in this
module (per-case ``"mean"`` over structures, :func:`summarise` over cases)
ignores NaNs; :func:`count_valid` reports how many values each mean used.
``f1`` is computed as ``2 TP / (2 TP + FP + FN)`` and therefore always equals
``dice``; it is reported for readers who expect the name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from .errors import LVSegError
from .labels import LABEL_OF, NUM_CLASSES, STRUCTURES

#: Overlap metric names, in report order.
OVERLAP_METRICS: tuple[str, ...] = ("dice", "iou", "precision", "recall", "f1")

#: Surface-distance metric names (mm), in report order.
DISTANCE_METRICS: tuple[str, ...] = ("hd95_mm", "assd_mm")

#: All metric names returned by :func:`evaluate_segmentation`.
METRICS: tuple[str, ...] = OVERLAP_METRICS + DISTANCE_METRICS

#: Per-metric keys: the structures, then ``"mean"`` (NaN-ignoring, over structures).
KEYS: tuple[str, ...] = STRUCTURES + ("mean",)

NAN = float("nan")


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------

def _nanmean(values: Sequence[float]) -> float:
    """Mean of the non-NaN values as a Python float; NaN if there are none."""
    kept = [float(v) for v in values if not math.isnan(v)]
    return float(sum(kept) / len(kept)) if kept else NAN


def _spacing(spacing: float | Sequence[float], ndim: int) -> tuple[float, ...]:
    """Validate a voxel spacing (mm): one positive value, or one per axis."""
    values = np.atleast_1d(np.asarray(spacing, dtype=np.float64)).ravel()
    if values.size == 1:
        values = np.repeat(values, ndim)
    if values.size != ndim or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise LVSegError(
            f"spacing must be {ndim} positive values in mm (one per axis), got {spacing!r}"
        )
    return tuple(float(v) for v in values)


def _same_shape(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise LVSegError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")


def _label_map(array: np.ndarray, name: str) -> np.ndarray:
    """``array`` as an integer label map with values in ``0..NUM_CLASSES-1``."""
    arr = np.asarray(array)
    if arr.dtype.kind == "b":
        arr = arr.astype(np.uint8)
    elif arr.dtype.kind == "f":
        as_int = arr.astype(np.int64)
        if not np.array_equal(as_int, arr):
            raise LVSegError(f"{name} label map has non-integer values")
        arr = as_int
    elif arr.dtype.kind not in "iu":
        raise LVSegError(f"{name} label map has unsupported dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= NUM_CLASSES):
        raise LVSegError(
            f"{name} label map has values outside 0..{NUM_CLASSES - 1}: "
            f"min {arr.min()}, max {arr.max()}"
        )
    return arr


def _mask(array: np.ndarray, structure: str | int | None) -> np.ndarray:
    """Binary mask: ``array == label`` for a structure, else ``array != 0``."""
    arr = np.asarray(array)
    if structure is None:
        return arr.astype(bool, copy=False) if arr.dtype.kind == "b" else arr != 0
    if isinstance(structure, str):
        if structure not in STRUCTURES:
            raise LVSegError(f"unknown structure {structure!r}; expected one of {STRUCTURES}")
        return arr == LABEL_OF[structure]
    return arr == int(structure)


def _overlap_from_counts(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Overlap metrics from true/false positive and false negative voxel counts."""
    if tp + fp + fn == 0:  # both masks empty: perfect agreement
        return {name: 1.0 for name in OVERLAP_METRICS}
    dice_value = 2.0 * tp / (2 * tp + fp + fn)
    return {
        "dice": dice_value,
        "iou": tp / (tp + fp + fn),
        "precision": tp / (tp + fp) if tp + fp else NAN,
        "recall": tp / (tp + fn) if tp + fn else NAN,
        "f1": dice_value,
    }


def _binary_counts(pred_mask: np.ndarray, gt_mask: np.ndarray) -> tuple[int, int, int]:
    tp = int(np.count_nonzero(pred_mask & gt_mask))
    return tp, int(np.count_nonzero(pred_mask)) - tp, int(np.count_nonzero(gt_mask)) - tp


# ----------------------------------------------------------------------------
# overlap metrics
# ----------------------------------------------------------------------------

def overlap_metrics(pred: np.ndarray, gt: np.ndarray,
                    structure: str | int | None = None) -> dict[str, float]:
    """Dice, IoU, precision, recall and F1 of one structure.

    Args:
        pred, gt: label maps or binary masks of the same shape, ``(x, y, z)`` or 2D.
        structure: a name (``"LV"``) or label value (3) selecting ``array == label``;
            ``None`` treats the inputs as binary masks (non-zero = foreground).

    Returns:
        ``{"dice", "iou", "precision", "recall", "f1"}`` as floats in [0, 1] or NaN
        (see the module docstring for the empty cases).
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    _same_shape(pred, gt)
    return _overlap_from_counts(*_binary_counts(_mask(pred, structure), _mask(gt, structure)))


def dice(pred: np.ndarray, gt: np.ndarray, structure: str | int | None = None) -> float:
    """Dice coefficient ``2|P∩G| / (|P| + |G|)``; 1.0 if both are empty."""
    return overlap_metrics(pred, gt, structure)["dice"]


def iou(pred: np.ndarray, gt: np.ndarray, structure: str | int | None = None) -> float:
    """Intersection over union (Jaccard) ``|P∩G| / |P∪G|``; 1.0 if both are empty."""
    return overlap_metrics(pred, gt, structure)["iou"]


def precision(pred: np.ndarray, gt: np.ndarray, structure: str | int | None = None) -> float:
    """Precision ``|P∩G| / |P|``; NaN if only the prediction is empty."""
    return overlap_metrics(pred, gt, structure)["precision"]


def recall(pred: np.ndarray, gt: np.ndarray, structure: str | int | None = None) -> float:
    """Recall (sensitivity) ``|P∩G| / |G|``; NaN if only the ground truth is empty."""
    return overlap_metrics(pred, gt, structure)["recall"]


def f1(pred: np.ndarray, gt: np.ndarray, structure: str | int | None = None) -> float:
    """F1 score ``2TP / (2TP + FP + FN)``; identical to :func:`dice` for masks."""
    return overlap_metrics(pred, gt, structure)["f1"]


# ----------------------------------------------------------------------------
# surface distances
# ----------------------------------------------------------------------------

def _crop_box(mask_a: np.ndarray, mask_b: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of ``mask_a | mask_b`` plus a one-voxel margin; None if empty."""
    union = mask_a | mask_b
    box = []
    for axis in range(union.ndim):
        others = tuple(a for a in range(union.ndim) if a != axis)
        hits = np.flatnonzero(union.any(axis=others))
        if hits.size == 0:
            return None
        box.append(slice(max(int(hits[0]) - 1, 0), int(hits[-1]) + 2))
    return tuple(box)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels: the mask minus its erosion (outside counts as background)."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def surface_distances(pred_mask: np.ndarray, gt_mask: np.ndarray,
                      spacing: float | Sequence[float]) -> tuple[np.ndarray, np.ndarray] | None:
    """Directed surface distances (mm) between two binary masks.

    Args:
        pred_mask, gt_mask: boolean (or 0/1) arrays, same shape, ``(x, y, z)`` or 2D.
        spacing: voxel size in mm, one value per axis (or one isotropic value).

    Returns:
        ``(pred_to_gt, gt_to_pred)``: for each surface voxel of one mask, the
        Euclidean distance (mm) to the nearest surface voxel of the other;
        ``None`` if either mask is empty.
    """
    pred_mask = np.asarray(pred_mask).astype(bool, copy=False)
    gt_mask = np.asarray(gt_mask).astype(bool, copy=False)
    _same_shape(pred_mask, gt_mask)
    sampling = _spacing(spacing, pred_mask.ndim)
    box = _crop_box(pred_mask, gt_mask)
    if box is None:
        return None
    pred_c, gt_c = pred_mask[box], gt_mask[box]
    if not pred_c.any() or not gt_c.any():
        return None
    pred_edge, gt_edge = _surface(pred_c), _surface(gt_c)
    # All surface voxels lie inside the box, so distances computed in it are exact.
    to_gt = ndimage.distance_transform_edt(~gt_edge, sampling=sampling)
    to_pred = ndimage.distance_transform_edt(~pred_edge, sampling=sampling)
    return to_gt[pred_edge], to_pred[gt_edge]


def _distance_summary(distances: tuple[np.ndarray, np.ndarray] | None,
                      both_empty: bool) -> dict[str, float]:
    if distances is None:
        value = 0.0 if both_empty else NAN
        return {"hd95_mm": value, "assd_mm": value}
    pred_to_gt, gt_to_pred = distances
    hd95 = max(float(np.percentile(pred_to_gt, 95)), float(np.percentile(gt_to_pred, 95)))
    assd = float((pred_to_gt.sum() + gt_to_pred.sum()) / (pred_to_gt.size + gt_to_pred.size))
    return {"hd95_mm": hd95, "assd_mm": assd}


def surface_metrics(pred_mask: np.ndarray, gt_mask: np.ndarray,
                    spacing: float | Sequence[float]) -> dict[str, float]:
    """HD95 and ASSD (mm) of two binary masks, sharing one distance computation.

    Returns ``{"hd95_mm", "assd_mm"}``: 0.0 if both masks are empty, NaN if
    exactly one is.
    """
    pred_mask = np.asarray(pred_mask).astype(bool, copy=False)
    gt_mask = np.asarray(gt_mask).astype(bool, copy=False)
    distances = surface_distances(pred_mask, gt_mask, spacing)
    both_empty = distances is None and not pred_mask.any() and not gt_mask.any()
    return _distance_summary(distances, both_empty)


def hausdorff95(pred_mask: np.ndarray, gt_mask: np.ndarray,
                spacing: float | Sequence[float]) -> float:
    """95th-percentile symmetric Hausdorff distance (mm), as MONAI computes it.

    The larger of the two directed 95th percentiles of the surface distances.
    ``pred_mask``, ``gt_mask``: binary ``(x, y, z)`` (or 2D) arrays; ``spacing``
    in mm per axis. 0.0 if both masks are empty, NaN if exactly one is.
    """
    return surface_metrics(pred_mask, gt_mask, spacing)["hd95_mm"]


def assd(pred_mask: np.ndarray, gt_mask: np.ndarray,
         spacing: float | Sequence[float]) -> float:
    """Average symmetric surface distance (mm), as MONAI computes it.

    The mean of all surface distances of both directions pooled together.
    ``pred_mask``, ``gt_mask``: binary ``(x, y, z)`` (or 2D) arrays; ``spacing``
    in mm per axis. 0.0 if both masks are empty, NaN if exactly one is.
    """
    return surface_metrics(pred_mask, gt_mask, spacing)["assd_mm"]


# ----------------------------------------------------------------------------
# whole-case evaluation and summaries
# ----------------------------------------------------------------------------

def evaluate_segmentation(pred: np.ndarray, gt: np.ndarray,
                          spacing: float | Sequence[float]) -> dict[str, dict[str, float]]:
    """All metrics of one case, per structure.

    Args:
        pred, gt: integer label maps (0 background, 1 RV, 2 Myo, 3 LV), same
            shape, ``(x, y, z)`` or 2D.
        spacing: voxel size in mm, one value per axis.

    Returns:
        ``{metric: {"RV", "Myo", "LV", "mean"}}`` for the metrics ``dice``,
        ``iou``, ``precision``, ``recall``, ``f1``, ``hd95_mm``, ``assd_mm``;
        Python floats (NaN where undefined), ``"mean"`` ignoring NaNs.
    """
    pred = _label_map(pred, "prediction")
    gt = _label_map(gt, "ground truth")
    _same_shape(pred, gt)
    sampling = _spacing(spacing, pred.ndim)

    # One pass for all overlap counts: confusion[g, p] = voxels with gt g, pred p.
    confusion = np.bincount(
        (gt.ravel().astype(np.intp) * NUM_CLASSES + pred.ravel()),
        minlength=NUM_CLASSES * NUM_CLASSES,
    ).reshape(NUM_CLASSES, NUM_CLASSES)
    # Per-label bounding boxes (one pass each) so masks are only built in a crop.
    pred_boxes = ndimage.find_objects(pred, max_label=NUM_CLASSES - 1)
    gt_boxes = ndimage.find_objects(gt, max_label=NUM_CLASSES - 1)

    result: dict[str, dict[str, float]] = {name: {} for name in METRICS}
    for structure in STRUCTURES:
        label = LABEL_OF[structure]
        tp = int(confusion[label, label])
        fp = int(confusion[:, label].sum()) - tp
        fn = int(confusion[label, :].sum()) - tp
        values = _overlap_from_counts(tp, fp, fn)

        boxes = [b for b in (pred_boxes[label - 1], gt_boxes[label - 1]) if b is not None]
        if len(boxes) == 2:
            box = tuple(slice(max(min(a.start, b.start) - 1, 0), max(a.stop, b.stop) + 1)
                        for a, b in zip(*boxes))
            distances = surface_distances(pred[box] == label, gt[box] == label, sampling)
        else:
            distances = None
        values.update(_distance_summary(distances, both_empty=not boxes))

        for name in METRICS:
            result[name][structure] = float(values[name])
    for name in METRICS:
        result[name]["mean"] = _nanmean([result[name][s] for s in STRUCTURES])
    return result


def _check_records(records: Sequence[dict]) -> None:
    if not records:
        raise LVSegError("no evaluated cases to summarise")


def summarise(records: Sequence[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """NaN-ignoring mean over cases of :func:`evaluate_segmentation` results.

    Returns the same layout, ``{metric: {"RV", "Myo", "LV", "mean"}}``; each
    value (``"mean"`` included) is averaged over the cases where it is not NaN,
    and is NaN if it is NaN in every case. Raises :class:`LVSegError` if
    ``records`` is empty. See :func:`count_valid` for the counts used.
    """
    _check_records(records)
    metrics = [m for m in records[0] if isinstance(records[0][m], dict)]
    return {m: {k: _nanmean([float(r[m][k]) for r in records]) for k in records[0][m]}
            for m in metrics}


def count_valid(records: Sequence[dict[str, dict[str, float]]]) -> dict[str, dict[str, int]]:
    """Number of cases with a non-NaN value, per metric and key (layout of :func:`summarise`)."""
    _check_records(records)
    metrics = [m for m in records[0] if isinstance(records[0][m], dict)]
    return {m: {k: sum(not math.isnan(float(r[m][k])) for r in records) for k in records[0][m]}
            for m in metrics}


class SegmentationMetrics:
    """Accumulates :func:`evaluate_segmentation` over cases (MONAI-style wrapper).

    >>> metric = SegmentationMetrics(spacing=(1.5625, 1.5625, 10.0))
    >>> case = metric(pred, gt)        # per-case dict; also stored
    >>> summary = metric.aggregate()   # summarise(metric.records)
    """

    def __init__(self, spacing: float | Sequence[float] | None = None) -> None:
        """``spacing``: default voxel size in mm, used when a call gives none."""
        self.spacing = spacing
        self.records: list[dict[str, dict[str, float]]] = []

    def __call__(self, pred: np.ndarray, gt: np.ndarray,
                 spacing: float | Sequence[float] | None = None) -> dict[str, dict[str, float]]:
        """Evaluate one case (label maps ``(x, y, z)``), store and return its metrics."""
        spacing = self.spacing if spacing is None else spacing
        if spacing is None:
            raise LVSegError("voxel spacing (mm) is required for surface distances")
        record = evaluate_segmentation(pred, gt, spacing)
        self.records.append(record)
        return record

    def __len__(self) -> int:
        return len(self.records)

    def aggregate(self) -> dict[str, dict[str, float]]:
        """NaN-ignoring means over the stored cases (see :func:`summarise`)."""
        return summarise(self.records)

    def counts(self) -> dict[str, dict[str, int]]:
        """Non-NaN case counts behind :meth:`aggregate` (see :func:`count_valid`)."""
        return count_valid(self.records)

    def reset(self) -> None:
        """Forget the stored cases."""
        self.records.clear()
