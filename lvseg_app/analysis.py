"""The work behind the app's Segment and Compare pages.

One scan goes in (an upload or a sample patient of an ACDC-layout folder),
an :class:`Analysis` comes out: the segmentation, the metrics against the
ground truth when there is one, the volumes and clinical indices, and the
tables and files the page offers for download. Nothing here draws; the
figures are in :mod:`lvseg_app.viz`.
"""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from lvseg_core import settings
from lvseg_core.clinical import myocardial_mass
from lvseg_core.data import Case, case_key, ed_es_pairs, find_cases, is_acdc_folder
from lvseg_core.errors import LVSegError
from lvseg_core.io import load_label, load_nifti, save_mask
from lvseg_core.io.upload import safe_file_name
from lvseg_core.labels import STRUCTURES
from lvseg_core.pipeline import ScanResult, run_scan
from lvseg_core.registry import display_name
from lvseg_core.scan import Scan


#: Structure probabilities are kept (for the probability map, quantised to
#: uint8: 1 byte per value) up to this many values (3 structures x voxels).
MAX_PROBABILITY_VALUES = 120_000_000

#: Ways to open a sample patient.
SAMPLE_VIEWS: tuple[str, ...] = ("ED + ES", "ED", "ES")

#: Column titles of the metrics table.
METRIC_TITLES: dict[str, str] = {
    "dice": "Dice", "iou": "IoU", "precision": "Precision", "recall": "Recall", "f1": "F1",
    "hd95_mm": "HD95 (mm)", "assd_mm": "ASSD (mm)",
}

#: Row titles of the clinical indices table.
INDEX_TITLES: dict[str, str] = {
    "LV_EDV_ml": "LV end-diastolic volume (mL)",
    "LV_ESV_ml": "LV end-systolic volume (mL)",
    "LV_SV_ml": "LV stroke volume (mL)",
    "LV_EF_pct": "LV ejection fraction (%)",
    "RV_EDV_ml": "RV end-diastolic volume (mL)",
    "RV_ESV_ml": "RV end-systolic volume (mL)",
    "RV_SV_ml": "RV stroke volume (mL)",
    "RV_EF_pct": "RV ejection fraction (%)",
    "Myo_mass_g": "Myocardial mass at ED (g)",
    "Myo_mass_ES_g": "Myocardial mass at ES (g)",
}


# ---------------------------------------------------------------- samples


def default_samples_dir() -> Path | None:
    """The sample folder: ``$LVSEG_SAMPLES``, else ``$LVSEG_DATA``, else
    ``../shared/data/acdc`` beside the repository, if it is an ACDC-layout folder."""
    return next((c for c in settings.sample_dir_candidates() if is_acdc_folder(c)), None)


@dataclass(frozen=True)
class Sample:
    """One patient of a sample folder.

    Attributes:
        patient: folder name, e.g. ``"patient002"``.
        group: pathology group ("" when unknown).
        cases: its frames (see :class:`~lvseg_core.data.Case`).
    """

    patient: str
    group: str
    cases: tuple[Case, ...]

    @property
    def label(self) -> str:
        """``"patient002 · DCM"``."""
        return f"{self.patient} · {self.group}" if self.group else self.patient

    def case(self, phase: str) -> Case | None:
        """The frame of ``phase`` (``"ED"``/``"ES"``), or None."""
        return next((c for c in self.cases if c.phase == phase), None)


def list_samples(root: str | Path) -> list[Sample]:
    """The patients of an ACDC-layout folder, in name order."""
    by_patient: dict[str, list[Case]] = defaultdict(list)
    for case in find_cases(root):
        by_patient[case.patient].append(case)
    return [Sample(p, cases[0].group, tuple(cases)) for p, cases in sorted(by_patient.items())]


def _with_meta(scan: Scan, case: Case) -> Scan:
    scan.name = case.name
    scan.meta.update({"patient": case.patient, "frame": case.frame, "phase": case.phase,
                      "group": case.group})
    return scan


