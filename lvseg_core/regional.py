"""Regional wall thickness in the AHA 16-segment model (Cerqueira et al., Circulation 2002).

Label maps are ACDC ``(x, y, z)`` (1 RV, 2 Myo, 3 LV), short-axis slices along
``z``; spacing is in mm. Method, per slice holding LV myocardium:

- the LV centre is the centroid of the LV cavity (of cavity + myocardium when
  the cavity is empty);
- the RV insertion points are the two ends of the arc of myocardium that
  touches the RV cavity; the septal midline is the middle of that arc. Slices
  without RV contact take the circular mean of the other slices' midlines;
- the anterior side is told from the inferior one by the heart's chirality:
  the anterior wall is a positive (right-hand) rotation of the septal
  direction about the apex-to-base axis in the patient's (right-handed) frame. The voxel frame's handedness comes from the
  affine and the base is the end of the stack with the larger epicardial area;
- slices are split into basal, mid and apical thirds (``numpy.array_split``,
  base first); basal and mid slices have six 60-degree segments centred on the
  septal midline (anteroseptal and inferoseptal either side of it), apical
  slices four 90-degree segments;
- wall thickness is measured perpendicular to the wall with Euclidean
  distance transforms (in-plane spacing): from every endocardial boundary
  pixel of the myocardium to the nearest pixel outside the epicardium, and
  from every epicardial boundary pixel to the nearest LV-cavity pixel; the
  segment's thickness is the mean over both sets of points.

Thickening is ``(ES - ED) / ED * 100`` per segment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from .errors import LVSegError
from .labels import LABEL_OF, base_at_low_z

#: AHA segment number -> name (Cerqueira et al. 2002; segment 17, the apex, is not measured).
AHA_SEGMENTS: dict[int, str] = {
    1: "basal anterior", 2: "basal anteroseptal", 3: "basal inferoseptal",
    4: "basal inferior", 5: "basal inferolateral", 6: "basal anterolateral",
    7: "mid anterior", 8: "mid anteroseptal", 9: "mid inferoseptal",
    10: "mid inferior", 11: "mid inferolateral", 12: "mid anterolateral",
    13: "apical anterior", 14: "apical septal", 15: "apical inferior", 16: "apical lateral",
}

#: Columns of the ``<name>_aha.csv`` table.
AHA_COLUMNS: tuple[str, ...] = ("segment", "name", "wall_thickness_ed_mm",
                                "wall_thickness_es_mm", "thickening_pct")

#: Basal/mid segment offsets by 60-degree sector, counted from the septal midline
#: toward anterior: [0, 60) anteroseptal, [60, 120) anterior, [120, 180) anterolateral,
#: [-180, -120) inferolateral, [-120, -60) inferior, [-60, 0) inferoseptal.
_SIX = {0: 1, 1: 0, 2: 5, -3: 4, -2: 3, -1: 2}
_FOUR = {0: 13, 1: 12, -1: 14, 2: 15, -2: 15}


def _as_labels(mask: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 3:
        raise LVSegError(f"{name}: expected a 3D (x, y, z) label map, got shape {arr.shape}")
    return arr


def _spacing2(spacing: Sequence[float]) -> tuple[float, float]:
    values = [float(v) for v in np.asarray(spacing, dtype=np.float64).ravel()]
    if len(values) < 2 or not all(math.isfinite(v) and v > 0 for v in values[:3]):
        raise LVSegError(f"spacing must be positive values (x, y[, z]) in mm, got {spacing!r}")
    return values[0], values[1]


def _boundary(region: np.ndarray, neighbour: np.ndarray) -> np.ndarray:
    """Pixels of ``region`` with a 4-neighbour in ``neighbour``."""
    return region & ndimage.binary_dilation(neighbour, ndimage.generate_binary_structure(2, 1))


def _centre(sl: np.ndarray) -> np.ndarray | None:
    """LV centre (pixel coordinates) of one slice, or None without myocardium."""
    cavity = sl == LABEL_OF["LV"]
    if not (sl == LABEL_OF["Myo"]).any():
        return None
    region = cavity if cavity.any() else (cavity | (sl == LABEL_OF["Myo"]))
    return np.array(ndimage.center_of_mass(region))


def _angles(points: np.ndarray, centre: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """Angles (radians) of ``points`` (N, 2 pixel indices) around ``centre``, in mm."""
    d = (points - centre) * np.asarray(spacing)
    return np.arctan2(d[:, 1], d[:, 0])


def septal_midline(sl: np.ndarray, spacing: tuple[float, float],
                   centre: np.ndarray) -> tuple[float, float, float] | None:
    """RV insertion points of one slice and the septal midline between them.

    Returns ``(midline, insertion_a, insertion_b)`` angles in radians around
    ``centre`` (the arc from ``a`` counter-clockwise to ``b`` touches the RV),
    or None when the myocardium does not touch the RV in this slice.
    """
    contact = _boundary(sl == LABEL_OF["Myo"], sl == LABEL_OF["RV"])
    points = np.argwhere(contact)
    if len(points) < 2:
        return None
    theta = np.sort(_angles(points, centre, spacing))
    gaps = np.diff(np.concatenate([theta, theta[:1] + 2 * np.pi]))
    k = int(np.argmax(gaps))  # the largest gap is the free wall, not touching the RV
    start, end = theta[(k + 1) % len(theta)], theta[k]
    span = (end - start) % (2 * np.pi)
    return float(start + span / 2), float(start), float(end)


def _circular_mean(angles: Sequence[float]) -> float:
    return float(np.arctan2(np.mean(np.sin(angles)), np.mean(np.cos(angles))))


def _segment_of(relative_deg: np.ndarray, level: int) -> np.ndarray:
    """AHA segment numbers for angles (degrees from the septal midline, positive
    toward anterior) at level 0 (basal), 1 (mid) or 2 (apical)."""
    rel = (relative_deg + 180.0) % 360.0 - 180.0
    if level < 2:
        sector = np.floor(rel / 60.0).astype(int)
        return np.array([_SIX[s] for s in sector]) + 1 + 6 * level
    sector = np.floor((rel + 45.0) / 90.0).astype(int)
    sector = np.where(sector > 2, 2, np.where(sector < -2, -2, sector))
    return np.array([_FOUR[s] for s in sector]) + 1


def _thickness_points(sl: np.ndarray, spacing: tuple[float, float]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Boundary points of the myocardium (N, 2) and the wall thickness there (mm)."""
    myo = sl == LABEL_OF["Myo"]
    cavity = sl == LABEL_OF["LV"]
    outside = ~(myo | cavity)
    if not cavity.any() or not outside.any():
        return np.empty((0, 2), int), np.empty(0)
    to_outside = ndimage.distance_transform_edt(~outside, sampling=spacing)
    to_cavity = ndimage.distance_transform_edt(~cavity, sampling=spacing)
    endo = _boundary(myo, cavity)
    epi = _boundary(myo, outside) & ~endo
    points = np.concatenate([np.argwhere(endo), np.argwhere(epi)])
    values = np.concatenate([to_outside[endo], to_cavity[epi]])
    return points, values


