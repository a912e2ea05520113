"""The options of a training run, saved as ``config.json`` in its folder."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .transforms import AugmentOptions


@dataclass
class TrainConfig:
    """Everything that defines a training run.

    Attributes mirror the options of ``python -m train fit``; ``crop`` is the
    in-plane training patch (x, y) and ``depth`` the slices of a V-Net patch.
    """

    model: str = "unet"
    data: str = "../shared/data/acdc"
    run_dir: str = ""
    arch_args: dict[str, Any] = field(default_factory=dict)
    epochs: int = 30
    max_time: str | None = None          # "DD:HH:MM:SS", Lightning's max_time
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 16
    crop: tuple[int, int] = (176, 176)
    depth: int = 8
    patience: int = 10                     # early-stopping patience in epochs
    val_every: int = 1                     # validate every N epochs
    schedule: str = "onecycle"            # onecycle | cosine | constant
    grad_clip: float = 1.0                 # gradient-norm clipping (0: off)
    init_weights: str | None = None        # start from these weights (fine-tuning)
    init_run: str | None = None            # the run that trained init_weights (filled in)
    augment: bool = True
    # Ranges and probabilities of the augmentation (train.transforms.AugmentOptions);
    # missing keys (configs written before they were recorded) take today's defaults.
    augmentation: dict[str, Any] = field(default_factory=lambda: AugmentOptions().to_dict())
    seed: int = 0
    val_patients: list[str] | None = None  # None: the standard split
    val_fraction: float = 0.125            # used when the standard patients are absent
    overfit_batches: float = 0.0
    limit_train_batches: float | int = 1.0
    limit_val_batches: float | int = 1.0
    max_steps: int = -1
    num_workers: int = 0
    accelerator: str = "auto"
    devices: str | int = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str | None = None           # default: 16-mixed on GPU, 32 on CPU
    threads: int | None = None             # torch CPU threads
    cache_dir: str | None = None           # on-disk cache of preprocessed volumes
    export: bool = True

    def save(self, path: str | Path) -> None:
        """Write as JSON."""
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        """Read a config written by :meth:`save`."""
        data = json.loads(Path(path).read_text())
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "crop" in known:
            known["crop"] = tuple(known["crop"])
        return cls(**known)
