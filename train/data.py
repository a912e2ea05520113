"""Training data: ACDC-layout volumes, preprocessed once and cached.

Volumes are resampled in-plane to the model's plan spacing and their
intensities scaled to [0, 1] (:func:`lvseg_core.preprocess.percentile_scale`);
the result is kept in memory and, optionally, on disk so that epochs are not
spent decoding NIfTI. The split is by patient, never by slice.
"""

from __future__ import annotations

import hashlib
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from lvseg_core.data import VALIDATION_PATIENTS, Case, find_cases, split_cases
from lvseg_core.errors import LVSegError
from lvseg_core.io import load_label, load_nifti
from lvseg_core.preprocess import (
    PreprocessPlan,
    fit_to_grid,
    percentile_scale,
    resampled_size,
    resize_slices,
    thin_stack_index,
)

from .transforms import Augment, AugmentOptions, StackSampler

#: Bumped when :class:`Volume` changes, so that older disk caches are not read.
CACHE_VERSION = 2


@dataclass
class Volume:
    """One preprocessed frame.

    Attributes:
        name: case name, e.g. ``patient002_frame01``.
        image: intensities scaled to [0, 1], float32 ``(z, X, Y)`` on the plan grid.
        label: uint8 ``(z, X, Y)``.
        mean, std: statistics of ``image`` used for z-scoring.
        z_mm: slice spacing (mm).
    """

    name: str
    image: np.ndarray
    label: np.ndarray
    mean: float
    std: float
    z_mm: float = 10.0

    def zscore(self, image: np.ndarray) -> np.ndarray:
        """Z-score an (augmented) copy of :attr:`image` with the volume's statistics."""
        return (image - self.mean) / max(self.std, 1e-6)


def preprocess_case(case: Case, plan: PreprocessPlan) -> Volume:
    """Read and preprocess one labelled ACDC frame."""
    scan = load_nifti(case.image).require_3d()
    label = load_label(case.label, scan)
    scaled, mean, std = percentile_scale(scan.array, plan.clip_percentiles)
    size = resampled_size(scan.shape3d[:2], scan.spacing[:2], plan.spacing_mm)
    image = resize_slices(torch.from_numpy(scaled.transpose(2, 0, 1))[:, None], size)
    labels = resize_slices(torch.from_numpy(label.transpose(2, 0, 1))[:, None].float(), size,
                           mode="nearest")
    return Volume(case.name, image[:, 0].numpy(), labels[:, 0].numpy().astype(np.uint8),
                  mean, std, float(scan.spacing[2]))


def load_volumes(cases: list[Case], plan: PreprocessPlan, cache_dir: str | Path | None = None,
                 progress: bool = True) -> list[Volume]:
    """Preprocess ``cases`` (reading a disk cache when one matches)."""
    cache = None
    if cache_dir:
        # min_depth only pads thin stacks at inference: the cached volumes do not depend on it.
        grid = {k: v for k, v in plan.to_dict().items() if k != "min_depth"}
        key = hashlib.sha1(repr((CACHE_VERSION, grid, [str(c.image) for c in cases])).encode())
        cache = Path(cache_dir) / f"volumes-{key.hexdigest()[:16]}.pt"
        if cache.is_file():
            return [Volume(**v) for v in torch.load(cache, weights_only=False)]
    volumes = [preprocess_case(c, plan) for c in tqdm(cases, desc="preprocess", unit="vol",
                                                       disable=not progress, leave=False)]
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        torch.save([v.__dict__ for v in volumes], tmp)
        tmp.replace(cache)
    return volumes


def split_dataset(data: str | Path, val_patients: list[str] | None = None,
                  val_fraction: float = 0.125, seed: int = 0) -> tuple[list[Case], list[Case]]:
    """Labelled cases of ``data`` split by patient.

    Uses ``val_patients`` if given, else the standard validation patients when
    present, else a seeded random ``val_fraction`` of the patients. A patient
    folder that is a link leading outside ``data`` is skipped with a warning
    on stderr.
    """
    skipped: list[str] = []
    cases = find_cases(data, require_labels=True, notes=skipped)
    for note in skipped:  # linked patient folders leading outside ``data``
        print(f"warning: {note}", file=sys.stderr)
    patients = sorted({c.patient for c in cases})
    if val_patients is None:
        val_patients = [p for p in VALIDATION_PATIENTS if p in patients]
    if not val_patients:
        if len(patients) < 2:
            raise LVSegError(
                f"{data}: at least 2 labelled patients are needed (train + validation)")
        rng = random.Random(seed)
        val_patients = rng.sample(patients, max(1, round(len(patients) * val_fraction)))
    train, val = split_cases(cases, tuple(val_patients))
    if not train or not val:
        raise LVSegError(f"{data}: the split left no training or no validation patients")
    return train, val


class SliceDataset(Dataset):
    """Augmented 2D training slices: ``image (1, X, Y)`` float, ``label (1, X, Y)`` long."""

    def __init__(self, volumes: list[Volume], crop: tuple[int, int], augment: bool = True,
                 seed: int = 0, options: AugmentOptions | None = None) -> None:
        self.volumes = volumes
        self.index = [(v, z) for v, vol in enumerate(volumes) for z in range(vol.image.shape[0])]
        self.augment = Augment(crop, augment, options)
        self.augment.set_seed(seed)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        v, z = self.index[i]
        vol = self.volumes[v]
        image, label = self.augment(vol.image[z][None], vol.label[z][None])
        return torch.from_numpy(vol.zscore(image)).float(), torch.from_numpy(label).long()


