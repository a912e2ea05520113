"""Quality control: how well ``lvseg_core.qc`` separates good from bad results.

Measure (default): each validation volume is segmented clean and as broken
copies, and QC (with one flipped pass for agreement) rates each result:

=================  ==============================================================
copy               how it is made
=================  ==============================================================
inverted           intensities mirrored (``max + min - value``): dark blood
severe noise       Gaussian noise, SD 30 % of the p99.5 (``bench.robustness.perturb``)
photograph         ``skimage.data.camera()`` resized to the slice grid, on every slice
no heart           an in-plane corner of the volume that does not hold the heart
robustness         every perturbation of ``bench.robustness.PERTURBATIONS``
=================  ==============================================================

Reported: the share of clean volumes rated ``ok`` (target >= 90 %), the share
of broken copies flagged ``check`` or ``fail`` (target >= 80 %), per copy and
overall, and the ROC AUC of the QC score for a result whose mean Dice is below
0.8 (over every result with a ground truth on its grid: clean, inverted, noise
and the robustness perturbations; the photograph and the heartless crop have
none).

Calibrate (``--calibrate``): the signals of the 70 training patients (for
images and anatomy the expert labels and the model's predictions with mean
Dice >= 0.8, for agreement, entropy and removed share those good predictions
only, the expert EF per patient) and the limits
:func:`lvseg_core.qc.calibrated_limits` derives from them, as
``lvseg_core.qc.RULES`` uses them. With ``--store`` the limits of the
prediction signals (agreement, entropy, removed share: they differ from one
network to the next) are written into the weights folder's ``config.json``
(``qc_limits``, with the SHA-256 of the weights they were calibrated with),
where :func:`lvseg_core.qc.model_rules` finds them; measuring and rescoring
rate each model with its own limits. ``--models ensemble`` is the three
bundled models' mean probabilities, ``--models unet,attention_unet`` those
two's (as ``python -m lvseg_core predict --model`` takes them); an
ensemble's limits are stored in ``weights/ensemble_qc.json`` under its
members' weights, beside those of other ensembles
(:func:`lvseg_core.ensemble.ensemble_rules`), and its results are named
``..._ensemble.json`` or ``..._ensemble_unet_attention_unet.json``::

    python -m bench.qc --calibrate --models unet --store     # docs/qc/calibration_unet.json
    python -m bench.qc --calibrate --store                   # every model
    python -m bench.qc --calibrate --models ensemble --store # weights/ensemble_qc.json
    python -m bench.qc --calibrate --models unet,attention_unet --store   # the pair's entry
    python -m bench.qc --models unet,attention_unet \\
        --json docs/qc/qc_ensemble_unet_attention_unet.json  # report section 5.7 reads it
    python -m bench.qc --json bench/results/qc.json          # all validation volumes
    python -m bench.qc --cases 2                             # quick run
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from bench.common import (EnsembleSpec, add_common_options, data_problem, environment, fmt,
                          log, member_shas, pick_device, read_json, resolve_models,
                          result_stem, run_main, setup_torch, split_patients, write_json)
from bench.robustness import PERTURBATIONS, Perturbation, dice_scores, perturb
from lvseg_core.data import select_cases
from lvseg_core.errors import LVSegError
from lvseg_core import qc
from lvseg_core.qc import AGREEMENT_SIGNALS
from lvseg_core.scan import Scan

#: Where each model's calibration is kept (``calibration_<model>.json``).
CALIBRATIONS = Path("docs/qc")

#: Mean Dice below which a result counts as bad for the AUC.
BAD_DICE = 0.8

#: Noise of the "severe noise" copy (SD as a share of the p99.5).
SEVERE_NOISE = Perturbation("noise", "severe", 0.30, "noise SD 30%")

#: The broken copies that are not robustness perturbations.
BROKEN_KINDS: tuple[str, ...] = ("inverted", "severe_noise", "photograph", "no_heart")


# ---------------------------------------------------------------- broken copies


def _copy(scan: Scan, array: np.ndarray, suffix: str, affine: np.ndarray | None = None) -> Scan:
    return Scan(array.astype(np.float32), scan.affine.copy() if affine is None else affine,
                f"{scan.name}_{suffix}", scan.source, dict(scan.meta))


def inverted(scan: Scan) -> Scan:
    """Intensities mirrored within their range (bright blood becomes dark)."""
    a = scan.array
    return _copy(scan, float(a.max()) + float(a.min()) - a, "inverted")


def photograph(scan: Scan) -> Scan:
    """The scikit-image camera photograph, resized to the slice grid, in every slice,
    scaled to the scan's intensity range."""
    from skimage.data import camera
    from skimage.transform import resize

    x, y, z = scan.shape3d
    photo = resize(camera().astype(np.float32) / 255.0, (x, y), anti_aliasing=True)
    lo, hi = float(scan.array.min()), float(scan.array.max())
    return _copy(scan, np.repeat((lo + photo * (hi - lo))[..., None], z, axis=2), "photograph")


