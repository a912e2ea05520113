"""AHA 16-segment wall thickness: synthetic rings of known thickness and ACDC expert labels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lvseg_core.errors import LVSegError
from lvseg_core.regional import (AHA_COLUMNS, AHA_SEGMENTS, aha_csv_text, aha_wall_thickness,
                                 thickness_summary)

SPACING = (1.25, 1.25, 8.0)


def ring_heart(shape=(128, 128, 9), spacing=1.25, r_in=20.0, wall=8.0, rv_x=-1,
               thick_sector=None, extra=6.0, taper=0.0) -> np.ndarray:
    """Rings of LV cavity (radius ``r_in`` mm) and myocardium (``wall`` mm) with an
    RV blob on the ``-x`` (``rv_x=-1``) or ``+x`` side of the LV.

    ``thick_sector=(lo, hi)`` (degrees, in-plane angle from +x toward +y) adds
    ``extra`` mm of wall there; ``taper`` shrinks the cavity by that many mm per
    slice, so the base (larger) is at z=0.
    """
    x, y = np.mgrid[: shape[0], : shape[1]]
    cx, cy = shape[0] / 2, shape[1] / 2
    dx, dy = (x - cx) * spacing, (y - cy) * spacing
    r = np.hypot(dx, dy)
    angle = np.degrees(np.arctan2(dy, dx))
    out = np.zeros(shape, np.uint8)
    for z in range(shape[2]):
        inner = r_in - taper * z
        outer = np.full(r.shape, inner + wall)
        if thick_sector is not None:
            lo, hi = thick_sector
            outer[(angle >= lo) & (angle < hi)] += extra
        sl = out[:, :, z]
        rv_centre = rv_x * (r_in + wall + 12.0)
        sl[(np.hypot(dx - rv_centre, dy) < 16.0) & (r >= outer)] = 1
        sl[(r >= inner) & (r < outer)] = 2
        sl[r < inner] = 3
    return out


def by_segment(rows):
    return {r["segment"]: r for r in rows}


def test_ring_of_known_thickness_every_segment():
    heart = ring_heart()
    rows = aha_wall_thickness(heart, heart, SPACING)
    assert [r["segment"] for r in rows] == list(range(1, 17))
    assert [r["name"] for r in rows] == list(AHA_SEGMENTS.values())
    assert set(rows[0]) == set(AHA_COLUMNS)
    for row in rows:
        assert row["wall_thickness_ed_mm"] == pytest.approx(8.0, abs=0.7), row
        assert row["thickening_pct"] == pytest.approx(0.0, abs=1e-9)


def test_thickening_of_a_thicker_es_ring():
    ed = ring_heart(wall=8.0)
    es = ring_heart(wall=12.0, r_in=14.0)
    rows = aha_wall_thickness(ed, es, SPACING)
    for row in rows:
        assert row["wall_thickness_es_mm"] == pytest.approx(12.0, abs=0.7)
        assert row["thickening_pct"] == pytest.approx(50.0, abs=10.0)


@pytest.mark.parametrize("rv_x", [-1, 1])
def test_orientation_from_the_rv_insertion(rv_x):
    # Septum direction: toward the RV (-x or +x). With the base at z=0 and a
    # right-handed frame the anterior wall lies at decreasing angle from the
    # septum, so the anteroseptal sector is [septum - 60, septum) degrees.
    septum = 180.0 if rv_x < 0 else 0.0
    lo = septum - 60.0 + 5.0
    lo = (lo + 180.0) % 360.0 - 180.0
    heart = ring_heart(rv_x=rv_x, thick_sector=(lo, lo + 50.0), taper=0.5)
    rows = by_segment(aha_wall_thickness(heart, heart, SPACING))
    basal = {s: rows[s]["wall_thickness_ed_mm"] for s in range(1, 7)}
    assert max(basal, key=basal.get) == 2, basal  # basal anteroseptal
    mid = {s: rows[s]["wall_thickness_ed_mm"] for s in range(7, 13)}
    assert max(mid, key=mid.get) == 8, mid  # mid anteroseptal
    # The same heart stored apex first (z reversed, and so the affine's z axis)
    # keeps its anatomy.
    mirror = np.diag([1.25, 1.25, -8.0, 1.0])
    flipped = by_segment(aha_wall_thickness(heart[:, :, ::-1], heart[:, :, ::-1], SPACING,
                                            mirror))
    assert flipped[2]["wall_thickness_ed_mm"] == pytest.approx(basal[2], abs=1e-6)
    # The same voxels in a mirrored frame (negative determinant) are a mirror-image
    # heart: the thick sector becomes inferoseptal.
    mirrored = by_segment(aha_wall_thickness(heart, heart, SPACING, mirror))
    basal_m = {s: mirrored[s]["wall_thickness_ed_mm"] for s in range(1, 7)}
    assert max(basal_m, key=basal_m.get) == 3, basal_m


def test_errors():
    heart = ring_heart()
    with pytest.raises(LVSegError, match="different shapes"):
        aha_wall_thickness(heart, heart[:, :, :4], SPACING)
    no_rv = heart.copy()
    no_rv[no_rv == 1] = 0
    with pytest.raises(LVSegError, match="RV does not touch"):
        aha_wall_thickness(no_rv, no_rv, SPACING)
    with pytest.raises(LVSegError, match="no LV myocardium"):
        aha_wall_thickness(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8), SPACING)


def test_csv_text():
    heart = ring_heart()
    text = aha_csv_text(aha_wall_thickness(heart, heart, SPACING))
    lines = text.strip().splitlines()
    assert lines[0] == ",".join(AHA_COLUMNS)
    assert len(lines) == 17
    assert lines[1].startswith("1,basal anterior,")


def _expert(acdc_dir, numbers):
    from bench.regional import patient_thickness

    out = []
    for n in numbers:
        folder = acdc_dir / f"patient{n:03d}"
        if folder.is_dir():
            out.append(patient_thickness(folder))
    return out


def test_expert_labels_normal_and_hypertrophic(acdc_dir):
    normal = _expert(acdc_dir, range(61, 81))
    hcm = _expert(acdc_dir, range(21, 41))
    if not normal or not hcm:
        pytest.skip("no NOR or HCM patients in the ACDC folder")
    assert all(p["group"] == "NOR" for p in normal)
    assert all(p["group"] == "HCM" for p in hcm)
    for p in normal:
        assert 5.0 <= p["mid_ed_mm"] <= 12.0, (p["patient"], p["mid_ed_mm"])
        assert p["mean_thickening_pct"] > 0, (p["patient"], p["mean_thickening_pct"])
    nor_max = float(np.mean([p["max_ed_mm"] for p in normal]))
    hcm_max = float(np.mean([p["max_ed_mm"] for p in hcm]))
    assert hcm_max >= nor_max + 3.0, (hcm_max, nor_max)
    assert all(math.isfinite(p["max_ed_mm"]) for p in normal + hcm)


def test_summary_figures():
    heart = ring_heart(thick_sector=(100.0, 140.0))
    summary = thickness_summary(aha_wall_thickness(heart, heart, SPACING))
    assert summary["max_ed_mm"] > summary["mid_ed_mm"] > 7.0
    assert 1 <= summary["max_segment"] <= 16