class StackDataset(Dataset):
    """Augmented V-Net patches: ``image (1, D, X, Y)``, ``label (1, D, X, Y)``, ``depth``.

    Without augmentation, ``depth`` consecutive slices are taken at random
    (zero-padded when a volume has fewer). With it, :class:`StackSampler`
    draws a stack of 1-20 slices at a 5-10 mm spacing (the options' ranges),
    padded to D = the largest depth rounded up to ``z_divisor`` as inference
    pads (:func:`pad_stack`): a stack thinner than ``min_depth`` repeats its
    end slices, the rest is background at the volume's minimum.
    :func:`collate_stacks` trims a batch to its deepest stack. The same
    in-plane augmentation is applied to every slice.
    """

    def __init__(self, volumes: list[Volume], crop: tuple[int, int], depth: int = 8,
                 augment: bool = True, seed: int = 0, options: AugmentOptions | None = None,
                 z_divisor: int = 1, min_depth: int = 1) -> None:
        self.volumes = volumes
        self.min_depth = max(1, int(min_depth))
        options = options or AugmentOptions()
        self.sampler = StackSampler(options, seed) if augment else None
        most = options.stack_depths[1] if augment else depth
        self.z_divisor = max(1, int(z_divisor))
        self.depth = int(math.ceil(most / self.z_divisor) * self.z_divisor)
        self.augment = Augment(crop, augment, options)
        self.augment.set_seed(seed)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.volumes)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        vol = self.volumes[i]
        if self.sampler is not None:
            image, label = self.sampler(vol.image, vol.label, vol.z_mm)
        else:
            z = vol.image.shape[0]
            start = int(self.rng.integers(0, z - self.depth + 1)) if z > self.depth else 0
            image = vol.image[start:start + self.depth]
            label = vol.label[start:start + self.depth]
        n = image.shape[0]
        image, label = self.augment(image, label)
        stack, labels = pad_stack(image, label, self.depth, self.min_depth)
        return (torch.from_numpy(vol.zscore(stack))[None].float(),
                torch.from_numpy(labels)[None].long(), max(n, self.min_depth))


def pad_stack(image: np.ndarray, label: np.ndarray, depth: int, min_depth: int = 0
              ) -> tuple[np.ndarray, np.ndarray]:
    """Pad a stack ``(n, X, Y)`` to ``(depth, X, Y)``.

    Up to ``min_depth`` the first and last slices are repeated (image and
    label), as inference pads a thin stack (:func:`thin_stack_index`);
    beyond it the padding is background at the image's minimum.
    """
    n = image.shape[0]
    if n < min_depth:
        index, _ = thin_stack_index(n, min_depth)
        image, label, n = image[index], label[index], len(index)
    stack = np.full((depth, *image.shape[1:]), image.min() if image.size else 0, np.float32)
    labels = np.zeros((depth, *label.shape[1:]), np.uint8)
    stack[:n], labels[:n] = image, label
    return stack, labels


def collate_stacks(batch: list, z_divisor: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(image, label, depth)`` items and trim z to the deepest one (rounded up
    to ``z_divisor``): ``image (B, 1, D, X, Y)``, ``label (B, 1, D, X, Y)``."""
    images, labels, depths = zip(*batch)
    keep = int(math.ceil(max(depths) / z_divisor) * z_divisor)
    return torch.stack(images)[:, :, :keep], torch.stack(labels)[:, :, :keep]


class VolumeDataset(Dataset):
    """Whole validation volumes on the network grid, as inference sees them.

    Items: ``image (z', 1, X, Y)`` (z-scored, padded as the plan says) and
    ``label (z', X, Y)`` (padding is background).
    """

    def __init__(self, volumes: list[Volume], plan: PreprocessPlan) -> None:
        self.volumes = volumes
        self.plan = plan

    def __len__(self) -> int:
        return len(self.volumes)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        vol = self.volumes[i]
        z, x, y = vol.image.shape
        div, zdiv = self.plan.divisor, self.plan.z_divisor
        target = (int(np.ceil(x / div) * div), int(np.ceil(y / div) * div))
        offsets = [((target[0] - x) // 2, 0), ((target[1] - y) // 2, 0)]
        zt = int(np.ceil(z / zdiv) * zdiv)
        image = torch.from_numpy(vol.zscore(vol.image))[:, None]
        label = torch.from_numpy(vol.label)[:, None].float()
        fill = float(vol.zscore(np.zeros(1, np.float32))[0])
        image = fit_to_grid(image, offsets, target, fill)
        label = fit_to_grid(label, offsets, target, 0.0)[:, 0].long()
        if zt > z:
            image = torch.cat([image, image.new_full((zt - z, *image.shape[1:]), fill)])
            label = torch.cat([label, label.new_zeros((zt - z, *label.shape[1:]))])
        return image, label