def heartless_crop(scan: Scan, labels: np.ndarray, margin_mm: float = 10.0) -> Scan | None:
    """The largest in-plane corner of the volume (all slices) that stays
    ``margin_mm`` away from every labelled voxel; None when no corner of at
    least 48 x 48 voxels fits. The affine keeps the voxel size."""
    sx, sy, _ = scan.spacing
    xs, ys = np.nonzero(labels.any(axis=2))
    if xs.size == 0:
        return None
    mx, my = int(math.ceil(margin_mm / sx)), int(math.ceil(margin_mm / sy))
    x0, x1 = max(0, xs.min() - mx), min(scan.shape3d[0], xs.max() + mx + 1)
    y0, y1 = max(0, ys.min() - my), min(scan.shape3d[1], ys.max() + my + 1)
    nx, ny = scan.shape3d[:2]
    windows = [(slice(0, x0), slice(0, ny)), (slice(x1, nx), slice(0, ny)),
               (slice(0, nx), slice(0, y0)), (slice(0, nx), slice(y1, ny))]
    best = max(windows, key=lambda w: (w[0].stop - w[0].start) * (w[1].stop - w[1].start))
    if min(best[0].stop - best[0].start, best[1].stop - best[1].start) < 48:
        return None
    affine = scan.affine.copy()
    affine[:3, 3] += affine[:3, :3] @ np.array([best[0].start, best[1].start, 0.0])
    return _copy(scan, scan.array[best[0], best[1], :], "no_heart", affine)


def broken_copies(scan: Scan, labels: np.ndarray, seed: int = 0
                  ) -> Iterator[tuple[str, str, Scan, np.ndarray | None]]:
    """``(kind, label, scan, labels on its grid or None)`` of every broken copy."""
    yield "inverted", "contrast inverted", inverted(scan), labels
    noisy, _ = perturb(scan, labels, SEVERE_NOISE, seed)
    yield "severe_noise", SEVERE_NOISE.label, noisy, labels
    yield "photograph", "photograph", photograph(scan), None
    crop = heartless_crop(scan, labels)
    if crop is not None:
        yield "no_heart", "field of view without the heart", crop, None
    for p in PERTURBATIONS:
        copy, copy_labels = perturb(scan, labels, p, seed)
        yield f"{p.kind}/{p.strength}", p.label, copy, copy_labels


# ---------------------------------------------------------------- one result


def rate(segmenter, scan: Scan, labels: np.ndarray | None) -> dict[str, Any]:
    """Segment ``scan``, run QC (one flipped pass) and score against ``labels``."""
    from lvseg_core.qc import check_segmentation

    seg = segmenter.segment(scan, probabilities=True)
    result = check_segmentation(scan, seg, segmenter)
    row: dict[str, Any] = {"status": result.status, "reason": result.reason,
                           "score": result.score, "signals": result.signals}
    row["dice"] = dice_scores(seg.mask, labels) if labels is not None else None
    return row


