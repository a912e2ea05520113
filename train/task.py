"""The Lightning module: loss, optimiser, schedule and 3D validation Dice."""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import lightning as L
import numpy as np
import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss
from torch import nn

from lvseg_core.labels import LABEL_OF, STRUCTURES
from lvseg_core.metrics import dice
from lvseg_core.models import LVSegModel

#: Fraction of a one-cycle schedule spent warming up.
PCT_START = 0.1


def one_cycle_pct(total: int) -> float:
    """``PCT_START``, except where torch's OneCycleLR would divide by zero.

    OneCycleLR ends its warm-up at step ``pct * total - 1``; when that is 0
    (10 steps at 0.1) its first step fails, so warm up for 2 steps instead.
    """
    return PCT_START if PCT_START * total != 1 else 2 / total


class SegmentationTask(L.LightningModule):
    """Trains one :class:`~lvseg_core.models.LVSegModel` with Dice + cross-entropy.

    Args:
        architecture, arch_args, preprocess: define the model (see LVSegModel).
        lr: peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        schedule: ``onecycle``, ``cosine`` or ``constant``.
        deep_supervision: also score every decoder stage below full resolution
            (nnU-Net's deep supervision): a 1x1 convolution per stage maps its
            features to class logits, scored against the label downsampled by
            nearest neighbour, with weights halving per stage (normalised to
            sum to 1). The heads live in the task, not the model: exported
            weights and inference are unchanged. ``train_loss`` is then that
            weighted sum; validation scores the full-resolution output only.
    """

    def __init__(self, architecture: str = "unet", arch_args: dict | None = None,
                 preprocess: dict | None = None, lr: float = 1e-3,
                 weight_decay: float = 1e-4, schedule: str = "onecycle",
                 deep_supervision: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = LVSegModel(architecture, arch_args, preprocess=preprocess)
        self.lr = lr
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)
        self.ce = torch.nn.CrossEntropyLoss()
        self.aux_heads = nn.ModuleList(self._aux_heads() if deep_supervision else [])
        # nnU-Net's weights: 1, 1/2, 1/4 ... from the full resolution down, summing to 1.
        weights = [0.5**i for i in range(len(self.aux_heads) + 1)]
        self.deep_loss = DeepSupervisionLoss(
            self.loss, weights=[w / sum(weights) for w in weights]) if self.aux_heads else None

    def _aux_heads(self) -> list[nn.Module]:
        """One 1x1 convolution to class logits per decoder stage, sized by a dry
        run of the untrained model on a small input."""
        conv = nn.Conv3d if self.model.spatial_dims == 3 else nn.Conv2d
        plan = self.model.preprocess
        side = 2 * int(plan.get("divisor") or 32)
        shape = (side, side) if self.model.spatial_dims == 2 else (
            max(int(plan.get("min_depth") or 1), int(plan.get("z_divisor") or 1)), side, side)
        with torch.no_grad(), self.stage_outputs() as outputs:
            self.model(torch.zeros(1, 1, *shape))
        if not outputs:
            raise ValueError(f"{self.model.architecture} has no decoder stages to supervise")
        return [conv(out.shape[1], len(self.model.labels), 1) for out in outputs]

    @contextmanager
    def stage_outputs(self) -> Iterator[list[torch.Tensor]]:
        """Collect the decoder stages' outputs (coarsest first) of forwards run inside."""
        outputs: list[torch.Tensor] = []
        hooks = [stage.register_forward_hook(lambda _m, _i, out: outputs.append(out))
                 for stage in self.model.decoder_stages()]
        try:
            yield outputs
        finally:
            for hook in hooks:
                hook.remove()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_fit_start(self) -> None:
        self.model.to(memory_format=self.model.memory_format)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        image, label = batch
        image = image.contiguous(memory_format=self.model.memory_format)
        if self.aux_heads:
            with self.stage_outputs() as features:
                logits = self.model(image)
            # Main output first, then the stages from finest to coarsest.
            coarse = [head(f) for head, f in zip(self.aux_heads, features)]
            loss = self.deep_loss([logits, *coarse[::-1]], label.float())
        else:
            loss = self.loss(self.model(image), label)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True,
                 batch_size=image.shape[0], sync_dist=True)
        return loss

    def volume_logits(self, image: torch.Tensor, chunk: int = 32) -> torch.Tensor:
        """Logits ``(z, C, X, Y)`` of one prepared volume ``(z, 1, X, Y)``."""
        if self.model.spatial_dims == 3:
            return self.model(image.permute(1, 0, 2, 3)[None])[0].permute(1, 0, 2, 3)
        return torch.cat([self.model(image[i:i + chunk]) for i in range(0, len(image), chunk)])

    def validation_step(self, batch, batch_idx: int) -> None:
        image, label = batch[0][0], batch[1][0]  # one volume per batch
        logits = self.volume_logits(image)
        target = label[:, None]
        loss = self.loss(logits, target)
        ce = self.ce(logits, label)
        pred = logits.argmax(1).cpu().numpy()
        gt = label.cpu().numpy()
        scores = {name: dice(pred, gt, LABEL_OF[name]) for name in STRUCTURES}
        log = dict(batch_size=1, on_epoch=True, sync_dist=True)
        self.log("val_loss", loss, **log)
        self.log("val_ce", ce, **log)
        for name, value in scores.items():
            self.log(f"val_dice_{name}", float(value), **log)
        self.log("val_dice", float(np.nanmean(list(scores.values()))), prog_bar=True, **log)

    def on_train_start(self) -> None:
        # A run resumed with another number of epochs restores a schedule sized for
        # the old total: with more, OneCycleLR would raise after its last step and
        # cosine would climb back up; with fewer, the run would end before the rate
        # has annealed. Fit the restored schedule to the new total instead.
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total) or total >= 10**8:
            return
        total = max(1, int(total))
        schedulers = torch.optim.lr_scheduler
        for config in self.trainer.lr_scheduler_configs:
            sched = config.scheduler
            if sched.last_epoch >= total:
                continue
            if isinstance(sched, schedulers.OneCycleLR) and sched.total_steps != total:
                # The phases depend on the step counts only (lrs live in the param groups).
                plan = schedulers.OneCycleLR(
                    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), max_lr=1.0,
                    total_steps=total, pct_start=one_cycle_pct(total))
                sched.total_steps = total
                sched._schedule_phases = plan._schedule_phases
            elif isinstance(sched, schedulers.CosineAnnealingLR) and sched.T_max != total:
                sched.T_max = total

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr,
                                weight_decay=self.hparams.weight_decay)
        schedule = self.hparams.schedule
        if schedule == "constant":
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches))
        if total >= 10**8 or not math.isfinite(total):
            return opt
        if schedule == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, total_steps=total,
                                                        pct_start=one_cycle_pct(total))
        else:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
