"""The data of a training run as a Lightning ``LightningDataModule``: one for ``fit``,
``lr-find``, ``search`` and ``initial-loss``.

Patients are split (never slices), the volumes preprocessed with the model's
plan and cached; training draws slices (2D models) or slice stacks (V-Net),
validation whole volumes.
"""

from __future__ import annotations

import dataclasses
import functools

import lightning as L
from torch.utils.data import DataLoader

from lvseg_core.hub import resolve_weights
from lvseg_core.models import check_architecture, read_config
from lvseg_core.models.base import default_plan
from lvseg_core.preprocess import PreprocessPlan
from lvseg_core.records import TrainConfig
from lvseg_core.registry import spatial_dims

from .data import (
    SliceDataset,
    StackDataset,
    VolumeDataset,
    collate_stacks,
    load_volumes,
    split_dataset,
)
from .transforms import AugmentOptions


class SegmentationDataModule(L.LightningDataModule):
    """Training and validation data of ``cfg``.

    ``plan`` (the preprocessing plan, :func:`model_plan`) is known at once; the
    volumes are read by :meth:`setup` (once, whichever stage asks first).
    """

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.plan = model_plan(cfg)
        self.train_set = self.val_set = None
        self.collate = None                     # V-Net stacks: trimmed to the deepest

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        cfg = self.cfg
        train_cases, val_cases = split_dataset(cfg.data, cfg.val_patients, cfg.val_fraction,
                                               cfg.seed)
        train_vols = load_volumes(train_cases, self.plan, cfg.cache_dir)
        val_vols = load_volumes(val_cases, self.plan, cfg.cache_dir)
        augment = cfg.augment and not cfg.overfit_batches
        options = AugmentOptions.from_dict(cfg.augmentation)
        if spatial_dims(cfg.model) == 3:
            self.train_set = StackDataset(train_vols, cfg.crop, cfg.depth, augment, cfg.seed,
                                          options, self.plan.z_divisor, self.plan.min_depth)
            self.collate = functools.partial(collate_stacks, z_divisor=self.plan.z_divisor)
        else:
            self.train_set = SliceDataset(train_vols, cfg.crop, augment, cfg.seed, options)
        self.val_set = VolumeDataset(val_vols, self.plan)

    def _workers(self) -> dict:
        return dict(num_workers=self.cfg.num_workers,
                    persistent_workers=self.cfg.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        cfg = self.cfg
        return DataLoader(self.train_set, batch_size=cfg.batch_size,
                          shuffle=not cfg.overfit_batches,
                          drop_last=len(self.train_set) > cfg.batch_size,
                          collate_fn=self.collate, **self._workers())

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(self.val_set, batch_size=1, **self._workers())


def model_plan(cfg: TrainConfig) -> PreprocessPlan:
    """The preprocessing plan: that of ``cfg.init_weights``, else the default one.

    A V-Net trained on fixed ``cfg.depth``-slice patches (no stack-depth
    augmentation) never saw a thinner stack: its plan asks inference to pad
    thinner ones to that depth (``min_depth``).
    """
    check_architecture(cfg.model)
    if cfg.init_weights:
        plan = PreprocessPlan.from_dict(start_config(cfg).get("preprocess"))
    else:
        plan = PreprocessPlan.from_dict(default_plan(cfg.model, cfg.arch_args))
    fixed_depth = spatial_dims(cfg.model) == 3 and not (cfg.augment and not cfg.overfit_batches)
    if fixed_depth and plan.min_depth < cfg.depth:
        plan = dataclasses.replace(plan, min_depth=int(cfg.depth))
    return plan


def start_config(cfg: TrainConfig) -> dict:
    """The ``config.json`` of ``cfg.init_weights`` ({} when training from scratch)."""
    if not cfg.init_weights:
        return {}
    return read_config(resolve_weights(cfg.model, cfg.init_weights, fallback=False).folder)
