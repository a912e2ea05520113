"""End-diastole / end-systole pairing: the two frames of one patient that the clinical
indices (EDV, ESV, SV, EF, mass) compare."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")

#: The two phases, in the order the indices use them.
PHASES: tuple[str, str] = ("ED", "ES")


def ed_es_pairs(items: Iterable[T], key: Callable[[T], tuple[str, str]]
                ) -> dict[str, tuple[T, T]]:
    """``patient -> (ED item, ES item)`` for every patient with both phases.

    Args:
        items: frames, cases or result records of any kind.
        key: ``item -> (patient, phase)``; items of other phases are ignored, and
            the last item of a patient's phase wins.

    Returns:
        The complete pairs, in the order their patients first appear.
    """
    phases: dict[str, dict[str, T]] = {}
    for item in items:
        patient, phase = key(item)
        if phase in PHASES:
            phases.setdefault(patient, {})[phase] = item
    return {patient: (found["ED"], found["ES"]) for patient, found in phases.items()
            if "ED" in found and "ES" in found}


def case_key(case) -> tuple[str, str]:
    """``(patient, phase)`` of a :class:`~lvseg_core.data.Case`."""
    return case.patient, case.phase


def record_key(record: dict) -> tuple[str, str]:
    """``(patient, phase)`` of a result record with those keys."""
    return record.get("patient", ""), record.get("phase", "")
