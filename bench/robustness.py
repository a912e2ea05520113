"""Robustness: Dice under simulated acquisition differences, per model.

A stand-in for other scanners until a second dataset is available. Each
validation volume is perturbed with MONAI transforms, each at two strengths,
and segmented; Dice per structure is compared with the clean volume:

=============  ==========================================  =====================
perturbation   MONAI transform                             mild / strong
=============  ==========================================  =====================
bias field     ``RandBiasField`` (in-plane, degree 3)       coefficients ±0.15 / ±0.3
noise          ``RandGaussianNoise``                        SD 5 % / 10 % of the p99.5
gamma          ``AdjustContrast``                           gamma 1.5 / 2.5
low in-plane   ``RandSimulateLowResolution`` (per slice)    zoom 0.5 / 0.25
resolution     (down- then up-sampled, same grid)
spacing        ``Spacingd`` (image bilinear, labels         1.0 mm / 2.0 mm in-plane
               nearest; the affine follows)
=============  ==========================================  =====================

The spacing change resamples the image *and* its labels to the new grid and
updates the affine, so the model's own preprocessing has to cope with a new
voxel size; the score is computed on that new grid. Perturbations are
deterministic (a fixed seed per volume).

    python -m bench.robustness --models unet --cases 6 --json bench/results/robustness.json
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.common import (ModelSpec, add_common_options, data_problem, environment, finish,
                          fmt, log, pick_device, reason, resolve_models, run_main, setup_torch,
                          split_patients)
from lvseg_core.data import select_cases
from lvseg_core.errors import LVSegError
from lvseg_core.labels import LABEL_OF, STRUCTURES
from lvseg_core.scan import Scan


@dataclass(frozen=True)
class Perturbation:
    """One simulated acquisition difference at one strength."""

    kind: str
    strength: str          # "mild" or "strong"
    value: float
    label: str             # e.g. "gamma 2.5"


#: The perturbations, in report order (kind -> (mild, strong)).
PERTURBATIONS: tuple[Perturbation, ...] = (
    Perturbation("bias_field", "mild", 0.15, "bias field ±0.15"),
    Perturbation("bias_field", "strong", 0.3, "bias field ±0.3"),
    Perturbation("noise", "mild", 0.05, "noise SD 5%"),
    Perturbation("noise", "strong", 0.10, "noise SD 10%"),
    Perturbation("gamma", "mild", 1.5, "gamma 1.5"),
    Perturbation("gamma", "strong", 2.5, "gamma 2.5"),
    Perturbation("low_resolution", "mild", 0.5, "in-plane zoom 0.5"),
    Perturbation("low_resolution", "strong", 0.25, "in-plane zoom 0.25"),
    Perturbation("spacing", "mild", 1.0, "1.0 mm in-plane"),
    Perturbation("spacing", "strong", 2.0, "2.0 mm in-plane"),
)

KIND_NAMES = {"bias_field": "Bias field", "noise": "Gaussian noise",
              "gamma": "Gamma (contrast)", "low_resolution": "Lower in-plane resolution",
              "spacing": "Other voxel spacing"}


def _slices_first(volume: np.ndarray) -> np.ndarray:
    """``(x, y, z)`` -> ``(z, x, y)``: slices as channels, so 2D transforms act in-plane."""
    return np.ascontiguousarray(np.moveaxis(volume, 2, 0))


def _slices_last(stack) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(np.asarray(stack, dtype=np.float32), 0, 2))


def perturb(scan: Scan, labels: np.ndarray, p: Perturbation, seed: int = 0
            ) -> tuple[Scan, np.ndarray]:
    """The perturbed scan and the labels on its grid (unchanged except for ``spacing``)."""
    from monai.transforms import (AdjustContrast, RandBiasField, RandGaussianNoise,
                                  RandSimulateLowResolution)

    image = np.asarray(scan.array, dtype=np.float32)
    if p.kind == "bias_field":
        t = RandBiasField(degree=3, coeff_range=(-p.value, p.value), prob=1.0)
        t.set_random_state(seed)
        out = _slices_last(t(_slices_first(image)))       # one in-plane field, all slices
    elif p.kind == "noise":
        scale = float(np.percentile(image, 99.5)) or 1.0
        t = RandGaussianNoise(prob=1.0, mean=0.0, std=p.value * scale, sample_std=False)
        t.set_random_state(seed)
        out = np.asarray(t(image[None]), dtype=np.float32)[0]
    elif p.kind == "gamma":
        out = np.asarray(AdjustContrast(gamma=p.value)(image[None]), dtype=np.float32)[0]
    elif p.kind == "low_resolution":
        t = RandSimulateLowResolution(prob=1.0, zoom_range=(p.value, p.value),
                                      downsample_mode="area", upsample_mode="bilinear")
        t.set_random_state(seed)
        out = _slices_last(t(_slices_first(image)))
    elif p.kind == "spacing":
        return resample_spacing(scan, labels, (p.value, p.value))
    else:
        raise LVSegError(f"unknown perturbation {p.kind!r}")
    return Scan(out, scan.affine.copy(), f"{scan.name}_{p.kind}_{p.strength}", scan.source,
                dict(scan.meta)), labels


def resample_spacing(scan: Scan, labels: np.ndarray, in_plane_mm: tuple[float, float]
                     ) -> tuple[Scan, np.ndarray]:
    """Image (bilinear) and labels (nearest) resampled to a new in-plane spacing
    with MONAI ``Spacingd``; the returned scan carries the new affine."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Spacingd

    affine = torch.as_tensor(scan.affine, dtype=torch.float64)
    data = {"image": MetaTensor(torch.from_numpy(np.asarray(scan.array, np.float32)[None]),
                                affine=affine.clone()),
            "label": MetaTensor(torch.from_numpy(np.asarray(labels, np.float32)[None]),
                                affine=affine.clone())}
    pixdim = (float(in_plane_mm[0]), float(in_plane_mm[1]), float(scan.spacing[2]))
    out = Spacingd(("image", "label"), pixdim=pixdim, mode=("bilinear", "nearest"),
                   padding_mode="border")(data)
    image = out["image"]
    new_affine = np.asarray(image.affine, dtype=np.float64)
    resampled = np.asarray(image.array if hasattr(image, "array") else image)[0]
    new_labels = np.rint(np.asarray(out["label"].array)[0]).astype(np.uint8)
    name = f"{scan.name}_spacing_{in_plane_mm[0]:g}mm"
    return Scan(resampled.astype(np.float32), new_affine, name, scan.source,
                dict(scan.meta)), new_labels