def roc_auc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Area under the ROC curve of ``scores`` for ``positive`` (rank-based,
    ties counted half; None, as JSON writes an infinite score, ranks highest);
    NaN without both classes."""
    from scipy.stats import rankdata

    s = np.asarray([math.inf if x is None else x for x in scores], np.float64)
    pos = np.asarray(positive, bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# ---------------------------------------------------------------- measure


def measure(data: Path, spec, split: str = "validation", cases: int | None = None,
            device: str = "auto") -> dict:
    """QC of clean and broken copies of the ``split`` volumes; the JSON-ready report."""
    from tqdm import tqdm

    from lvseg_core.io import load_label, load_nifti

    problem = data_problem(data)
    if problem:
        raise LVSegError(problem)
    frames = select_cases(data, patients=split_patients(data, split, cases))
    frames = frames[:cases] if cases else frames
    segmenter = spec.segmenter(pick_device(device))
    rows: list[dict] = []
    copies = 2 + len(BROKEN_KINDS) + len(PERTURBATIONS) - 1
    with tqdm(total=len(frames) * copies, desc="qc", unit="result") as bar:
        for index, case in enumerate(frames):
            scan = load_nifti(case.image).require_3d()
            scan.name = case.name
            gt = load_label(case.label, scan)
            items = [("clean", "clean", scan, gt), *broken_copies(scan, gt, 1000 + index)]
            for kind, label, image, labels in items:
                row = {"case": case.name, "kind": kind, "label": label}
                row.update(rate(segmenter, image, labels))
                rows.append(row)
                bar.set_postfix_str(f"{case.name} {kind}: {row['status']}", refresh=False)
                bar.update(1)
    return {"kind": "qc", "environment": environment(), "data": str(data), "split": split,
            "model": spec.arch, "weights_id": spec.fingerprint(), "bad_dice": BAD_DICE,
            "qc_limits": limits_label(segmenter.qc_rules),
            "volumes": [c.name for c in frames],
            "summary": summarise(rows, rules=segmenter.qc_rules), "rows": rows}


def _share(rows: list[dict], flagged: bool) -> float:
    if not rows:
        return float("nan")
    return float(np.mean([(r["status"] != "ok") == flagged for r in rows]))


def spec_rules(spec) -> tuple:
    """The QC rules of ``spec``'s weights: their own prediction-signal limits (an
    ensemble's: those stored for its members' weights), or the default."""
    from lvseg_core.ensemble import ensemble_rules
    from lvseg_core.models import read_config

    if isinstance(spec, EnsembleSpec):
        return ensemble_rules(spec.identity())[0]
    return qc.model_rules(read_config(spec.folder).get("qc_limits"),
                          f"{spec.folder}: config.json")


def limits_label(rules: Sequence | None) -> str:
    """Which limits ``rules`` are, for a report: a model's own or the default."""
    return "default (bundled U-Net)" if rules is None or rules is qc.RULES else "the model's own"


def rerate(row: dict, drop: Sequence[str] = (), rules: Sequence | None = None) -> dict:
    """``row`` rated again from its stored signals with ``rules`` (default
    :data:`lvseg_core.qc.RULES`; ``drop``: signals to leave out)."""

    rules = qc.RULES if rules is None else rules
    signals = {k: v for k, v in row["signals"].items() if k not in drop}
    result = qc.decide(qc.frame_issues(signals, rules), signals,
                       qc.frame_score(signals, rules))
    return {**row, "status": result.status, "reason": result.reason, "score": result.score}


def without_agreement(row: dict, rules: Sequence | None = None) -> dict:
    """``row`` re-rated from its signals as if QC had run without the flipped pass."""
    return rerate(row, AGREEMENT_SIGNALS, rules)


def summarise(rows: list[dict], variants: bool = True, rules: Sequence | None = None) -> dict:
    """Headline figures and one line per kind of copy; with ``variants``, the
    headline figures of QC without the flipped pass too (``no_flip``, rated
    with ``rules``: those the rows were rated with)."""
    clean = [r for r in rows if r["kind"] == "clean"]
    broken = [r for r in rows if r["kind"] != "clean"]
    destructive = [r for r in broken if r["kind"] in BROKEN_KINDS]
    perturbed = [r for r in broken if r["kind"] not in BROKEN_KINDS]
    scored = [r for r in rows if r["dice"] is not None]
    bad = [r["dice"]["mean"] < BAD_DICE for r in scored]
    kinds: dict[str, dict] = {}
    for r in rows:
        entry = kinds.setdefault(r["kind"], {"label": r["label"], "results": 0, "ok": 0,
                                             "check": 0, "fail": 0, "dice": []})
        entry["results"] += 1
        entry[r["status"]] += 1
        if r["dice"] is not None:
            entry["dice"].append(r["dice"]["mean"])
    for entry in kinds.values():
        entry["flagged_share"] = (entry["check"] + entry["fail"]) / entry["results"]
        entry["mean_dice"] = float(np.mean(entry["dice"])) if entry["dice"] else None
        entry["bad_results"] = int(sum(d < BAD_DICE for d in entry["dice"]))
        del entry["dice"]
    return {
        "clean_ok_share": _share(clean, False),
        "broken_flagged_share": _share(broken, True),
        "destructive_flagged_share": _share(destructive, True),
        "perturbed_flagged_share": _share(perturbed, True),
        "perturbed_bad_flagged_share": _share(
            [r for r in perturbed if r["dice"]["mean"] < BAD_DICE], True),
        "perturbed_good_ok_share": _share(
            [r for r in perturbed if r["dice"]["mean"] >= BAD_DICE], False),
        "auc_bad_dice": roc_auc([r["score"] for r in scored], bad),
        "auc_results": len(scored), "auc_bad_results": int(sum(bad)),
        "clean": len(clean), "broken": len(broken), "by_kind": kinds,
    } | ({"no_flip": {k: v for k, v in summarise([without_agreement(r, rules) for r in rows],
                                                   False).items() if k != "by_kind"}}
         if variants else {})


