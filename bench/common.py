"""What every benchmark shares: options, the data folder, the models and their weights.

Weights of each architecture are looked for, in order:

1. ``--weights-dir DIR``: ``DIR/<architecture>/`` (a weights folder or a
   training run folder); nothing else is tried when it is given;
2. the bundled weights ``weights/<architecture>/`` (``LVSEG_WEIGHTS_DIR``
   points elsewhere);
3. the exported model of the main training run ``<runs>/<architecture>-main/model``.

A model without weights is skipped with a note, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from lvseg_core import settings
from lvseg_core.errors import LVSegError, one_line
from lvseg_core.registry import (ARCHITECTURES, DISPLAY_NAMES, ENSEMBLE, ensemble_key,
                                 in_registry_order, is_ensemble, model_argument,
                                 model_display_name, parse_members)

#: The repository root.
ROOT = settings.REPO

#: The architectures, in report order.
ARCHS: tuple[str, ...] = tuple(ARCHITECTURES)

#: Display names.
DISPLAY = DISPLAY_NAMES


def default_data() -> Path:
    """``$LVSEG_DATA`` or ``../shared/data/acdc`` beside the repository."""
    return settings.data_dir()


def data_problem(data: Path) -> str | None:
    """Why ``data`` cannot be used as an ACDC-layout folder, or None when it can."""
    from lvseg_core.data import is_acdc_folder

    if not Path(data).is_dir():
        return f"data folder {data} not found (set LVSEG_DATA or pass --data)"
    if not is_acdc_folder(data):
        return f"{data} is not an ACDC-layout folder (patientNNN/Info.cfg)"
    return None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (for ``--cases``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def add_common_options(parser: argparse.ArgumentParser, cases_default: int | None = None,
                       json_default: str | None = None, ensemble: bool = False) -> None:
    """``--data --models --cases --weights-dir --runs --split --device --threads --json``
    (with ``ensemble``, ``--models`` also takes ensembles as ``python -m lvseg_core
    --model`` does: ``ensemble``, the three together, or a comma list of two or more)."""
    parser.add_argument("--data", type=Path, default=default_data(),
                        help="ACDC-layout folder (default: $LVSEG_DATA or ../shared/data/acdc)")
    if ensemble:
        parser.add_argument("--models", nargs="+", type=model_argument, default=list(ARCHS),
                            metavar="MODEL",
                            help=f"architectures (default: all three); '{ENSEMBLE}' averages "
                                 "the three, a comma list (unet,attention_unet) those named")
    else:
        parser.add_argument("--models", nargs="+", choices=ARCHS, default=list(ARCHS),
                            help="architectures (default: all three)")
    parser.add_argument("--cases", type=positive_int, default=cases_default, metavar="N",
                        help="at most N volumes (whole patients, ED and ES together)"
                        + (f" (default {cases_default})" if cases_default else
                           " (default: all of the split)"))
    parser.add_argument("--weights-dir", type=Path, default=None, metavar="DIR",
                        help="weights in DIR/<architecture>/ (default: bundled weights, "
                             "then runs/<architecture>-main/model)")
    parser.add_argument("--runs", type=Path, default=settings.runs_dir(),
                        help="training runs folder (default: runs/)")
    parser.add_argument("--split", choices=("validation", "all"), default="validation",
                        help="validation patients of the standard split (default) or all")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=Path(json_default) if json_default else None,
                        help="write the results here" + (f" (default {json_default})"
                                                          if json_default else ""))


def setup_torch(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def pick_device(name: str = "auto"):
    import torch

    from lvseg_core.inference import default_device

    if name == "cuda" and not torch.cuda.is_available():
        raise LVSegError("--device cuda: CUDA is not available here; use --device cpu")
    return default_device() if name == "auto" else torch.device(name)


# ---------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelSpec:
    """One architecture and where its weights are (``folder`` None: skipped, see ``note``)."""

    arch: str
    folder: Path | None
    source: str = ""
    note: str = ""

    @property
    def name(self) -> str:
        return DISPLAY.get(self.arch, self.arch)

    @property
    def available(self) -> bool:
        return self.folder is not None

    def fingerprint(self) -> dict:
        """Identity of the weights (folder and SHA-256 of model.safetensors)."""
        if self.folder is None:
            return {}
        from lvseg_core.hashing import WEIGHTS_FILE, read_sha256

        return {"folder": str(self.folder), "source": self.source,
                "sha256": read_sha256(self.folder / WEIGHTS_FILE)}

    def segmenter(self, device=None, **kwargs):
        """A :class:`~lvseg_core.inference.Segmenter` for these weights."""
        from lvseg_core.inference import Segmenter

        if self.folder is None:
            raise LVSegError(f"{self.arch}: {self.note}")
        return Segmenter.from_source(self.arch, str(self.folder), device=device, **kwargs)


@dataclass(frozen=True)
class EnsembleSpec:
    """The ensemble of ``members`` (mean class probabilities), shaped like a
    :class:`ModelSpec`; it has no weights folder of its own."""

    members: tuple[ModelSpec, ...]
    folder: None = None

    @property
    def arch(self) -> str:
        """Its ``--models`` value: ``ensemble`` (all three) or e.g. ``unet,attention_unet``."""
        return ensemble_key(m.arch for m in self.members)

    @property
    def name(self) -> str:
        """``Ensemble`` (all three) or e.g. ``Ensemble (U-Net + Attention U-Net)``."""
        return model_display_name(self.arch)

    @property
    def available(self) -> bool:
        return all(m.available for m in self.members)

    @property
    def note(self) -> str:
        return "; ".join(f"{m.arch}: {m.note}" for m in self.members if not m.available)

    @property
    def source(self) -> str:
        return " + ".join(m.source for m in self.members)

    def fingerprint(self) -> dict:
        """The members' identities."""
        return {"members": {m.arch: m.fingerprint() for m in self.members}}

    def identity(self) -> dict[str, str]:
        """``{architecture: SHA-256}`` of the members' weights, as
        :func:`lvseg_core.ensemble.member_identity` names a loaded ensemble."""
        return member_shas(self.fingerprint())

    def segmenter(self, device=None, **kwargs):
        """An :class:`~lvseg_core.ensemble.Ensemble` of the members' segmenters."""
        from lvseg_core.ensemble import Ensemble

        if not self.available:
            raise LVSegError(f"{self.arch}: {self.note}")
        return Ensemble([m.segmenter(device, **kwargs) for m in self.members])


