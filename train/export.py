"""Export a training run: its best checkpoint -> a weights folder of the lvseg_core layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from lvseg_core.errors import LVSegError
from lvseg_core.labels import STRUCTURES
from lvseg_core.records import (
    CHECKPOINTS,
    CONFIG_FILE,
    best_epoch,
    epoch_events,
    read_events,
    read_json,
    training_seconds,
)

from .task import SegmentationTask


def checkpoint_of(run: Path, which: str = "best") -> Path:
    """The ``best`` checkpoint of a run (falling back to the last one), or its ``last``."""
    if which not in CHECKPOINTS:
        raise LVSegError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, not {which!r}")
    for name in (("best.ckpt", "last.ckpt") if which == "best" else ("last.ckpt",)):
        path = run / "checkpoints" / name
        if path.is_file():
            return path
    raise LVSegError(f"{run}: no {which} checkpoint in {run / 'checkpoints'} "
                     "(was the run started?)")


#: Figures of an ``lvseg_core evaluate`` JSON kept in the weights' metrics, as
#: ``eval_<figure>_<structure>`` (or ``eval_<figure>`` for scalars).
EVALUATION_FIGURES = ("dice", "iou", "precision", "recall", "hd95_mm")
EVALUATION_SCALARS = ("ef_abs_error", "rv_ef_abs_error", "cases", "seconds_per_volume")


def evaluation_metrics(report: dict) -> dict[str, float]:
    """Flatten an ``evaluate`` report (see :func:`lvseg_core.workflows.evaluate_dataset`)
    into ``eval_*`` metrics; ``eval_split`` says which patients were scored."""
    flat: dict = {}
    for figure in EVALUATION_FIGURES:
        for key, value in (report.get(figure) or {}).items():
            if isinstance(value, (int, float)):
                flat[f"eval_{figure}_{key}"] = float(value)
    for key in EVALUATION_SCALARS:
        if isinstance(report.get(key), (int, float)):
            flat[f"eval_{key}"] = float(report[key])
    if not flat:
        raise LVSegError("the evaluation file holds no figures of 'python -m lvseg_core evaluate'")
    flat["eval_split"] = str(report.get("split") or "unknown")
    return flat


def export_run(run: str | Path, out: str | Path, overwrite: bool = False,
               evaluation: str | Path | None = None, checkpoint: str = "best",
               half: bool = False) -> Path:
    """Write the best model of ``run`` to ``out`` (config.json, model.safetensors, README.md).

    ``evaluation``: a JSON report of ``python -m lvseg_core evaluate`` for this
    model, whose figures are stored with the weights (``eval_*`` metrics).
    ``checkpoint``: ``best`` (validation Dice) or ``last`` (the final epoch, e.g.
    when a criterion the validation Dice does not see, such as thin stacks,
    chose it); the weights record which, and that epoch's figures.
    ``half``: kernels stored in float16 (:func:`lvseg_core.models.base.stored_state`),
    for wide models whose float32 file would be too large to ship.

    Raises:
        LVSegError: no checkpoint, ``out`` holds other files and not ``overwrite``,
            or an unreadable evaluation file.
    """
    run, out = Path(run), Path(out)
    extra = {}
    if evaluation is not None:
        try:
            extra = evaluation_metrics(json.loads(Path(evaluation).read_text()))
        except (OSError, ValueError, AttributeError) as err:
            raise LVSegError(f"{evaluation}: not an evaluation report "
                             f"({type(err).__name__})") from None
    if not run.is_dir():
        raise LVSegError(f"{run}: no such run folder")
    ckpt = checkpoint_of(run, checkpoint)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise LVSegError(f"{out} is not empty; pass --overwrite to replace it")
    task = SegmentationTask.load_from_checkpoint(ckpt, map_location="cpu", weights_only=False)
    model = task.model.eval()
    events = read_events(run)
    epochs = epoch_events(events)
    best = (best_epoch(events) if ckpt.name == "best.ckpt" else
            (epochs[-1] if epochs else None)) or {}
    model.metrics = {k: best[k] for k in ("val_dice", *[f"val_dice_{s}" for s in STRUCTURES],
                                          "val_loss") if best.get(k) is not None}
    model.metrics.update(extra)
    config = read_json(run / CONFIG_FILE)
    model.training_info = {
        "run": run.name,
        "data": "ACDC" if "acdc" in str(config.get("data", "")).lower() else config.get("data"),
        "best_epoch": best.get("epoch"),
        "checkpoint": ckpt.stem,
        "epochs_run": len(epochs),
        "seconds": round(training_seconds(events), 1),   # every resumed part
        **{k: config.get(k) for k in ("lr", "weight_decay", "batch_size", "crop", "schedule",
                                      "augment", "deep_supervision", "seed")},
    }
    tmp = out.with_name(out.name + ".tmp-export")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp, half=half)    # config.json, model.safetensors, README.md
    except LVSegError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out