def _phase_thickness(mask: np.ndarray, spacing: tuple[float, float], levels: dict[int, int],
                     midlines: dict[int, float], direction: float) -> dict[int, float]:
    """Mean wall thickness (mm) per AHA segment of one phase."""
    sums = np.zeros(17)
    counts = np.zeros(17)
    for z, level in levels.items():
        sl = mask[:, :, z]
        centre = _centre(sl)
        if centre is None:
            continue
        points, values = _thickness_points(sl, spacing)
        if not len(values):
            continue
        rel = np.degrees(direction * (_angles(points, centre, spacing) - midlines[z]))
        segments = _segment_of(rel, level)
        np.add.at(sums, segments, values)
        np.add.at(counts, segments, 1)
    return {s: float(sums[s] / counts[s]) if counts[s] else float("nan") for s in AHA_SEGMENTS}


def anterior_direction(affine: np.ndarray | None, base_at_low_z: bool) -> float:
    """+1 when the anterior wall lies at increasing in-plane angle (from +x
    toward +y) from the septum, else -1.

    The anterior wall is a positive rotation of the septal direction about
    the apex-to-base axis (right-handed world); the sign follows the voxel frame's handedness
    (``det`` of the affine) and whether ``z`` runs toward the base.
    """
    det = 1.0 if affine is None else float(np.linalg.det(np.asarray(affine)[:3, :3]))
    handed = 1.0 if det >= 0 else -1.0
    toward_base = -1.0 if base_at_low_z else 1.0
    return handed * toward_base


