"""Training runs: the full fit, the initial-loss check, the LR range test, the search."""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import replace
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import (
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
)
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from lvseg_core import settings
from lvseg_core.errors import LVSegError, first_line
from lvseg_core.hub import load_model
from lvseg_core.models import check_architecture
from lvseg_core.preprocess import PreprocessPlan
from lvseg_core.records import (
    CONFIG_FILE,
    EVENTS_FILE,
    TrainConfig,
    append_event,
    best_epoch,
    read_events,
    write_lr_find,
)
from lvseg_core.registry import spatial_dims

from .callbacks import MetricsLog, StopOnNonFiniteLoss, ValidateAtMaxSteps
from .datamodule import SegmentationDataModule, start_config
from .export import export_run
from .task import SegmentationTask
from .transforms import AugmentOptions

def new_run_dir(model: str, root: Path | None = None) -> Path:
    """``<root>/<model>-<timestamp>`` (made unique); ``root`` defaults to
    :func:`lvseg_core.settings.runs_dir`."""
    root = settings.runs_dir() if root is None else Path(root)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = root / f"{model}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = root / f"{model}-{stamp}-{n}"
    return path


def init_run(cfg: TrainConfig) -> str | None:
    """Name of the training run behind ``cfg.init_weights`` (its config's ``training.run``).

    Kept in the new run's config so that a fine-tuning chain stays traceable
    after the weights it started from (e.g. the bundled ones) are replaced.
    """
    return (start_config(cfg).get("training") or {}).get("run")


def make_task(cfg: TrainConfig, plan: PreprocessPlan) -> SegmentationTask:
    """A fresh task, or one whose model starts from ``cfg.init_weights``."""
    if not cfg.init_weights:
        return SegmentationTask(cfg.model, cfg.arch_args, plan.to_dict(), cfg.lr,
                                cfg.weight_decay, cfg.schedule, cfg.deep_supervision)
    start, _ = load_model(cfg.model, cfg.init_weights)
    arch_args = start.arch_args
    state = start.state_dict()
    if cfg.arch_args and cfg.arch_args != arch_args:
        arch_args = grown_vnet_args(cfg, start)
    task = SegmentationTask(cfg.model, arch_args, plan.to_dict(), cfg.lr,
                            cfg.weight_decay, cfg.schedule, cfg.deep_supervision)
    if arch_args != start.arch_args:
        from lvseg_core.models.vnet import adapt_z_kernels, widen_channels

        gen = torch.Generator().manual_seed(cfg.seed)
        state = adapt_z_kernels(widen_channels(state, task.model, gen), task.model)
    task.model.load_state_dict(state)
    return task


def grown_vnet_args(cfg: TrainConfig, start: torch.nn.Module) -> dict:
    """The widths of a fine-tuning run: its starting weights' with the entries of
    ``--arch-args`` that differ. Only a V-Net may change, and only its
    ``z_kernels`` and a whole multiple of its ``base_channels`` (see
    :func:`~lvseg_core.models.vnet.widen_channels`)."""
    old = start.arch_args
    vnet = cfg.model == "vnet"
    base = start.net.input.conv_block.conv.out_channels if vnet else 0
    current = {**old, "base_channels": base} if vnet else old
    changed = {k for k, v in cfg.arch_args.items() if current.get(k) != v}
    wider = cfg.arch_args.get("base_channels", base)
    if changed and (not vnet or not changed <= {"z_kernels", "base_channels"}
                    or not isinstance(wider, int) or wider < base or wider % base):
        raise LVSegError(f"--arch-args with --init-weights may only change a V-Net's "
                         f"z_kernels and multiply its base_channels; the weights keep "
                         f"{json.dumps(old)}")
    return {**old, **{k: cfg.arch_args[k] for k in changed}}


@torch.no_grad()
def initial_loss(task: SegmentationTask, val: DataLoader, batches: int = 4) -> dict[str, float]:
    """Loss of the untrained model on a few unseen validation volumes.

    Cross-entropy should be near ln(4) = 1.386 for 4 classes.
    """
    task.eval()
    ce, dice_ce = [], []
    for i, (image, label) in enumerate(val):
        if i >= batches:
            break
        logits = task.volume_logits(image[0])
        ce.append(float(task.ce(logits, label[0])))
        dice_ce.append(float(task.loss(logits, label[0][:, None])))
    task.train()
    return {"initial_ce": sum(ce) / len(ce), "initial_dice_ce": sum(dice_ce) / len(dice_ce),
            "expected_ce": math.log(len(task.model.labels))}


