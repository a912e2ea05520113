"""The evaluation report: ``docs/REPORT.md``, ``docs/figures/*.png`` and ``docs/LVSeg.pptx``.

One command measures (accuracy, clinical agreement, speed, robustness; see
the ``bench`` modules) or reuses cached measurements, and writes every number
and figure of the report from them. Nothing in the report is typed by hand:
rerun the command instead of editing it.

    python -m bench.report                       # full report (~15-25 min on 2 CPU cores)
    python -m bench.report --quick --cases 4     # a smoke run in a few minutes
    python -m bench.report --reuse               # reuse bench/results/*.json when the
                                                 # weights and settings are unchanged

Inputs that are missing (weights of a model, the data folder, training runs,
the LR range test, search results) are reported as such in their section.
The README's block between ``<!-- results:start -->`` and
``<!-- results:end -->`` is refreshed too (``--readme``, ``--no-readme``).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.common import (ARCHS, ROOT, ModelSpec, data_problem, default_data, fmt,
                          log, num, positive_int, read_json, reason, resolve_models, setup_torch,
                          shown_path, split_patients, write_json)
from bench.document import SECTIONS, Report, md_table
from lvseg_core.errors import LVSegError
from lvseg_core.labels import STRUCTURES
from lvseg_core.records import find_run, run_chain
from lvseg_core.registry import ENSEMBLE, model_display_name

README_START = "<!-- results:start -->"
README_END = "<!-- results:end -->"

#: Figure name prefixes this command owns (stale ones are removed before a run).
FIGURE_PREFIXES = ("eda_", "architectures", "lr_find", "learning_curves", "results_", "seg_",
                   "bland_altman_", "clinical_", "failure_", "robustness", "speed")

METRIC_NAMES = {"dice": "Dice", "iou": "IoU", "precision": "Precision", "recall": "Recall",
                "f1": "F1", "hd95_mm": "HD95 (mm)"}


# ---------------------------------------------------------------- helpers


def name(arch: str) -> str:
    return model_display_name(arch)


def _finite(value: Any) -> bool:
    return math.isfinite(num(value))


# ---------------------------------------------------------------- measurements


def _settings(kind: str, args, patients: Sequence[str] | None) -> dict:
    common = {"data": str(Path(args.data).resolve()), "split": args.split,
              "patients": list(patients or [])}
    if kind == "speed":
        return {**common, "cases": args.speed_cases, "repeats": args.repeats,
                "warmup": args.warmup, "isolate": args.isolate, "backends": True,
                "ray_volumes": args.ray_volumes}
    if kind == "robustness":
        return {**common, "cases": args.robustness_cases}
    return common


def _cached(path: Path, settings: dict, specs: Sequence[ModelSpec]) -> dict | None:
    """The cached measurement at ``path`` if its settings and weights still match."""
    data = read_json(path)
    if not data or data.get("settings") != settings:
        return None
    for spec in specs:
        res = data.get("models", {}).get(spec.arch)
        if spec.available:
            if res is None or res.get("weights_id", {}).get("sha256") != \
                    spec.fingerprint()["sha256"]:
                return None
        elif res is not None:
            return None
    return data


def speed_measurement(path: Path, specs: Sequence[ModelSpec]) -> dict:
    """The report of a ``python -m bench.speed --json path`` run, refused when a
    model's weights changed since (its sha256 differs)."""
    data = read_json(path)
    if not data or data.get("kind") != "speed":
        raise LVSegError(f"--speed-json {path}: not the JSON of python -m bench.speed")
    for spec in specs:
        res = data.get("models", {}).get(spec.arch)
        if res is not None and spec.available and res.get("weights_id", {}).get("sha256") \
                != spec.fingerprint()["sha256"]:
            raise LVSegError(f"--speed-json {path}: {spec.arch} was timed with other weights; "
                             "rerun python -m bench.speed")
    log(f"speed: read {path}")
    return data


def measure(args, specs: Sequence[ModelSpec]) -> dict[str, Any]:
    """Run (or reuse) the measurements; returns ``{kind: report or None, ...}``."""
    from bench import accuracy, clinical, regional, robustness, speed

    results: dict[str, Any] = {"accuracy": None, "clinical": None, "speed": None,
                               "robustness": None, "data_problem": data_problem(args.data),
                               "patients": []}
    if results["data_problem"]:
        log(f"no measurements: {results['data_problem']}")
        return results
    if not any(s.available for s in specs):
        log("no measurements: no model has weights")
        return results
    patients = split_patients(args.data, args.split, args.cases)
    results["patients"] = patients
    folder = args.results
    folder.mkdir(parents=True, exist_ok=True)

    def step(kind: str, fn):
        path = folder / f"{kind}.json"
        settings = _settings(kind, args, patients)
        if args.reuse:
            cached = _cached(path, settings, specs)
            if cached is not None:
                log(f"{kind}: reusing {path}")
                return cached
        start = time.time()
        log(f"{kind}: measuring ...")
        data = fn()
        data["settings"] = settings
        data["seconds"] = time.time() - start
        log(f"{kind}: done in {data['seconds']:.0f} s")
        write_json(data, path)
        return data

    masks = folder / "masks"
    results["accuracy"] = step("accuracy", lambda: accuracy.run(
        args.data, specs, args.split, args.cases, args.device, masks_dir=masks))
    results["clinical"] = clinical.compute(results["accuracy"])
    write_json(results["clinical"], folder / "clinical.json")
    if args.speed_json:
        results["speed"] = speed_measurement(args.speed_json, specs)
    elif not args.skip_speed:
        results["speed"] = step("speed", lambda: speed.run(
            args.data, specs, args.speed_cases, args.repeats, args.warmup, args.device,
            True, args.isolate, args.threads, backends=True, ray_volumes=args.ray_volumes))
    if not args.skip_robustness:
        results["robustness"] = step("robustness", lambda: robustness.run(
            args.data, specs, args.split, args.robustness_cases, args.device))
    results["regional"] = step("regional", lambda: regional.compute(args.data))
    results["masks"] = masks
    return results


# ---------------------------------------------------------------- sections


def section_header(rep: Report, args, specs: Sequence[ModelSpec], results: dict) -> None:
    from bench.common import environment

    env = environment()
    command = "python -m bench.report" + (" " + " ".join(args.argv) if args.argv else "")
    rep.add("# LVSeg evaluation report", "",
            f"Generated by `{command}` on {env['time_utc']} UTC "
            f"({env['device']}, torch {env['torch']}, Python {env['python']}). "
            "Every number and figure below comes from the measurements of that run "
            "(JSON in `bench/results/` by default); do not edit this file, rerun the command.",
            "")
    rows = []
    for spec in specs:
        if spec.available:
            rows.append([name(spec.arch), "evaluated", f"`{spec.source}`"])
        else:
            rows.append([name(spec.arch), "**skipped**", spec.note])
    rep.add(md_table(["Model", "Status", "Weights"], rows), "")
    for kind in ("accuracy", "speed", "robustness"):
        res = results.get(kind)
        if res:
            for arch, note in res.get("skipped", {}).items():
                if any(s.arch == arch and s.available for s in specs):
                    rep.add(f"- {kind}: {name(arch)} skipped ({note})")
    rep.add("")


def section_problem(rep: Report) -> None:
    rep.add(SECTIONS[0], "",
            "Short-axis cine MRI is the reference examination for the size and function of "
            "the heart's ventricles. Measuring them needs the outline of three structures on "
            "every slice of the end-diastolic (ED) and end-systolic (ES) frames: the "
            "right-ventricle cavity (RV), the left-ventricle myocardium (Myo) and the "
            "left-ventricle cavity (LV). Drawn by hand this takes an expert a long time per "
            "patient and varies between readers. LVSeg segments the three structures "
            "automatically with three classic architectures (U-Net, Attention U-Net, V-Net) "
            "and derives the clinical indices that follow from them: end-diastolic and "
            "end-systolic volumes (EDV, ESV), ejection fraction (EF) and myocardial mass.",
            "",
            "This report answers what a user choosing a tool asks: how accurate are the "
            "outlines (overlap and boundary distance per structure), how close are the "
            "clinical indices to the manual ones, how fast is it on an ordinary machine, "
            "how does it react to images from other scanners, and where does it fail.", "")


