"""Accuracy: Dice, IoU, precision, recall, F1 and HD95 per structure, per model.

Each model is evaluated with :func:`lvseg_core.workflows.evaluate_dataset`
(the engine of ``python -m lvseg_core evaluate``) on the validation patients
(or all, ``--split all``). On top of its per-case records this adds:

- summaries of every metric split by phase (ED/ES) and by pathology group;
- per-slice Dice (2D) with the slice position in the heart, basal / mid /
  apical (thirds of the slices that hold expert labels; the base is the end
  with the larger LV, which is slice 0 in ACDC) or ``outside`` (a prediction
  on a slice without any expert label), summarised by position and phase;
- per phase and structure, where the volume error lies: on the slices the
  expert labelled, or on slices where the expert drew none of the structure;
- optionally the predicted masks (``--masks DIR``: ``DIR/<model>/<case>.npz``)
  for figures.

    python -m bench.accuracy --models unet --cases 4 --json bench/results/accuracy.json
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.common import (ModelSpec, add_common_options, data_problem, environment, finish,
                          log, pick_device, reason, resolve_models, run_main, setup_torch,
                          split_patients)
from lvseg_core.errors import LVSegError
from lvseg_core.labels import LABEL_OF, STRUCTURES, base_at_low_z, base_first

#: Slice positions, base to apex, and predictions on slices without labels.
POSITIONS: tuple[str, ...] = ("basal", "mid", "apical")
OUTSIDE = "outside"

#: Metrics summarised per phase and per group (all of evaluate_segmentation's).
SUMMARY_METRICS: tuple[str, ...] = ("dice", "iou", "precision", "recall", "f1", "hd95_mm",
                                    "assd_mm")


class Recorder:
    """A Segmenter stand-in that keeps every mask it returns (keyed by scan name).

    ``evaluate_dataset`` only calls ``segment`` and reads a few attributes,
    which are passed through to the wrapped segmenter.
    """

    def __init__(self, segmenter) -> None:
        self._segmenter = segmenter
        self.masks: dict[str, np.ndarray] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._segmenter, name)

    def segment(self, scan, *args, **kwargs):
        result = self._segmenter.segment(scan, *args, **kwargs)
        self.masks[scan.name] = result.mask
        return result


# ---------------------------------------------------------------- slices


def slice_positions(gt: np.ndarray) -> list[str | None]:
    """Position of each slice of a labelled volume ``(x, y, z)``.

    The slices holding any expert label are cut into thirds (basal, mid,
    apical); the base is the end whose LV (cavity + myocardium) is larger.
    Slices without labels get None.
    """
    gt = np.asarray(gt)
    labelled = [k for k in range(gt.shape[2]) if gt[..., k].any()]
    out: list[str | None] = [None] * gt.shape[2]
    n = len(labelled)
    if n == 0:
        return out
    base_first = base_at_low_z(gt, labelled)
    for i, k in enumerate(labelled):
        j = i if base_first else n - 1 - i
        out[k] = POSITIONS[min(2, 3 * j // n)]
    return out


def _dice2d(pred: np.ndarray, gt: np.ndarray, label: int) -> float:
    """Dice of one structure on one slice; NaN when it is in neither."""
    from lvseg_core.metrics import dice

    p, g = pred == label, gt == label
    if not p.any() and not g.any():
        return float("nan")
    return float(dice(p, g))


def slice_records(pred: np.ndarray, gt: np.ndarray, case: dict) -> list[dict]:
    """Per-slice Dice of each structure for the slices with labels or predictions,
    and (when ``case`` has ``spacing_mm``) each structure's predicted and manual
    volume on the slice, ``ml`` (mL)."""
    positions = slice_positions(gt)
    spacing = case.get("spacing_mm")
    voxel_ml = float(np.prod(spacing)) / 1000.0 if spacing else None
    rows = []
    for k in range(gt.shape[2]):
        p, g = pred[..., k], gt[..., k]
        if not g.any() and not p.any():
            continue
        scores = {s: _dice2d(p, g, LABEL_OF[s]) for s in STRUCTURES}
        kept = [v for v in scores.values() if not math.isnan(v)]
        scores["mean"] = float(np.mean(kept)) if kept else float("nan")
        row = {"case": case["name"], "patient": case["patient"], "phase": case["phase"],
               "group": case["group"], "slice": k, "slices": int(gt.shape[2]),
               "position": positions[k] or OUTSIDE, "dice": scores}
        if voxel_ml is not None:
            row["ml"] = {source: {s: int(np.count_nonzero(m == LABEL_OF[s])) * voxel_ml
                                  for s in STRUCTURES}
                         for source, m in (("predicted", p), ("manual", g))}
        rows.append(row)
    return rows


def volume_error_by_slice(rows: Sequence[dict], structure: str, phase: str) -> dict[str, Any]:
    """Where a structure's volume error lies, over the volumes of one phase.

    Means per volume (mL): ``error_ml`` (predicted - manual volume),
    ``unlabelled_ml`` (predicted volume on slices where the expert drew none
    of it, e.g. an RV on the most basal slice at ES) and ``labelled_ml`` (the
    error on the slices holding it); ``volumes`` counted. NaN without rows
    carrying ``ml``.
    """
    per_volume: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for row in rows:
        if row.get("phase") != phase or "ml" not in row:
            continue
        predicted, manual = row["ml"]["predicted"][structure], row["ml"]["manual"][structure]
        total = per_volume[row["case"]]
        total[0] += predicted - manual
        if manual == 0:
            total[1] += predicted
    if not per_volume:
        return {"volumes": 0, "error_ml": math.nan, "unlabelled_ml": math.nan,
                "labelled_ml": math.nan}
    error, unlabelled = (float(np.mean(v)) for v in zip(*per_volume.values()))
    return {"volumes": len(per_volume), "error_ml": error, "unlabelled_ml": unlabelled,
            "labelled_ml": error - unlabelled}


def rv_ef_without_basal_es_rv(rows: Sequence[dict]) -> dict[str, Any]:
    """How much of the RV EF error the most basal ES slice makes.

    Over the patients whose ED and ES slice records carry ``ml``: the mean
    absolute RV EF error and its bias (predicted - manual, EF points) as
    predicted, and again with the predicted RV taken off the most basal ES
    slice that holds predicted LV cavity (base: :func:`lvseg_core.labels.base_first`
    on the predicted LV areas), where experts often draw none (the right atrium
    lies there once the base has descended). Uses no ground truth to pick the
    slice; NaN and ``patients`` 0 when nothing qualifies.
    """
    volumes: dict[str, dict[str, list[dict]]] = defaultdict(dict)
    for row in rows:
        if "ml" in row and row.get("phase") in ("ED", "ES"):
            volumes[row["patient"]].setdefault(row["phase"], []).append(row)
    def rv_ml(phase_rows: list[dict], source: str) -> float:
        return sum(r["ml"][source]["RV"] for r in phase_rows)

    errors: list[tuple[float, float]] = []
    for phases in volumes.values():
        if set(phases) != {"ED", "ES"}:
            continue
        ed, es = (sorted(phases[p], key=lambda r: r["slice"]) for p in ("ED", "ES"))
        manual_ed, manual_es = rv_ml(ed, "manual"), rv_ml(es, "manual")
        pred_ed, pred_es = rv_ml(ed, "predicted"), rv_ml(es, "predicted")
        with_lv = [r["ml"]["predicted"] for r in es if r["ml"]["predicted"]["LV"] > 0]
        basal = 0.0
        if with_lv:
            base = base_first([ml["LV"] + ml["Myo"] for ml in with_lv])
            basal = (with_lv[0] if base else with_lv[-1])["RV"]
        if manual_ed <= 0 or pred_ed <= 0:
            continue
        manual = 100.0 * (manual_ed - manual_es) / manual_ed
        errors.append((100.0 * (pred_ed - pred_es) / pred_ed - manual,
                       100.0 * (pred_ed - pred_es + basal) / pred_ed - manual))
    if not errors:
        return {"patients": 0, **{k: math.nan for k in ("error", "bias", "error_without",
                                                          "bias_without")}}
    as_is, without = (np.asarray(v) for v in zip(*errors))
    return {"patients": len(errors), "error": float(np.abs(as_is).mean()),
            "bias": float(as_is.mean()), "error_without": float(np.abs(without).mean()),
            "bias_without": float(without.mean())}


def _nanmean(values: Sequence[float]) -> float:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(kept)) if kept else float("nan")


def position_summary(rows: Sequence[dict]) -> dict[str, dict]:
    """Mean slice Dice per structure (and slice count) for each position."""
    out = {}
    for position in (*POSITIONS, OUTSIDE):
        subset = [r for r in rows if r["position"] == position]
        if not subset:
            continue
        entry: dict[str, Any] = {"slices": len(subset)}
        entry["dice"] = {s: _nanmean([r["dice"][s] for r in subset])
                         for s in (*STRUCTURES, "mean")}
        out[position] = entry
    return out


def metric_summary(per_case: Sequence[dict]) -> dict:
    """All metrics (NaN-ignoring means, as evaluate_dataset's) over ``per_case``."""
    from lvseg_core.metrics import summarise

    summary = summarise([c["metrics"] for c in per_case])
    out: dict[str, Any] = {"cases": len(per_case)}
    out.update({m: summary[m] for m in SUMMARY_METRICS if m in summary})
    return out


def split_summary(per_case: Sequence[dict], key: str) -> dict[str, dict]:
    buckets: dict[str, list[dict]] = defaultdict(list)
    for case in per_case:
        buckets[case.get(key) or "?"].append(case)
    return {name: metric_summary(cases) for name, cases in sorted(buckets.items())}


# ---------------------------------------------------------------- run


def evaluate_model(spec: ModelSpec, data: Path, patients: Sequence[str], device=None,
                   masks_dir: Path | None = None, progress=None) -> dict:
    """evaluate_dataset for one model plus the summaries of this module."""
    from lvseg_core.data import find_cases
    from lvseg_core.io import load_label, load_nifti
    from lvseg_core.workflows import evaluate_dataset

    recorder = Recorder(spec.segmenter(device))
    result = evaluate_dataset(data, recorder, progress=progress, patients=patients)
    labels = {c.name: c for c in find_cases(data, require_labels=True)}
    per_slice = []
    for case in result["per_case"]:
        pred = recorder.masks.get(case["name"])
        if pred is None:
            continue
        source = labels[case["name"]]
        scan = load_nifti(source.image)
        gt = load_label(source.label, scan)
        per_slice.extend(slice_records(pred, gt, case))
        if masks_dir is not None:
            folder = Path(masks_dir) / spec.arch
            folder.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(folder / f"{case['name']}.npz", mask=pred.astype(np.uint8))
    result["weights_id"] = spec.fingerprint()
    result["weights_source"] = spec.source
    result["summary_by_phase"] = split_summary(result["per_case"], "phase")
    result["summary_by_group"] = split_summary(result["per_case"], "group")
    result["per_slice"] = per_slice
    result["by_position"] = position_summary(per_slice)
    phases = sorted({r["phase"] for r in per_slice if r["phase"]})
    result["by_position_phase"] = {
        phase: position_summary([r for r in per_slice if r["phase"] == phase])
        for phase in phases}
    result["volume_error_by_slice"] = {
        phase: {s: volume_error_by_slice(per_slice, s, phase) for s in STRUCTURES}
        for phase in phases}
    result["rv_ef_without_basal_es_rv"] = rv_ef_without_basal_es_rv(per_slice)
    return result


def run(data: Path, specs: Sequence[ModelSpec], split: str = "validation",
        cases: int | None = None, device: str = "auto", masks_dir: Path | None = None) -> dict:
    """Accuracy of every available model in ``specs``; the JSON-ready report."""
    problem = data_problem(data)
    if problem:
        raise LVSegError(problem)
    patients = split_patients(data, split, cases)
    report: dict[str, Any] = {"kind": "accuracy", "environment": environment(),
                              "data": str(data), "split": split, "patients": patients,
                              "models": {}, "skipped": {}}
    dev = pick_device(device)
    for spec in specs:
        if not spec.available:
            report["skipped"][spec.arch] = spec.note
            log(f"{spec.arch}: skipped, {spec.note}")
            continue
        log(f"{spec.arch}: evaluating {len(patients)} patients ({spec.source}) ...")
        try:
            report["models"][spec.arch] = evaluate_model(
                spec, data, patients, dev, masks_dir,
                progress=lambda done, total, case, a=spec.arch: log(f"{a}: {done}/{total} {case}"))
        except Exception as err:  # one model failing must not stop the others
            report["skipped"][spec.arch] = f"evaluation failed: {reason(err)}"
            log(f"{spec.arch}: {report['skipped'][spec.arch]}")
    return report


def print_summary(report: dict) -> None:
    from bench.common import fmt

    print(f"{'model':<16}{'cases':>6}" + "".join(f"{'Dice ' + s:>10}" for s in
                                               (*STRUCTURES, "mean"))
          + f"{'HD95 mean':>11}{'LV EF err':>11}{'RV EF err':>11}")
    for arch, res in report["models"].items():
        print(f"{arch:<16}{res['cases']:>6}"
              + "".join(f"{fmt(res['dice'][s]):>10}" for s in (*STRUCTURES, "mean"))
              + f"{fmt(res['hd95_mm']['mean'], 2):>11}{fmt(res['ef_abs_error'], 2):>11}"
              + f"{fmt(res.get('rv_ef_abs_error'), 2):>11}")
    for arch, note in report["skipped"].items():
        print(f"{arch:<16}skipped: {note}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy",
                                     description=__doc__.split("\n\n")[0])
    add_common_options(parser, json_default="bench/results/accuracy.json")
    parser.add_argument("--masks", type=Path, default=None, metavar="DIR",
                        help="also save the predicted masks as DIR/<model>/<case>.npz")
    return parser.parse_args(argv)


def _main(args) -> int:
    setup_torch(args.threads)
    specs = resolve_models(args.models, args.weights_dir, args.runs)
    report = run(args.data, specs, args.split, args.cases, args.device, args.masks)
    return finish(report, args.json, print_summary)


def main(argv=None) -> int:
    return run_main(_main, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
