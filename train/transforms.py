"""Augmentation for cine MRI from other scanners, built from MONAI dictionary transforms.

Samples are dicts of numpy arrays ``(C, X, Y)``: for 2D models C = 1 (one
slice); for V-Net C = z (a stack of slices treated as channels, so every
in-plane transform is the same on all slices and anatomy stays aligned).
``image`` holds intensities scaled to [0, 1] (see
:func:`lvseg_core.preprocess.percentile_scale`); intensity changes act there,
before the z-scoring with the volume's statistics, exactly what inference
does to a raw scan (percentile clipping, then z-scoring).

The recipe follows nnU-Net's defaults (Isensee et al., Nat. Methods 2021):
isotropic scaling 0.7-1.4, rotation over the full circle, elastic
deformation, mirroring, Gaussian noise and blur, multiplicative brightness,
contrast, simulated low resolution, gamma 0.7-1.5 on the image and on its
inverse; plus a bias field (surface coils). V-Net stacks also vary their
depth and slice spacing (:class:`StackSampler`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from monai.transforms import (
    Compose,
    Rand2DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandScaleIntensityFixedMeand,
    RandSimulateLowResolutiond,
    RandZoomd,
    Resize,
    ResizeWithPadOrCropd,
    SpatialPadd,
)

from lvseg_core.errors import LVSegError

KEYS = ("image", "label")


@dataclass(frozen=True)
class AugmentOptions:
    """Ranges and probabilities of the augmentation (kept in a run's config.json).

    Spatial: ``scale`` (isotropic zoom factors), ``rotate_deg`` (+-, in-plane),
    ``elastic_magnitude`` (control-point offsets in voxels, every
    ``elastic_spacing`` voxels), ``context`` (the heart-centred crop is this
    many times the patch, so rotated and zoomed-out patches keep real
    surroundings). Intensity acts on [0, 1] images: ``noise_std`` (max SD),
    ``blur_sigma`` (voxels), ``brightness`` / ``contrast`` (+- factor),
    ``low_res_zoom``, ``gamma`` (also on the inverted image), ``bias_coeff``.
    Stacks (V-Net): ``stack_depths`` (slices, inclusive), with probability
    ``thin_stack_prob`` drawn from ``thin_stack_depths`` instead (one- to
    three-slice scans are rare under a uniform draw from 1-20), and
    ``slice_spacing_mm`` (the stack is resampled along z to a spacing drawn here).
    """

    scale: tuple[float, float] = (0.7, 1.4)
    scale_prob: float = 0.3
    rotate_deg: float = 180.0
    rotate_prob: float = 0.5
    elastic_prob: float = 0.2
    elastic_spacing: int = 16
    elastic_magnitude: tuple[float, float] = (0.0, 2.0)
    flip_prob: float = 0.5
    context: float = 1.5
    noise_prob: float = 0.15
    noise_std: float = 0.08
    blur_prob: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    brightness_prob: float = 0.15
    brightness: float = 0.25
    contrast_prob: float = 0.15
    contrast: float = 0.25
    low_res_prob: float = 0.25
    low_res_zoom: tuple[float, float] = (0.5, 1.0)
    gamma_prob: float = 0.3
    inverted_gamma_prob: float = 0.1
    gamma: tuple[float, float] = (0.7, 1.5)
    bias_prob: float = 0.3
    bias_coeff: float = 0.3
    stack_depths: tuple[int, int] = (1, 20)
    thin_stack_prob: float = 0.0
    thin_stack_depths: tuple[int, int] = (1, 3)
    slice_spacing_mm: tuple[float, float] = (5.0, 10.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "AugmentOptions":
        """Inverse of :meth:`to_dict`; missing keys take the defaults, unknown ones are ignored."""
        data = dict(data or {})
        values = {}
        for f in fields(cls):
            if f.name in data:
                value = data[f.name]
                values[f.name] = tuple(value) if isinstance(value, list) else value
        return cls(**values)

    @classmethod
    def check_overrides(cls, data: Any) -> dict[str, Any]:
        """``data`` (e.g. parsed from ``--augmentation``) if it maps known option
        names to numbers (pairs for ranges), else a one-line :class:`LVSegError`."""
        if not isinstance(data, dict):
            raise LVSegError("augmentation options must be a JSON object, e.g. "
                             "'{\"thin_stack_prob\": 0.3}'")
        defaults = cls().to_dict()
        unknown = sorted(set(data) - set(defaults))
        if unknown:
            raise LVSegError(f"unknown augmentation option(s) {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(defaults))})")
        for name, value in data.items():
            default = defaults[name]
            pair = isinstance(default, tuple)
            kind = int if isinstance(default[0] if pair else default, int) else (int, float)
            items = value if pair and isinstance(value, list) and len(value) == 2 else [value]
            if (pair and items is not value) or not all(
                    isinstance(v, kind) and not isinstance(v, bool) and math.isfinite(v)
                    and v >= 0 for v in items) or (name.endswith("_prob") and value > 1):
                number = "whole number" if kind is int else "number"
                want = (f"a pair of {number}s >= 0" if pair else "a probability in [0, 1]"
                        if name.endswith("_prob") else f"a {number} >= 0")
                raise LVSegError(f"augmentation option {name} must be {want}, got {value!r}")
        return data


def spatial_augment(crop: tuple[int, int], options: AugmentOptions | None = None) -> Compose:
    """Crop around the heart (2:1 foreground:anywhere) with context, zoom, rotate,
    deform, cut to ``crop`` and mirror.

    Zoom is isotropic (one factor for x and y, as nnU-Net); the output is
    always ``crop``.
    """
    o = options or AugmentOptions()
    big = tuple(int(math.ceil(c * o.context)) for c in crop)
    every = ("image", "label", "fg")
    return Compose([
        SpatialPadd(every, spatial_size=big),
        RandCropByPosNegLabeld(every, label_key="fg", spatial_size=big, pos=2, neg=1,
                               num_samples=1),
        RandZoomd(KEYS, prob=o.scale_prob, min_zoom=o.scale[0], max_zoom=o.scale[1],
                  mode=("bilinear", "nearest"), padding_mode="constant", keep_size=True),
        RandAffined(KEYS, prob=o.rotate_prob, rotate_range=(math.radians(o.rotate_deg),),
                    spatial_size=crop, mode=("bilinear", "nearest"), padding_mode="zeros"),
        ResizeWithPadOrCropd(KEYS, spatial_size=crop),
        Rand2DElasticd(KEYS, prob=o.elastic_prob, spacing=(o.elastic_spacing,) * 2,
                       magnitude_range=o.elastic_magnitude, mode=("bilinear", "nearest"),
                       padding_mode="zeros"),
        RandFlipd(KEYS, prob=o.flip_prob, spatial_axis=0),
        RandFlipd(KEYS, prob=o.flip_prob, spatial_axis=1),
    ])


def intensity_augment(options: AugmentOptions | None = None) -> Compose:
    """Scanner-like intensity changes on [0, 1] images, in nnU-Net's order.

    Bias field, noise, blur, brightness, contrast, low resolution, gamma on
    the inverted image, gamma (the gammas keep mean and SD, as nnU-Net).
    """
    o = options or AugmentOptions()
    return Compose([
        RandBiasFieldd("image", prob=o.bias_prob, coeff_range=(0.0, o.bias_coeff)),
        RandGaussianNoised("image", prob=o.noise_prob, std=o.noise_std),
        RandGaussianSmoothd("image", prob=o.blur_prob, sigma_x=o.blur_sigma,
                            sigma_y=o.blur_sigma),
        RandScaleIntensityd("image", prob=o.brightness_prob, factors=o.brightness),
        RandScaleIntensityFixedMeand("image", prob=o.contrast_prob, factors=o.contrast,
                                     preserve_range=True),
        RandSimulateLowResolutiond("image", prob=o.low_res_prob, zoom_range=o.low_res_zoom,
                                   upsample_mode="bilinear"),
        RandAdjustContrastd("image", prob=o.inverted_gamma_prob, gamma=o.gamma,
                            invert_image=True, retain_stats=True),
        RandAdjustContrastd("image", prob=o.gamma_prob, gamma=o.gamma, retain_stats=True),
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
        options: ranges and probabilities (default: :class:`AugmentOptions`).
    """

    def __init__(self, crop: tuple[int, int], augment: bool = True,
                 options: AugmentOptions | None = None) -> None:
        self.spatial = spatial_augment(crop, options) if augment else centre_crop(crop)
        self.intensity = intensity_augment(options) if augment else None

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
        return (np.asarray(sample["image"], np.float32),
                np.asarray(sample["label"]).astype(np.uint8))


class StackSampler:
    """Draws a V-Net stack of varying depth and slice spacing from one volume.

    The volume ``(z, X, Y)`` is resampled along z (MONAI ``Resize``: linear
    for the image, nearest for labels) from its slice spacing to one drawn
    from ``slice_spacing_mm``, then ``depth`` consecutive slices are taken,
    ``depth`` drawn from ``stack_depths`` (at most the slices there are), so
    that one- and three-slice scans are seen in training.

    Args:
        options: the ranges (default: :class:`AugmentOptions`).
        seed: random state.
    """

    def __init__(self, options: AugmentOptions | None = None, seed: int = 0) -> None:
        self.options = options or AugmentOptions()
        self.rng = np.random.default_rng(seed)

    def __call__(self, image: np.ndarray, label: np.ndarray, z_mm: float
                 ) -> tuple[np.ndarray, np.ndarray]:
        """``image`` float and ``label`` uint8 ``(z, X, Y)`` -> the same for the stack ``(d, X, Y)``."""
        o = self.options
        z = image.shape[0]
        target = float(self.rng.uniform(*o.slice_spacing_mm))
        n = max(1, int(round(z * z_mm / target)))
        if n != z:
            size = (n, -1, -1)
            image = np.asarray(Resize(size, mode="trilinear")(image[None]))[0]
            label = np.asarray(Resize(size, mode="nearest-exact")(label[None]))[0]
        # The extra draw only when thin stacks are boosted keeps older runs' streams.
        thin = o.thin_stack_prob > 0 and self.rng.random() < o.thin_stack_prob
        low, high = o.thin_stack_depths if thin else o.stack_depths
        depth = min(n, int(self.rng.integers(low, high + 1)))
        start = int(self.rng.integers(0, n - depth + 1))
        return (np.ascontiguousarray(image[start:start + depth], np.float32),
                np.ascontiguousarray(label[start:start + depth]).astype(np.uint8))