def section_data(rep: Report, args, results: dict) -> None:
    from lvseg_core import explore
    from lvseg_core.data import select_cases, validation_patients

    from bench import figures

    rep.add(SECTIONS[1], "")
    problem = data_problem(args.data)
    if problem:
        rep.add(f"**The data could not be read:** {problem}. No data figure and no "
                "measurement could be made.", "")
        rep.facts["data"] = None
        return
    frame = explore.overview(args.data)
    ok = frame[frame.get("error").isna()] if "error" in frame else frame
    counts = explore.group_counts(ok)
    patients = int(ok["patient"].nunique())
    labelled = int(ok["labelled"].sum())
    spacings = sorted({(r.sx_mm, r.sy_mm, r.sz_mm) for r in ok.itertuples()})
    val_present = validation_patients(ok["patient"])
    facts = {"patients": patients, "frames": int(len(ok)), "labelled": labelled,
             "groups": counts, "validation": len(val_present)}
    rep.facts["data"] = facts
    rep.add(f"ACDC (Automated Cardiac Diagnosis Challenge, MICCAI 2017) as found in "
            f"`{args.data}`: **{patients} patients**, {len(ok)} frames of which "
            f"{labelled} have expert labels (ED and ES), in "
            f"{len(counts)} pathology group{'s' if len(counts) != 1 else ''} "
            f"({', '.join(f'{g} {n}' for g, n in counts.items())}). "
            f"Volumes have {int(ok['slices'].min())}-{int(ok['slices'].max())} short-axis "
            f"slices of {int(ok['x'].min())}-{int(ok['x'].max())} x "
            f"{int(ok['y'].min())}-{int(ok['y'].max())} voxels.", "")
    if len(spacings) == 1:
        sx, sy, sz = spacings[0]
        rep.add(f"Every header carries the same voxel size, {sx:g} x {sy:g} x {sz:g} mm, "
                "so volumes in mL (and the mass) are nominal; the ejection fraction, a ratio "
                "of two volumes on one grid, is not affected.", "")
    else:
        rep.add(f"Voxel sizes vary between {len(spacings)} values (first "
                f"{spacings[0][0]:g} x {spacings[0][1]:g} x {spacings[0][2]:g} mm).", "")
    rep.add(f"Models are trained on the other patients and evaluated on the "
            f"{len(val_present)} patients of the standard validation split "
            f"({', '.join(p.removeprefix('patient') for p in val_present)}), never mixed "
            "by slice. Labels: 0 background, 1 RV, 2 Myo, 3 LV. Data: O. Bernard, A. Lalande, "
            "C. Zotti, F. Cervenansky, et al., \"Deep Learning Techniques for Automatic MRI "
            "Cardiac Multi-structures Segmentation and Diagnosis: Is the Problem Solved?\", "
            "IEEE TMI 37(11), 2514-2525, 2018 (research and teaching use only).", "")
    rep.figure(figures.group_counts(counts, rep.figures / "eda_groups.png"),
               "Patients per pathology group (DCM dilated, HCM hypertrophic, MINF previous "
               "infarction, NOR normal, RV abnormal right ventricle).", "eda_groups")
    balance_patients = results.get("patients") if args.quick else None
    cases = select_cases(args.data, patients=balance_patients)
    balance, end_rows = explore.label_tables(cases)
    if len(balance):
        rep.figure(figures.class_balance(balance, rep.figures / "eda_class_balance.png"),
                   f"Structure volumes and class balance over {balance['case'].nunique()} "
                   "labelled frames: the heart is a few percent of each volume, so overlap "
                   "losses (Dice) are used next to cross-entropy.", "eda_class_balance")
    ends = explore.end_slice_shares(end_rows)
    if {"ED", "ES"} <= set(ends.index):
        ed, es = (ends.loc[phase] for phase in ("ED", "ES"))
        facts["basal_rv_percent"] = {"ED": float(ed["basal RV"]), "ES": float(es["basal RV"])}
        rep.add(f"On the most basal labelled slice (the end with the larger LV) the experts "
                f"drew the RV in {ed['basal RV']:.0f} % of the {int(ed['frames'])} ED frames "
                f"but in {es['basal RV']:.0f} % of the {int(es['frames'])} ES frames, and the "
                f"LV in {ed['basal LV']:.0f} and {es['basal LV']:.0f} % "
                "(`lvseg_core.explore.end_slices`): in systole the base descends toward the "
                "apex, so at ES that slice often cuts the LV and, beside it, the right atrium. "
                "A model that draws an RV there overestimates the RV ESV (section 6.2).", "")
    hist_patients = results.get("patients") or val_present or None
    hist_cases = select_cases(args.data, patients=hist_patients)
    if args.quick:
        hist_cases = hist_cases[:2]
    if hist_cases:
        curves = explore.intensity_histograms(hist_cases, by="structure")
        rep.figure(figures.intensity_histograms(curves, rep.figures / "eda_intensity.png"),
                   f"Intensity histograms inside the expert labels ({len(hist_cases)} "
                   "validation frames; intensities divided by each volume's 99.5th "
                   "percentile). Blood pools (RV, LV) are bright, myocardium dark.",
                   "eda_intensity")
        example = hist_cases[0]
        items = explore.gallery(example, max_slices=6)
        rep.figure(figures.gallery(items, rep.figures / "eda_examples.png",
                                   f"{example.name} ({example.group}, {example.phase}) "
                                   "with expert labels, base to apex"),
                   f"Example slices of {example.name} with the expert labels (RV blue, "
                   "Myo green, LV red), from base to apex.", "eda_examples")


def _model_facts(specs: Sequence[ModelSpec]) -> list[dict]:
    from lvseg_core.models import LVSegModel, create_model

    from bench import figures

    facts = []
    for spec in specs:
        model = None
        if spec.available:
            try:
                model = LVSegModel.from_pretrained(str(spec.folder))
            except LVSegError:
                model = None
        if model is None:
            model = create_model(spec.arch)
        f = figures.architecture_facts(spec.arch, model)
        f["preprocess"] = dict(model.preprocess)
        f["trained"] = spec.available
        facts.append(f)
    return facts


def run_roots(args) -> list[Path]:
    """Where runs are looked for: ``--runs`` (this machine), then ``--records``."""
    return [Path(p) for p in (args.runs, getattr(args, "records", None)) if p is not None]


def _run_config(run: Path) -> dict | None:
    return read_json(run / "config.json")


def _planned_epochs(run: Path, cfg: dict) -> str:
    """The epochs a run was (last) started for: a resumed run may have got more."""
    from lvseg_core.records import read_events, since_last_start

    current = since_last_start(read_events(run))
    planned = current[0].get("max_epochs") if current else None
    if planned and planned != cfg.get("epochs"):
        return f"{planned} (resumed; {cfg.get('epochs')} at the start)"
    return str(cfg.get("epochs"))


def _weights_config(spec: ModelSpec) -> dict:
    """The ``config.json`` of ``spec``'s weights ({} without weights)."""
    return (read_json(spec.folder / "config.json") if spec.folder else None) or {}


def _weights_training(spec: ModelSpec) -> list[str]:
    """Learning-curve table cells from the weights' ``training`` block, for weights
    whose run record was not kept: epochs, best epoch, best val Dice, hours, status."""
    cfg = _weights_config(spec)
    train_cfg, metrics = cfg.get("training") or {}, cfg.get("metrics") or {}
    if not train_cfg:
        return ["no `metrics.jsonl` epochs", "", "", "", ""]
    best = train_cfg.get("best_epoch")
    hours = num(train_cfg.get("seconds"))
    return [str(train_cfg.get("epochs_run", "?")),
            str(best + 1) if isinstance(best, int) else "n/a",
            fmt(metrics.get("val_dice"), 4), fmt(hours / 3600 if hours else None, 2),
            "finished (from the weights' config; no curve: run record not kept)"]


def section_method(rep: Report, args, specs: Sequence[ModelSpec]) -> None:
    from lvseg_core.records import read_lr_find

    from bench import figures

    rep.add(SECTIONS[2], "", "### 3.1 Architectures", "")
    facts = _model_facts(specs)
    rep.facts["architectures"] = facts
    rows = []
    for f in facts:
        widths = " / ".join(str(c) for c in f["encoder"])
        rows.append([name(f["arch"]), f"{f['spatial_dims']}D", widths,
                     " / ".join(str(c) for c in f["decoder"]),
                     f"{f['parameters'] / 1e6:.2f} M", f["block"]])
    rep.add("Three encoder-decoder networks with skip connections, all predicting the four "
            "classes (background, RV, Myo, LV) from one image channel:", "",
            "- **U-Net** (Ronneberger et al. 2015), here `segmentation-models-pytorch` with a "
            "light residual encoder, segments each slice in 2D;",
            "- **Attention U-Net** (Oktay et al. 2018, MONAI) adds attention gates that "
            "weight each skip connection by the decoder's context, to suppress background;",
            "- **V-Net** (Milletari et al. 2016, MONAI blocks) sees stacks of slices in 3D "
            "with residual convolutions, so it can use the neighbouring slices (5x5x5 in "
            "Milletari's; in-plane only at the finest levels when the weights' `z_kernels` "
            "say so, as nnU-Net does for slices much thicker than a pixel is wide).", "",
            md_table(["Model", "Input", "Encoder widths (ch)", "Decoder widths (ch)",
                      "Parameters", "Blocks"], rows), "")
    rep.figure(figures.architectures(facts, rep.figures / "architectures.png"),
               "Block diagrams of the three architectures, with the widths of the weights "
               "evaluated here.", "architectures")
    rep.add("### 3.2 Preprocessing", "")
    rows = []
    for f in facts:
        p = f["preprocess"]
        spacing = p.get("spacing_mm")
        rows.append([name(f["arch"]),
                     f"{spacing[0]:g} x {spacing[1]:g} mm" if spacing else "input spacing",
                     f"{p.get('clip_percentiles', ['?', '?'])[0]}-"
                     f"{p.get('clip_percentiles', ['?', '?'])[1]} percentile clip, z-score",
                     f"multiple of {p.get('divisor')}" + (f" x {p['size'][0]}x{p['size'][1]}"
                                                           if p.get("size") else ""),
                     f"multiple of {p.get('z_divisor', 1)}"])
    rep.add("Each model stores its preprocessing plan with its weights; inference applies it "
            "and maps the class probabilities back onto the exact input grid, so masks have "
            "the shape and affine of the scan:", "",
            md_table(["Model", "In-plane resampling", "Intensity", "In-plane padding",
                      "Slices"], rows), "",
            "After the arg-max, the largest connected heart region is kept, then the largest "
            "component of each structure (`lvseg_core.postprocess`).", "")
    rep.add("### 3.3 Training recipe", "")
    rows = []
    for spec in specs:
        arch = spec.arch
        chain = run_chain(run_roots(args), spec.arch, spec.folder)
        if not chain:
            train_cfg = _weights_config(spec).get("training") or {}
            if not train_cfg:
                rows.append([name(arch), "no run `" + f"{args.runs.name}/{arch}-main` found",
                             "", "", "", "", "", ""])
                continue
            crop = "x".join(str(c) for c in train_cfg.get("crop", []))
            rows.append([f"{name(arch)} `{train_cfg.get('run', '?')}` (run record not kept; "
                         "from the weights' config)",
                         f"{train_cfg.get('epochs_run', '?')} run",
                         f"{num(train_cfg.get('lr')):g}" if train_cfg.get("lr") else "?",
                         f"{num(train_cfg.get('weight_decay')):g}"
                         if train_cfg.get("weight_decay") is not None else "?",
                         str(train_cfg.get("batch_size", "?")), crop or "?",
                         train_cfg.get("schedule", "?"), "not recorded"])
            continue
        for k, run in enumerate(chain):
            cfg = _run_config(run) or {}
            crop = "x".join(str(c) for c in cfg.get("crop", []))
            if arch == "vnet":
                crop += f"x{cfg.get('depth')}"
            label = f"{name(arch)} `{run.name}`" + (", fine-tuned from the run above" if k
                                                     else "")
            if not k and cfg.get("init_weights"):
                parent = f" of run `{cfg['init_run']}`" if cfg.get("init_run") else ""
                label += f", fine-tuned from weights `{cfg['init_weights']}`{parent} " \
                         "(earlier runs not kept)"
            rows.append([label, f"{_planned_epochs(run, cfg)} "
                         f"(max {cfg.get('max_time') or '-'}; "
                         f"patience {cfg.get('patience')})",
                         f"{num(cfg.get('lr')):g}", f"{num(cfg.get('weight_decay')):g}",
                         str(cfg.get("batch_size")), crop, cfg.get("schedule"),
                         cfg.get("precision") or "default"])
    try:
        from train.transforms import intensity_augment, spatial_augment

        spatial = [type(t).__name__ for t in spatial_augment((64, 64)).transforms]
        intensity = [type(t).__name__ for t in intensity_augment().transforms]
        augment = (f"spatial: {', '.join(dict.fromkeys(spatial))}; intensity: "
                   f"{', '.join(intensity)} (MONAI)")
    except Exception as err:  # the training package is optional for the report
        augment = f"(train.transforms not importable: {type(err).__name__})"
    schedules = sorted({str(r[6]) for r in rows if r[6]})
    rep.facts["recipe"] = ("Dice + cross-entropy loss, AdamW"
                           + (f", {'/'.join(schedules)} LR schedule" if schedules else "")
                           + f"; augmentation: {augment}")
    rep.add("Training (`python -m train fit`, PyTorch Lightning): loss Dice + cross-entropy "
            "(MONAI `DiceCELoss`), AdamW, gradient-norm clipping, early stopping on the "
            "validation Dice (3D, mean of RV, Myo, LV), best checkpoint exported. "
            f"Augmentation: {augment}. The runs behind the weights of this report (their "
            f"`{args.runs.name}/<run>/config.json`; a fine-tuning run starts from the model "
            "exported by the run above it):", "",
            md_table(["Model", "Epochs", "Peak LR", "Weight decay", "Batch", "Patch",
                      "Schedule", "Precision"], rows), "")
    lr_dir = find_run(run_roots(args), "lr_find_unet") or args.runs / "lr_find_unet"
    lr = read_lr_find(lr_dir)
    if lr:
        path = figures.lr_find(lr["lr"], lr["loss"], lr.get("suggestion"),
                               lr.get("model", "unet"), rep.figures / "lr_find.png")
        rep.add(f"The learning rate was chosen with an LR range test "
                f"(`python -m train lr-find`, {len(lr['lr'])} steps): the suggested value is "
                f"{lr['suggestion']:.2e}; the peak learning rates of the runs are in the "
                "table above.", "")
        rep.figure(path, "LR range test: training loss while the learning rate grows "
                   "exponentially.", "lr_find")
    elif (lr_dir / "lr_find.png").is_file():
        target = rep.figures / "lr_find.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lr_dir / "lr_find.png", target)
        rep.figure(target, "LR range test (copied from the run folder).", "lr_find")
    else:
        rep.add(f"No LR range test found (`{args.runs.name}/lr_find_unet/lr_find.json`); "
                "run `python -m train lr-find --model unet --out runs/lr_find_unet`.", "")


