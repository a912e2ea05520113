"""Dataset exploration for the app's Data page: what an ACDC-layout folder holds.

Everything reads files lazily: the overview needs the NIfTI headers only,
class balance and the end slices the (small) label files, histograms and the gallery the images
of the cases asked for.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from .data import Case, find_cases
from .errors import LVSegError, one_line
from .io import load_label, load_nifti
from .labels import LABEL_OF, STRUCTURES, base_at_low_z
from .render import auto_window, overlay_rgb

Progress = Callable[[int, int], None]


def overview(root: str | Path):
    """One row per frame of ``root``: patient, group, phase, frame, size and spacing.

    Columns: ``case, patient, group, phase, frame, x, y, slices, sx_mm, sy_mm,
    sz_mm, labelled`` (sizes from the headers; no image data read).

    Raises:
        LVSegError: not an ACDC-layout folder.
    """
    import pandas as pd

    rows = []
    for case in find_cases(root):
        try:
            header = nib.load(str(case.image)).header
            shape = header.get_data_shape()
            zooms = header.get_zooms()
        except Exception as err:    # an unreadable header: keep the row, flag it
            rows.append({"case": case.name, "patient": case.patient, "group": case.group,
                         "phase": case.phase, "frame": case.frame,
                         "labelled": case.label is not None,
                         "error": one_line(err)[:120]})
            continue
        rows.append({
            "case": case.name, "patient": case.patient, "group": case.group or "?",
            "phase": case.phase or "-", "frame": case.frame,
            "x": int(shape[0]), "y": int(shape[1]),
            "slices": int(shape[2]) if len(shape) > 2 else 1,
            "sx_mm": float(zooms[0]), "sy_mm": float(zooms[1]),
            "sz_mm": float(zooms[2]) if len(zooms) > 2 else 1.0,
            "labelled": case.label is not None,
        })
    return pd.DataFrame(rows)


def group_counts(frame) -> dict[str, int]:
    """Patients per pathology group, from :func:`overview`'s table."""
    patients = frame.drop_duplicates("patient")
    return dict(sorted(Counter(patients["group"].fillna("?")).items()))


def label_tables(cases: Sequence[Case], progress: Progress | None = None):
    """:func:`class_balance` and :func:`end_slices` from one read of each label
    file: ``(balance, ends)``; ``progress(done, total)`` after each case."""
    import pandas as pd

    balance: list[dict] = []
    ends: list[dict] = []
    for done, case in enumerate(cases, start=1):
        if case.label is not None:
            img = nib.load(str(case.label))
            labels = np.asarray(img.dataobj)
            balance += _balance_rows(case, labels, img.header.get_zooms()[:3])
            ends += _end_rows(case, labels)
        if progress is not None:
            progress(done, len(cases))
    return pd.DataFrame(balance), pd.DataFrame(ends)


def class_balance(cases: Sequence[Case], progress: Progress | None = None):
    """Voxels and volume per structure for each labelled frame.

    Returns:
        A DataFrame in long format with columns ``case, patient, group, phase,
        structure, voxels, ml, fraction`` (``fraction``: share of the volume's
        voxels; background included as ``background``).
    """
    return label_tables(cases, progress)[0]


def end_slices(cases: Sequence[Case], progress: Progress | None = None):
    """What the expert drew on the most basal and the most apical labelled slice.

    The base is the end of the labelled slices with the larger LV
    (:func:`lvseg_core.labels.base_at_low_z`). At ES the base of the heart has
    descended toward the apex, so its most basal slice may cut the LV and, beside
    it, the right atrium rather than the RV.

    Returns:
        A DataFrame with one row per labelled frame: ``case, patient, group,
        phase, slices`` (labelled slices) and, for each structure ``S``,
        ``basal_S`` and ``apical_S`` (True where the expert drew ``S`` there).
    """
    return label_tables(cases, progress)[1]


def _balance_rows(case: Case, labels: np.ndarray, zooms: Sequence[float]) -> list[dict]:
    voxel_ml = float(np.prod(zooms)) / 1000.0
    counts = np.bincount(labels.astype(np.int64).ravel(), minlength=4)[:4]
    total = int(labels.size)
    return [{"case": case.name, "patient": case.patient, "group": case.group or "?",
             "phase": case.phase or "-", "structure": name,
             "voxels": int(counts[value]), "ml": int(counts[value]) * voxel_ml,
             "fraction": int(counts[value]) / total}
            for name, value in (("background", 0), *((s, LABEL_OF[s]) for s in STRUCTURES))]