def load_sample(sample: Sample, view: str = "ED + ES") -> tuple[Scan, np.ndarray | None]:
    """Open a sample patient.

    Args:
        sample: from :func:`list_samples`.
        view: ``"ED"`` or ``"ES"`` (one frame, 3D), or ``"ED + ES"``: both
            frames stacked as a 2-frame cine scan ``(x, y, z, 2)`` with
            ``meta["ED"] = 0`` and ``meta["ES"] = 1``, so that the clinical
            indices (EF, stroke volume) can be computed.

    Returns:
        The scan and its expert labels (same shape), or None without labels.
    """
    if view not in SAMPLE_VIEWS:
        raise LVSegError(f"unknown view {view!r}; use one of {', '.join(SAMPLE_VIEWS)}")
    if view in ("ED", "ES"):
        case = sample.case(view) or (sample.cases[0] if len(sample.cases) == 1 else None)
        if case is None:
            raise LVSegError(f"{sample.patient}: no {view} frame in Info.cfg")
        scan = _with_meta(load_nifti(case.image).require_3d(), case)
        truth = load_label(case.label, scan) if case.label is not None else None
        return scan, truth
    pair = ed_es_pairs(sample.cases, case_key).get(sample.patient)
    if pair is None:
        raise LVSegError(f"{sample.patient}: Info.cfg names no ED and ES frames; pick one frame")
    ed, es = pair
    ed_scan = _with_meta(load_nifti(ed.image).require_3d(), ed)
    es_scan = _with_meta(load_nifti(es.image).require_3d(), es)
    if ed_scan.shape3d != es_scan.shape3d or not np.allclose(ed_scan.affine, es_scan.affine):
        raise LVSegError(f"{sample.patient}: the ED and ES frames have different grids; "
                         "pick one frame")
    meta = dict(ed_scan.meta)
    meta.update({"ED": 0, "ES": 1, "frame_labels": [f"ED (frame {ed.frame})",
                                                    f"ES (frame {es.frame})"],
                 "phase": ""})
    scan = Scan(np.stack([ed_scan.array, es_scan.array], axis=-1), ed_scan.affine,
                name=f"{sample.patient}_ED_ES", source=str(ed.image.parent), meta=meta)
    truth = None
    if ed.label is not None and es.label is not None:
        truth = np.stack([load_label(ed.label, ed_scan), load_label(es.label, es_scan)], axis=-1)
    return scan, truth


# ---------------------------------------------------------------- analysis


@dataclass
class Analysis(ScanResult):
    """A :class:`~lvseg_core.pipeline.ScanResult` with what only the Segment page shows.

    Attributes:
        probabilities: uint8 probabilities of RV, Myo, LV (0..255 for 0..1),
            shape ``(3, x, y, z[, t])``, or None when not kept (the float
            probabilities of the segmentation are dropped once quantised).
        validation: the segmenter's ``members_validation_metrics`` (figures
            stored with the weights of each model), kept with the result it made.
    """

    probabilities: np.ndarray | None = None
    validation: list = field(default_factory=list)

    @property
    def model_name(self) -> str:
        return display_name(self.architecture)

    def frame_label(self, t: int) -> str:
        """``"ED (frame 1)"`` for a sample, ``"frame 3 (ES)"`` for a cine scan, ..."""
        labels = self.scan.meta.get("frame_labels")
        if labels and 0 <= t < len(labels):
            return str(labels[t])
        tags = [name for name, frame in (("ED", self.ed), ("ES", self.es)) if frame == t]
        return f"frame {t}" + (f" ({', '.join(tags)})" if tags else "")

    def probability_at(self, structure: str, t: int = 0) -> np.ndarray | None:
        """Probability ``(x, y, z)`` of ``structure`` in frame ``t``, or None."""
        probs = self.probabilities
        if probs is None:
            return None
        channel = list(STRUCTURES).index(structure)
        values = probs[channel, ..., t] if probs.ndim == 5 else probs[channel]
        return values.astype(np.float32) / 255.0