def _trainer(cfg: TrainConfig, run: Path, callbacks: list, **overrides) -> L.Trainer:
    accelerator = cfg.accelerator
    gpu = cfg.uses_gpu()
    precision = cfg.precision or ("16-mixed" if gpu else "32-true")
    cfg.check_precision()
    args = dict(
        max_epochs=cfg.epochs, max_time=cfg.max_time, max_steps=cfg.max_steps,
        accelerator=accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
        strategy=cfg.strategy, precision=precision, callbacks=callbacks,
        logger=TensorBoardLogger(str(run), name="", version="tensorboard"),
        default_root_dir=str(run), overfit_batches=cfg.overfit_batches,
        limit_train_batches=cfg.limit_train_batches, limit_val_batches=cfg.limit_val_batches,
        log_every_n_steps=10, num_sanity_val_steps=0, enable_model_summary=False,
        check_val_every_n_epoch=cfg.val_every,
        gradient_clip_val=cfg.grad_clip or None,
    )
    args.update(overrides)
    return L.Trainer(**args)


def fit(cfg: TrainConfig, resume: bool = False) -> Path:
    """Train ``cfg.model``; returns the run folder.

    The folder gets config.json, metrics.jsonl, TensorBoard events,
    checkpoints/{best,last}.ckpt and, at the end, the exported ``model/``.
    """
    check_architecture(cfg.model)
    if not Path(cfg.data).is_dir():
        raise LVSegError(f"{cfg.data}: data folder not found")
    # DDP re-runs this command in one process per extra device: those join rank 0's run
    # folder (named in the environment they inherit) instead of making or refusing one.
    is_zero = int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0
    if cfg.run_dir:
        run = Path(cfg.run_dir)
    elif not is_zero and settings.worker_run_dir():
        run = settings.worker_run_dir()
    else:
        run = new_run_dir(cfg.model)
    last = run / "checkpoints" / "last.ckpt"
    if resume:
        if not last.is_file():
            raise LVSegError(f"{run}: nothing to resume (no checkpoints/last.ckpt)")
        # The run is defined by its saved config; the length, the threads of this
        # machine and the numeric precision may change (a change is recorded in
        # metrics.jsonl, config.json keeps what the run started with).
        saved = TrainConfig.load(run / CONFIG_FILE)
        cfg = replace(saved, epochs=cfg.epochs, max_time=cfg.max_time, max_steps=cfg.max_steps,
                      run_dir=str(run), threads=cfg.threads or saved.threads,
                      precision=cfg.precision or saved.precision)
    elif is_zero and (run / CONFIG_FILE).exists():
        raise LVSegError(f"{run} already holds a run; use --resume or another --run-dir")
    cfg.check_precision()                                    # before any folder
    if resume and is_zero and cfg.precision != saved.precision:
        append_event(run / EVENTS_FILE, {"event": "resume", "precision": cfg.precision,
                                         "was": saved.precision})
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data = SegmentationDataModule(cfg)
    data.setup("fit")
    run.mkdir(parents=True, exist_ok=True)
    cfg = replace(cfg, run_dir=str(run))
    events = run / EVENTS_FILE
    task = make_task(cfg, data.plan)
    settings.announce_run_dir(run)
    if is_zero and not resume:
        cfg = replace(cfg, init_run=init_run(cfg), augmentation=AugmentOptions.from_dict(
            cfg.augmentation).to_dict())            # every value recorded, not just changes
        cfg.save(run / CONFIG_FILE)
        init = initial_loss(task, data.val_dataloader())
        append_event(events, {"event": "initial_loss", **init})
        print(f"initial loss: cross-entropy {init['initial_ce']:.3f} "
              f"(ln 4 = {init['expected_ce']:.3f}), Dice+CE {init['initial_dice_ce']:.3f}")
    monitor = "train_loss_epoch" if cfg.overfit_batches else "val_dice"
    mode = "min" if cfg.overfit_batches else "max"
    callbacks = [
        MetricsLog(events),
        ModelCheckpoint(dirpath=run / "checkpoints", filename="best", monitor=monitor,
                        mode=mode, enable_version_counter=False),
        # last.ckpt, for --resume, after every epoch: ``save_last`` of the best
        # checkpoint only writes it when the best one improves (Lightning >= 2.6).
        ModelCheckpoint(dirpath=run / "checkpoints", filename="last", save_top_k=1,
                        save_on_train_epoch_end=True, enable_version_counter=False),
        LearningRateMonitor(logging_interval="epoch"),
        ValidateAtMaxSteps(),
        StopOnNonFiniteLoss(),
    ]
    if cfg.patience and not cfg.overfit_batches:
        # EarlyStopping counts validation checks, ``patience`` counts epochs.
        checks = max(1, math.ceil(cfg.patience / cfg.val_every))
        callbacks.append(EarlyStopping(monitor="val_dice", mode="max", patience=checks))
    trainer = _trainer(cfg, run, callbacks)
    try:
        trainer.fit(task, datamodule=data, ckpt_path=str(last) if resume else None)
    except BaseException as err:
        if trainer.is_global_zero:
            append_event(events, {"event": "error", "message": first_line(err)})
        raise
    if trainer.is_global_zero:
        if cfg.export and not cfg.overfit_batches:
            export_run(run, run / "model", overwrite=True)
        append_event(events, {"event": "end", "time": time.time(),
                              "epochs": trainer.current_epoch,
                              "interrupted": bool(trainer.interrupted)})
    return run


