"""Post-processing of label maps: keep the largest connected component."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .labels import STRUCTURES, LABEL_OF


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 3D connected component (26-connectivity) of a binary mask."""
    labelled, count = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, bool))
    if count <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    return labelled == int(sizes.argmax())


def keep_largest_components(labels: np.ndarray) -> np.ndarray:
    """For each structure (RV, Myo, LV) keep only its largest component.

    Args:
        labels: label map ``(x, y, z)``, uint8.

    Returns:
        Cleaned label map, same shape; removed voxels become background.
    """
    out = np.zeros_like(labels)
    for name in STRUCTURES:
        value = LABEL_OF[name]
        region = labels == value
        if region.any():
            out[largest_component(region)] = value
    return out
