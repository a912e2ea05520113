"""The architecture registry: U-Net, Attention U-Net and V-Net behind one class."""

from .base import (
    ARCHITECTURES,
    DISPLAY_NAMES,
    LVSegModel,
    check_architecture,
    create_model,
    read_config,
)

__all__ = [
    "ARCHITECTURES",
    "DISPLAY_NAMES",
    "LVSegModel",
    "check_architecture",
    "create_model",
    "read_config",
]
