"""The weights the app can use, described as model cards (the Models page).

A card is read from a weights folder without loading the network: the
architecture, training facts and validation metrics come from
``config.json``, the parameter count from the ``model.safetensors`` header.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lvseg_core import hub
from lvseg_core.errors import LVSegError, WeightsError
from lvseg_core.models import read_config
from lvseg_core.registry import ARCHITECTURES, display_name
from lvseg_core.scan import Scan

from .jobs import weights_runs

_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
                "I8": 1, "U8": 1, "BOOL": 1}


def safetensors_parameters(path: str | Path) -> int:
    """Number of values stored in a ``.safetensors`` file, from its header only.

    Raises:
        WeightsError: the file is missing or its header is not valid.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(handle.read(length))
    except (OSError, struct.error, ValueError) as err:
        raise WeightsError(f"{path}: not a readable safetensors file ({err})") from None
    total = 0
    for name, entry in header.items():
        if name == "__metadata__" or not isinstance(entry, dict):
            continue
        total += int(np.prod(entry.get("shape", []), dtype=np.int64))
    return total


@dataclass
class WeightsCard:
    """What the Models page shows about one weights folder.

    Attributes:
        title: e.g. ``"U-Net (bundled)"``.
        architecture: registry name.
        kind: ``"bundled"`` or ``"run"``.
        source: the weights source to pass to :func:`lvseg_core.hub.resolve_weights`.
        folder: the folder with ``config.json`` and ``model.safetensors``.
        parameters: number of stored values (weights and buffers).
        size_mb: size of ``model.safetensors`` in MB.
        metrics: validation metrics from the config.
        training: training facts from the config (data, epochs, time ...).
        arch_args: architecture arguments (widths).
        modified: modification time of the weights file.
        readme: the model card text (README.md), "" when absent.
    """

    title: str
    architecture: str
    kind: str
    source: str
    folder: Path
    parameters: int
    size_mb: float
    metrics: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    arch_args: dict = field(default_factory=dict)
    modified: float = 0.0
    readme: str = ""

    @property
    def display_name(self) -> str:
        return display_name(self.architecture)

    @property
    def modified_text(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(self.modified))


def weights_card(folder: str | Path, kind: str, source: str, title: str | None = None
                 ) -> WeightsCard:
    """Read the card of a weights folder (raises :class:`WeightsError` when it is not one)."""
    folder = Path(folder)
    config = read_config(folder)
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise WeightsError(f"{folder}: no model.safetensors")
    arch = config["architecture"]
    readme = folder / "README.md"
    return WeightsCard(
        title=title or f"{display_name(arch)} ({kind})", architecture=arch,
        kind=kind, source=source, folder=folder,
        parameters=safetensors_parameters(weights),
        size_mb=weights.stat().st_size / 1e6, metrics=dict(config.get("metrics") or {}),
        training=dict(config.get("training") or {}),
        arch_args=dict(config.get("arch_args") or {}), modified=weights.stat().st_mtime,
        readme=readme.read_text(errors="replace") if readme.is_file() else "")


def list_weights(runs_dir: str | Path | None = None) -> tuple[list[WeightsCard], list[str]]:
    """Cards of the bundled weights and of finished training runs.

    Returns:
        ``(cards, problems)``: problems are one-line messages about folders
        that could not be read.
    """
    cards, problems = [], []
    for arch in hub.available_bundled():
        try:
            cards.append(weights_card(hub.bundled_folder(arch), "bundled", "bundled"))
        except LVSegError as err:
            problems.append(str(err))
    for run in weights_runs(runs_dir=runs_dir):
        try:
            cards.append(weights_card(run.path / "model", "run", str(run.path),
                                      title=f"{display_name(run.model)} "
                                            f"(run {run.name})"))
        except LVSegError as err:
            problems.append(str(err))
    return cards, problems


def missing_bundled() -> list[str]:
    """Architectures that have no bundled weights yet."""
    present = set(hub.available_bundled())
    return [arch for arch in ARCHITECTURES if arch not in present]


def synthetic_scan(shape: tuple[int, int, int] = (232, 256, 10),
                   spacing: tuple[float, float, float] = (1.5625, 1.5625, 10.0),
                   seed: int = 0) -> Scan:
    """A random scan of ACDC-like size for timing (the content does not change speed)."""
    rng = np.random.default_rng(seed)
    array = rng.normal(300.0, 60.0, shape).astype(np.float32)
    return Scan(array, np.diag([*spacing, 1.0]), name="timing")


def measure_speed(segmenter, shape: tuple[int, int, int] = (232, 256, 10),
                  repeats: int = 2) -> float:
    """Median seconds to segment one ``shape`` volume (after one warm-up run)."""
    scan = synthetic_scan(shape)
    segmenter.segment(scan)
    times = [segmenter.segment(scan).seconds for _ in range(max(1, repeats))]
    return float(np.median(times))
