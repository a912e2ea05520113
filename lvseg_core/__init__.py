"""LVSeg: heart segmentation (RV, LV myocardium, LV cavity) in short-axis cine MRI.

The public API::

    from lvseg_core import load_scan, Segmenter, save_mask
    scan = load_scan("patient.nii.gz")            # NIfTI, DICOM folder/zip, PNG
    seg = Segmenter.from_source("unet")           # bundled weights, or a Hub repo id
    result = seg.segment(scan)                    # result.mask: uint8 (x, y, z[, t])
    save_mask(result.mask, scan, "patient_seg.nii.gz")
"""

from importlib import import_module
from typing import TYPE_CHECKING

from .errors import LVSegError, ScanReadError, WeightsError
from .labels import LABELS, STRUCTURES

# Heavy modules (torch, MONAI) load on first use, so `python -m lvseg_core --help`
# starts at once.
_LAZY = {
    "Segmentation": "inference", "Segmenter": "inference",
    "load_label": "io", "load_scan": "io", "save_mask": "io",
    "ARCHITECTURES": "models", "LVSegModel": "models", "create_model": "models",
    "Scan": "scan",
}

if TYPE_CHECKING:  # pragma: no cover
    from .inference import Segmentation, Segmenter
    from .io import load_label, load_scan, save_mask
    from .models import ARCHITECTURES, LVSegModel, create_model
    from .scan import Scan


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "ARCHITECTURES",
    "LABELS",
    "LVSegError",
    "LVSegModel",
    "STRUCTURES",
    "Scan",
    "ScanReadError",
    "Segmentation",
    "Segmenter",
    "WeightsError",
    "create_model",
    "load_label",
    "load_scan",
    "save_mask",
]
