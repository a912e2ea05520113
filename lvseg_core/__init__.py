"""LVSeg: heart segmentation (RV, LV myocardium, LV cavity) in short-axis cine MRI.

The public API::

    from lvseg_core import load_scan, Segmenter, save_mask
    scan = load_scan("patient.nii.gz")            # NIfTI, DICOM folder/zip, PNG
    seg = Segmenter.from_source("unet")           # bundled weights, or a Hub repo id
    result = seg.segment(scan)                    # result.mask: uint8 (x, y, z[, t])
    save_mask(result.mask, scan, "patient_seg.nii.gz")
"""

from .errors import LVSegError, ScanReadError, WeightsError
from .inference import Segmentation, Segmenter
from .io import load_label, load_scan, save_mask
from .labels import LABELS, STRUCTURES
from .models import ARCHITECTURES, LVSegModel, create_model
from .scan import Scan

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
