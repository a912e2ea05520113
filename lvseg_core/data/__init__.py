"""Datasets: folder layouts (:mod:`.acdc`) and patient splits (:mod:`.split`).

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
from .split import VALIDATION_PATIENTS, split_cases

__all__ = [
    "GROUPS",
    "VALIDATION_PATIENTS",
    "Case",
    "dataset_problems",
    "find_cases",
    "info_problem",
    "is_acdc_folder",
    "patient_cases",
    "read_info",
    "split_cases",
]
