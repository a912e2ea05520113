"""Domain shift: ACDC validation as other scanners would write it, per model and ensemble.

Each validation volume is rewritten as a simulated other scanner and
segmented by every model and by their ensemble (the mean of the members'
probabilities, computed from the same forward passes). 3D Dice per
structure, on the grid of the rewritten scan:

==================  ==============================================================
condition           how (MONAI transforms; ``bench.robustness`` where it has them)
==================  ==============================================================
clean               as stored
inverted            ``ScaleIntensity(minv=1, maxv=0)``: dark blood (other sequence)
gamma 0.5 / 2.0     ``AdjustContrast`` (``bench.robustness.perturb``)
window p90          ``ScaleIntensityRangePercentiles(0, 90, clip)``: saturated blood
noise SD 10%        ``RandGaussianNoise`` (``bench.robustness.perturb``)
bias field 0.3      ``RandBiasField`` (``bench.robustness.perturb``)
2.0 mm in-plane     ``Spacingd`` (``bench.robustness.resample_spacing``)
FOV 160 mm          ``SpatialCrop`` 160 x 160 mm around the heart
FOV shifted         the same window with the heart 50 mm off centre
3 slices / 1 slice  the middle 3 / 1 of the slices holding RV, Myo and LV
==================  ==============================================================

One run measures one set of weights (``--weights-dir``, default bundled);
``--compare OLD.json`` puts an earlier run (e.g. the previous weights) beside
it in the markdown table (``--markdown``).

    python -m bench.domain_shift --cases 4 --json bench/results/domain_shift.json \\
        --markdown bench/results/domain_shift.md
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from bench.common import (DISPLAY, add_common_options, data_problem, environment, fmt,
                          log, pick_device, read_json, resolve_models, run_main, setup_torch,
                          split_patients, write_json)
from bench.robustness import (Perturbation, _mean_scores, dice_scores, perturb,
                              resample_spacing)
from lvseg_core.data import select_cases
from lvseg_core.errors import LVSegError
from lvseg_core.labels import LABEL_OF, STRUCTURES
from lvseg_core.registry import ENSEMBLE  # noqa: F401  (the ensemble's key in the results)
from lvseg_core.scan import Scan

#: Field of view of the cropped conditions and the heart's offset in the shifted one (mm).
FOV_MM, SHIFT_MM = 160.0, 50.0


def _with(scan: Scan, array: np.ndarray, suffix: str, affine: np.ndarray | None = None) -> Scan:
    return Scan(np.asarray(array, np.float32), scan.affine.copy() if affine is None else affine,
                f"{scan.name}_{suffix}", scan.source, dict(scan.meta))


def _remap(transform) -> Callable[[Scan, np.ndarray], tuple[Scan, np.ndarray]]:
    """A condition from a MONAI intensity transform of the whole volume."""
    def apply(scan: Scan, labels: np.ndarray, seed: int = 0) -> tuple[Scan, np.ndarray]:
        out = np.asarray(transform()(scan.array[None]), np.float32)[0]
        return _with(scan, out, "remap"), labels
    return apply


def _inverted():
    from monai.transforms import ScaleIntensity

    return ScaleIntensity(minv=1.0, maxv=0.0)


def _window():
    from monai.transforms import ScaleIntensityRangePercentiles

    return ScaleIntensityRangePercentiles(lower=0, upper=90, b_min=0.0, b_max=1.0, clip=True)


def _robustness(kind: str, value: float):
    """A condition that is one of bench.robustness's perturbations."""
    def apply(scan: Scan, labels: np.ndarray, seed: int = 0) -> tuple[Scan, np.ndarray]:
        return perturb(scan, labels, Perturbation(kind, "domain", value, kind), seed)
    return apply


def _spacing(mm: float):
    def apply(scan: Scan, labels: np.ndarray, seed: int = 0) -> tuple[Scan, np.ndarray]:
        return resample_spacing(scan, labels, (mm, mm))
    return apply


