"""An ensemble of models that averages their class probabilities.

Each member keeps its own preprocessing plan (spacing, padding, z
divisor) and maps its probabilities back onto the input grid
(:meth:`Segmenter.predict_probabilities`); the ensemble averages them there,
voxel by voxel, then takes the argmax and post-processes like one model.
:class:`Ensemble` is a :class:`Segmenter`: everything that segments with one
model (``predict``, ``evaluate``, the app, the benchmarks) takes it as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from .errors import LVSegError
from .hub import Weights
from .inference import Segmenter, as_device, default_device
from .registry import (check_architecture, ensemble_key, ensemble_name, is_ensemble,
                       parse_members)

if TYPE_CHECKING:
    import torch

    from .qc import Rule


@dataclass(frozen=True)
class EnsembleWeights:
    """Where the members' weights came from (the interface of :class:`~lvseg_core.hub.Weights`)."""

    members: tuple[Weights, ...]

    @property
    def description(self) -> str:
        """E.g. ``"bundled:unet + bundled:vnet"``."""
        return " + ".join(w.description for w in self.members)

    @property
    def sha256(self) -> str:
        """The members' SHA-256 of ``model.safetensors``, joined by ``+``."""
        return "+".join(w.sha256 for w in self.members)

    @property
    def notice(self) -> str:
        return "; ".join(w.notice for w in self.members if w.notice)

    @property
    def kind(self) -> str:
        kinds = {w.kind for w in self.members}
        return kinds.pop() if len(kinds) == 1 else "mixed"


class Ensemble(Segmenter):
    """Segments scans with several models by averaging their class probabilities.

    Args:
        members: loaded segmenters (any mix of 2D and 3D models); their own
            ``postprocess`` is not used, the ensemble's is.
        postprocess: keep the largest connected component per structure.
        weights: per-member sources, for reports (default: the members').
    """

    def __init__(self, members: Sequence[Segmenter], postprocess: bool = True) -> None:
        if not members:
            raise LVSegError("an ensemble needs at least one model")
        labels = {tuple(m._config.get("labels") or ()) for m in members}
        if len(labels) != 1:
            raise LVSegError("ensemble members must predict the same labels")
        self.members = list(members)
        self.device = members[0].device
        self.postprocess = postprocess
        self.precision = members[0].precision
        self.dtype = members[0].dtype
        self.tta = all(m.tta for m in members)
        self._model = None
        self.onnx = None
        #: The members' notices (why a requested backend was not used), "" when none.
        self.notice = "; ".join(m.notice for m in members if m.notice)
        member_weights = [m.weights for m in members]
        self.weights = (EnsembleWeights(tuple(member_weights))
                        if all(w is not None for w in member_weights) else None)
        self.qc_rules, qc_note = ensemble_rules(member_identity(self.members))
        self.notice = "; ".join(n for n in (self.notice, qc_note) if n)

    @classmethod
    def from_source(cls, architectures: str | Sequence[str],
                    weights: str | Sequence[str | None] | dict[str, str] | None = None,
                    device: str | torch.device | None = None, postprocess: bool = True,
                    **kwargs) -> "Ensemble":
        """Load (cached) members.

        Args:
            architectures: a ``--model`` value (see :func:`parse_members`) or a list.
            weights: None/"bundled" for all, one source per member (list, or a
                comma-separated string), or ``{architecture: source}``.
            device, kwargs: as for :meth:`Segmenter.from_source` (precision, tta,
                batch_size).
        """
        names = (parse_members(architectures) if isinstance(architectures, str)
                 else [check_architecture(a) for a in architectures])
        sources = member_sources(names, weights)
        device = as_device(device) if device is not None else default_device()
        members = [Segmenter.from_source(name, source, device, **kwargs)
                   for name, source in zip(names, sources)]
        return cls(members, postprocess=postprocess)

    @property
    def architecture(self) -> str:
        return ensemble_name(self.architectures)

    @property
    def architectures(self) -> list[str]:
        return [m.architecture for m in self.members]

    @property
    def validation_metrics(self) -> dict[str, float | str]:
        """Empty: an ensemble's figures are not stored with any weights (its
        members' are theirs alone)."""
        return {}

    @property
    def members_validation_metrics(self) -> list[dict[str, float | str]]:
        return [m.validation_metrics for m in self.members]

    @property
    def backend(self) -> str:
        """The members' backends, e.g. ``"onnx+torch"`` (one name when they agree)."""
        names = sorted({m.backend for m in self.members})
        return "+".join(names)

    @property
    def precision_label(self) -> str:
        labels = sorted({m.precision_label for m in self.members})
        return labels[0] if len(labels) == 1 else "+".join(labels)

    def member_probabilities(self, volume: np.ndarray, spacing) -> list[torch.Tensor]:
        """Each member's probabilities ``(C, x, y, z)`` on the input grid."""
        return [m.predict_probabilities(volume, spacing) for m in self.members]

    def probability_array(self, volume: np.ndarray, spacing) -> np.ndarray:
        """Mean of the members' class probabilities ``(C, x, y, z)`` (float32)."""
        return average_probabilities([m.probability_array(volume, spacing)
                                      for m in self.members])


