"""The networks: U-Net, Attention U-Net and V-Net behind one class.

Names, display names and spatial dimensions are in the torch-free
:mod:`lvseg_core.registry` (re-exported here).
"""

from ..registry import ARCHITECTURES, DISPLAY_NAMES, check_architecture
from .base import LVSegModel, builder, create_model, read_config

__all__ = [
    "ARCHITECTURES",
    "DISPLAY_NAMES",
    "LVSegModel",
    "builder",
    "check_architecture",
    "create_model",
    "read_config",
]
