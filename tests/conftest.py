"""Shared fixtures: the real ACDC folder (skipped when absent) and synthetic scans."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from lvseg_core import settings
from lvseg_core.scan import Scan

ROOT = Path(__file__).resolve().parents[1]

# Tests run the torch backend unless they name another (tests/core/test_backends.py
# does): an ONNX build of each random-weights model would cost a minute each.
# LVSEG_BACKEND=auto runs the whole suite on the default backend instead.
os.environ.setdefault("LVSEG_BACKEND", "torch")


def acdc_path() -> Path:
    """The ACDC folder: ``$LVSEG_DATA`` or ``../shared/data/acdc`` beside the repo.

    Made absolute, so that tests may link to it from temporary folders.
    """
    return settings.data_dir().resolve()


def acdc_frame(patient_dir: Path, phase: str, label: bool = False) -> Path:
    """The ED or ES image (or its ``_gt`` label) of an ACDC patient folder.

    Frame numbers are read from the patient's ``Info.cfg``, never assumed.
    """
    from lvseg_core.data import read_info

    frame = int(read_info(patient_dir / "Info.cfg")[phase])
    suffix = "_gt" if label else ""
    return patient_dir / f"{patient_dir.name}_frame{frame:02d}{suffix}.nii.gz"


def link_patients(acdc: Path, out: Path, patients) -> Path:
    """An ACDC-layout folder ``out`` with a real folder per patient holding links
    to its files (a linked patient folder leading outside ``out`` is skipped)."""
    for patient in patients:
        folder = out / patient
        folder.mkdir(parents=True, exist_ok=True)
        for f in (acdc / patient).iterdir():
            os.symlink(f, folder / f.name)
    return out


@pytest.fixture(scope="session")
def acdc_dir() -> Path:
    """Path of the real ACDC data; skips the test when it is absent."""
    path = acdc_path()
    if not (path / "patient002").is_dir():
        pytest.skip(f"ACDC data not found at {path} (set LVSEG_DATA)")
    return path


def make_heart(shape=(96, 88, 6), spacing=(1.5, 1.5, 8.0), seed=0) -> tuple[Scan, np.ndarray]:
    """A synthetic short-axis volume with ring-shaped LV/Myo and an RV blob.

    Returns the scan (raw-like intensities in [0, 1200]) and its uint8 labels.
    """
    rng = np.random.default_rng(seed)
    x, y = np.mgrid[: shape[0], : shape[1]]
    cx, cy = shape[0] / 2, shape[1] / 2
    r = np.hypot(x - cx, y - cy)
    rv = np.hypot(x - cx + 22, y - cy) < 12
    labels = np.zeros(shape, np.uint8)
    image = rng.normal(200, 20, shape).astype(np.float32)
    for k in range(shape[2]):
        scale = 1.0 - 0.08 * k
        lv = r < 10 * scale
        myo = (r >= 10 * scale) & (r < 15 * scale)
        sl = labels[..., k]
        sl[rv] = 1
        sl[myo] = 2
        sl[lv] = 3
        image[..., k][lv | rv] += 800
        image[..., k][myo] += 200
    affine = np.diag([*spacing, 1.0])
    return Scan(image, affine, name="synthetic"), labels


@pytest.fixture
def heart() -> tuple[Scan, np.ndarray]:
    """A synthetic scan and its labels."""
    return make_heart()


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tests use small tensors: one torch thread is faster and fair to a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def non_qc_errors(at) -> list[str]:
    """The st.error messages of an AppTest page, except quality control's banner
    (random-init test weights segment nothing sensible and QC rightly says so)."""
    return [e.value for e in at.error if not e.value.startswith("Do not use this result: ")]