def section_experiments(rep: Report, args, specs: Sequence[ModelSpec]) -> None:
    from lvseg_core.records import (best_epoch, epoch_events, read_events, since_last_start,
                                 training_seconds)

    from bench import figures

    rep.add(SECTIONS[3], "", "### 4.1 Hyper-parameter search", "")
    found: dict[str, Path] = {}
    for root in run_roots(args):
        for path in sorted(root.glob("search_*/results.md")) if root.is_dir() else []:
            found.setdefault(path.parent.name, path)
    searches = list(found.values())
    if searches:
        for path in searches:
            rep.add(f"`python -m train search` in `{path.parent.name}` (short trainings, best "
                    "validation Dice per trial, best first):", "",
                    path.read_text().strip(), "")
    else:
        rep.add(f"No search results found (`{args.runs.name}/search_*/results.md`). "
                "`python -m train search --model unet --lrs 1e-3 2e-3 4e-3 --weight-decays "
                "1e-4 1e-5 --epochs 3 --out runs/search_unet` writes one.", "")
    rep.add("### 4.2 Learning curves", "")
    curves, rows = {}, []
    for spec in specs:
        arch = spec.arch
        chain = run_chain(run_roots(args), spec.arch, spec.folder)
        # Epochs of a fine-tuning chain follow each other; times add up epoch by
        # epoch (a resumed run restarts its own ``elapsed`` clock).
        epochs, offset, seconds, spent, events = [], 0, 0.0, 0.0, []
        for run in chain:
            events = read_events(run)
            spent += training_seconds(events)  # repeated epochs of a resume included
            part = epoch_events(events)
            for i, e in enumerate(part):
                took = num(e.get("seconds"))
                seconds += took if math.isfinite(took) else 0.0
                epochs.append({**e, "epoch": offset + e.get("epoch", i), "elapsed": seconds})
            if part:
                offset = epochs[-1]["epoch"] + 1
        if not epochs:
            rows.append([name(arch), *_weights_training(spec)])
            continue
        curves[arch] = epochs
        last = epoch_events(events)  # events of chain[-1], the run that made the weights
        best = dict(best_epoch(events) or {})
        if isinstance(best.get("epoch"), int):
            best["epoch"] += offset - len(last)
        # Only what came after the last (re)start says how the run stands.
        latest = since_last_start(events)
        end = next((e for e in reversed(latest) if e.get("event") == "end"), None)
        cfg = _run_config(chain[-1]) or {}
        rep.facts.setdefault("curves", {})[arch] = {
            "best": best.get("epoch"), "last": epochs[-1].get("epoch", len(epochs) - 1),
            "max_time": cfg.get("max_time"), "finished": end is not None}
        error = next((e for e in reversed(latest) if e.get("event") == "error"), None)
        status = "finished" if end else ("stopped: " + error.get("message", "")[:60]
                                         if error else "in progress when the report was made")
        if (_run_config(chain[0]) or {}).get("init_weights"):
            status += " (fine-tuned; earlier runs not kept, not counted here)"
        rows.append([name(arch), str(len(epochs)),
                     str(best["epoch"] + 1) if isinstance(best.get("epoch"), int) else "n/a",
                     fmt(best.get("val_dice"), 4),
                     fmt(spent / 3600 if spent else None, 2), status])
    rep.add("Epochs are counted from 1; *Best val Dice* is the 3D validation Dice (mean of RV, "
            "Myo, LV) logged during training, the checkpoint that was exported.", "",
            md_table(["Model", "Epochs run", "Best epoch", "Best val Dice", "Hours", "Status"],
                     rows), "")
    if curves:
        rep.figure(figures.learning_curves(curves, rep.figures / "learning_curves.png"),
                   "Learning curves of the main runs: Dice + CE loss (training solid, "
                   "validation dashed) and validation Dice per epoch.", "learning_curves")
    rep.facts["training"] = rows


def _mean_dice(case: dict) -> float:
    return num(case["metrics"]["dice"]["mean"])


def _best_model(acc: dict) -> str | None:
    models = acc.get("models", {}) if acc else {}
    if not models:
        return None
    return max(models, key=lambda a: num(models[a]["dice"]["mean"])
               if _finite(models[a]["dice"]["mean"]) else -1)