def steepest_descent(lrs: np.ndarray, losses: np.ndarray, skip_end: int = 1) -> int | None:
    """Index of the steepest fall of the (smoothed) loss against log10(lr).

    The slope is taken on the log axis the test sweeps (Lightning's own
    suggestion differentiates by the linear rate, which favours the smallest
    rates). Skipped: the first 10 points (a fifth of a short test), the
    early part where the smoothed loss still rises to its peak, and the last
    ``skip_end`` points. None when fewer than 3 finite points remain.
    """
    n = len(losses)
    finite = np.isfinite(losses)
    if finite.sum() < 3:
        return None
    head = losses[: max(1, n // 2)]
    peak = int(np.nanargmax(np.where(np.isfinite(head), head, -np.inf)))
    begin = max(min(10, n // 5), peak)
    idx = np.arange(begin, n - skip_end)
    idx = idx[finite[idx]]
    if len(idx) < 3:
        return None
    slope = np.gradient(losses[idx], np.log10(lrs[idx]))
    return int(idx[int(np.argmin(slope))])


def lr_find(cfg: TrainConfig, out: str | Path, num_training: int = 100) -> dict:
    """Lightning's learning-rate range test; saves ``lr_find.png`` and ``lr_find.json``."""
    import matplotlib

    matplotlib.use("Agg")
    from lightning.pytorch.tuner import Tuner

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, verbose=False)
    data = SegmentationDataModule(cfg)
    task = make_task(replace(cfg, schedule="constant"), data.plan)
    # Enough epochs for num_training steps even when an epoch has fewer batches.
    trainer = _trainer(cfg, out, [], max_epochs=max(1, num_training), logger=False,
                       enable_checkpointing=False, max_time=None)
    finder = Tuner(trainer).lr_find(task, train_dataloaders=data.train_dataloader(), min_lr=1e-6,
                                    max_lr=1.0,
                                    num_training=num_training, early_stop_threshold=None,
                                    update_attr=False)
    if finder is None:
        raise LVSegError("the LR range test returned no result")
    lrs = np.asarray(finder.results["lr"], float)
    losses = np.asarray(finder.results["loss"], float)
    best = steepest_descent(lrs, losses)
    if best is None:
        raise LVSegError(f"the LR range test gave too few finite losses for a suggestion "
                         f"({len(lrs)} steps); raise --num-training")
    suggestion = float(lrs[best])
    fig = finder.plot(suggest=False)
    fig.axes[0].plot(lrs[best], losses[best], "o", color="red", markersize=10)
    fig.axes[0].set_title(f"LR range test, {cfg.model} (suggested {suggestion:.2e})")
    fig.savefig(out / "lr_find.png", dpi=120, bbox_inches="tight")
    result = {"model": cfg.model, "suggestion": suggestion,
              "lr": [float(x) for x in finder.results["lr"]],
              "loss": [float(x) for x in finder.results["loss"]]}
    write_lr_find(out, result)
    return result


def search(cfg: TrainConfig, lrs: list[float], weight_decays: list[float],
           out: str | Path) -> list[dict]:
    """Short trainings over a grid of learning rates and weight decays.

    Writes ``results.csv`` and ``results.md`` (best validation Dice per trial)
    in ``out``; returns the rows sorted best first.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for lr in lrs:
        for wd in weight_decays:
            run = out / f"lr{lr:g}-wd{wd:g}"
            trial = replace(cfg, lr=lr, weight_decay=wd, run_dir=str(run), export=False,
                            patience=0)
            start = time.time()
            fit(trial)
            best = best_epoch(read_events(run)) or {}
            rows.append({"lr": lr, "weight_decay": wd, "val_dice": best.get("val_dice"),
                         "val_loss": best.get("val_loss"), "epoch": best.get("epoch"),
                         "seconds": round(time.time() - start, 1)})
    rows.sort(key=lambda r: -(r["val_dice"] if r["val_dice"] is not None else -1))
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| lr | weight decay | best val Dice | val loss | epoch | seconds |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        dice = f"{r['val_dice']:.4f}" if r["val_dice"] is not None else "n/a"
        loss = f"{r['val_loss']:.4f}" if r["val_loss"] is not None else "n/a"
        lines.append(f"| {r['lr']:g} | {r['weight_decay']:g} | {dice} | {loss} | "
                     f"{r['epoch']} | {r['seconds']} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    return rows
