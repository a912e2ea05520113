"""Callbacks: the per-epoch ``metrics.jsonl`` that the app's Train page polls."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch

from lvseg_core.errors import LVSegError
from lvseg_core.labels import STRUCTURES
from lvseg_core.records import append_event, finite_or_none


class MetricsLog(L.Callback):
    """Writes one JSON line per epoch: epoch, losses, Dice per structure, lr, seconds.

    Lines have an ``event`` field: ``start``, ``epoch`` and (written by the
    runner) ``end`` or ``error``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.start = time.time()
        self.epoch_start = self.start
        self.validated_epoch = -1

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.validated_epoch = trainer.current_epoch

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.start = time.time()
            append_event(self.path, {"event": "start", "time": self.start,
                                     "max_epochs": trainer.max_epochs,
                                     "steps_per_epoch": trainer.num_training_batches})

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epoch_start = time.time()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        if self.validated_epoch != trainer.current_epoch:
            # No validation this epoch (--val-every): leave the old figures out.
            m = {k: v for k, v in m.items() if not k.startswith("val_")}
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
        record = {
            "event": "epoch",
            "epoch": trainer.current_epoch,
            "max_epochs": trainer.max_epochs,
            "step": trainer.global_step,
            "train_loss": finite_or_none(m.get("train_loss_epoch")),
            "val_loss": finite_or_none(m.get("val_loss")),
            "val_ce": finite_or_none(m.get("val_ce")),
            "val_dice": finite_or_none(m.get("val_dice")),
            **{f"val_dice_{s}": finite_or_none(m.get(f"val_dice_{s}")) for s in STRUCTURES},
            "lr": lr,
            "seconds": time.time() - self.epoch_start,
            "elapsed": time.time() - self.start,
        }
        append_event(self.path, record)


class ValidateAtMaxSteps(L.Callback):
    """Ends a run that reaches ``max_steps`` mid-epoch through ``should_stop``.

    Lightning otherwise stops there without validating, so ``val_dice`` never
    exists: EarlyStopping raises and ModelCheckpoint, deferring to validation,
    writes no checkpoint. A requested stop is validated first.
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True


class StopOnNonFiniteLoss(L.Callback):
    """Stops a run whose training loss became NaN or infinite (divergence).

    The run ends with an ``error`` event naming the step, and the best
    checkpoint written before the divergence is kept.
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None and not bool(torch.isfinite(loss.detach()).all()):
            raise LVSegError(f"training diverged: non-finite loss at step {trainer.global_step}; "
                             "lower --lr or --grad-clip")
