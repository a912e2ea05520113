"""2D picture files (PNG, JPEG, BMP, TIFF) read as one-slice scans."""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
from PIL import Image, ImageOps

from ..errors import ScanReadError
from ..policy import check_data_size
from ..scan import Scan
from ._common import as_path, reason, require_file

#: File name endings read by :func:`load_image` (lower case).
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

#: PIL modes whose pixel values are read as they are (no colour conversion).
_GREY_MODES = {"1", "L", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}


def load_image(path: str | os.PathLike, spacing_mm: float | None = None) -> Scan:
    """Read a 2D picture as a grayscale float32 scan of shape ``(x, y, 1)``.

    ``x`` is the image column index and ``y`` the row index (the transpose of
    PIL's ``(rows, cols)`` array); EXIF orientation is applied first. Colour
    images are converted to luminance; 16-bit and float images keep their
    values. The affine is ``diag(s, s, 1, 1)`` with ``s = spacing_mm`` (1 mm
    when unknown, flagged by ``meta["assumed_spacing"] = True``); the slice
    thickness is a nominal 1 mm.
    """
    path = as_path(path)
    require_file(path, "image file")
    if spacing_mm is not None:
        try:
            spacing = float(spacing_mm)
        except (TypeError, ValueError):
            spacing = math.nan
        if not math.isfinite(spacing) or spacing <= 0:
            raise ScanReadError(f"{path.name}: pixel spacing must be a positive number "
                                f"of mm, got {spacing_mm!r}")
    else:
        spacing = 1.0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                check_data_size((*img.size, 1), 4, path.name)   # before decoding
                if getattr(img, "n_frames", 1) > 1:
                    raise ScanReadError(f"{path.name}: multi-page images are not "
                                        "supported; save one slice per file")
                img = ImageOps.exif_transpose(img)
                if img.mode not in _GREY_MODES:
                    img = img.convert("L")
                pixels = np.asarray(img, dtype=np.float32)
    except ScanReadError:
        raise
    except Exception as exc:  # UnidentifiedImageError, truncated data, bombs...
        raise ScanReadError(f"{path.name}: not a readable image ({reason(exc)})") from None
    if pixels.ndim != 2 or 0 in pixels.shape:
        raise ScanReadError(f"{path.name}: unexpected image shape {pixels.shape}")
    array = np.ascontiguousarray(pixels.T)[:, :, np.newaxis]
    affine = np.diag([spacing, spacing, 1.0, 1.0])
    meta = {"source_format": "image", "assumed_spacing": spacing_mm is None}
    return Scan(array, affine, name=path.stem, source=str(path), meta=meta)
