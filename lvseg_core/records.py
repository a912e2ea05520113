"""The run-record format, written and read only here.

A training run is a folder ``runs/<name>/`` (see :func:`lvseg_core.settings.runs_dir`):

- ``config.json``: the :class:`TrainConfig` of the run;
- ``metrics.jsonl``: one JSON object a line with ``event`` = ``initial_loss``,
  ``start`` (time, max_epochs), ``epoch`` (losses, Dice per structure, lr,
  seconds, elapsed), ``end`` or ``error`` (:func:`append_event`);
- ``lr_find.json`` / ``lr_find.png`` of an LR range test, ``results.md`` /
  ``results.csv`` of a search;
- ``checkpoints/`` and the exported ``model/`` (weights, not records).

``runs/`` is not versioned: :func:`keep_record` copies the small files
(:data:`RECORD_FILES`) to ``docs/runs/``. A fine-tune names the run behind its
starting weights (``init_run``); :func:`run_chain` follows that chain.
Nothing here imports torch or Lightning.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from . import settings
from .errors import LVSegError
from .files import copy_file, write_text

#: Checkpoints a run keeps (``checkpoints/<name>.ckpt``): the best validation Dice,
#: and the last epoch.
CHECKPOINTS: tuple[str, ...] = ("best", "last")

#: File names of a run folder.
CONFIG_FILE = "config.json"
EVENTS_FILE = "metrics.jsonl"
LR_FIND_FILE = "lr_find.json"


# ---------------------------------------------------------------- config.json

#: :class:`TrainConfig` fields that are no option of ``python -m train``.
NOT_OPTIONS = frozenset({"run_dir", "init_run", "export"})

#: Fields only ``python -m train fit`` takes.
FIT_ONLY_FIELDS = frozenset({"patience", "val_every", "overfit_batches"})


@dataclass
class TrainConfig:
    """Everything that defines a training run.

    Attributes mirror the options of ``python -m train fit``; ``crop`` is the
    in-plane training patch (x, y) and ``depth`` the slices of a V-Net patch.
    """

    model: str = "unet"
    data: str = str(settings.DEFAULT_DATA)
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
    deep_supervision: bool = False         # also score the coarser decoder stages
    init_weights: str | None = None        # start from these weights (fine-tuning)
    init_run: str | None = None            # the run that trained init_weights (filled in)
    augment: bool = True
    # Ranges and probabilities of the augmentation (train.transforms.AugmentOptions);
    # missing keys (configs written before they were recorded) take today's defaults,
    # and the trainer records every value when a run starts.
    augmentation: dict[str, Any] = field(default_factory=dict)
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

    def cli_args(self, command: str = "fit") -> list[str]:
        """The options of ``python -m train <command>`` that rebuild this config.

        Every field with a command-line option is given (``None`` ones are left
        at the trainer's default); ``augment=False`` is ``--no-augment``, other
        booleans are switches given when true. The
        fields of :data:`FIT_ONLY_FIELDS` are given to ``fit`` only.
        """
        args: list[str] = []
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.name in NOT_OPTIONS or value is None or \
                    (command != "fit" and spec.name in FIT_ONLY_FIELDS):
                continue
            if spec.name == "augment":
                args += [] if value else ["--no-augment"]
                continue
            flag = "--" + spec.name.replace("_", "-")
            if isinstance(value, bool):           # a switch: given when on
                args += [flag] if value else []
                continue
            if isinstance(value, dict):
                args += [flag, json.dumps(value)]
            elif isinstance(value, (list, tuple)):
                args += [flag, *(str(v) for v in value)]
            else:
                args += [flag, str(value)]   # floats as repr: 1.0 stays a fraction
        return args

    def uses_gpu(self) -> bool:
        """Whether Lightning's ``accelerator`` runs on a GPU here."""
        import torch

        return self.accelerator in ("gpu", "cuda") or (
            self.accelerator == "auto" and torch.cuda.is_available())

    def check_precision(self) -> None:
        """Refuse bf16 training of a 3D model on the CPU (a one-line :class:`LVSegError`).

        Measured with torch 2.14 on an AVX-512 BF16 CPU: the weight gradient of
        the V-Net's deepest 5x5x5 convolution is off by ~70 % (46 %, cosine 0.89
        to the float32 gradient, on a base-16 V-Net at epoch 13), and bf16 V-Net
        runs diverge: ``runs/vnet-w16`` reached a non-finite loss at step 516
        although its validation Dice was still rising. 2D models are unaffected.
        """
        from .registry import spatial_dims

        if str(self.precision).startswith("bf16") and spatial_dims(self.model) == 3 \
                and not self.uses_gpu():
            raise LVSegError("bf16 training of a 3D model on the CPU diverges (oneDNN's bf16 "
                             "conv3d gives wrong weight gradients): use --precision 32-true")

    def save(self, path: str | Path) -> None:
        """Write as JSON."""
        write_text(path, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        """Read a config written by :meth:`save`."""
        data = json.loads(Path(path).read_text())
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "crop" in known:
            known["crop"] = tuple(known["crop"])
        return cls(**known)


# ---------------------------------------------------------------- metrics.jsonl


def finite_or_none(value: Any) -> float | None:
    """``value`` as a float, or None when it is no finite number (NaN, inf, text)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def append_event(path: str | Path, record: dict) -> None:
    """Append one JSON line (NaN/inf written as null) to ``path``."""
    clean = {k: (finite_or_none(v) if isinstance(v, float) else v) for k, v in record.items()}
    with open(path, "a") as handle:
        handle.write(json.dumps(clean) + "\n")
        handle.flush()


def read_events(run_dir: str | Path) -> list[dict]:
    """The JSON lines of ``metrics.jsonl`` (a half-written last line is skipped)."""
    path = Path(run_dir) / EVENTS_FILE
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    events = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            events.append(record)
    return events


def epoch_events(events: list[dict]) -> list[dict]:
    """The ``event == "epoch"`` records of the epochs the run kept, in order.

    A run resumed from a checkpoint older than its last epoch repeats epochs:
    the repeated records replace those after the checkpoint, as its weights did.
    """
    kept: list[dict] = []
    for e in _all_epochs(events):
        n = e.get("epoch")
        while isinstance(n, int) and kept and isinstance(kept[-1].get("epoch"), int) \
                and kept[-1]["epoch"] >= n:
            kept.pop()
        kept.append(e)
    return kept


def _all_epochs(events: list[dict]) -> list[dict]:
    return [e for e in events if e.get("event") == "epoch"]


def since_last_start(events: list[dict]) -> list[dict]:
    """The events from the last ``start`` on: the current part of a resumed run
    (all events when there is no ``start``)."""
    starts = [i for i, e in enumerate(events) if e.get("event") == "start"]
    return events[starts[-1]:] if starts else events


def training_seconds(events: list[dict]) -> float:
    """Seconds spent in the epochs logged so far, over every resumed part (the
    ``elapsed`` clock restarts at each ``start``, epoch ``seconds`` do not), repeated
    epochs included."""
    return float(sum(e["seconds"] for e in _all_epochs(events) if is_number(e.get("seconds"))))


def best_epoch(events: list[dict]) -> dict | None:
    """The epoch with the best validation Dice (or, without validation, the
    lowest training loss, as in an overfit check)."""
    epochs = epoch_events(events)
    with_dice = [e for e in epochs if is_number(e.get("val_dice"))]
    if with_dice:
        return max(with_dice, key=lambda e: e["val_dice"])
    with_loss = [e for e in epochs if is_number(e.get("train_loss"))]
    return min(with_loss, key=lambda e: e["train_loss"]) if with_loss else None


def is_number(value: Any) -> bool:
    """True for a finite int or float (a usable figure of a record)."""
    return isinstance(value, (int, float)) and math.isfinite(value)


# ---------------------------------------------------------------- other records


def read_json(path: str | Path) -> dict:
    """A JSON object file as a dict ({} when absent, unreadable or not an object)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


#: The small files that record what a run did (no checkpoints, no weights).
RECORD_FILES = ("config.json", "metrics.jsonl", "lr_find.json", "lr_find.png",
                "results.md", "results.csv")


def keep_record(run_dir: str | Path, records_dir: str | Path, overwrite: bool = False) -> Path:
    """Copy the record of a run (:data:`RECORD_FILES`) to ``records_dir/<run name>/``.

    ``runs/`` is not versioned; the records let the report show the learning
    curves, the LR range test and the search of the shipped weights on any
    machine. Returns the record folder. Raises :class:`LVSegError` for a
    folder that is no run, or an existing record without ``overwrite``.
    """
    run = Path(run_dir)
    files = [run / name for name in RECORD_FILES if (run / name).is_file()]
    if not run.is_dir() or not files:
        raise LVSegError(f"{run}: not a run folder (none of {', '.join(RECORD_FILES)})")
    dest = Path(records_dir) / run.name
    if dest.resolve() == run.resolve():
        raise LVSegError(f"{run}: the record folder is the run itself")
    if dest.exists() and any(dest.iterdir()) and not overwrite:
        raise LVSegError(f"{dest} already holds a record; pass --overwrite to replace it")
    dest.mkdir(parents=True, exist_ok=True)
    for path in files:
        copy_file(path, dest / path.name)
    return dest


def read_lr_find(run_dir: str | Path) -> dict | None:
    """``lr_find.json`` of an LR range test (``lr``, ``loss``, ``suggestion``), or None."""
    data = read_json(Path(run_dir) / LR_FIND_FILE)
    return data if data.get("lr") and data.get("loss") else None


def write_lr_find(out: str | Path, result: dict) -> Path:
    """Write an LR range test's ``lr_find.json`` (``model``, ``suggestion``, ``lr``, ``loss``)."""
    return write_text(Path(out) / LR_FIND_FILE, json.dumps(result, indent=1))


# ---------------------------------------------------------------- fine-tuning chains


def find_run(roots: Sequence[Path], name: str) -> Path | None:
    """The first ``<root>/<name>`` folder of ``roots``."""
    return next((root / name for root in roots if (root / name).is_dir()), None)


def run_chain(runs: str | Path | Sequence[Path], architecture: str,
              weights: Path | None = None) -> list[Path]:
    """The training runs behind the ``architecture`` weights in ``weights``, oldest first.

    The last is the run named in the weights' config (``training.run``), else
    ``<architecture>-main``; before it come the runs whose exported model it was
    fine-tuned from (``init_run`` in its config, or ``init_weights`` pointing
    at ``runs/<run>/model``). Each
    run is looked for in ``runs`` (one folder, or several in order: the runs
    of this machine, then the kept records of ``python -m train archive``).
    """
    roots = [Path(runs)] if isinstance(runs, (str, Path)) else [Path(r) for r in runs]
    weights_cfg = read_json(Path(weights) / CONFIG_FILE) if weights else {}
    named = (weights_cfg.get("training") or {}).get("run")
    last = (find_run(roots, named) if named else None) or find_run(roots, f"{architecture}-main")
    if last is None:
        return []
    chain = [last]
    while len(chain) < 20:
        cfg = read_json(chain[0] / CONFIG_FILE)
        init = cfg.get("init_weights")
        model = Path(init) if init else None
        # train records init_run since a fine-tune may start from bundled weights;
        # older runs are traced through an init_weights of runs/<run>/model.
        parent = cfg.get("init_run") or (model.parent.name if model and model.name == "model"
                                         else None)
        run = find_run(roots, parent) if parent else None
        if run is None or run in chain:
            break
        if not cfg.get("init_run") and not (model.parent.parent.name == run.parent.name
                                            or model.parent.resolve() == run.resolve()):
            break
        chain.insert(0, run)
    return chain
