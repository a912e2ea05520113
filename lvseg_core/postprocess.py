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
    """Keep the heart: the largest connected foreground blob, then in it the
    largest component of each structure (RV, Myo, LV).

    Taking the heart (all structures together) first means a false-positive
    blob elsewhere can never be kept instead of a small true structure, such
    as the LV cavity at end-systole.

    Args:
        labels: label map ``(x, y, z)``, uint8.

    Returns:
        Cleaned label map, same shape; removed voxels become background.
    """
    heart = largest_component(labels > 0)
    out = np.zeros_like(labels)
    for name in STRUCTURES:
        value = LABEL_OF[name]
        region = (labels == value) & heart
        if region.any():
            out[largest_component(region)] = value
    return out
