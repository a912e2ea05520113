"""Clinical indices from label maps: volumes (mL), ejection fraction (%), mass (g).

Label maps follow the ACDC convention (0 background, 1 RV, 2 Myo, 3 LV) and
have shape ``(x, y, z)`` for one frame or ``(x, y, z, t)`` for a cine series.
Voxel spacing is in mm. Volumes are voxel counts times the voxel volume
(``prod(spacing)`` mm³ / 1000 = mL), i.e. slice summation without any
interpolation between slices, as in the ACDC challenge evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from .errors import LVSegError
from .labels import LABEL_OF, NUM_CLASSES, STRUCTURES

#: Myocardial tissue density in g/mL (the usual value in cardiac MRI).
MYOCARDIAL_DENSITY_G_PER_ML: float = 1.05


def _voxel_ml(spacing: Sequence[float], allow_time: bool = False) -> float:
    """Volume of one voxel in mL from a 3-value (x, y, z) spacing in mm.

    With ``allow_time``, a 4th value (the frame interval of a 4D header) is ignored.
    """
    values = [float(v) for v in np.atleast_1d(np.asarray(spacing, dtype=np.float64))]
    if allow_time and len(values) == 4:
        values = values[:3]
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise LVSegError(f"spacing must be 3 positive values (x, y, z) in mm, got {spacing!r}")
    return values[0] * values[1] * values[2] / 1000.0


def _label_counts(mask: np.ndarray) -> np.ndarray:
    """Voxel count per label value ``0..NUM_CLASSES-1``; rejects other values."""
    arr = np.asarray(mask)
    if arr.dtype.kind == "f":
        as_int = arr.astype(np.int64)
        if not np.array_equal(as_int, arr):
            raise LVSegError("label map has non-integer values")
        arr = as_int
    elif arr.dtype.kind not in "iub":
        raise LVSegError(f"label map has unsupported dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= NUM_CLASSES):
        raise LVSegError(
            f"label map has values outside 0..{NUM_CLASSES - 1}: min {arr.min()}, max {arr.max()}"
        )
    return np.bincount(arr.ravel().astype(np.intp), minlength=NUM_CLASSES)


def structure_volumes(mask: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """Volumes in mL of RV, Myo and LV.

    Args:
        mask: label map, shape ``(x, y, z)``.
        spacing: voxel size ``(sx, sy, sz)`` in mm.

    Returns:
        ``{"RV": mL, "Myo": mL, "LV": mL}`` (voxel count × prod(spacing) / 1000).
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise LVSegError(f"expected a 3D (x, y, z) label map, got shape {mask.shape}")
    voxel_ml = _voxel_ml(spacing)
    counts = _label_counts(mask)
    return {s: float(counts[LABEL_OF[s]] * voxel_ml) for s in STRUCTURES}


def stroke_volume(edv_ml: float, esv_ml: float) -> float:
    """Stroke volume in mL: ``EDV - ESV``."""
    return float(edv_ml) - float(esv_ml)


def ejection_fraction(edv_ml: float, esv_ml: float) -> float:
    """Ejection fraction in %: ``(EDV - ESV) / EDV * 100``.

    NaN if EDV is not positive (or either volume is NaN). Not clipped: ESV > EDV
    (e.g. swapped frames) gives a negative EF that flags the problem.
    """
    edv, esv = float(edv_ml), float(esv_ml)
    if not edv > 0 or math.isnan(esv):
        return float("nan")
    return (edv - esv) / edv * 100.0


def myocardial_mass(myo_volume_ml: float,
                    density: float = MYOCARDIAL_DENSITY_G_PER_ML) -> float:
    """Myocardial mass in g: volume (mL) × density (g/mL, default 1.05).

    By convention the LV mass is reported from the end-diastolic myocardium.
    """
    return float(myo_volume_ml) * float(density)


def find_ed_es(lv_volumes: Sequence[float]) -> tuple[int, int]:
    """End-diastolic and end-systolic frames from an LV volume curve (mL per frame).

    ED is the frame of largest LV volume, ES the smallest (first one on ties;
    NaN frames are skipped). Raises :class:`LVSegError` on an empty or all-NaN curve.
    """
    curve = np.asarray(lv_volumes, dtype=np.float64).ravel()
    if curve.size == 0:
        raise LVSegError("cannot find ED/ES frames: the LV volume curve is empty")
    if np.isnan(curve).all():
        raise LVSegError("cannot find ED/ES frames: the LV volume curve is all NaN")
    return int(np.nanargmax(curve)), int(np.nanargmin(curve))


def clinical_indices(ed_mask: np.ndarray, es_mask: np.ndarray,
                     spacing: Sequence[float]) -> dict[str, float]:
    """Ventricular volumes, stroke volumes, ejection fractions and myocardial mass.

    Args:
        ed_mask, es_mask: label maps at end-diastole and end-systole, ``(x, y, z)``.
        spacing: voxel size ``(sx, sy, sz)`` in mm.

    Returns:
        ``LV_EDV_ml``, ``LV_ESV_ml``, ``LV_SV_ml``, ``LV_EF_pct``, ``RV_EDV_ml``,
        ``RV_ESV_ml``, ``RV_SV_ml``, ``RV_EF_pct``, ``Myo_mass_g`` (from the ED
        myocardium, the convention) and ``Myo_mass_ES_g`` (from the ES myocardium).
    """
    return indices_from_volumes(structure_volumes(ed_mask, spacing),
                                structure_volumes(es_mask, spacing))