def section_results(rep: Report, args, specs: Sequence[ModelSpec], results: dict) -> None:
    from bench import figures
    from bench.agreement import INDICES, LOA_Z
    from lvseg_core.clinical import MYOCARDIAL_DENSITY_G_PER_ML

    rep.add(SECTIONS[4], "")
    acc = results.get("accuracy")
    if not acc or not acc.get("models"):
        reason = results.get("data_problem") or "no model has trained weights"
        rep.add(f"**No measurement was made:** {reason}. Train the models "
                "(`python -m train fit ...`) or point `--weights-dir` at their weights, then "
                "rerun `python -m bench.report`.", "")
        return
    models = acc["models"]
    clin = results.get("clinical") or {"models": {}}
    spd = (results.get("speed") or {}).get("models", {})
    patients = acc.get("patients", [])
    rep.add(f"Evaluated on {len(patients)} {acc.get('split')} patients "
            f"({next(iter(models.values()))['cases']} volumes, ED and ES, each scored in 3D "
            "with its voxel spacing) through `lvseg_core.workflows.evaluate_dataset`, the "
            "engine of `python -m lvseg_core evaluate`. Means over volumes; HD95 is the 95th "
            "percentile Hausdorff distance in mm; EF error is |predicted - manual| EF of the LV "
            "(and of the RV) in percentage points per patient.", "", "### 5.1 Comparison", "")
    rows = []
    for arch, res in models.items():
        ef = clin["models"].get(arch, {}).get("indices", {}).get("LV_EF_pct", {})
        sp = spd.get(arch, {})
        rows.append([f"**{name(arch)}**", res["cases"],
                     *[fmt(res["dice"][s]) for s in (*STRUCTURES, "mean")],
                     fmt(res["hd95_mm"]["mean"], 2), fmt(res["ef_abs_error"], 2),
                     fmt(res.get("rv_ef_abs_error"), 2),
                     f"{fmt(ef.get('bias'), 2)} [{fmt(ef.get('loa_low'), 1)}, "
                     f"{fmt(ef.get('loa_high'), 1)}]",
                     fmt(sp.get("seconds_per_volume"), 3), fmt(sp.get("speedup"), 2, "x")])
    rep.add(md_table(["Model", "Volumes", "Dice RV", "Dice Myo", "Dice LV", "Dice mean",
                      "HD95 mean (mm)", "LV EF error (pp)", "RV EF error (pp)",
                      "LV EF bias [95% LoA] (pp)",
                      "s / volume", "Speed-up vs slice loop"], rows), "")
    rep.facts["comparison"] = {"header": ["Model", "Dice RV", "Dice Myo", "Dice LV",
                                          "Dice mean", "HD95 (mm)", "LV EF err (pp)",
                                          "RV EF err (pp)", "s/volume"],
                               "rows": [[name(a), *[fmt(r["dice"][s]) for s in
                                                    (*STRUCTURES, "mean")],
                                         fmt(r["hd95_mm"]["mean"], 2),
                                         fmt(r["ef_abs_error"], 2),
                                         fmt(r.get("rv_ef_abs_error"), 2),
                                         fmt(spd.get(a, {}).get("seconds_per_volume"), 3)]
                                        for a, r in models.items()]}
    rep.figure(figures.case_dice_boxes(models, rep.figures / "results_dice.png"),
               "Dice per validation volume, per structure and model.", "results_dice")
    rep.add("All metrics per structure (mean over volumes; precision/recall/F1 from voxel "
            "counts, F1 equals Dice for masks):", "")
    rows = []
    for arch, res in models.items():
        for metric, label in METRIC_NAMES.items():
            digits = 2 if metric == "hd95_mm" else 3
            rows.append([name(arch), label,
                         *[fmt(res[metric][s], digits) for s in (*STRUCTURES, "mean")]])
    rep.add(md_table(["Model", "Metric", "RV", "Myo", "LV", "mean"], rows), "")
    rep.add("### 5.2 By phase and by pathology group", "")
    for key, title in (("summary_by_phase", "Phase"), ("summary_by_group", "Group")):
        rows = []
        for arch, res in models.items():
            for part, summ in res.get(key, {}).items():
                rows.append([name(arch), part, summ["cases"],
                             *[fmt(summ["dice"][s]) for s in (*STRUCTURES, "mean")],
                             fmt(summ["hd95_mm"]["mean"], 2),
                             fmt(summ["precision"]["mean"]), fmt(summ["recall"]["mean"])])
        rep.add(md_table(["Model", title, "Volumes", "Dice RV", "Dice Myo", "Dice LV",
                          "Dice mean", "HD95 mean (mm)", "Precision", "Recall"], rows), "")
    rep.add("### 5.3 Clinical agreement", "")
    rows = []
    for arch, res in clin["models"].items():
        for key, stats in res["indices"].items():
            label, unit = INDICES[key]
            rows.append([name(arch), f"{label} ({unit})", stats["n"], fmt(stats["r"]),
                         fmt(stats["bias"], 2), fmt(stats["sd"], 2),
                         f"[{fmt(stats['loa_low'], 2)}, {fmt(stats['loa_high'], 2)}]",
                         fmt(stats["mean_abs"], 2), fmt(stats["mean_reference"], 1)])
    rep.add("Predicted against manual indices per patient (ED and ES frames; volumes by "
            f"slice summation, mass = ED myocardium x {MYOCARDIAL_DENSITY_G_PER_ML:g} g/mL). "
            "Bias is the mean of predicted - manual, the 95 % limits of agreement are "
            f"bias ± {LOA_Z:g} SD, r is Pearson's correlation (`bench.agreement`).", "",
            md_table(["Model", "Index", "Patients", "r", "Bias", "SD", "95% LoA",
                      "Mean |diff|", "Manual mean"], rows), "")
    from bench.clinical import bland_altman_figure, scatter_figure

    for arch in models:
        rep.figure(bland_altman_figure(acc, rep.figures / f"bland_altman_{arch}.png", arch),
                   f"Bland-Altman plots of {name(arch)}: LV EDV, ESV, EF and myocardial "
                   "mass; RV EDV, ESV and EF.", f"bland_altman_{arch}")
    rep.figure(scatter_figure(acc, rep.figures / "clinical_scatter.png"),
               "Predicted vs manual clinical indices (dashed: identity).", "clinical_scatter")
    section_speed(rep, results)
    section_robustness(rep, results)
    section_domain_shift(rep, args, specs)
    section_qc(rep, args, specs)
    section_examples(rep, args, specs, results)
    section_regional(rep, results)
    section_width(rep, args)


def section_speed(rep: Report, results: dict) -> None:
    from bench import figures

    rep.add("### 5.4 Speed", "")
    spd = results.get("speed")
    if not spd or not spd.get("models"):
        rep.add("Speed was not measured in this run (`--skip-speed`, or no model).", "")
        return
    env = spd.get("environment", {})
    vols = ", ".join(f"{v['name']} ({'x'.join(map(str, v['shape']))})"
                     for v in spd.get("volumes", []))
    rep.add(f"On {env.get('device')} ({env.get('cpu_count')} logical CPUs), "
            f"median of {spd.get('repeats')} runs after {spd.get('warmup')} warm-up, volumes "
            f"{vols}. *s / volume* is `Segmenter.segment` (preprocess, network, restore, "
            "post-process; file reading excluded). The baseline is what a user would write "
            "otherwise: the same network called slice by slice in a Python loop, no "
            "batching; *speed-up* = baseline time / LVSeg time in the same run. Peak memory "
            "is the process's peak resident set"
            + (" (one process per model)" if spd.get("isolated") else
               " (all models in one process: cumulative)") + "." + _load_text(spd), "")
    rows = []
    for arch, r in spd["models"].items():
        rows.append([name(arch), f"{r['parameters'] / 1e6:.2f} M", fmt(r["load_s"], 3),
                     fmt(r["first_inference_s"], 3), fmt(r["seconds_per_volume"], 3),
                     fmt(r["slices_per_second"], 1),
                     fmt(r.get("slice_loop_seconds_per_volume"), 3),
                     fmt(r.get("speedup"), 2, "x") if r.get("speedup") else
                     "n/a (3D, one pass)" if r.get("spatial_dims") == 3 else "n/a",
                     fmt(r["peak_rss_mb"], 0),
                     fmt(r["peak_rss_mb"] - r["rss_before_load_mb"], 0)
                     if r.get("isolated") and _finite(r.get("rss_before_load_mb")) else "-",
                     fmt(r.get("cuda_peak_mb"), 0) if r.get("cuda_peak_mb") else "-"])
    rep.add(md_table(["Model", "Parameters", "Cold load (s)", "First call (s)", "s / volume",
                      "Slices / s", "Slice loop s / volume", "Speed-up", "Peak RSS (MB)",
                      "Peak over imports (MB)", "GPU peak (MB)"], rows), "")
    slower = [a for a, r in spd["models"].items() if _finite(r.get("speedup"))
              and num(r["speedup"]) < 1]
    faster = [a for a, r in spd["models"].items() if _finite(r.get("speedup"))
              and num(r["speedup"]) >= 1]
    if slower:
        rep.add(f"On this machine the slice loop is *faster* than the batched pass for "
                f"{', '.join(name(a) for a in slower)} (speed-up below 1); likely, with few "
                "CPU cores a batch of slices does not use more parallelism and its larger "
                "activations leave the caches.", "")
    if faster:
        rep.add(f"Batching pays off for {', '.join(name(a) for a in faster)}.", "")
    rep.facts["slower_batched"] = slower
    rep.figure(figures.speed(spd["models"], rep.figures / "speed.png"),
               "Seconds per volume, LVSeg's batched inference vs the slice-by-slice loop.",
               "speed")
    section_backends(rep, spd)


def _load_text(spd: dict) -> str:
    """The machine's load average (1 min) before and after the timings, as a sentence."""
    before, after = spd.get("load_average_before"), spd.get("load_average_after")
    if not before or not after:
        return ""
    return (f" Load average (1 min) {before[0]:.1f} before and {after[0]:.1f} after the "
            "timings: other jobs shared the CPU, so absolute times are pessimistic; "
            "compare rows of one run.")


