"""Datasets: folder layouts (:mod:`.acdc`, :mod:`.layouts`), patient splits
(:mod:`.split`) and ED/ES pairing (:mod:`.pairing`).

Torch-free; the trainer, the app and the benchmarks list and split cases here.
"""

from .acdc import (
    GROUPS,
    Case,
    dataset_problems,
    find_cases,
    info_problem,
    is_acdc_folder,
    patient_cases,
    read_info,
)
from .pairing import PHASES, case_key, ed_es_pairs, record_key
from .split import (
    SPLITS,
    VALIDATION_PATIENTS,
    select,
    select_cases,
    split_cases,
    validation_patients,
)

__all__ = [
    "GROUPS",
    "PHASES",
    "SPLITS",
    "VALIDATION_PATIENTS",
    "Case",
    "case_key",
    "dataset_problems",
    "ed_es_pairs",
    "find_cases",
    "info_problem",
    "is_acdc_folder",
    "patient_cases",
    "read_info",
    "record_key",
    "select",
    "select_cases",
    "split_cases",
    "validation_patients",
]