def indices_from_volumes(ed: dict[str, float], es: dict[str, float]) -> dict[str, float]:
    """Clinical indices from ED and ES structure volumes (mL, as from
    :func:`structure_volumes`); the keys of :func:`clinical_indices`."""
    out: dict[str, float] = {}
    for chamber in ("LV", "RV"):
        out[f"{chamber}_EDV_ml"] = ed[chamber]
        out[f"{chamber}_ESV_ml"] = es[chamber]
        out[f"{chamber}_SV_ml"] = stroke_volume(ed[chamber], es[chamber])
        out[f"{chamber}_EF_pct"] = ejection_fraction(ed[chamber], es[chamber])
    out["Myo_mass_g"] = myocardial_mass(ed["Myo"])
    out["Myo_mass_ES_g"] = myocardial_mass(es["Myo"])
    return out


def cine_indices(masks: np.ndarray, spacing: Sequence[float],
                 ed: int | None = None, es: int | None = None) -> dict:
    """Volume curves and clinical indices of a cine series.

    Args:
        masks: label maps, shape ``(x, y, z, t)``.
        spacing: voxel size ``(sx, sy, sz)`` in mm (a 4th, temporal value is ignored).
        ed, es: end-diastolic / end-systolic frame indices; each one not given
            is found from the LV volume curve with :func:`find_ed_es`.

    Returns:
        ``LV_volumes_ml``, ``RV_volumes_ml``, ``Myo_volumes_ml`` (lists of mL,
        one per frame), ``ED_frame``, ``ES_frame`` (ints), and every key of
        :func:`clinical_indices` for those two frames.
    """
    masks = np.asarray(masks)
    if masks.ndim != 4:
        raise LVSegError(f"expected 4D (x, y, z, t) label maps, got shape {masks.shape}")
    n_frames = masks.shape[3]
    if n_frames == 0:
        raise LVSegError("the cine series has no frames")
    voxel_ml = _voxel_ml(spacing, allow_time=True)
    spacing3 = [float(v) for v in np.asarray(spacing, dtype=np.float64).ravel()[:3]]

    counts = np.stack([_label_counts(masks[..., t]) for t in range(n_frames)])
    curves = {s: [float(c * voxel_ml) for c in counts[:, LABEL_OF[s]]] for s in STRUCTURES}

    auto_ed, auto_es = find_ed_es(curves["LV"])
    ed = auto_ed if ed is None else ed
    es = auto_es if es is None else es
    for name, frame in (("ED", ed), ("ES", es)):
        if not isinstance(frame, (int, np.integer)) or not 0 <= frame < n_frames:
            raise LVSegError(
                f"{name} frame must be an integer in 0..{n_frames - 1}, got {frame!r}"
            )

    out: dict = {
        "LV_volumes_ml": curves["LV"],
        "RV_volumes_ml": curves["RV"],
        "Myo_volumes_ml": curves["Myo"],
        "ED_frame": int(ed),
        "ES_frame": int(es),
    }
    out.update(clinical_indices(masks[..., ed], masks[..., es], spacing3))
    return out


def rv_ef_caution(figures: Sequence[Mapping[str, object]]) -> str | None:
    """What the weights' own evaluations say of the RV EF they give.

    Args:
        figures: the ``eval_*`` figures stored with the weights of each model
            (:attr:`lvseg_core.inference.Segmenter.members_validation_metrics`:
            one mapping for a model, one per member for an ensemble).

    Returns:
        One sentence for a page beside the indices, or None when no evaluation
        recorded the RV EF error (``eval_rv_ef_abs_error``, percentage points).
    """
    recorded = [f for f in figures if _finite_number(f.get("eval_rv_ef_abs_error"))]
    if not recorded:
        return None
    errors = sorted(float(f["eval_rv_ef_abs_error"]) for f in recorded)
    cases = recorded[0].get("eval_cases")
    split = str(recorded[0].get("eval_split") or "").strip()
    where = (f"{int(cases) // 2} ACDC {split + ' ' if split else ''}patients"  # ED + ES each
             if _finite_number(cases) and cases >= 2 else "its ACDC evaluation")
    low, high = f"{errors[0]:.1f}", f"{errors[-1]:.1f}"
    spread = low if low == high else f"{low}-{high}"
    who = ("this model's RV EF was" if len(figures) == 1 else
           "the RV EF of this ensemble's models was")
    return (f"RV EF: on {where} {who} off by {spread} points on average, mostly too low "
            "(an RV drawn on the most basal ES slice, where experts draw none); check that "
            "slice before using the RV EF.")


def _finite_number(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))