def member_shas(weights_id: dict) -> dict[str, str]:
    """``{architecture: SHA-256}`` of an ensemble's ``weights_id`` (its fingerprint)."""
    return {arch: ident["sha256"] for arch, ident in weights_id["members"].items()}


def result_stem(model: str) -> str:
    """How a result file names ``model`` (a ``--models`` value): the architecture,
    ``ensemble``, or e.g. ``ensemble_unet_attention_unet`` for a named ensemble."""
    return f"{ENSEMBLE}_{model.replace(',', '_')}" if "," in model else model


def shown_path(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def resolve_models(models: Iterable[str], weights_dir: Path | None = None,
                   runs: Path | None = None) -> list[ModelSpec]:
    """Where the weights of each of ``models`` are (see the module docstring);
    ``ensemble`` gives an :class:`EnsembleSpec` of the three, a comma list
    (``unet,attention_unet``) one of those named, in registry order."""
    from lvseg_core import hub

    specs: list = []
    for arch in models:
        names = parse_members(arch)
        if is_ensemble(arch):      # its members in registry order: one name per ensemble
            members = in_registry_order(names)
            specs.append(EnsembleSpec(tuple(resolve_models(members, weights_dir, runs))))
            continue
        arch = names[0]
        if weights_dir is not None:
            candidates = [(Path(weights_dir) / arch, f"{weights_dir}/{arch}")]
        else:
            folder = hub.bundled_folder(arch)
            candidates = [(folder, f"bundled ({shown_path(folder)})")]
            if runs is not None:
                candidates.append((Path(runs) / f"{arch}-main",
                                   f"training run {Path(runs).name}/{arch}-main"))
        spec = None
        for folder, source in candidates:
            found = hub.weights_folder(folder) if folder.is_dir() else None
            if found is None:
                continue
            try:
                hub.resolve_weights(arch, str(found), fallback=False)
            except LVSegError as err:
                spec = ModelSpec(arch, None, source, f"unusable weights in {found}: {err}")
                continue
            spec = ModelSpec(arch, found, source)
            break
        if spec is None:
            where = " or ".join(str(f) for f, _ in candidates)
            note = f"no trained weights found ({where})"
            run = Path(runs) / f"{arch}-main" if runs is not None and weights_dir is None \
                else None
            if run is not None and run.is_dir():
                note += (f"; the run {run.name} has no exported model (unfinished or "
                         f"stopped): 'python -m train export {run} --out weights/{arch}' "
                         "exports its best checkpoint")
            spec = ModelSpec(arch, None, "", note)
        specs.append(spec)
    return specs


# ---------------------------------------------------------------- data


def split_patients(data: Path, split: str = "validation", cases: int | None = None
                   ) -> list[str]:
    """Patients to evaluate: the validation split (or all), at most ``cases`` volumes
    as whole patients (``cases // 2`` patients, at least one), taken in turn from
    each pathology group so that a small subset still covers the groups."""
    from lvseg_core.data import VALIDATION_PATIENTS, select, select_cases

    labelled = select_cases(data)
    wanted = sorted({c.patient for c in select(labelled, split)})
    if split == "validation" and not wanted:
        raise LVSegError(f"{data}: none of the validation patients "
                         f"({', '.join(VALIDATION_PATIENTS)}) is there; use --split all")
    if cases is None:
        return wanted
    count = max(1, int(cases) // 2)
    group = {c.patient: c.group or "?" for c in labelled}
    queues: dict[str, list[str]] = {}
    for patient in wanted:
        queues.setdefault(group[patient], []).append(patient)
    chosen: list[str] = []
    while len(chosen) < min(count, len(wanted)):
        for queue in queues.values():
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    return sorted(chosen, key=wanted.index)


def environment() -> dict:
    """Device, threads and versions, recorded with every measurement."""
    import platform

    import torch

    from lvseg_core.inference import default_device, device_name

    return {"device": device_name(default_device()), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "cuda": torch.cuda.is_available(), "time_utc": time.strftime(
                "%Y-%m-%d %H:%M:%S", time.gmtime())}


def write_json(data: Any, path: Path | None) -> None:
    """Strict JSON (NaN as null) through lvseg_core.workflows.write_json."""
    if path is None:
        return
    from lvseg_core.workflows import write_json as _write

    _write(data, path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def num(value: Any) -> float:
    """``value`` as a float, NaN for None / non-numbers."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return value


def fmt(value: Any, digits: int = 3, unit: str = "") -> str:
    """A table cell: rounded number, or ``n/a``."""
    value = num(value)
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}{unit}"


def reason(err: BaseException) -> str:
    """One line for an error: the message of an LVSegError, else type and message."""
    text = one_line(err)
    if isinstance(err, LVSegError):
        return text or type(err).__name__
    return f"{type(err).__name__}: {text}" if str(err).strip() else type(err).__name__


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def finish(report: dict, json_path: Path | None, show=None) -> int:
    """Write a benchmark's ``report`` as JSON, print it with ``show(report)`` (when
    given); exit code 0 when any model was measured, else 1."""
    write_json(report, json_path)
    if show is not None:
        show(report)
    return 0 if report["models"] else 1


def run_main(fn, args) -> int:
    """Run a benchmark's work; one-line errors, exit code 1 on failure."""
    try:
        return fn(args)
    except KeyboardInterrupt:
        log("error: interrupted")
    except (LVSegError, OSError) as err:
        log(f"error: {one_line(err)}")
    return 1
