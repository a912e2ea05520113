"""The architectures, by name, without loading torch.

The command lines, the app and the benchmarks list and describe architectures
from here; :mod:`lvseg_core.models` builds them. Adding an architecture takes
a builder module in ``lvseg_core/models/`` and one entry in
:data:`ARCHITECTURES`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Iterable, Sequence

from .errors import WeightsError


@dataclass(frozen=True)
class Architecture:
    """One architecture of the registry.

    Attributes:
        name: registry key, e.g. ``"unet"``.
        display_name: human-readable name, e.g. ``"U-Net"``.
        spatial_dims: 2 (slices ``(B, 1, H, W)``) or 3 (stacks ``(B, 1, D, H, W)``).
        builder: ``"module:function"`` in :mod:`lvseg_core.models` that builds the network.
    """

    name: str
    display_name: str
    spatial_dims: int
    builder: str


#: Name -> architecture, in the order the interfaces list them.
ARCHITECTURES: dict[str, Architecture] = {
    a.name: a for a in (
        Architecture("unet", "U-Net", 2, "unet:build_unet"),
        Architecture("attention_unet", "Attention U-Net", 2, "attention_unet:build_attention_unet"),
        Architecture("vnet", "V-Net", 3, "vnet:build_vnet"),
    )
}

#: Name -> human-readable name.
DISPLAY_NAMES: dict[str, str] = {name: a.display_name for name, a in ARCHITECTURES.items()}


def check_architecture(name: str) -> str:
    """Return ``name`` if it is a known architecture, else raise a clear error."""
    if not isinstance(name, str) or name not in ARCHITECTURES:
        known = ", ".join(ARCHITECTURES)
        raise WeightsError(f"unknown architecture {name!r}; choose one of: {known}")
    return name


def display_name(name: str) -> str:
    """``"U-Net"`` for ``"unet"``; an unknown name as it is."""
    return DISPLAY_NAMES.get(name, name)


def spatial_dims(name: str) -> int:
    """2 or 3: the rank of the architecture's input (raises for an unknown name)."""
    return ARCHITECTURES[check_architecture(name)].spatial_dims


#: ``--model ensemble``: every architecture, in registry order (lvseg_core.ensemble).
ENSEMBLE = "ensemble"


def parse_members(spec: str) -> list[str]:
    """Architectures named by a ``--model`` value.

    ``"ensemble"`` is all of :data:`ARCHITECTURES`; ``"unet,attention_unet"``
    those two; ``"unet"`` that one.

    Raises:
        WeightsError: an unknown or repeated name, an empty list, or a comma list
            of fewer than two names.
    """
    text = str(spec).strip()
    if text == ENSEMBLE:
        return list(ARCHITECTURES)
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise WeightsError(f"{spec!r}: name a model, several separated by commas, "
                           f"or '{ENSEMBLE}'")
    for name in names:
        if name not in ARCHITECTURES:
            raise WeightsError(f"{spec!r}: unknown model {name!r} (choose from "
                               f"{', '.join(ARCHITECTURES)} or '{ENSEMBLE}')")
    if len(set(names)) != len(names):
        raise WeightsError(f"{spec!r}: a model is named twice")
    if "," in text and len(names) < 2:
        raise WeightsError(f"{spec!r}: an ensemble names two or more models")
    return names


def model_argument(text: str) -> str:
    """argparse ``type`` of a ``--model`` value (:func:`parse_members` checks it):
    ``text`` stripped, or a one-line usage error."""
    try:
        parse_members(text)
    except WeightsError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text.strip()


def is_ensemble(model: str) -> bool:
    """Whether a ``--model`` value that :func:`parse_members` takes names an
    ensemble: ``ensemble`` or a comma list."""
    return str(model).strip() == ENSEMBLE or "," in str(model)


def ensemble_name(members: Sequence[str]) -> str:
    """``"ensemble"`` for all architectures in order, else ``"ensemble(unet,vnet)"``."""
    if list(members) == list(ARCHITECTURES):
        return ENSEMBLE
    return f"{ENSEMBLE}({','.join(members)})"


def in_registry_order(members: Iterable[str]) -> list[str]:
    """The known architectures among ``members``, in registry order (so that an
    ensemble has one name whatever order its members were given in)."""
    chosen = set(members)
    return [name for name in ARCHITECTURES if name in chosen]


def ensemble_key(members: Iterable[str]) -> str:
    """The ``--model`` value of the ensemble of ``members``, in registry order:
    ``"ensemble"`` for all architectures, else e.g. ``"unet,attention_unet"``."""
    ordered = in_registry_order(members)
    return ENSEMBLE if ordered == list(ARCHITECTURES) else ",".join(ordered)


def model_display_name(model: str) -> str:
    """``"U-Net"`` for ``"unet"``, ``"Ensemble"`` for ``"ensemble"`` (or all three
    named), ``"Ensemble (U-Net + Attention U-Net)"`` for ``"unet,attention_unet"``;
    anything else as it is."""
    try:
        names = parse_members(model)
    except WeightsError:
        return model
    if not is_ensemble(model):
        return display_name(names[0])
    if ensemble_key(names) == ENSEMBLE:
        return "Ensemble"
    return f"Ensemble ({' + '.join(display_name(n) for n in names)})"
