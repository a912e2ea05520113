"""The architectures, by name, without loading torch.

The command lines, the app and the benchmarks list and describe architectures
from here; :mod:`lvseg_core.models` builds them. Adding an architecture takes
a builder module in ``lvseg_core/models/`` and one entry in
:data:`ARCHITECTURES`.
"""

from __future__ import annotations

from dataclasses import dataclass

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
