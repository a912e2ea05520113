"""The label map shared by every model, metric and figure (ACDC convention)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import ScanReadError

#: Label value -> structure name. 0 is background.
LABELS: dict[int, str] = {0: "background", 1: "RV", 2: "Myo", 3: "LV"}

#: Foreground structures in label order.
STRUCTURES: tuple[str, ...] = ("RV", "Myo", "LV")

#: Structure name -> label value.
LABEL_OF: dict[str, int] = {name: value for value, name in LABELS.items()}

#: Number of classes a model predicts, background included.
NUM_CLASSES: int = len(LABELS)

#: Display colours (RGB, 0-255) used by every overlay.
COLOURS: dict[str, tuple[int, int, int]] = {
    "RV": (66, 133, 244),
    "Myo": (52, 168, 83),
    "LV": (234, 67, 53),
}

#: Largest label value.
MAX_LABEL: int = max(LABELS)


def check_labels(array: np.ndarray, name: str) -> np.ndarray:
    """``array`` as uint8 ACDC labels (same shape), or :class:`ScanReadError` naming
    ``name`` unless it is numeric and every value is a finite integer 0..3."""
    data = np.asarray(array)
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise ScanReadError(f"{name}: unsupported label data type {data.dtype}")
    if np.issubdtype(data.dtype, np.floating):
        if not np.isfinite(data).all():
            raise ScanReadError(f"{name}: label map contains NaN or infinity")
        if not np.array_equal(data, np.round(data)):
            raise ScanReadError(f"{name}: label map has non-integer values; "
                                f"label values must be integers 0..{MAX_LABEL}")
    values = np.unique(data)
    wrong = values[(values < 0) | (values > MAX_LABEL)]
    if wrong.size:
        shown = ", ".join(f"{v:g}" for v in wrong[:5].tolist())
        names = ", ".join(f"{k} {v}" for k, v in LABELS.items())
        raise ScanReadError(f"{name}: label values must be 0..{MAX_LABEL} "
                            f"({names}); found {shown}")
    return data.astype(np.uint8)


def base_at_low_z(mask: np.ndarray, slices: Sequence[int] | None = None) -> bool:
    """Whether the base of the heart lies at the low-``z`` end of ``slices``.

    Args:
        mask: labels ``(x, y, z)``.
        slices: the short-axis slices to compare, base and apex among them
            (default: every slice holding a label).

    Returns:
        True when the LV (cavity + myocardium, the epicardial area) of the first
        third of ``slices`` is at least that of the last third, as the LV tapers
        from base to apex; True when there are no slices.
    """
    mask = np.asarray(mask)
    if slices is None:
        slices = [z for z in range(mask.shape[2]) if mask[:, :, z].any()]
    lv = np.isin(mask, (LABEL_OF["Myo"], LABEL_OF["LV"]))
    return base_first([np.count_nonzero(lv[:, :, z]) for z in slices])


def base_first(lv_areas: Sequence[float]) -> bool:
    """Whether the first of a stack's slices is at the base, from each slice's LV
    (cavity + myocardium) area in stack order (any unit): the first third's mean
    is at least the last third's; True for an empty stack."""
    area = np.asarray(lv_areas, dtype=np.float64)
    if not area.size:
        return True
    third = max(1, area.size // 3)
    return float(area[:third].mean()) >= float(area[-third:].mean())