def aha_wall_thickness(ed_mask: np.ndarray, es_mask: np.ndarray, spacing: Sequence[float],
                       affine: np.ndarray | None = None) -> list[dict]:
    """Wall thickness at ED and ES and systolic thickening per AHA segment 1-16.

    Args:
        ed_mask, es_mask: ACDC label maps ``(x, y, z)`` on the same grid.
        spacing: voxel size ``(sx, sy[, sz])`` in mm (only in-plane is used).
        affine: the scan's 4x4 voxel-to-world matrix (its handedness tells
            anterior from inferior); None means a right-handed frame.

    Returns:
        16 rows with :data:`AHA_COLUMNS` (thickness in mm, thickening in %;
        NaN where a segment holds no measurable wall).

    Raises:
        LVSegError: different grids, or no slice holds both LV myocardium and
            a touching RV (the orientation cannot be fixed).
    """
    ed = _as_labels(ed_mask, "ED mask")
    es = _as_labels(es_mask, "ES mask")
    if ed.shape != es.shape:
        raise LVSegError(f"ED and ES masks have different shapes {ed.shape} and {es.shape}")
    sp = _spacing2(spacing)
    slices = [z for z in range(ed.shape[2]) if (ed[:, :, z] == LABEL_OF["Myo"]).any()]
    if not slices:
        raise LVSegError("the ED mask holds no LV myocardium")
    base_low = base_at_low_z(ed, slices)
    ordered = slices if base_low else slices[::-1]
    levels = {int(z): level for level, part in enumerate(np.array_split(ordered, 3))
              for z in part}
    direction = anterior_direction(affine, base_low)

    midlines: dict[str, dict[int, float]] = {}
    for phase, mask in (("ED", ed), ("ES", es)):
        found = {}
        for z in levels:
            centre = _centre(mask[:, :, z])
            found_z = None if centre is None else septal_midline(mask[:, :, z], sp, centre)
            if found_z is not None:
                found[z] = found_z[0]
        midlines[phase] = found
    known = list(midlines["ED"].values()) + list(midlines["ES"].values())
    if not known:
        raise LVSegError("the RV does not touch the LV myocardium in any slice; "
                         "the AHA segments cannot be oriented")
    fallback = _circular_mean(known)
    thickness = {}
    for phase, mask in (("ED", ed), ("ES", es)):
        lines = {z: midlines[phase].get(z, midlines["ED"].get(z, fallback)) for z in levels}
        thickness[phase] = _phase_thickness(mask, sp, levels, lines, direction)

    rows = []
    for segment, name in AHA_SEGMENTS.items():
        t_ed, t_es = thickness["ED"][segment], thickness["ES"][segment]
        thickening = (t_es - t_ed) / t_ed * 100.0 if t_ed > 0 else float("nan")
        rows.append({"segment": segment, "name": name, "wall_thickness_ed_mm": t_ed,
                     "wall_thickness_es_mm": t_es, "thickening_pct": thickening})
    return rows


def aha_csv_text(rows: Sequence[dict]) -> str:
    """The rows of :func:`aha_wall_thickness` as CSV (NaN as empty, 2 decimals)."""
    lines = [",".join(AHA_COLUMNS)]
    for row in rows:
        cells = []
        for key in AHA_COLUMNS:
            value = row[key]
            if isinstance(value, float):
                cells.append("" if math.isnan(value) else f"{value:.2f}")
            else:
                cells.append(str(value))
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


#: Segments of each level of the 16-segment model.
LEVELS: dict[str, tuple[int, ...]] = {"basal": tuple(range(1, 7)), "mid": tuple(range(7, 13)),
                                      "apical": tuple(range(13, 17))}


def _nanmean(values: Sequence[float]) -> float:
    kept = [v for v in values if isinstance(v, float) and math.isfinite(v)]
    return float(np.mean(kept)) if kept else float("nan")


def thickness_summary(rows: Sequence[dict]) -> dict[str, float]:
    """Study-level figures of :func:`aha_wall_thickness` rows (mm and %):
    ``mid_ed_mm`` (mean ED thickness of segments 7-12), ``max_ed_mm`` (the
    thickest segment at ED), ``max_segment`` (its number), ``mean_ed_mm``,
    ``mean_es_mm`` and ``mean_thickening_pct`` (over the 16 segments)."""
    by = {int(r["segment"]): r for r in rows}
    ed = {s: float(r["wall_thickness_ed_mm"]) for s, r in by.items()}
    finite = {s: v for s, v in ed.items() if math.isfinite(v)}
    thickest = max(finite, key=finite.get) if finite else 0
    return {
        "mid_ed_mm": _nanmean([ed[s] for s in LEVELS["mid"] if s in ed]),
        "max_ed_mm": finite.get(thickest, float("nan")),
        "max_segment": thickest,
        "mean_ed_mm": _nanmean(list(ed.values())),
        "mean_es_mm": _nanmean([float(r["wall_thickness_es_mm"]) for r in rows]),
        "mean_thickening_pct": _nanmean([float(r["thickening_pct"]) for r in rows]),
    }
