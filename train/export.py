"""Export a training run to the lvseg_core weights layout, and push it to the Hub."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from lvseg_core.errors import LVSegError
from lvseg_core.labels import STRUCTURES
from lvseg_core.models import DISPLAY_NAMES, LVSegModel
from lvseg_core.runs import best_epoch, epoch_events, read_events, training_seconds

from .task import SegmentationTask


def checkpoint_of(run: Path) -> Path:
    """Best checkpoint of a run (falls back to the last one)."""
    for name in ("best.ckpt", "last.ckpt"):
        path = run / "checkpoints" / name
        if path.is_file():
            return path
    raise LVSegError(f"{run}: no checkpoint in {run / 'checkpoints'} (was the run started?)")


#: Figures of an ``lvseg_core evaluate`` JSON kept in the weights' metrics, as
#: ``eval_<figure>_<structure>`` (or ``eval_<figure>`` for scalars).
EVALUATION_FIGURES = ("dice", "iou", "precision", "recall", "hd95_mm")
EVALUATION_SCALARS = ("ef_abs_error", "cases", "seconds_per_volume")


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


def model_card(model: LVSegModel) -> str:
    """A Hugging Face model card (README.md) with ``model-index`` metrics."""
    metrics = model.metrics
    name = DISPLAY_NAMES.get(model.architecture, model.architecture)
    # Prefer the post-processed evaluation on the original grids; else the
    # training run's own validation Dice.
    evaluated = metrics.get("eval_dice_mean") is not None
    key, where = (("eval_dice_{}", "lvseg_core evaluate, validation") if evaluated
                  else ("val_dice_{}", "training validation, 3D"))
    results = "\n".join(
        f"          - type: dice\n            name: Dice {s} ({where})\n"
        f"            value: {metrics[key.format(s)]:.4f}"
        for s in (*STRUCTURES, "mean") if metrics.get(key.format(s)) is not None
    )
    training = model.training_info
    lines = [
        "---",
        "library_name: lvseg",
        "license: cc-by-nc-sa-4.0",
        "tags: [medical-imaging, cardiac-mri, segmentation, acdc, lvseg]",
        "model-index:",
        f"  - name: lvseg-{model.architecture}",
        "    results:",
        "      - task:",
        "          type: image-segmentation",
        "        dataset:",
        "          name: ACDC (80-patient copy, standard validation split)",
        "          type: acdc",
        "        metrics:",
        results or "          []",
        "---",
        "",
        f"# LVSeg {name}",
        "",
        "Segments the right-ventricle cavity (RV, label 1), left-ventricle myocardium "
        "(Myo, 2) and left-ventricle cavity (LV, 3) in short-axis cine MRI. "
        "Load it with `lvseg_core.Segmenter.from_source(\"%s\", \"<this folder or repo>\")`."
        % model.architecture,
        "",
        f"- Architecture: {name}, {model.num_parameters:,} parameters, arguments "
        f"`{json.dumps(model.arch_args)}`",
        f"- Preprocessing: `{json.dumps(model.preprocess)}`",
        f"- Training: {json.dumps(training)}",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {v:.4f} |" for k, v in metrics.items() if isinstance(v, (int, float))],
        "",
        "Training data: ACDC (Bernard et al., IEEE TMI 37(11), 2018); research and teaching "
        "use only.",
        "",
    ]
    return "\n".join(lines)


def export_run(run: str | Path, out: str | Path, overwrite: bool = False,
               evaluation: str | Path | None = None) -> Path:
    """Write the best model of ``run`` to ``out`` (config.json, model.safetensors, README.md).

    ``evaluation``: a JSON report of ``python -m lvseg_core evaluate`` for this
    model, whose figures are stored with the weights (``eval_*`` metrics).

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
    ckpt = checkpoint_of(run)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise LVSegError(f"{out} is not empty; pass --overwrite to replace it")
    task = SegmentationTask.load_from_checkpoint(ckpt, map_location="cpu", weights_only=False)
    model = task.model.eval()
    events = read_events(run)
    best = best_epoch(events) or {}
    model.metrics = {k: best[k] for k in ("val_dice", *[f"val_dice_{s}" for s in STRUCTURES],
                                          "val_loss") if best.get(k) is not None}
    model.metrics.update(extra)
    config = {}
    if (run / "config.json").is_file():
        config = json.loads((run / "config.json").read_text())
    model.training_info = {
        "run": run.name,
        "data": "ACDC" if "acdc" in str(config.get("data", "")).lower() else config.get("data"),
        "best_epoch": best.get("epoch"),
        "epochs_run": len(epoch_events(events)),
        "seconds": round(training_seconds(events), 1),   # every resumed part
        **{k: config.get(k) for k in ("lr", "weight_decay", "batch_size", "crop", "schedule",
                                      "augment", "seed")},
    }
    tmp = out.with_name(out.name + ".tmp-export")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    (tmp / "README.md").write_text(model_card(model))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def push_to_hub(folder: str | Path, repo_id: str, private: bool = False) -> str:
    """Upload a weights folder to the Hub (token from ``HF_TOKEN``); returns its URL.

    Raises:
        LVSegError: no token, offline, or the upload failed.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.utils import HfHubHTTPError

    folder = Path(folder)
    if not (folder / "model.safetensors").is_file():
        raise LVSegError(f"{folder}: not a weights folder (no model.safetensors)")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise LVSegError("HF_HUB_OFFLINE is set: cannot push to the Hub")
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise LVSegError("set HF_TOKEN to a Hugging Face write token to push to the Hub")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder),
                                 commit_message="Upload LVSeg weights")
    except HfHubHTTPError as err:
        raise LVSegError(f"push to {repo_id} failed: {str(err).splitlines()[0]}") from None
    except (OSError, ValueError) as err:
        raise LVSegError(f"push to {repo_id} failed: cannot reach the Hub "
                         f"({type(err).__name__})") from None
    return str(getattr(info, "commit_url", f"https://huggingface.co/{repo_id}"))