def section_backends(rep: Report, spd: dict) -> None:
    """The backends side by side (``bench.speed``'s ``backends``), the CPU ceiling,
    the cohort engines (``ray``) and their figure."""
    from bench import figures

    measured = {a: r["backends"] for a, r in spd["models"].items() if r.get("backends")}
    ray = spd.get("ray") or {}
    if measured:
        rep.add("**Backends side by side** (same volumes, same process, CPU): the slice loop, "
                "the torch model in float32 and in bfloat16 autocast, ONNX Runtime float32 "
                "and int8 (static QDQ, calibrated on training patients). *Ceiling* is what "
                "this CPU allows the network alone: the measured peak of a large matrix "
                "product in that precision over the network's FLOPs per slice; *= fp32* is "
                "the share of voxels labelled as torch float32 labels them; *Batch* is the "
                "number of slices per network call that ran fastest on this CPU, measured in "
                "the same run (torch: 1, 2, 4, 8 or the whole volume; ONNX: 1, 4 or 8).", "")
        for arch, b in measured.items():
            ceiling = b.get("ceiling", {})
            rep.add(f"{name(arch)}: {fmt(b.get('gflop_per_slice'), 2)} GFLOP per slice; "
                    f"matrix-product peak fp32 {fmt(ceiling.get('fp32_gflops'), 0)}, bf16 "
                    f"{fmt(ceiling.get('bf16_gflops'), 0)} GFLOP/s, int8 "
                    f"{fmt(ceiling.get('int8_gflops'), 0)} GOP/s.", "")
            rows = []
            for key, label in figures.VARIANTS.items():
                v = b["variants"].get(key)
                if v is None:
                    continue
                share = v.get("share_of_ceiling")
                rows.append([label, fmt(v["seconds_per_volume"], 3),
                             fmt(v["slices_per_second"], 1), fmt(v.get("batch_size"), 0)
                             if v.get("batch_size") else "1",
                             fmt(v.get("ceiling_slices_per_second"), 0),
                             f"{100 * share:.0f} %" if _finite(share) else "n/a",
                             fmt(v.get("voxels_equal_torch_fp32"), 4)])
            rep.add(md_table(["Variant", "s / volume", "Slices / s", "Batch",
                              "Ceiling slices / s", "Of ceiling", "= fp32"], rows), "")
    if ray.get("engines"):
        rep.add(f"**Cohort engines** (`predict --engine local|ray`, U-Net, "
                f"{ray['volumes']} volumes, default backend): wall seconds of the whole run, "
                "Ray start-up included; then the same command again with `--resume`.", "")
        rows = [[e_name, fmt(e["seconds"], 1), fmt(e["seconds_per_volume"], 2),
                 fmt(e.get("speedup_vs_local"), 2, "x"),
                 "yes" if e["masks_identical_to_local"] else
                 f"**no**: {fmt(100 * e.get('voxels_equal_to_local', 0.0), 3)} % of voxels equal",
                 f"{e['resume_rewrote']} ({fmt(e['resume_seconds'], 1)} s)"]
                for e_name, e in ray["engines"].items()]
        rep.add(md_table(["Engine", "Seconds", "s / volume", "vs local",
                          "Masks identical to local", "Resume rewrote"], rows), "")
        slower = [n for n, e in ray["engines"].items()
                  if e["engine"] == "ray" and num(e.get("speedup_vs_local")) < 1]
        if slower:
            rep.add(f"On {ray['volumes']} volumes {', '.join(slower)} took longer than the "
                    "local engine: the fixed cost of starting Ray and loading one model per "
                    "actor is not yet paid back by the parallel workers on this 2-core CPU.",
                    "")
    elif ray.get("skipped"):
        rep.add(f"Cohort engines not timed: {ray['skipped']}.", "")
    rep.figure(figures.speed_backends(spd["models"], ray, rep.figures / "speed_backends.png"),
               "Slices per second of each backend, and seconds per volume of the cohort "
               "engines.", "speed_backends")


def section_robustness(rep: Report, results: dict) -> None:
    from bench import figures

    rep.add("### 5.5 Robustness to acquisition differences", "")
    rob = results.get("robustness")
    if not rob or not rob.get("models"):
        rep.add("Robustness was not measured in this run (`--skip-robustness`, or no "
                "model).", "")
        return
    rep.add(f"A stand-in for other scanners until a second dataset is available: "
            f"{len(rob['volumes'])} validation volume{'s' if len(rob['volumes']) != 1 else ''} "
            f"({', '.join(rob['volumes'])}) "
            "perturbed with MONAI transforms, each at two strengths (`bench.robustness`): a "
            "smooth bias field, Gaussian noise, a gamma change, a lower in-plane resolution "
            "(down- then up-sampled), and a different voxel spacing (image and labels "
            "resampled, affine updated, so the model's preprocessing must cope). Mean Dice "
            "over RV, Myo, LV, and its change from the clean volumes:", "")
    first = next(iter(rob["models"].values()))
    keys = list(first["perturbed"])
    header = ["Condition", *[name(a) for a in rob["models"]]]
    rows = [["clean", *[fmt(r["clean"]["mean"]) for r in rob["models"].values()]]]
    for k in keys:
        label = first["perturbed"][k]["label"]
        cells = []
        for r in rob["models"].values():
            p = r["perturbed"].get(k)
            cells.append(f"{fmt(p['dice']['mean'])} ({fmt(p['delta']['mean'], 3)})"
                         if p else "n/a")
        rows.append([f"{label} ({first['perturbed'][k]['strength']})", *cells])
    rep.add(md_table(header, rows), "")
    rep.figure(figures.robustness(rob["models"], rep.figures / "robustness.png"),
               "Change of mean Dice under each simulated acquisition difference.",
               "robustness")


def stale_weights(measured: dict[str, dict], specs: Sequence[ModelSpec]) -> list[str]:
    """Models whose weights differ from those ``measured`` (``{arch: {"sha256": ...}}``)."""
    current = {s.arch: s.fingerprint().get("sha256") for s in specs if s.available}
    return [arch for arch, ident in measured.items()
            if arch in current and ident.get("sha256") != current[arch]]


def _stale_note(stale: Sequence[str], command: str) -> str:
    if not stale:
        return "Measured with the weights this report evaluates."
    return (f"**Measured with earlier weights of {', '.join(name(a) for a in stale)}**; "
            f"rerun `{command}` for the current ones.")


def section_domain_shift(rep: Report, args, specs: Sequence[ModelSpec]) -> None:
    from bench import domain_shift

    rep.add("### 5.6 Simulated other scanners (domain shift)", "")
    report = read_json(args.domain_shift_json)
    if not report or report.get("kind") != "domain_shift":
        rep.add(f"Not measured: no `python -m bench.domain_shift` result at "
                f"`{args.domain_shift_json}`.", "")
        return
    compare = read_json(args.domain_shift_compare) if args.domain_shift_compare else None
    if compare and compare.get("kind") != "domain_shift":
        compare = None
    command = f"python -m bench.domain_shift --json {args.domain_shift_json}"
    stale = stale_weights(report.get("weights", {}), specs)
    rep.add("Each validation volume rewritten as another scanner would write it, segmented "
            "by every model and by the ensemble of the three (mean class probabilities): "
            "inverted intensities, gamma, a saturating window, noise, a bias field, a "
            "coarser in-plane resolution, a smaller field of view (centred and with the "
            "heart 50 mm off centre) and thin stacks of 3 and 1 slices (`bench.domain_shift`)."
            + (f" Each model's earlier weights (`{shown_path(args.domain_shift_compare)}`) "
               "stand before the current ones." if compare else ""),
            _stale_note(stale, command), "",
            domain_shift.markdown(report, compare, ("before", "now")), "")
    clean = (report["results"].get(domain_shift.ENSEMBLE, {}).get("clean") or {}).get("dice")
    if clean and not stale:     # the README states only what the current weights do
        members = ", ".join(name(m) for m in report["results"] if m != domain_shift.ENSEMBLE)
        rep.facts["ensemble"] = (
            f"Ensemble of {members} (mean class probabilities, `--model ensemble`): mean "
            f"Dice {fmt(clean['mean'])} "
            f"on the same volumes (`bench.domain_shift`, section 5.6 of the report).")


def qc_stale(report: dict, specs: Sequence[ModelSpec]) -> list[str]:
    """Models whose weights changed since the ``bench.qc`` result ``report`` (an
    ensemble's result names its members' weights)."""
    ident = report.get("weights_id", {})
    return stale_weights(ident.get("members") or {report.get("model", ""): ident}, specs)


def default_qc_json(folder: Path = ROOT / "docs" / "qc") -> list[Path]:
    """The ``bench.qc`` results of section 5.7: ``qc_<model>.json`` of each architecture
    and of the three-model ensemble, then those of named ensembles
    (``qc_ensemble_unet_attention_unet.json``, :func:`bench.common.result_stem`)."""
    return ([folder / f"qc_{a}.json" for a in (*ARCHS, ENSEMBLE)]
            + sorted(folder.glob(f"qc_{ENSEMBLE}_*.json")))