def _end_rows(case: Case, labels: np.ndarray) -> list[dict]:
    if labels.ndim != 3:
        return []
    labelled = [z for z in range(labels.shape[2]) if labels[:, :, z].any()]
    if not labelled:
        return []
    ends = labelled if base_at_low_z(labels, labelled) else labelled[::-1]
    row = {"case": case.name, "patient": case.patient, "group": case.group or "?",
           "phase": case.phase or "-", "slices": len(labelled)}
    for end, z in (("basal", ends[0]), ("apical", ends[-1])):
        for name in STRUCTURES:
            row[f"{end}_{name}"] = bool((labels[:, :, z] == LABEL_OF[name]).any())
    return [row]


def end_slice_shares(frame):
    """Share of frames (%) whose end slices hold each structure, by phase: rows
    ``ED``/``ES`` (and ``-`` when unknown), columns ``basal RV`` ... ``apical LV``,
    plus ``frames``; from :func:`end_slices`'s table."""
    import pandas as pd

    columns = [f"{end}_{name}" for end in ("basal", "apical") for name in STRUCTURES]
    if frame.empty:
        return pd.DataFrame(columns=[c.replace("_", " ") for c in columns] + ["frames"])
    shares = frame.groupby("phase")[columns].mean() * 100
    shares.columns = [c.replace("_", " ") for c in columns]
    shares["frames"] = frame.groupby("phase").size()
    return shares


def intensity_histograms(cases: Sequence[Case], bins: int = 60, by: str = "structure",
                         progress: Progress | None = None
                         ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Intensity histograms, pooled over ``cases``.

    Intensities are divided by each volume's 99.5th percentile, so that raw
    scanner units and [0, 1]-normalised copies are comparable (x axis 0..1.5).

    Args:
        cases: labelled frames.
        bins: number of bins.
        by: ``"structure"`` (background, RV, Myo, LV inside the expert labels)
            or ``"group"`` (whole volumes per pathology group).
        progress: ``progress(done, total)`` after each case.

    Returns:
        ``{name: (edges, density)}``.
    """
    if by not in ("structure", "group"):
        raise LVSegError(f"histograms by {by!r}: use 'structure' or 'group'")
    edges = np.linspace(0.0, 1.5, bins + 1)
    totals: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(bins))
    for done, case in enumerate(cases, start=1):
        scan = load_nifti(case.image)
        image = scan.array if not scan.is_cine else scan.array[..., 0]
        scale = float(np.percentile(image, 99.5)) or 1.0
        values = image / scale
        if by == "group":
            totals[case.group or "?"] += np.histogram(values, edges)[0]
        elif case.label is not None:
            labels = load_label(case.label, scan.frame(0) if scan.is_cine else scan)
            for name, value in (("background", 0), *((s, LABEL_OF[s]) for s in STRUCTURES)):
                totals[name] += np.histogram(values[labels == value], edges)[0]
        if progress is not None:
            progress(done, len(cases))
    width = edges[1] - edges[0]
    return {name: (edges, counts / max(counts.sum() * width, 1e-12))
            for name, counts in totals.items()}


def gallery(case: Case, max_slices: int = 12, opacity: float = 0.4
            ) -> list[tuple[str, np.ndarray]]:
    """Slices of one frame with its expert labels drawn over them.

    Returns:
        Up to ``max_slices`` ``(caption, rgb)`` pairs, evenly spread from base
        to apex; ``rgb`` is uint8 ``(y, x, 3)`` (ready for ``st.image``).
    """
    scan = load_nifti(case.image).require_3d()
    labels = load_label(case.label, scan) if case.label is not None else None
    window, level = auto_window(scan.array)
    depth = scan.shape3d[2]
    picks = np.unique(np.linspace(0, depth - 1, min(max_slices, depth)).round().astype(int))
    out = []
    for k in picks:
        rgb = overlay_rgb(scan.array[..., k], None if labels is None else labels[..., k],
                          window=window, level=level, opacity=opacity)
        out.append((f"{case.name} · slice {k + 1}/{depth}", rgb))
    return out