def member_identity(members: Sequence[Segmenter]) -> dict[str, str] | None:
    """``{architecture: SHA-256 of its model.safetensors}`` of ``members`` (None when
    one was given in memory: no file to name it by)."""
    if any(m.weights is None for m in members):
        return None
    return {m.architecture: m.weights.sha256 for m in members}


def read_ensemble_limits(path: Path | None = None) -> list[dict]:
    """The entries of the ensembles' QC limits file (:func:`settings.ensemble_limits_file`):
    ``[{"members": {architecture: sha256}, "qc_limits": {...}}, ...]``; [] without one.

    Raises:
        WeightsError: a file that is no such list (or larger than 1 MB).
    """
    import json

    from . import settings
    from .errors import WeightsError

    path = settings.ensemble_limits_file() if path is None else Path(path)
    if not path.is_file():
        return []
    if path.stat().st_size > 2**20:
        raise WeightsError(f"{path}: larger than 1 MB, not an ensemble QC limits file")
    try:
        entries = json.loads(path.read_text()).get("ensembles")
    except (ValueError, UnicodeDecodeError, AttributeError) as err:
        raise WeightsError(f"{path}: not an ensemble QC limits file ({err})") from None
    if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("members"), dict) for e in entries):
        raise WeightsError(f"{path}: 'ensembles' must be a list of {{members, qc_limits}}")
    return entries


def ensemble_rules(identity: dict[str, str] | None, path: Path | None = None
                   ) -> tuple[tuple["Rule", ...], str]:
    """The QC rules of the ensemble of the members ``identity`` names
    (:func:`member_identity`), and a note when they are the default.

    Averaging the members' probabilities raises the entropy wherever they
    disagree, and two networks agree with each other's flips differently from
    one, so an ensemble is rated with limits calibrated on its own good training
    predictions (:func:`calibration_command`), found by its members'
    architectures and weights. Any other ensemble gets
    :data:`lvseg_core.qc.RULES` (calibrated on the bundled U-Net alone) and a
    note saying so, with the command that calibrates it.
    """
    from .qc import RULES, model_rules

    for entry in read_ensemble_limits(path) if identity else []:
        if entry["members"] == identity:
            return model_rules(entry.get("qc_limits"), f"ensemble QC limits of {identity}"), ""
    if not identity:
        return RULES, ("QC limits not calibrated for this ensemble (weights given in "
                       "memory): it is rated with the U-Net's")
    return RULES, ("QC limits not calibrated for this ensemble: it is rated with the "
                   f"U-Net's ({calibration_command(identity)})")


def calibration_command(members: Iterable[str]) -> str:
    """The command that calibrates and stores the QC limits of the ensemble of
    ``members`` (bundled weights), e.g. ``python -m bench.qc --calibrate --models
    unet,attention_unet --store``."""
    return f"python -m bench.qc --calibrate --models {ensemble_key(members)} --store"


def average_probabilities(probabilities: Sequence):
    """Voxel-wise mean of class probabilities of one grid ``(C, x, y, z)`` (numpy
    arrays or torch tensors)."""
    if not probabilities:
        raise LVSegError("no probabilities to average")
    total = probabilities[0] + 0  # a new array or tensor
    for probs in probabilities[1:]:
        total += probs
    return total / len(probabilities)


def member_sources(names: Sequence[str],
                   weights: str | Sequence[str | None] | dict[str, str] | None
                   ) -> list[str | None]:
    """One weights source per member (see :meth:`Ensemble.from_source`).

    Raises:
        LVSegError: a list of the wrong length, or one folder/repo for several models.
    """
    if weights is None:
        return [None] * len(names)
    if isinstance(weights, dict):
        unknown = set(weights) - set(names)
        if unknown:
            raise LVSegError(f"weights given for models not in the ensemble: "
                             f"{', '.join(sorted(unknown))}")
        return [weights.get(n) for n in names]
    if isinstance(weights, (str, Path)):
        text = str(weights)
        if text == "bundled":
            return [None] * len(names)
        parts = [p.strip() for p in text.split(",")]
        if len(parts) == 1 and len(names) > 1:
            raise LVSegError(
                f"--weights {text!r}: an ensemble of {len(names)} models needs one source per "
                f"model, separated by commas, in the order {','.join(names)} (or 'bundled')")
        weights = parts
    weights = list(weights)
    if len(weights) != len(names):
        raise LVSegError(f"{len(weights)} weights sources for {len(names)} models "
                         f"({','.join(names)})")
    return [None if w in (None, "", "bundled") else str(w) for w in weights]


def load_segmenter(model: str, weights: str | None = None,
                   device: str | torch.device | None = None, **kwargs) -> Segmenter:
    """A :class:`Segmenter` for one architecture, or an :class:`Ensemble` for
    ``"ensemble"`` or a comma-separated list (see :func:`parse_members`)."""
    names = parse_members(model)
    if not is_ensemble(model):
        return Segmenter.from_source(names[0], weights, device, **kwargs)
    return Ensemble.from_source(names, weights, device, **kwargs)
