"""Label maps and intensities as RGB pictures (numpy only; no plotting library).

Arrays are in voxel order: a slice is ``(x, y)``; the pictures returned are
``(y, x, 3)`` uint8 (rows are ``y``), ready for PIL, Matplotlib or
``st.image``. Label maps use the ACDC values (0 background, 1 RV, 2 Myo, 3 LV)
and the colours of :data:`lvseg_core.labels.COLOURS`.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from .labels import COLOURS, LABEL_OF, STRUCTURES

#: Colours of the error map: false positives and false negatives (RGB).
ERROR_COLOURS: dict[str, tuple[int, int, int]] = {
    "false positive": (255, 193, 7),    # amber: predicted, not in the truth
    "false negative": (233, 30, 197),   # magenta: in the truth, missed
}

# ---------------------------------------------------------------- intensities


def auto_window(volume: np.ndarray, low: float = 1.0, high: float = 99.0) -> tuple[float, float]:
    """A window/level covering the ``low``..``high`` intensity percentiles.

    Args:
        volume: intensities of any shape (a slice, a volume or a cine series).

    Returns:
        ``(window, level)``: width and centre of the displayed intensity range;
        the window is never 0.
    """
    values = np.asarray(volume, dtype=np.float32)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 1.0, 0.5
    lo, hi = np.percentile(values, [low, high])
    if not hi > lo:
        lo, hi = float(values.min()), float(values.max())
    if not hi > lo:
        hi = lo + 1.0
    return float(hi - lo), float((hi + lo) / 2)


def window_level(image: np.ndarray, window: float, level: float) -> np.ndarray:
    """Map intensities to uint8 grey values with a window (width) and level (centre).

    Args:
        image: intensities, any shape.
        window: width of the displayed intensity range (> 0).
        level: centre of the displayed range.

    Returns:
        uint8 array of the same shape: ``level - window/2`` and below is 0,
        ``level + window/2`` and above is 255.
    """
    window = max(float(window), 1e-6)
    lo = float(level) - window / 2
    scaled = (np.asarray(image, dtype=np.float32) - lo) / window
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=1.0, neginf=0.0)
    return (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def blend(rgb: np.ndarray, where: np.ndarray, colour: tuple[int, int, int],
           opacity: float) -> None:
    """Alpha-blend ``colour`` into ``rgb`` (float, ``(..., 3)``) where ``where`` is True."""
    if opacity <= 0 or not where.any():
        return
    rgb[where] = (1.0 - opacity) * rgb[where] + opacity * np.asarray(colour, np.float32)


def overlay_rgb(image: np.ndarray, mask: np.ndarray | None = None, *,
                window: float | None = None, level: float | None = None,
                opacity: float = 0.45, structures: Sequence[str] = STRUCTURES) -> np.ndarray:
    """The slice as an RGB picture with the label overlay, in display order.

    Args:
        image: intensities of one slice, shape ``(x, y)``.
        mask: labels of that slice, shape ``(x, y)``, or None.
        window, level: display range (default: :func:`auto_window` of the slice).
        opacity: overlay opacity in 0..1.
        structures: the structures drawn (others are left out).

    Returns:
        uint8 array ``(y, x, 3)`` (rows are ``y``: ready for PIL or ``st.image``).
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"expected a 2D (x, y) slice, got shape {image.shape}")
    if window is None or level is None:
        window, level = auto_window(image)
    grey = window_level(image, window, level).T.astype(np.float32)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if mask is not None:
        labels = np.asarray(mask).T
        if labels.shape != grey.shape:
            raise ValueError(f"mask shape {np.asarray(mask).shape} does not match "
                             f"image shape {image.shape}")
        for name in structures:
            blend(rgb, labels == LABEL_OF[name], COLOURS[name], float(opacity))
    return (rgb + 0.5).clip(0, 255).astype(np.uint8)


def error_masks(prediction: np.ndarray, truth: np.ndarray,
                structures: Sequence[str] = STRUCTURES) -> tuple[np.ndarray, np.ndarray]:
    """False-positive and false-negative voxels for the chosen structures.

    A voxel is a **false positive** when the prediction puts one of
    ``structures`` there and the truth says something else (background or
    another structure); a **false negative** when the truth has one of
    ``structures`` there, the prediction differs, and the voxel is not
    already a false positive (e.g. the structure was predicted as background).

    Args:
        prediction, truth: label maps of the same shape (any dimensionality).
        structures: structures considered.

    Returns:
        ``(false_positive, false_negative)`` boolean arrays, same shape, disjoint.
    """
    pred = np.asarray(prediction)
    gt = np.asarray(truth)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != truth shape {gt.shape}")
    values = [LABEL_OF[s] for s in structures]
    wrong = pred != gt
    fp = wrong & np.isin(pred, values)
    fn = wrong & np.isin(gt, values) & ~fp
    return fp, fn


def png_data_uri(rgb: np.ndarray) -> str:
    """A ``data:image/png;base64,...`` URI of a uint8 ``(rows, cols[, 3])`` picture."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