def dice_scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """3D Dice per structure and their mean (lvseg_core.metrics.dice)."""
    from lvseg_core.metrics import dice

    scores = {s: float(dice(pred, gt, LABEL_OF[s])) for s in STRUCTURES}
    scores["mean"] = float(np.mean([scores[s] for s in STRUCTURES]))
    return scores


def _mean_scores(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in (*STRUCTURES, "mean")}


def evaluate_model(spec: ModelSpec, cases, device=None,
                   perturbations: Sequence[Perturbation] = PERTURBATIONS) -> dict:
    """Clean and perturbed Dice of one model on ``cases`` (labelled frames)."""
    from lvseg_core.io import load_label, load_nifti

    segmenter = spec.segmenter(device)
    clean_rows: list[dict] = []
    perturbed: dict[str, list[dict]] = {f"{p.kind}/{p.strength}": [] for p in perturbations}
    per_case = []
    for index, case in enumerate(cases):
        scan = load_nifti(case.image).require_3d()
        scan.name = case.name
        gt = load_label(case.label, scan)
        clean = dice_scores(segmenter.segment(scan).mask, gt)
        clean_rows.append(clean)
        entry: dict[str, Any] = {"name": case.name, "phase": case.phase, "group": case.group,
                                 "clean": clean}
        for p in perturbations:
            image, labels = perturb(scan, gt, p, seed=1000 + index)
            scores = dice_scores(segmenter.segment(image).mask, labels)
            perturbed[f"{p.kind}/{p.strength}"].append(scores)
            entry[f"{p.kind}/{p.strength}"] = scores
        per_case.append(entry)
        log(f"{spec.arch}: {case.name} clean Dice {clean['mean']:.3f}")
    clean_mean = _mean_scores(clean_rows)
    results = {}
    for p in perturbations:
        key = f"{p.kind}/{p.strength}"
        mean = _mean_scores(perturbed[key])
        results[key] = {"kind": p.kind, "strength": p.strength, "value": p.value,
                        "label": p.label, "dice": mean,
                        "delta": {k: mean[k] - clean_mean[k] for k in mean}}
    return {"weights_id": spec.fingerprint(), "weights_source": spec.source,
            "cases": len(clean_rows), "clean": clean_mean, "perturbed": results,
            "per_case": per_case}


def run(data: Path, specs: Sequence[ModelSpec], split: str = "validation", cases: int = 6,
        device: str = "auto") -> dict:
    """Robustness of every available model; the JSON-ready report."""
    problem = data_problem(data)
    if problem:
        raise LVSegError(problem)
    patients = split_patients(data, split, cases)
    frames = select_cases(data, patients=patients)
    frames = frames[:cases] if cases else frames
    report: dict[str, Any] = {
        "kind": "robustness", "environment": environment(), "data": str(data), "split": split,
        "volumes": [c.name for c in frames],
        "perturbations": [p.__dict__ for p in PERTURBATIONS], "models": {}, "skipped": {}}
    dev = pick_device(device)
    for spec in specs:
        if not spec.available:
            report["skipped"][spec.arch] = spec.note
            log(f"{spec.arch}: skipped, {spec.note}")
            continue
        try:
            report["models"][spec.arch] = evaluate_model(spec, frames, dev)
        except Exception as err:  # one model failing must not stop the others
            report["skipped"][spec.arch] = f"failed: {reason(err)}"
            log(f"{spec.arch}: {report['skipped'][spec.arch]}")
    return report


def print_table(report: dict) -> None:
    print(f"{'model':<16}{'condition':<24}" + "".join(f"{'Dice ' + s:>10}" for s in
                                                      (*STRUCTURES, "mean")) + f"{'Δ mean':>9}")
    for arch, res in report["models"].items():
        print(f"{arch:<16}{'clean':<24}" + "".join(f"{fmt(res['clean'][s]):>10}" for s in
                                                   (*STRUCTURES, "mean")))
        for r in res["perturbed"].values():
            print(f"{'':<16}{r['label']:<24}" + "".join(f"{fmt(r['dice'][s]):>10}" for s in
                                                        (*STRUCTURES, "mean"))
                  + f"{fmt(r['delta']['mean'], 3):>9}")
    for arch, note in report["skipped"].items():
        print(f"{arch:<16}skipped: {note}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.robustness",
                                     description=__doc__.split("\n\n")[0])
    add_common_options(parser, cases_default=6, json_default="bench/results/robustness.json")
    args = parser.parse_args(argv)
    return args


def _main(args) -> int:
    setup_torch(args.threads)
    specs = resolve_models(args.models, args.weights_dir, args.runs)
    report = run(args.data, specs, args.split, args.cases, args.device)
    return finish(report, args.json, print_table)


def main(argv=None) -> int:
    return run_main(_main, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