def analyse(scan: Scan, segmenter, truth: np.ndarray | None = None, truth_frame: int = 0,
            progress: Callable[[int, int], None] | None = None) -> Analysis:
    """Segment ``scan`` and compute everything the Segment page shows
    (:func:`lvseg_core.pipeline.run_scan`, probabilities kept as uint8).

    Args:
        scan: 3D or 4D scan.
        segmenter: a :class:`~lvseg_core.inference.Segmenter`.
        truth: expert labels: ``(x, y, z)`` for a 3D scan; for a cine scan
            either ``(x, y, z, t)`` or one frame ``(x, y, z)`` (frame ``truth_frame``).
        truth_frame: which frame a 3D ``truth`` of a cine scan belongs to.
        progress: ``progress(done, total)`` after each frame.

    Raises:
        LVSegError: a ground truth that does not match, or a failing step.
    """
    values = int(np.prod(scan.array.shape)) * len(STRUCTURES)
    keep_probabilities = values <= MAX_PROBABILITY_VALUES
    result = run_scan(scan, segmenter, truth, truth_frame, probabilities=keep_probabilities,
                      progress=progress)
    segmentation = result.segmentation
    quantised = None
    if segmentation.probabilities is not None:
        quantised = np.empty(segmentation.probabilities[1:].shape, np.uint8)
        np.multiply(segmentation.probabilities[1:], 255.0, out=quantised, casting="unsafe")
        segmentation.probabilities = None    # keep one copy only (1 byte per value)
    analysis = Analysis(**{f.name: getattr(result, f.name) for f in fields(ScanResult)},
                        probabilities=quantised,
                        validation=list(getattr(segmenter, "members_validation_metrics",
                                                [])))
    if not keep_probabilities:
        analysis.notes.append("probability maps are not kept for a series this large")
    if scan.meta.get("assumed_spacing"):
        analysis.notes.append("the picture has no pixel size: 1 mm assumed, so volumes "
                              "and distances are in pixel units")
    return analysis


# ---------------------------------------------------------------- tables and files


def metrics_table(metrics: dict[str, dict[str, float]]):
    """The metrics of one frame as a DataFrame: rows RV, Myo, LV, mean;
    columns Dice, IoU, Precision, Recall, F1, HD95 (mm), ASSD (mm)."""
    import pandas as pd

    rows = {key: {METRIC_TITLES[m]: metrics[m][key] for m in METRIC_TITLES}
            for key in (*STRUCTURES, "mean")}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "structure"
    return frame


def volumes_table(analysis: Analysis, t: int = 0):
    """Structure volumes (mL) and myocardial mass (g) of frame ``t``:
    a ``predicted`` column and, with ground truth, ``manual``."""
    import pandas as pd

    def column(volumes: dict[str, float]) -> dict[str, float]:
        out = {f"{s} volume (mL)": volumes[s] for s in STRUCTURES}
        out["Myocardial mass (g)"] = myocardial_mass(volumes["Myo"])
        return out

    data = {"predicted": column(analysis.volumes[t])}
    if t in analysis.manual_volumes:
        data["manual"] = column(analysis.manual_volumes[t])
    return pd.DataFrame(data)


def indices_table(analysis: Analysis):
    """Clinical indices (EDV, ESV, SV, EF, mass) of a cine scan: ``predicted``
    and, when ED and ES are labelled, ``manual`` and ``difference``; None for 3D."""
    import pandas as pd

    if analysis.indices is None:
        return None
    data = {"predicted": {INDEX_TITLES[k]: analysis.indices[k] for k in INDEX_TITLES}}
    if analysis.manual_indices is not None:
        data["manual"] = {INDEX_TITLES[k]: analysis.manual_indices[k] for k in INDEX_TITLES}
        data["difference"] = {INDEX_TITLES[k]: analysis.indices[k] - analysis.manual_indices[k]
                              for k in INDEX_TITLES}
    return pd.DataFrame(data)


def _cell(value) -> str:
    if isinstance(value, (float, np.floating)):
        return repr(round(float(value), 4)) if math.isfinite(value) else ""
    return "" if value is None else str(value)