def _field_of_view(shift_mm: float):
    """Crop a FOV_MM square in-plane, centred on the heart moved by ``shift_mm`` along x."""
    def apply(scan: Scan, labels: np.ndarray, seed: int = 0) -> tuple[Scan, np.ndarray]:
        from monai.transforms import SpatialCrop

        sx, sy = scan.spacing[:2]
        xs, ys, _ = np.nonzero(labels)
        size = [int(round(FOV_MM / sx)), int(round(FOV_MM / sy))]
        centre = [int(round(xs.mean() + shift_mm / sx)), int(round(ys.mean()))]
        crop = SpatialCrop(roi_center=(*centre, labels.shape[2] // 2),
                           roi_size=(*size, labels.shape[2]))
        image = np.asarray(crop(scan.array[None]), np.float32)[0]
        cut = np.asarray(crop(labels[None].astype(np.float32)))[0].astype(np.uint8)
        return _with(scan, image, f"fov{shift_mm:g}"), cut
    return apply


def thin_stack(scan: Scan, labels: np.ndarray, count: int) -> tuple[Scan, np.ndarray]:
    """The middle ``count`` slices of those holding every structure ``(x, y, z)``:
    a thin stack through both ventricles, as a one- or three-slice scan is planned,
    and its labels.

    Slices without an RV label (an apex, or a basal slice drawn with the LV
    only) are not the centre: there the RV Dice of one slice would be 0 for a
    single stray voxel and 1 for none. A label map without a slice holding
    all three falls back to the slices holding any label.
    """
    labelled = [k for k in range(labels.shape[2])
                if all((labels[..., k] == LABEL_OF[s]).any() for s in STRUCTURES)]
    if not labelled:
        labelled = [k for k in range(labels.shape[2]) if labels[..., k].any()]
    start = min(max(0, labelled[len(labelled) // 2] - count // 2), max(0, labels.shape[2] - count))
    keep = slice(start, start + count)
    return (_with(scan, scan.array[..., keep], f"{count}slices"),
            np.ascontiguousarray(labels[..., keep]))


def _thin(count: int):
    def apply(scan: Scan, labels: np.ndarray, seed: int = 0) -> tuple[Scan, np.ndarray]:
        return thin_stack(scan, labels, count)
    return apply


@dataclass(frozen=True)
class Condition:
    """One simulated scanner."""

    key: str
    label: str
    apply: Callable[..., tuple[Scan, np.ndarray]] | None   # None: the clean scan


#: The conditions, in report order.
CONDITIONS: tuple[Condition, ...] = (
    Condition("clean", "clean", None),
    Condition("inverted", "inverted intensities", _remap(_inverted)),
    Condition("gamma_0.5", "gamma 0.5", _robustness("gamma", 0.5)),
    Condition("gamma_2", "gamma 2.0", _robustness("gamma", 2.0)),
    Condition("window_p90", "window clipped at p90", _remap(_window)),
    Condition("noise_10", "noise SD 10%", _robustness("noise", 0.10)),
    Condition("bias_0.3", "bias field ±0.3", _robustness("bias_field", 0.3)),
    Condition("spacing_2mm", "2.0 mm in-plane", _spacing(2.0)),
    Condition("fov_160", "FOV 160 mm", _field_of_view(0.0)),
    Condition("fov_shifted", "FOV 160 mm, heart 50 mm off centre", _field_of_view(SHIFT_MM)),
    Condition("slices_3", "3-slice stack", _thin(3)),
    Condition("slices_1", "1-slice stack", _thin(1)),
)


def measure(segmenters: dict[str, Any], cases, conditions: Sequence[Condition] = CONDITIONS
            ) -> dict[str, dict[str, list[dict]]]:
    """Dice per (model or ensemble, condition, volume).

    Each model runs once per rewritten volume; the ensemble averages those
    probabilities (:func:`lvseg_core.ensemble.average_probabilities`).
    """
    from lvseg_core.ensemble import average_probabilities
    from lvseg_core.io import load_label, load_nifti

    names = list(segmenters) + ([ENSEMBLE] if len(segmenters) > 1 else [])
    rows: dict[str, dict[str, list[dict]]] = {n: {c.key: [] for c in conditions} for n in names}
    first = next(iter(segmenters.values()))
    for index, case in enumerate(cases):
        scan = load_nifti(case.image).require_3d()
        scan.name = case.name
        gt = load_label(case.label, scan)
        for cond in conditions:
            image, labels = (scan, gt) if cond.apply is None else cond.apply(scan, gt, 1000 + index)
            probs = {}
            for name, seg in segmenters.items():
                probs[name] = seg.predict_probabilities(image.array, image.spacing)
                rows[name][cond.key].append(dice_scores(seg.labels_of(probs[name]), labels))
            if ENSEMBLE in rows:
                mean = average_probabilities(list(probs.values()))
                rows[ENSEMBLE][cond.key].append(dice_scores(first.labels_of(mean), labels))
        log(f"{case.name}: " + ", ".join(
            f"{n} {rows[n]['clean'][-1]['mean']:.3f}" for n in names))
    return rows


def run(data: Path, weights_dir: Path | None, models: Sequence[str], split: str = "validation",
        cases: int | None = None, device: str = "auto", tta: bool = False) -> dict:
    """The JSON-ready report of one set of weights."""
    from lvseg_core.inference import Segmenter

    problem = data_problem(data)
    if problem:
        raise LVSegError(problem)
    specs = resolve_models(models, weights_dir, None)
    missing = {s.arch: s.note for s in specs if not s.available}
    if missing:
        raise LVSegError("; ".join(f"{a}: {n}" for a, n in missing.items()))
    patients = split_patients(data, split, cases)
    frames = select_cases(data, patients=patients)
    frames = frames[:cases] if cases else frames
    dev = pick_device(device)
    fingerprints = {s.arch: s.fingerprint() for s in specs}   # before the long measurement
    segmenters = {s.arch: Segmenter.from_source(s.arch, str(s.folder), dev, tta=tta)
                  for s in specs}
    rows = measure(segmenters, frames)
    results = {name: {cond.key: {"label": cond.label, "dice": _mean_scores(by[cond.key])}
                      for cond in CONDITIONS}
               for name, by in rows.items()}
    return {"kind": "domain_shift", "environment": environment(), "data": str(data),
            "split": split, "volumes": [c.name for c in frames], "tta": tta,
            "weights": fingerprints,
            "weights_dir": str(weights_dir) if weights_dir else "bundled",
            "conditions": [{"key": c.key, "label": c.label} for c in CONDITIONS],
            "results": results, "per_case": rows}


def restrict(report: dict, volumes: Sequence[str]) -> dict:
    """``report`` with its means recomputed over ``volumes`` (all of which it must hold),
    so that two runs are compared on the same volumes."""
    if list(report["volumes"]) == list(volumes):
        return report
    missing = [v for v in volumes if v not in report["volumes"]]
    if missing:
        raise LVSegError(f"the earlier report has no results for {', '.join(missing)}")
    index = [report["volumes"].index(v) for v in volumes]
    results = {name: {key: {**report["results"][name][key],
                            "dice": _mean_scores([rows[i] for i in index])}
                      for key, rows in by.items()}
               for name, by in report["per_case"].items()}
    return {**report, "volumes": list(volumes), "results": results,
            "per_case": {n: {k: [r[i] for i in index] for k, r in by.items()}
                         for n, by in report["per_case"].items()}}


def _name(model: str) -> str:
    return DISPLAY.get(model, "Ensemble" if model == ENSEMBLE else model)


def markdown(report: dict, compare: dict | None = None, labels=("before", "after")) -> str:
    """Mean Dice (and LV / Myo / RV) per condition and model; with ``compare``, the
    earlier report's figures first (``labels[0]``), then this one's."""
    models = list(report["results"])
    if compare:
        compare = restrict(compare, report["volumes"])
    reports = [compare, report] if compare else [report]
    head = ["Condition"]
    for m in models:
        head += [f"{_name(m)} {labels[0]}", f"{_name(m)} {labels[1]}"] if compare \
            else [_name(m)]
    lines = [f"Mean Dice (RV / Myo / LV) on {len(report['volumes'])} validation volumes "
             f"({', '.join(report['volumes'])}).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cond in report["conditions"]:
        cells = [cond["label"]]
        for m in models:
            for r in reports:
                d = (r.get("results", {}).get(m, {}).get(cond["key"]) or {}).get("dice")
                cells.append("n/a" if not d else
                             f"**{fmt(d['mean'])}** ({' / '.join(fmt(d[s], 2) for s in STRUCTURES)})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.domain_shift",
                                     description=__doc__.split("\n\n")[0])
    add_common_options(parser, json_default="bench/results/domain_shift.json")
    parser.add_argument("--compare", type=Path, default=None, metavar="JSON",
                        help="an earlier domain_shift JSON (e.g. the previous weights) to put "
                             "beside this run in the markdown table")
    parser.add_argument("--labels", nargs=2, default=("old", "new"), metavar=("EARLIER", "THIS"),
                        help="column labels with --compare (default: old new)")
    parser.add_argument("--markdown", type=Path, default=None, help="write the table here")
    parser.add_argument("--tta", action="store_true", help="test-time flips for every model")
    args = parser.parse_args(argv)
    return args


def _main(args) -> int:
    setup_torch(args.threads)
    compare = None
    if args.compare is not None:
        compare = read_json(args.compare)
        if compare is None or compare.get("kind") != "domain_shift":
            raise LVSegError(f"{args.compare}: not a domain_shift JSON report")
    report = run(args.data, args.weights_dir, args.models, args.split, args.cases,
                 args.device, args.tta)
    write_json(report, args.json)
    table = markdown(report, compare, tuple(args.labels))
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table)
    print(table)
    return 0


def main(argv=None) -> int:
    return run_main(_main, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