def pct(value: float | None) -> str:
    """A share as a percentage; n/a when missing (JSON stores NaN as null)."""
    return "n/a" if value is None or math.isnan(value) else f"{fmt(100 * value, 1)} %"


def markdown(report: dict) -> str:
    """The summary as markdown: one row per kind of copy, then the headline figures."""
    s = report["summary"]
    lines = ["| copy | results | ok | check | fail | flagged | mean Dice | Dice < 0.8 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for entry in s["by_kind"].values():
        lines.append(f"| {entry['label']} | {entry['results']} | {entry['ok']} | "
                     f"{entry['check']} | {entry['fail']} | {entry['flagged_share']:.0%} | "
                     f"{fmt(entry['mean_dice'])} | {entry['bad_results']} |")

    lines += ["", "| measure | value | target |", "|---|---:|---:|",
              f"| clean volumes rated ok | {pct(s['clean_ok_share'])} | >= 90 % |",
              f"| broken copies flagged (all) | {pct(s['broken_flagged_share'])} | >= 80 % |",
              f"| - inverted, severe noise, photograph, no heart | "
              f"{pct(s['destructive_flagged_share'])} | |",
              f"| - robustness perturbations | {pct(s['perturbed_flagged_share'])} | |",
              f"| - perturbed results with Dice < 0.8 flagged | "
              f"{pct(s['perturbed_bad_flagged_share'])} | |",
              f"| - perturbed results with Dice >= 0.8 rated ok | "
              f"{pct(s['perturbed_good_ok_share'])} | |",
              f"| ROC AUC, QC score vs mean Dice < 0.8 ({s['auc_results']} results, "
              f"{s['auc_bad_results']} bad) | {fmt(s['auc_bad_dice'])} | |"]
    if "no_flip" in s:
        n = s["no_flip"]
        lines.append(f"| without the flipped pass: clean ok / broken flagged / AUC | "
                     f"{pct(n['clean_ok_share'])} / {pct(n['broken_flagged_share'])} / "
                     f"{fmt(n['auc_bad_dice'])} | |")
    return "\n".join(lines) + "\n"


def print_table(report: dict) -> None:
    """The summary as a markdown table, after a title line."""
    s = report["summary"]
    print(f"QC of {report['model']} on {s['clean']} {report['split']} volumes "
          f"({s['broken']} broken copies)\n")
    print(markdown(report))


# ---------------------------------------------------------------- calibrate


def calibrate(data: Path, spec, cases: int | None = None, device: str = "auto") -> dict:
    """Signals of the training patients and the limits they give (see module docstring)."""
    from tqdm import tqdm

    from lvseg_core.clinical import ejection_fraction
    from lvseg_core.data import VALIDATION_PATIENTS, find_cases
    from lvseg_core.io import load_label, load_nifti

    problem = data_problem(data)
    if problem:
        raise LVSegError(problem)
    labelled = find_cases(data, require_labels=True)
    patients = sorted({c.patient for c in labelled} - set(VALIDATION_PATIENTS))
    if cases:
        patients = patients[:: max(1, len(patients) // max(1, cases // 2))][: max(1, cases // 2)]
    frames = [c for c in labelled if c.patient in set(patients)]
    segmenter = spec.segmenter(pick_device(device))
    signals: dict[str, list[float]] = {}
    lv: dict[str, dict[str, float]] = {}
    rows = []
    for case in tqdm(frames, desc="calibrate", unit="volume"):
        scan = load_nifti(case.image).require_3d()
        gt = load_label(case.label, scan)
        truth = qc.frame_signals(scan.array, gt, scan.spacing)
        seg = segmenter.segment(scan, probabilities=True)
        predicted = qc.check_segmentation(scan, seg, segmenter).signals
        dice = dice_scores(seg.mask, gt)["mean"]
        good = [predicted] if dice >= BAD_DICE else []
        for key in truth:
            # What a heart looks like: the expert's outlines and the good predictions;
            # how sure this model is when it is right: its good predictions only.
            sources = good if key in qc.PREDICTION_SIGNALS else [truth, *good]
            signals.setdefault(key, []).extend(s[key] for s in sources)
        lv.setdefault(case.patient, {})[case.phase] = truth["LV_ml"]
        rows.append({"case": case.name, "dice": dice, "truth": truth, "predicted": predicted})
    signals["LV_EF_pct"] = [ejection_fraction(v["ED"], v["ES"]) for v in lv.values()
                            if "ED" in v and "ES" in v]
    if not any(row["dice"] >= BAD_DICE for row in rows):
        raise LVSegError(f"no training prediction of {spec.arch} reaches mean Dice {BAD_DICE}: "
                         "its QC limits cannot be calibrated")
    limits = {}
    for rule in qc.RULES:
        typical, check, fail = qc.calibrated_limits(signals[rule.signal], rule.high, rule.kind,
                                                    rule.min_span)
        limits[rule.key] = {"typical": typical, "check": check,
                            "fail": fail if rule.fail is not None else None}
    stats = {}
    for key, values in signals.items():
        v = np.asarray([x for x in values if math.isfinite(x)], np.float64)
        if v.size:
            stats[key] = {"n": int(v.size), "min": float(v.min()), "median": float(np.median(v)),
                          "max": float(v.max())}
    return {"kind": "qc_calibration", "environment": environment(), "data": str(data),
            "model": spec.arch, "weights_id": spec.fingerprint(), "patients": patients,
            "volumes": len(frames), "margins": list(qc.MARGINS), "limits": limits,
            "signals": stats, "rows": rows}


def store_limits(report: dict, folder: Path) -> Path:
    """Write the calibrated limits of the prediction signals of ``report`` (a
    :func:`calibrate` result) into ``folder/config.json`` as ``qc_limits``.

    Raises:
        LVSegError: ``folder`` holds other weights than those calibrated.
    """
    import json

    from lvseg_core.files import write_text
    from lvseg_core.hashing import WEIGHTS_FILE, read_sha256
    from lvseg_core.models import read_config

    sha = read_sha256(folder / WEIGHTS_FILE)
    if sha != report["weights_id"]["sha256"]:
        raise LVSegError(f"{folder}: the weights changed since they were calibrated")
    config = read_config(folder)
    config["qc_limits"] = prediction_limits(report, sha)
    return write_text(folder / "config.json", json.dumps(config, indent=2, sort_keys=True))


def prediction_limits(report: dict, sha: dict[str, str] | str) -> dict:
    """The limits of the prediction signals of a :func:`calibrate` ``report``, with
    what they were calibrated on (``sha``: the weights' SHA-256, or the members')."""
    limits = {rule.key: report["limits"][rule.key] for rule in qc.RULES
              if rule.signal in qc.PREDICTION_SIGNALS}
    limits["calibration"] = {"volumes": report["volumes"], "patients": len(report["patients"]),
                             "data": "ACDC training patients", "weights_sha256": sha,
                             "time_utc": report["environment"]["time_utc"]}
    qc.model_rules(limits, "the calibrated limits")   # refuse what the loader would refuse
    return limits


def store_ensemble_limits(report: dict, spec) -> Path:
    """Write the calibrated limits of an ensemble ``report`` into the ensembles'
    limits file, keyed by the members' weights (an entry for the same members
    is replaced, others are kept).

    Raises:
        LVSegError: a member's weights changed since they were calibrated.
    """
    import json

    from lvseg_core import settings
    from lvseg_core.ensemble import read_ensemble_limits
    from lvseg_core.files import write_text

    members = member_shas(report["weights_id"])
    if members != spec.identity():
        raise LVSegError("the weights of the ensemble's members changed since they were "
                         "calibrated")
    path = settings.ensemble_limits_file()
    entries = [e for e in read_ensemble_limits(path) if e["members"] != members]
    entries.append({"members": members, "qc_limits": prediction_limits(report, members)})
    return write_text(path, json.dumps({"ensembles": entries}, indent=2, sort_keys=True) + "\n")


def print_calibration(report: dict) -> None:
    print(f"Calibrated on {report['volumes']} training volumes ({len(report['patients'])} "
          f"patients, model {report['model']})\n")
    print("| rule | training min | median | max | check | fail |")
    print("|---|---:|---:|---:|---:|---:|")
    for key, lim in report["limits"].items():
        st = report["signals"][key.split(":")[0]]
        print(f"| {key} | {st['min']:.4g} | {st['median']:.4g} | {st['max']:.4g} | "
              f"{lim['check']:.4g} | {fmt(lim['fail'], 4) if lim['fail'] is not None else '-'} |")


# ---------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.qc",
                                     description=__doc__.split("\n\n")[0])
    add_common_options(parser, json_default=None, ensemble=True)
    parser.add_argument("--calibrate", action="store_true",
                        help="compute the limits on the training patients instead")
    parser.add_argument("--store", action="store_true",
                        help="with --calibrate: write the model's own limits of the "
                             "prediction signals into its weights folder's config.json "
                             "(an ensemble's: into weights/ensemble_qc.json)")
    parser.add_argument("--rescore", type=Path, default=None, metavar="JSON",
                        help="rate the stored signals of an earlier run again with the "
                             "current limits and summarise (no segmentation)")
    args = parser.parse_args(argv)
    if args.store and not args.calibrate:
        parser.error("--store needs --calibrate")
    return args


def _json_of(args, spec, several: bool) -> Path:
    """``--json``, or with several models ``<stem>_<model><suffix>`` beside it; by
    default ``docs/qc/calibration_<model>.json`` (calibrating) or
    ``bench/results/qc.json`` (measuring). ``<model>`` is :func:`result_stem`'s,
    e.g. ``ensemble_unet_attention_unet`` for a named ensemble."""
    stem = result_stem(spec.arch)
    if args.json is None and args.calibrate:
        return CALIBRATIONS / f"calibration_{stem}.json"
    path = Path(args.json or "bench/results/qc.json")
    return path.with_name(f"{path.stem}_{stem}{path.suffix}") if several else path


def _main(args) -> int:
    if args.rescore is not None:
        report = read_json(args.rescore)
        if not report or report.get("kind") != "qc":
            raise LVSegError(f"{args.rescore}: not a bench.qc result")
        spec = next(iter(resolve_models([report["model"]], args.weights_dir, args.runs)))
        rules = spec_rules(spec) if spec.available else None
        report["rows"] = [rerate(r, rules=rules) for r in report["rows"]]
        report["rescored"] = f"rated again from the signals of {args.rescore}"
        report["qc_limits"] = limits_label(rules)
        report["summary"] = summarise(report["rows"], rules=rules)
        write_json(report, args.json)
        print_table(report)
        return 0
    setup_torch(args.threads)
    specs = list(resolve_models(args.models, args.weights_dir, args.runs))
    missing = [s for s in specs if not s.available]
    if not specs or missing:
        raise LVSegError("; ".join(f"{s.arch}: {s.note}" for s in missing) or "no weights")
    for spec in specs:
        out = _json_of(args, spec, len(specs) > 1)
        if args.calibrate:
            report = calibrate(args.data, spec, args.cases, args.device)
            write_json(report, out)
            print_calibration(report)
            if args.store:
                where = (store_ensemble_limits(report, spec) if isinstance(spec, EnsembleSpec)
                         else store_limits(report, spec.folder))
                log(f"stored the QC limits of {spec.arch} in {where}")
        else:
            report = measure(args.data, spec, args.split, args.cases, args.device)
            write_json(report, out)
            print_table(report)
        log(f"wrote {out}")
    return 0


def main(argv=None) -> int:
    return run_main(_main, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
