"""The model card (``README.md``) a :class:`~lvseg_core.models.LVSegModel` saves with its
weights."""

from __future__ import annotations

import json
from typing import Any

from ..labels import STRUCTURES
from ..registry import display_name


def model_card(config: dict[str, Any], num_parameters: int) -> str:
    """The Hugging Face model card (README.md) of a model, with ``model-index`` metrics.

    Args:
        config: :meth:`LVSegModel.config() <lvseg_core.models.LVSegModel.config>`
            (architecture, arch_args, preprocess, metrics, training).
        num_parameters: trainable parameters of the network.
    """
    architecture = config["architecture"]
    metrics = config.get("metrics") or {}
    name = display_name(architecture)
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
    training = config.get("training") or {}
    arch_args, preprocess = config.get("arch_args") or {}, config.get("preprocess") or {}
    lines = [
        "---",
        "library_name: lvseg",
        "license: cc-by-nc-sa-4.0",
        "tags: [medical-imaging, cardiac-mri, segmentation, acdc, lvseg]",
        "model-index:",
        f"  - name: lvseg-{architecture}",
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
        % architecture,
        "",
        f"- Architecture: {name}, {num_parameters:,} parameters, arguments "
        f"`{json.dumps(arch_args)}`",
        f"- Preprocessing: `{json.dumps(preprocess)}`",
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
