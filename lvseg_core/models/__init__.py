"""The networks: U-Net, Attention U-Net and V-Net behind one class.

Names, display names and spatial dimensions are in the torch-free
:mod:`lvseg_core.registry` (re-exported here), reading a ``config.json`` in the
torch-free :mod:`lvseg_core.models.config`; the classes that need torch are
imported on first use, so that reading a config imports no network library.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ..registry import ARCHITECTURES, DISPLAY_NAMES, check_architecture
from .config import read_config

if TYPE_CHECKING:
    from .base import LVSegModel, builder, create_model

__all__ = [
    "ARCHITECTURES",
    "DISPLAY_NAMES",
    "LVSegModel",
    "builder",
    "check_architecture",
    "create_model",
    "read_config",
]


def __getattr__(name: str) -> Any:
    if name in ("LVSegModel", "builder", "create_model"):
        return getattr(import_module(".base", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
