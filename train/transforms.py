"""Augmentation for cine MRI, built from MONAI dictionary transforms.

Samples are dicts of numpy arrays ``(C, X, Y)``: for 2D models C = 1 (one
slice); for V-Net C = z (a stack of slices treated as channels, so every
in-plane transform is the same on all slices and anatomy stays aligned).
``image`` holds intensities scaled to [0, 1] (see
:func:`lvseg_core.preprocess.percentile_scale`); intensity changes act there,
before the z-scoring that inference applies.
"""

from __future__ import annotations

import math

import numpy as np
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandRotate90d,
    RandSimulateLowResolutiond,
    SpatialPadd,
)

KEYS = ("image", "label")


def spatial_augment(crop: tuple[int, int]) -> Compose:
    """Pad, crop around the heart (2:1 foreground:anywhere), rotate, scale, flip.

    Arbitrary rotations, 90-degree turns and flips cover the orientations other
    scanners write; scaling by up to 25 % covers other pixel spacings.
    """
    return Compose([
        SpatialPadd(("image", "label", "fg"), spatial_size=crop),
        RandCropByPosNegLabeld(("image", "label", "fg"), label_key="fg", spatial_size=crop,
                               pos=2, neg=1, num_samples=1),
        RandAffined(KEYS, prob=0.7, rotate_range=(math.pi,), scale_range=(0.25, 0.25),
                    mode=("bilinear", "nearest"), padding_mode="zeros"),
        RandFlipd(KEYS, prob=0.5, spatial_axis=0),
        RandFlipd(KEYS, prob=0.5, spatial_axis=1),
        RandRotate90d(KEYS, prob=0.5, max_k=3),
    ])


def intensity_augment() -> Compose:
    """Scanner-like intensity changes: bias field, gamma, blur, low resolution, noise.

    Noise SD is drawn from [0, 8 %] of the [0, 1] range, gamma from [0.5, 2]:
    wide enough for low-field or surface-coil scans, which the narrower
    ranges of the first weights (gamma 0.6-1.7, SD up to 4 %) did not cover.
    """
    return Compose([
        RandBiasFieldd("image", prob=0.3, coeff_range=(0.0, 0.3)),
        RandAdjustContrastd("image", prob=0.4, gamma=(0.5, 2.0)),
        RandGaussianSmoothd("image", prob=0.15, sigma_x=(0.3, 1.0), sigma_y=(0.3, 1.0)),
        RandSimulateLowResolutiond("image", prob=0.15, zoom_range=(0.5, 1.0),
                                   upsample_mode="bilinear"),
        RandGaussianNoised("image", prob=0.3, std=0.08),
    ])


def centre_crop(crop: tuple[int, int]) -> Compose:
    """Deterministic pad + crop around the heart (used when augmentation is off)."""
    return Compose([
        SpatialPadd(("image", "label", "fg"), spatial_size=crop),
        RandCropByPosNegLabeld(("image", "label", "fg"), label_key="fg", spatial_size=crop,
                               pos=1, neg=0, num_samples=1),
    ])


class Augment:
    """Callable applied to one sample dict; returns ``(image, label)`` arrays.

    Args:
        crop: in-plane patch size ``(x, y)``.
        augment: False gives crops only (for the overfit check).
    """

    def __init__(self, crop: tuple[int, int], augment: bool = True) -> None:
        self.spatial = spatial_augment(crop) if augment else centre_crop(crop)
        self.intensity = intensity_augment() if augment else None

    def set_seed(self, seed: int) -> None:
        self.spatial.set_random_state(seed)
        if self.intensity is not None:
            self.intensity.set_random_state(seed + 1)

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fg = (label > 0).any(axis=0, keepdims=True).astype(np.uint8)
        sample = self.spatial({"image": image, "label": label, "fg": fg})
        if isinstance(sample, list):
            sample = sample[0]
        if self.intensity is not None:
            sample = self.intensity(sample)
        return np.asarray(sample["image"], np.float32), np.asarray(sample["label"])
