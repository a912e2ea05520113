"""Patient splits: the standard ACDC validation patients; split by patient, never by slice."""

from __future__ import annotations

from .acdc import Case

#: Validation patients of the standard split (SSL4MIS benchmark).
VALIDATION_PATIENTS: tuple[str, ...] = tuple(
    f"patient{n:03d}" for n in (2, 19, 28, 30, 39, 45, 78, 82, 85, 87)
)


def split_cases(cases: list[Case], validation: tuple[str, ...] = VALIDATION_PATIENTS
                ) -> tuple[list[Case], list[Case]]:
    """Split by patient (never by slice): (training cases, validation cases)."""
    val = set(validation)
    return [c for c in cases if c.patient not in val], [c for c in cases if c.patient in val]
