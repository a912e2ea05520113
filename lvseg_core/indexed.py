"""Values indexed to body surface area, with adult CMR reference ranges and flags.

Body surface area (BSA, m²) by Mosteller: ``sqrt(height_cm * weight_kg / 3600)``
(R. D. Mosteller, N Engl J Med 1987;317:1098). Height and weight come from an
ACDC ``Info.cfg`` (``Height`` cm, ``Weight`` kg) or a DICOM header
(``PatientSize`` m, ``PatientWeight`` kg, ``PatientSex``).

Reference ranges (mean ± 2 SD, adults, bSSFP cine, LV mass by slice
summation) are those of N. Kawel-Boehm et al., "Normal values for
cardiovascular magnetic resonance in adults and children", J Cardiovasc Magn
Reson 2015;17:29 (Table 2), the values its 2020 update (Kawel-Boehm et al.,
JCMR 2020;22:87, "Reference ranges ('normal values') for cardiovascular
magnetic resonance (CMR) in adults and children: 2020 update") builds on, as
tabulated in Cardiovasc Diagn Ther 2020;10(6):1918-1945, Table 3:
EDV/BSA men 81 ± 12, women 76 ± 10 mL/m²; ESV/BSA 26 ± 6 and 24 ± 5 mL/m²;
SV/BSA 54 ± 6 and 52 ± 7 mL/m²; LV mass/BSA 67 ± 9 and 61 ± 10 g/m²; EF 67 ± 5 %
for both. (These nine values were checked verbatim against that Table 3. The
2020 update's own tables, and right-ventricular ranges by sex, could not be
checked against a source here, so none of their numbers is used.) When the
sex is unknown the range is the union of both sexes' ranges (a value is
flagged only when it lies outside both).

ACDC labels keep papillary muscles in the LV cavity, so LV mass here excludes
them; the reference ranges were measured the same way in some of the pooled
studies and not in others: the flags are a screening aid, not a diagnosis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import LVSegError
from .records import finite_or_none

#: Source of :data:`REFERENCE_RANGES`, quoted in reports.
REFERENCE_SOURCE = ("Kawel-Boehm N. et al., J Cardiovasc Magn Reson 2015;17:29 (Table 2; "
                    "basis of the 2020 update, JCMR 2020;22:87), mean ± 2 SD, adults")

#: (mean, SD) by index and sex ("M", "F"); ranges are mean ± 2 SD.
_MEAN_SD: dict[str, dict[str, tuple[float, float]]] = {
    "LV_EDV_index_ml_m2": {"M": (81.0, 12.0), "F": (76.0, 10.0)},
    "LV_ESV_index_ml_m2": {"M": (26.0, 6.0), "F": (24.0, 5.0)},
    "LV_SV_index_ml_m2": {"M": (54.0, 6.0), "F": (52.0, 7.0)},
    "LV_mass_index_g_m2": {"M": (67.0, 9.0), "F": (61.0, 10.0)},
    "LV_EF_pct": {"M": (67.0, 5.0), "F": (67.0, 5.0)},
}

#: Index -> the clinical index it divides by BSA (keys of clinical.clinical_indices).
INDEXED_FROM: dict[str, str] = {
    "LV_EDV_index_ml_m2": "LV_EDV_ml", "LV_ESV_index_ml_m2": "LV_ESV_ml",
    "LV_SV_index_ml_m2": "LV_SV_ml", "LV_mass_index_g_m2": "Myo_mass_g",
}

#: Plausible adult body size; outside, the values are refused as typing errors.
_HEIGHT_CM = (50.0, 260.0)
_WEIGHT_KG = (2.0, 400.0)


def reference_range(index: str, sex: str | None = None) -> tuple[float, float]:
    """(low, high) normal range of ``index`` for sex ``"M"``/``"F"`` (else both)."""
    if index not in _MEAN_SD:
        raise LVSegError(f"no reference range for {index!r}")
    by_sex = _MEAN_SD[index]
    sexes = [sex] if sex in by_sex else list(by_sex)
    lows = [m - 2 * sd for m, sd in (by_sex[s] for s in sexes)]
    highs = [m + 2 * sd for m, sd in (by_sex[s] for s in sexes)]
    return min(lows), max(highs)


@dataclass(frozen=True)
class BodySize:
    """Height (cm), weight (kg) and sex (``"M"``, ``"F"`` or None) of a patient."""

    height_cm: float | None = None
    weight_kg: float | None = None
    sex: str | None = None

    @property
    def known(self) -> bool:
        """True when both height and weight are known."""
        return self.height_cm is not None and self.weight_kg is not None

    @property
    def bsa_m2(self) -> float:
        """Mosteller body surface area in m² (NaN when height or weight is unknown)."""
        if not self.known:
            return float("nan")
        return body_surface_area(self.height_cm, self.weight_kg)

    @classmethod
    def from_info(cls, info: Mapping[str, str]) -> "BodySize":
        """From ACDC ``Info.cfg`` keys ``Height`` (cm) and ``Weight`` (kg)."""
        return cls(_plausible(info.get("Height"), _HEIGHT_CM),
                   _plausible(info.get("Weight"), _WEIGHT_KG), _sex(info.get("Sex")))

    @classmethod
    def from_dicom(cls, ds: Any) -> "BodySize":
        """From DICOM ``PatientSize`` (m), ``PatientWeight`` (kg) and ``PatientSex``."""
        size = finite_or_none(ds.get("PatientSize"))
        height = _plausible(None if size is None else size * 100.0, _HEIGHT_CM)
        return cls(height, _plausible(ds.get("PatientWeight"), _WEIGHT_KG),
                   _sex(ds.get("PatientSex")))


def _plausible(value: Any, bounds: tuple[float, float]) -> float | None:
    """``value`` as a float inside ``bounds``, else None (absent, 0 or implausible)."""
    number = finite_or_none(value)
    if number is None or not bounds[0] <= number <= bounds[1]:
        return None
    return number


def _sex(value: Any) -> str | None:
    text = str(value or "").strip().upper()
    return text if text in ("M", "F") else None


def body_surface_area(height_cm: float, weight_kg: float) -> float:
    """Mosteller BSA in m²: ``sqrt(height_cm * weight_kg / 3600)``."""
    height, weight = float(height_cm), float(weight_kg)
    if not (height > 0 and weight > 0 and math.isfinite(height * weight)):
        raise LVSegError(f"height and weight must be positive, got {height_cm!r} cm, "
                         f"{weight_kg!r} kg")
    return math.sqrt(height * weight / 3600.0)


def indexed_values(indices: Mapping[str, float], body: BodySize) -> dict[str, Any]:
    """BSA-indexed LV values with their reference ranges and flags.

    Args:
        indices: keys of :func:`lvseg_core.clinical.clinical_indices` (mL, g, %).
        body: the patient's size and sex.

    Returns:
        ``BSA_m2`` and, per index of :data:`INDEXED_FROM` plus ``LV_EF_pct``,
        ``<index>`` (NaN when BSA is unknown), ``<index>_range`` ``[low, high]``
        and ``<index>_flag`` (``"low"``, ``"high"``, ``"normal"`` or ``""``
        when not computable); also ``reference`` (the source) and ``sex``.
    """
    bsa = body.bsa_m2
    out: dict[str, Any] = {"BSA_m2": bsa, "sex": body.sex or "",
                           "reference": REFERENCE_SOURCE}
    values = {name: (float(indices[src]) / bsa if math.isfinite(bsa) else float("nan"))
              for name, src in INDEXED_FROM.items() if src in indices}
    if "LV_EF_pct" in indices:
        values["LV_EF_pct"] = float(indices["LV_EF_pct"])
    for name, value in values.items():
        low, high = reference_range(name, body.sex)
        out[name] = value
        out[f"{name}_range"] = [low, high]
        out[f"{name}_flag"] = flag(value, low, high)
    return out


def flag(value: float, low: float, high: float) -> str:
    """``"low"``, ``"high"`` or ``"normal"`` for ``value`` against ``[low, high]``;
    ``""`` for NaN."""
    if not math.isfinite(value):
        return ""
    if value < low:
        return "low"
    if value > high:
        return "high"
    return "normal"
