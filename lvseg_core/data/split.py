"""Patient splits: the standard ACDC validation patients; split by patient, never by slice.

:func:`select_cases` is the one way to pick frames by split or by patient
(the command line, the evaluation, the app, the benchmarks); the trainer's
split (:func:`split_cases`) uses the same patients.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

from ..errors import LVSegError
from .acdc import Case, find_cases

#: Validation patients of the standard split (SSL4MIS benchmark).
VALIDATION_PATIENTS: tuple[str, ...] = tuple(
    f"patient{n:03d}" for n in (2, 19, 28, 30, 39, 45, 78, 82, 85, 87)
)

#: Names of the splits :func:`select` knows.
SPLITS: tuple[str, ...] = ("all", "validation", "training")


def validation_patients(patients: Iterable[str]) -> list[str]:
    """The standard validation patients among ``patients``, in split order."""
    present = set(patients)
    return [p for p in VALIDATION_PATIENTS if p in present]


def select(cases: Sequence[Case], split: str = "all",
           patients: Collection[str] | None = None) -> list[Case]:
    """The cases of one side of the standard split (``"validation"``, ``"training"``
    or ``"all"``), and of ``patients`` only when given; order is kept."""
    if split not in SPLITS:
        raise LVSegError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    validation = set(VALIDATION_PATIENTS)
    wanted = None if patients is None else set(patients)
    return [c for c in cases
            if (split == "all" or (c.patient in validation) == (split == "validation"))
            and (wanted is None or c.patient in wanted)]


def select_cases(root: str | Path, split: str = "all", patients: Collection[str] | None = None,
                 labelled: bool = True) -> list[Case]:
    """The frames of an ACDC-layout folder in ``split`` and ``patients`` (see
    :func:`select`), labelled ones only by default.

    Raises:
        LVSegError: no (labelled) frames in ``root`` (from :func:`find_cases`).
    """
    return select(find_cases(root, require_labels=labelled), split, patients)


def split_cases(cases: list[Case], validation: tuple[str, ...] = VALIDATION_PATIENTS
                ) -> tuple[list[Case], list[Case]]:
    """Split by patient (never by slice): (training cases, validation cases)."""
    val = set(validation)
    return [c for c in cases if c.patient not in val], [c for c in cases if c.patient in val]