def section_qc(rep: Report, args, specs: Sequence[ModelSpec]) -> None:
    from bench import qc

    rep.add("### 5.7 Quality control without ground truth", "")
    reports = [r for path in args.qc_json
               if (r := read_json(path)) and r.get("kind") == "qc"]
    if not reports:
        shown = ", ".join(f"`{p}`" for p in args.qc_json)
        rep.add(f"Not measured: no `python -m bench.qc` result at {shown}.", "")
        return
    first = reports[0]["summary"]
    rep.add("`lvseg_core.qc` rates every prediction `ok`, `check` or `fail` from the image, "
            "the anatomy of the result and the agreement with a flipped pass; each model "
            "with its own limits for agreement, entropy and removed share (calibrated on its "
            "good training predictions, `python -m bench.qc --calibrate --store`). "
            f"{first['clean']} {reports[0].get('split')} volumes, clean and as "
            f"{first['broken']} broken copies (`bench.qc`: inverted, severe noise, a "
            "photograph, a field of view without the heart, and every perturbation of "
            "`bench.robustness`). The robustness perturbations include scans a scanner "
            "could write and the model segments well (a mild bias field, gamma 1.5, another "
            "voxel size): QC should pass those, so the share of perturbed results with "
            "Dice >= 0.8 rated ok is reported beside the share of bad ones flagged.", "")
    rows = ["| model | limits | clean rated ok | destructive copies flagged | all copies "
            "flagged | perturbed, Dice < 0.8, flagged | perturbed, Dice >= 0.8, ok | ROC AUC |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    notes = []
    for report in reports:
        s, arch = report["summary"], report.get("model", "")
        stale = qc_stale(report, specs)
        rows.append(f"| {name(arch)}{' (earlier weights)' if stale else ''} | "
                    f"{report.get('qc_limits', 'default (bundled U-Net)')} | "
                    + " | ".join(qc.pct(s[k]) for k in (
                        "clean_ok_share", "destructive_flagged_share", "broken_flagged_share",
                        "perturbed_bad_flagged_share", "perturbed_good_ok_share"))
                    + f" | {fmt(s['auc_bad_dice'])} |")
        if stale:
            notes.append(_stale_note(stale, f"python -m bench.qc --models {arch}"))
    rep.add("\n".join(rows), "", *(notes or ["Measured with the weights this report "
                                             "evaluates."]), "")
    report = reports[0]
    rep.add(f"Per copy, {name(report.get('model', ''))}:", "", qc.markdown(report), "")
    s = report["summary"]
    if not qc_stale(report, specs):
        rep.facts["qc"] = (
            f"Quality control ({name(report.get('model', ''))}, {s['clean']} validation "
            f"volumes and {s['broken']} broken copies, `bench.qc`): "
            f"{s['clean_ok_share']:.0%} of clean volumes rated ok, "
            f"{s['destructive_flagged_share']:.0%} of the inverted, noisy, photograph and "
            f"heartless copies flagged, {s['broken_flagged_share']:.0%} of all broken copies, "
            f"ROC AUC {fmt(s['auc_bad_dice'])} for a result with mean Dice < "
            f"{report['bad_dice']:g}.")


def section_width(rep: Report, args) -> None:
    from bench import width

    rep.add("### 5.10 Network width: speed and accuracy", "")
    report = read_json(args.width_json)
    if not report or report.get("kind") != "width":
        rep.add(f"Not measured: no `python -m bench.width` result at `{args.width_json}`.", "")
        return
    load = report["load_average"]
    rep.add(f"Each width timed untrained on {len(report['volumes'])} validation volumes "
            f"(batched torch inference, {report['environment'].get('device', '')}, load "
            f"average {load['before'][0]:.1f} before and {load['after'][0]:.1f} after); "
            "trained weights, where there are any, scored on the validation patients "
            f"(`python -m bench.width`, `{shown_path(args.width_json)}`).", "",
            width.markdown(report), "")


def section_regional(rep: Report, results: dict) -> None:
    from bench.regional import table

    rep.add("### 5.9 Regional wall thickness by pathology group", "")
    reg = results.get("regional")
    if not reg or not reg.get("by_group"):
        rep.add("Regional wall thickness was not measured in this run.", "")
        return
    rep.add(f"AHA 16-segment wall thickness and systolic thickening "
            f"(`lvseg_core.regional`, `python -m bench.regional`) from the expert labels of "
            f"{len(reg['patients'])} patients: hypertrophic hearts (HCM) must stand out.", "")
    rep.add(table(reg), "")


# ---------------------------------------------------------------- example figures


def _case_index(data: Path) -> dict:
    from lvseg_core.data import find_cases

    return {c.name: c for c in find_cases(data, require_labels=True)}


def _load_case(case):
    from lvseg_core.io import load_label, load_nifti

    scan = load_nifti(case.image).require_3d()
    return scan, load_label(case.label, scan)


def _mask(results: dict, specs: Sequence[ModelSpec], arch: str, case, scan) -> np.ndarray:
    """The predicted mask saved by the accuracy run, or a new segmentation."""
    path = Path(results.get("masks", "")) / arch / f"{case.name}.npz"
    if path.is_file():
        with np.load(path) as data:
            mask = data["mask"]
        if mask.shape == scan.shape3d:
            return mask
    spec = next(s for s in specs if s.arch == arch)
    return spec.segmenter().segment(scan).mask


def pick_slices(result: dict, masks: dict, minimum: int = 5) -> list[tuple[str, int, str]]:
    """``(case, slice, reason)`` for the example figures: the worst volumes, RV at ES,
    the worst basal and apical slices, a typical and the best volume."""
    per_case = sorted(result["per_case"], key=_mean_dice)
    slices = result.get("per_slice", [])
    picks: list[tuple[str, int, str]] = []

    def add(case: str, k: int, reason: str) -> None:
        if all((case, k) != (c, s) for c, s, _ in picks):
            picks.append((case, k, reason))

    def most_errors(case: str) -> int | None:
        pred, gt = masks.get(case, (None, None))
        if pred is None:
            return None
        errors = [(int(((pred[..., k] != gt[..., k]) & ((pred[..., k] > 0) | (gt[..., k] > 0)))
                        .sum()), k) for k in range(gt.shape[2])]
        return max(errors)[1] if errors else None

    def middle(case: str) -> int | None:
        rows = [r for r in slices if r["case"] == case and r["position"] == "mid"]
        return rows[len(rows) // 2]["slice"] if rows else None

    for i, case in enumerate(per_case[:2]):
        k = most_errors(case["name"])
        if k is not None:
            add(case["name"], k, "worst volume" if i == 0 else "second-worst volume")
    es = [r for r in slices if r["phase"] == "ES" and _finite(r["dice"]["RV"])
          and r["position"] != "outside"]
    if es:
        r = min(es, key=lambda r: r["dice"]["RV"])
        add(r["case"], r["slice"], "worst RV slice at ES")
    for position in ("basal", "apical"):
        rows = [r for r in slices if r["position"] == position and _finite(r["dice"]["mean"])]
        if rows:
            r = min(rows, key=lambda r: r["dice"]["mean"])
            add(r["case"], r["slice"], f"worst {position} slice")
    if per_case:
        typical = per_case[len(per_case) // 2]
        k = middle(typical["name"])
        if k is not None:
            add(typical["name"], k, "typical volume (median Dice), mid slice")
        k = middle(per_case[-1]["name"])
        if k is not None:
            add(per_case[-1]["name"], k, "best volume, mid slice")
    for r in sorted((r for r in slices if _finite(r["dice"]["mean"])),
                    key=lambda r: r["dice"]["mean"]):
        if len(picks) >= minimum:
            break
        add(r["case"], r["slice"], f"low-Dice {r['position']} slice")
    return picks


def section_examples(rep: Report, args, specs: Sequence[ModelSpec], results: dict) -> None:
    from bench import figures

    acc = results["accuracy"]
    best = _best_model(acc)
    rep.add("### 5.8 Example segmentations", "")
    if best is None:
        rep.add("No model was evaluated.", "")
        return
    result = acc["models"][best]
    index = _case_index(args.data)
    loaded: dict[str, tuple] = {}
    masks: dict[str, tuple] = {}
    for case in result["per_case"]:
        source = index.get(case["name"])
        if source is None:
            continue
        scan, gt = _load_case(source)
        loaded[case["name"]] = (source, scan, gt)
        masks[case["name"]] = (_mask(results, specs, best, source, scan), gt)
    picks = pick_slices(result, masks, minimum=max(5, args.examples))
    rep.add(f"Real validation slices segmented by the model with the best mean Dice, "
            f"**{name(best)}**: image, expert labels, prediction and error map (amber: "
            "false positive, magenta: false negative). They include the worst volumes and "
            "slices, not only good ones.", "")
    per_slice = {(r["case"], r["slice"]): r for r in result.get("per_slice", [])}
    shown = []
    for i, (case_name, k, why) in enumerate(picks, start=1):
        source, scan, gt = loaded[case_name]
        pred = masks[case_name][0]
        row = per_slice.get((case_name, k))
        dice = ("; slice Dice " + ", ".join(f"{s} {fmt(row['dice'][s], 2)}" for s in STRUCTURES)
                if row else "")
        position = row["position"] if row else "?"
        title = (f"{name(best)}: {case_name} ({source.group}, {source.phase}), slice "
                 f"{k + 1}/{gt.shape[2]} ({position}) - {why}{dice}")
        path = figures.segmentation_panel(scan.array[..., k], gt[..., k], pred[..., k],
                                          scan.spacing, title, rep.figures / f"seg_{i:02d}.png",
                                          volume=scan.array, box=figures.heart_box(gt))
        rep.figure(path, title, f"seg_{i:02d}")
        rep.facts.setdefault("example_reasons", {})[f"seg_{i:02d}"] = why
        shown.append(path)
    rep.facts["examples"] = shown
    if len(acc["models"]) > 1 and picks:
        case_name, k, why = picks[0]
        source, scan, gt = loaded[case_name]
        preds = {a: _mask(results, specs, a, source, scan)[..., k] for a in acc["models"]}
        title = f"{case_name} ({source.group}, {source.phase}), slice {k + 1}: every model"
        rep.figure(figures.models_panel(scan.array[..., k], gt[..., k], preds, scan.spacing,
                                        title, rep.figures / "seg_models.png",
                                        volume=scan.array, box=figures.heart_box(gt)),
                   f"The {why} ({case_name}, slice {k + 1}) segmented by every model.",
                   "seg_models")


# ---------------------------------------------------------------- failure analysis


def section_failures(rep: Report, args, results: dict) -> None:
    from bench import figures
    from bench.accuracy import OUTSIDE, POSITIONS

    rep.add(SECTIONS[5], "")
    acc = results.get("accuracy")
    if not acc or not acc.get("models"):
        rep.add("No measurement: see section 5.", "")
        return
    models = acc["models"]
    rep.add("### 6.1 Slice position", "",
            "2D Dice of each labelled slice, grouped by its position in the heart (thirds of "
            "the labelled slices from base to apex); *outside* counts predictions on slices "
            "the expert left empty (their Dice is 0):", "")
    rows = []
    panels: dict[str, dict] = {s: {} for s in (*STRUCTURES, "mean")}
    for arch, res in models.items():
        for position in (*POSITIONS, OUTSIDE):
            entry = res.get("by_position", {}).get(position)
            if not entry:
                continue
            rows.append([name(arch), position, entry["slices"],
                         *[fmt(entry["dice"][s]) for s in (*STRUCTURES, "mean")]])
            for s in panels:
                panels[s].setdefault(arch, {})[position] = entry["dice"][s]
    rep.add(md_table(["Model", "Position", "Slices", "Dice RV", "Dice Myo", "Dice LV",
                      "Dice mean"], rows), "")
    rep.figure(figures.small_multiples({s: panels[s] for s in STRUCTURES}, list(POSITIONS),
                                       rep.figures / "failure_position.png", "slice Dice",
                                       "Dice by slice position"),
               "Slice Dice by position, base to apex.", "failure_position")
    rep.add("### 6.2 RV at end-systole", "")
    rows = []
    phase_panels: dict[str, dict] = {s: {} for s in STRUCTURES}
    for arch, res in models.items():
        phases = res.get("summary_by_phase", {})
        pos_es = res.get("by_position_phase", {}).get("ES", {})
        where = res.get("volume_error_by_slice", {}).get("ES", {}).get("RV", {})
        rows.append([name(arch), fmt(phases.get("ED", {}).get("dice", {}).get("RV")),
                     fmt(phases.get("ES", {}).get("dice", {}).get("RV")),
                     *[fmt(pos_es.get(p, {}).get("dice", {}).get("RV")) for p in POSITIONS],
                     fmt(phases.get("ES", {}).get("hd95_mm", {}).get("RV"), 2),
                     fmt(where.get("error_ml"), 1), fmt(where.get("unlabelled_ml"), 1),
                     fmt(res.get("rv_ef_abs_error"), 1)])
        for s in STRUCTURES:
            for phase, summ in phases.items():
                phase_panels[s].setdefault(arch, {})[phase] = summ["dice"][s]
    basal = (rep.facts.get("data") or {}).get("basal_rv_percent")
    basal_text = (f"; the experts drew an RV on the most basal labelled slice of "
                  f"{basal['ES']:.0f} % of the ES frames against {basal['ED']:.0f} % at ED, "
                  "section 2" if basal else "")
    rep.add("The RV is thin-walled and crescent-shaped, and at ES it is smallest, so each "
            "wrong voxel weighs most. The RV ESV error is predicted - manual volume per ES "
            "volume; the next column is the part of it on slices where the expert drew no RV "
            "(at ES typically the most basal slice, which lies above the valves once the base "
            f"has descended{basal_text}). An RV ESV too large lowers the RV EF (last column, "
            "mean |error| per patient); check the basal ES slice before reporting an RV EF:", "",
            md_table(["Model", "RV Dice ED", "RV Dice ES", "RV ES basal (slice)",
                      "RV ES mid (slice)", "RV ES apical (slice)", "RV HD95 ES (mm)",
                      "RV ESV error (mL)", "on slices without expert RV (mL)",
                      "RV EF error (pp)"], rows),
            "")
    cut = [(name(arch), res["rv_ef_without_basal_es_rv"]) for arch, res in models.items()
           if (res.get("rv_ef_without_basal_es_rv") or {}).get("patients")]
    if cut:
        rep.add("Taking the predicted RV off the most basal ES slice that holds predicted LV "
                "cavity (no ground truth used; `bench.accuracy.rv_ef_without_basal_es_rv`) "
                "shows how much of the RV EF error that slice makes: "
                + "; ".join(f"{n} {fmt(c['error'], 1)} -> {fmt(c['error_without'], 1)} points "
                            f"(bias {fmt(c['bias'], 1)} -> {fmt(c['bias_without'], 1)})"
                            for n, c in cut)
                + f" over {cut[0][1]['patients']} patients. The bias is that slice; the "
                "spread is not, and removing it blindly would also drop the RV the experts did "
                "draw there at ES. It is a measurement, not a step of the pipeline.", "")
    phases = sorted({p for v in phase_panels["RV"].values() for p in v})
    rep.figure(figures.small_multiples(phase_panels, phases, rep.figures / "failure_phase.png",
                                       "volume Dice", "Dice by phase"),
               "Volume Dice by cardiac phase.", "failure_phase")
    rep.add("### 6.3 Pathology groups", "")
    group_panels: dict[str, dict] = {s: {} for s in STRUCTURES}
    for arch, res in models.items():
        for group, summ in res.get("summary_by_group", {}).items():
            for s in STRUCTURES:
                group_panels[s].setdefault(arch, {})[group] = summ["dice"][s]
    groups = sorted({g for v in group_panels["RV"].values() for g in v})
    best_cases = models[_best_model(acc)]["per_case"]
    per_group: dict[str, set] = {}
    for case in best_cases:
        per_group.setdefault(case["group"] or "?", set()).add(case["patient"])
    sizes = sorted({len(v) for v in per_group.values()})
    size_text = (f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}")
    rep.add(f"Dice per group is in the table of section 5.2; each group mean rests on "
            f"{size_text} evaluated patient{'s' if sizes[-1] != 1 else ''}, so differences "
            "between groups are indicative only.", "")
    rep.figure(figures.small_multiples(group_panels, groups, rep.figures / "failure_group.png",
                                       "volume Dice", "Dice by pathology group"),
               "Volume Dice by pathology group.", "failure_group")
    best = _best_model(acc)
    rep.add("### 6.4 Worst volumes", "", f"The five volumes with the lowest mean Dice for "
            f"{name(best)}:", "")
    rows = []
    for case in sorted(models[best]["per_case"], key=_mean_dice)[:5]:
        m = case["metrics"]
        rows.append([case["name"], case["group"], case["phase"],
                     *[fmt(m["dice"][s]) for s in (*STRUCTURES, "mean")],
                     fmt(m["hd95_mm"]["mean"], 2)])
    rep.add(md_table(["Volume", "Group", "Phase", "Dice RV", "Dice Myo", "Dice LV",
                      "Dice mean", "HD95 mean (mm)"], rows), "")
    rep.facts["failures"] = failure_findings(acc)


def failure_findings(acc: dict) -> dict[str, Any]:
    """Measured facts behind the failure analysis and the next steps."""
    best = _best_model(acc)
    res = acc["models"][best]
    findings: dict[str, Any] = {"model": best}
    pos = res.get("by_position", {})
    mean = {p: num(pos.get(p, {}).get("dice", {}).get("mean")) for p in ("basal", "mid",
                                                                          "apical")}
    findings["position_mean"] = mean
    worst_cell = None
    for p, entry in pos.items():
        if p == "outside":
            continue
        for s in STRUCTURES:
            v = num(entry["dice"][s])
            if math.isfinite(v) and (worst_cell is None or v < worst_cell[2]):
                worst_cell = (p, s, v)
    findings["worst_position_structure"] = worst_cell
    phases = res.get("summary_by_phase", {})
    cells = [(ph, s, num(summ["dice"][s])) for ph, summ in phases.items() for s in STRUCTURES]
    cells = [c for c in cells if math.isfinite(c[2])]
    findings["worst_phase_structure"] = min(cells, key=lambda c: c[2]) if cells else None
    groups = res.get("summary_by_group", {})
    g = [(name_, num(summ["dice"]["mean"])) for name_, summ in groups.items()]
    g = [x for x in g if math.isfinite(x[1])]
    findings["worst_group"] = min(g, key=lambda x: x[1]) if g else None
    findings["outside_slices"] = pos.get("outside", {}).get("slices", 0)
    return findings


# ---------------------------------------------------------------- next steps


def section_next(rep: Report, results: dict) -> None:
    rep.add(SECTIONS[6], "")
    acc = results.get("accuracy")
    bullets = []
    if acc and acc.get("models"):
        f = rep.facts.get("failures") or failure_findings(acc)
        model = name(f["model"])
        mean = f["position_mean"]
        if all(math.isfinite(v) for v in mean.values()):
            ends = min(mean["basal"], mean["apical"])
            which = "basal" if mean["basal"] <= mean["apical"] else "apical"
            bullets.append(
                f"**{which.capitalize()} slices** score lowest for {model} (slice Dice "
                f"{fmt(mean[which])} vs {fmt(mean['mid'])} mid-ventricle, a gap of "
                f"{fmt(mean['mid'] - ends)}): give the 2D models neighbouring slices as extra "
                "channels (2.5D) and oversample base and apex in training; "
                + ("at the base, apply the usual rule for the basal slice (LV cavity "
                   "enclosed by myocardium) and check the RV against the atria."
                   if which == "basal" else
                   "at the apex the structures are a few voxels wide, so train at a finer "
                   "in-plane spacing or weight small structures more in the loss."))
        if f.get("worst_phase_structure"):
            ph, s, v = f["worst_phase_structure"]
            basal = (rep.facts.get("data") or {}).get("basal_rv_percent")
            bullets.append(
                f"The weakest structure/phase is **{s} at {ph}** (Dice {fmt(v)}): weight "
                f"{s} more in the loss (class-weighted Dice/CE or a boundary loss) and train "
                "with more ES frames from the full cine sequence."
                + (f" The experts left the RV out of the most basal labelled slice in "
                   f"{100 - basal['ES']:.0f} % of the ES frames against {100 - basal['ED']:.0f} "
                   "% at ED (section 2); a network that sees one frame is not told its phase, "
                   "so give it the phase or the ED segmentation as an extra input."
                   if basal and (s, ph) == ("RV", "ES") else ""))
        if f.get("worst_group"):
            gname, v = f["worst_group"]
            total = (rep.facts.get("data") or {}).get("patients")
            bullets.append(
                f"The hardest pathology group is **{gname}** (mean Dice {fmt(v)}), on few "
                "validation patients per group; cross-validation over all "
                + (f"{total} " if total else "") + "patients would make group comparisons "
                "reliable.")
        if f.get("outside_slices"):
            bullets.append(
                f"{f['outside_slices']} slices without expert labels received a prediction "
                f"({model}): a slice-level heart/no-heart check or 3D connectivity over the "
                "stack would remove them.")
        clin = results.get("clinical") or {}
        ef = clin.get("models", {}).get(f["model"], {}).get("indices", {}).get("LV_EF_pct")
        if ef and _finite(ef.get("bias")):
            bullets.append(
                f"LV EF agreement for {model}: bias {fmt(ef['bias'], 2)} pp, 95 % limits "
                f"[{fmt(ef['loa_low'], 1)}, {fmt(ef['loa_high'], 1)}] pp; compare these limits "
                "with the inter-observer limits of agreement published for ACDC before "
                "trusting single-patient EF values.")
    rob = results.get("robustness")
    if rob and rob.get("models"):
        worst = None
        for arch, res in rob["models"].items():
            for p in res["perturbed"].values():
                d = num(p["delta"]["mean"])
                if math.isfinite(d) and (worst is None or d < worst[2]):
                    worst = (arch, p["label"], d)
        if worst:
            bullets.append(
                f"The largest robustness loss is **{worst[1]}** for {name(worst[0])} "
                f"(mean Dice {fmt(worst[2], 3)}): widen that augmentation in "
                "`train/transforms.py`, and test on a second dataset with other vendors "
                "(e.g. M&Ms) instead of simulations.")
    slower = rep.facts.get("slower_batched")
    if slower:
        bullets.append(
            f"Batched inference was slower than a slice-by-slice loop for "
            f"{', '.join(name(a) for a in slower)} on this CPU: pick the Segmenter's "
            "`batch_size` per device (small on a CPU, large on a GPU) from "
            "`python -m bench.speed`.")
    for arch, c in (rep.facts.get("curves") or {}).items():
        if c.get("finished") and c["best"] is not None and c["best"] >= c["last"] - 1:
            bullets.append(
                f"{name(arch)} was still improving when its run ended (best validation Dice "
                f"at epoch {c['best'] + 1} of {c['last'] + 1}"
                + (f", wall-time limit {c['max_time']}" if c.get("max_time") else "")
                + "): train it longer, e.g. on a GPU (`--accelerator gpu`).")
    bullets.append("Ensemble the three models (average probabilities) and add test-time "
                   "flips; both are cheap at inference and target the hard slices.")
    rep.add(*[f"- {b}" for b in bullets], "")


def section_reproduce(rep: Report, args) -> None:
    rep.add(SECTIONS[7], "", "```bash",
            "python -m bench.report                      # this report, slides and README "
            "results",
            "python -m bench.accuracy --json bench/results/accuracy.json",
            "python -m bench.clinical --accuracy bench/results/accuracy.json --figures "
            "docs/figures",
            "python -m bench.speed --json bench/results/speed.json",
            "python -m bench.robustness --json bench/results/robustness.json",
            "python -m bench.bench_inference --random-init --volumes 3   # quick speed check",
            "```", "")


# ---------------------------------------------------------------- README


def readme_block(rep: Report, readme: Path, results: dict) -> str:
    lines = [README_START, ""]
    comparison = rep.facts.get("comparison")
    if comparison:
        acc = results["accuracy"]
        which = ("Validation patients of the standard split" if acc.get("split") == "validation"
                 else "All labelled patients")
        lines.append(f"{which} ({len(acc['patients'])} patients, "
                     f"{next(iter(acc['models'].values()))['cases']} volumes, scored in 3D), "
                     "from the last run of the report command:")
        lines += ["", md_table(comparison["header"], comparison["rows"]), ""]
        lines += [f"{rep.facts[k]}\n" for k in ("ensemble", "qc") if rep.facts.get(k)]
        reasons = rep.facts.get("example_reasons", {})
        typical = next((k for k, r in reasons.items() if r.startswith("typical")), "seg_01")
        fig = rep.facts["figures"].get(typical) or rep.facts["figures"].get("results_dice")
        if fig:
            rel = os.path.relpath(fig, readme.parent).replace(os.sep, "/")
            lines += [f"![Example segmentation]({rel})", ""]
    else:
        lines += ["No measurement yet (no trained weights or no data when the report was "
                  "last generated).", ""]
    report_rel = os.path.relpath(rep.out / "REPORT.md", readme.parent).replace(os.sep, "/")
    lines += [f"Full report with figures, clinical agreement, speed, robustness and failure "
              f"analysis: [{report_rel}]({report_rel}); slides: `"
              f"{os.path.relpath(rep.out / 'LVSeg.pptx', readme.parent)}`. Regenerate all "
              "of it with `python -m bench.report`.", "", README_END]
    return "\n".join(lines)


def update_readme(readme: Path, block: str) -> bool:
    """Replace the block between the markers; False (and nothing written) without them."""
    try:
        text = readme.read_text()
    except OSError:
        return False
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return False
    new = text[:start] + block + text[end + len(README_END):]
    if new != text:
        readme.write_text(new)
    return True


# ---------------------------------------------------------------- main


#: Marker of a part of the report that failed (tests look for it).
FAILED_PART = "**This part of the report could not be generated:**"


def guarded(rep: Report, section, *args) -> None:
    """Run one section; an unexpected error becomes a line in the report (and a
    traceback on stderr) instead of losing the whole report after a long run."""
    try:
        section(*args)
    except Exception as err:
        import traceback

        traceback.print_exc()
        rep.add("", f"{FAILED_PART} {reason(err)}", "")


def clean_figures(folder: Path) -> None:
    if not folder.is_dir():
        return
    for path in folder.glob("*.png"):
        if path.name.startswith(FIGURE_PREFIXES):
            path.unlink()


def build(args) -> Path:
    """Measure and write the report; returns the path of REPORT.md."""
    from bench import figures

    figures.DPI = 70 if args.quick else 110
    specs = resolve_models(args.models, args.weights_dir, args.runs)
    results = measure(args, specs)
    rep = Report(args.out)
    clean_figures(rep.figures)
    rep.figures.mkdir(parents=True, exist_ok=True)
    guarded(rep, section_header, rep, args, specs, results)
    guarded(rep, section_problem, rep)
    guarded(rep, section_data, rep, args, results)
    guarded(rep, section_method, rep, args, specs)
    guarded(rep, section_experiments, rep, args, specs)
    guarded(rep, section_results, rep, args, specs, results)
    guarded(rep, section_failures, rep, args, results)
    guarded(rep, section_next, rep, results)
    guarded(rep, section_reproduce, rep, args)
    path = args.out / "REPORT.md"
    path.write_text(rep.text())
    log(f"report: {path}")
    from bench import slides

    try:
        deck = slides.build_deck(rep, results, args, args.out / "LVSeg.pptx")
        log(f"slides: {deck}")
    except Exception as err:
        import traceback

        traceback.print_exc()
        log(f"slides not written: {reason(err)}")
    if args.readme is not None:
        if update_readme(args.readme, readme_block(rep, args.readme, results)):
            log(f"README results refreshed: {args.readme}")
        else:
            log(f"README not changed: no {README_START} ... {README_END} block in "
                f"{args.readme}")
    return path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.report",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_data(),
                        help="ACDC-layout folder (default: $LVSEG_DATA or ../shared/data/acdc)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs",
                        help="where REPORT.md, figures/ and LVSeg.pptx go (default: docs/)")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results",
                        help="measurement JSON (and predicted masks) folder "
                             "(default: bench/results/)")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse measurements in --results when their settings and "
                             "weights match, instead of measuring again")
    parser.add_argument("--models", nargs="+", choices=ARCHS, default=list(ARCHS))
    parser.add_argument("--weights-dir", type=Path, default=None, metavar="DIR",
                        help="weights in DIR/<architecture>/ (default: bundled weights, "
                             "then <runs>/<architecture>-main/model)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs",
                        help="training runs: configs, learning curves, LR test, search "
                             "(default: runs/)")
    parser.add_argument("--records", type=Path, default=ROOT / "docs" / "runs",
                        help="kept run records ('python -m train archive'), read when a run "
                             "is not in --runs (default: docs/runs/)")
    parser.add_argument("--split", choices=("validation", "all"), default="validation")
    parser.add_argument("--cases", type=positive_int, default=None, metavar="N",
                        help="evaluate at most N volumes (default: the whole split; "
                             "--quick: 4)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: few volumes, one timing run, one robustness "
                             "volume, everything in one process")
    parser.add_argument("--speed-cases", type=int, default=None, help="volumes timed (3)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per volume (3)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up runs (1)")
    parser.add_argument("--robustness-cases", type=int, default=None,
                        help="volumes perturbed (6)")
    parser.add_argument("--ray-volumes", type=int, default=None, metavar="N",
                        help="volumes run through the cohort engines, local and Ray with 1 "
                             "and 2 workers (40; --quick: 2; 0 skips them)")
    parser.add_argument("--speed-json", type=Path, default=None, metavar="PATH",
                        help="take the speed section from this 'python -m bench.speed "
                             "--json PATH' run instead of timing here")
    parser.add_argument("--domain-shift-json", type=Path,
                        default=ROOT / "docs" / "domain_shift" / "domain_shift.json",
                        metavar="PATH", help="the 'python -m bench.domain_shift' result of "
                        "section 5.6 (default: docs/domain_shift/domain_shift.json)")
    parser.add_argument("--domain-shift-compare", type=Path,
                        default=ROOT / "docs" / "domain_shift" / "domain_shift_old.json",
                        metavar="PATH", help="an earlier domain-shift result shown beside it "
                        "(default: docs/domain_shift/domain_shift_old.json)")
    parser.add_argument("--qc-json", type=Path, nargs="+", default=default_qc_json(),
                        metavar="PATH", help="the 'python -m bench.qc' results of section 5.7, "
                        "one per model (default: docs/qc/qc_<model>.json, "
                        "docs/qc/qc_ensemble.json and any docs/qc/qc_ensemble_<models>.json)")
    parser.add_argument("--width-json", type=Path, default=ROOT / "docs" / "width.json",
                        metavar="PATH", help="the 'python -m bench.width' result of section "
                        "5.10 (default: docs/width.json)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-robustness", action="store_true")
    parser.add_argument("--examples", type=int, default=6,
                        help="example segmentation figures (at least 5)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md",
                        help="README whose results block is refreshed (default: README.md)")
    parser.add_argument("--no-readme", action="store_true", help="leave the README alone")
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    quick = args.quick
    if args.cases is None and quick:
        args.cases = 4
    args.speed_cases = args.speed_cases or (1 if quick else 3)
    if args.ray_volumes is None:
        args.ray_volumes = 2 if quick else 40
    args.repeats = args.repeats or (1 if quick else 3)
    args.warmup = args.warmup if args.warmup is not None else (0 if quick else 1)
    args.robustness_cases = args.robustness_cases or (1 if quick else 6)
    args.isolate = not quick
    if args.no_readme:
        args.readme = None
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_torch(args.threads)
    try:
        build(args)
    except KeyboardInterrupt:
        log("error: interrupted")
        return 1
    except (LVSegError, OSError) as err:
        log(f"error: {' '.join(str(err).split())}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