def results_csv(analysis: Analysis) -> str:
    """Metrics and indices as CSV (long format: one value per line).

    Columns: ``scan, model, weights, frame, section, structure, quantity, value``;
    sections are ``metrics`` (per labelled frame), ``volumes`` (per frame),
    ``indices`` (cine scans: predicted and manual), ``qc`` (status and reason)
    and ``run`` (time, device).
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["scan", "model", "weights", "frame", "section", "structure",
                     "quantity", "value"])
    head = [analysis.scan.name, analysis.architecture, analysis.weights]
    for t, metrics in sorted(analysis.metrics.items()):
        for metric in METRIC_TITLES:
            for key in (*STRUCTURES, "mean"):
                writer.writerow([*head, t, "metrics", key, metric, _cell(metrics[metric][key])])
    for t, volumes in enumerate(analysis.volumes):
        for s in STRUCTURES:
            writer.writerow([*head, t, "volumes", s, "predicted_ml", _cell(volumes[s])])
            if t in analysis.manual_volumes:
                writer.writerow([*head, t, "volumes", s, "manual_ml",
                                 _cell(analysis.manual_volumes[t][s])])
    for source, indices in (("predicted", analysis.indices), ("manual", analysis.manual_indices)):
        if indices is None:
            continue
        for key in ("ED_frame", "ES_frame", *INDEX_TITLES):
            writer.writerow([*head, "", "indices", source, key, _cell(indices[key])])
    if analysis.qc is not None:
        writer.writerow([*head, "", "qc", "", "status", analysis.qc.status])
        writer.writerow([*head, "", "qc", "", "reason", analysis.qc.reason])
    writer.writerow([*head, "", "run", "", "seconds", _cell(analysis.segmentation.seconds)])
    writer.writerow([*head, "", "run", "", "device", analysis.segmentation.device])
    return buffer.getvalue()


def mask_file_name(analysis: Analysis) -> str:
    """``<scan name>_seg.nii.gz`` (sanitised)."""
    return safe_file_name(f"{analysis.scan.name}_seg.nii.gz", "mask_seg.nii.gz")


def mask_nifti_bytes(analysis: Analysis) -> bytes:
    """The predicted mask as a ``.nii.gz`` file with the scan's grid (shape and affine;
    the upload's NIfTI header is reused when it had one)."""
    with tempfile.TemporaryDirectory(prefix="lvseg-mask-") as tmp:
        path = save_mask(analysis.mask, analysis.scan, Path(tmp) / mask_file_name(analysis))
        return path.read_bytes()


# ---------------------------------------------------------------- comparisons


def make_subset(root: str | Path, patients: list[str], dest: str | Path) -> Path:
    """An ACDC-layout folder ``dest`` with a folder per patient of ``patients``
    holding links to that patient's files in ``root`` (so a dataset evaluation
    runs on a few patients without copying data; a linked patient *folder*
    leading outside ``dest`` would be skipped, see :func:`lvseg_core.data.find_cases`)."""
    root, dest = Path(root), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for patient in patients:
        source = root / patient
        if not (source / "Info.cfg").is_file():
            raise LVSegError(f"{source}: not an ACDC patient folder")
        (dest / patient).mkdir(exist_ok=True)
        for file in source.iterdir():
            link = dest / patient / file.name
            if file.is_file() and not link.exists():
                os.symlink(file.resolve(), link)
    return dest


def evaluation_frames(results: dict[str, dict]):
    """Tables of :func:`lvseg_core.workflows.evaluate_dataset` results, one per model.

    Args:
        results: model label -> evaluation result dict.

    Returns:
        ``(summary, cases)``: ``summary`` has one row per model (cases, Dice
        and HD95 per structure and mean, LV and RV EF errors, seconds per volume);
        ``cases`` is long format, one row per model, case and structure
        (``model, case, patient, group, phase, structure, dice, hd95_mm``;
        structure ``mean`` included).
    """
    import pandas as pd

    summary_rows, case_rows = [], []
    for model, result in results.items():
        row = {"model": model, "cases": result["cases"]}
        for s in (*STRUCTURES, "mean"):
            row[f"Dice {s}"] = result["dice"][s]
        for s in (*STRUCTURES, "mean"):
            row[f"HD95 {s} (mm)"] = result["hd95_mm"][s]
        row["LV EF error (pp)"] = result.get("ef_abs_error")
        row["RV EF error (pp)"] = result.get("rv_ef_abs_error")
        row["s / volume"] = result.get("seconds_per_volume")
        row["failed"] = len(result.get("failed", []))
        summary_rows.append(row)
        for case in result["per_case"]:
            for s in (*STRUCTURES, "mean"):
                case_rows.append({
                    "model": model, "case": case["name"], "patient": case["patient"],
                    "group": case["group"] or "?", "phase": case["phase"] or "?",
                    "structure": s, "dice": case["metrics"]["dice"][s],
                    "hd95_mm": case["metrics"]["hd95_mm"][s]})
    summary = pd.DataFrame(summary_rows).set_index("model") if summary_rows else pd.DataFrame()
    return summary, pd.DataFrame(case_rows)
