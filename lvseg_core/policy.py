"""What untrusted input may cost, and what the Hub may be sent.

Every limit is checked from a header (shape, data type, voxel size) before the
data it describes is read or allocated, and each refusal is one line that
names the setting to raise. The settings are read from the environment when
checked (through :mod:`lvseg_core.settings`), so a deployment (or a test) sets
them without code:

- ``LVSEG_MAX_VOXELS``: voxels of one scan, ``x * y * z * t`` (default 128 M;
  a 512 x 428 x 18 x 30 cine is 118 M);
- ``LVSEG_MAX_DATA_MB``: bytes a file's header says its data occupy once
  decompressed, header extensions included (default 1024 MB);
- ``LVSEG_MAX_GRID_VOXELS``: voxels of one frame on the network's grid after
  in-plane resampling, ``x' * y' * z`` (default 8 M; an ACDC frame is ~0.6 M);
- ``LVSEG_MAX_FRAMES``: cardiac frames of one scan (default 100);
- ``LVSEG_MAX_WEIGHTS_MB``: size of a weight file fetched from the Hub
  (default 512 MB; the bundled ones are 8 MB);

In public mode the scan limits default lower (32 M voxels, 256 MB, 40 frames).
- ``LVSEG_HUB_TIMEOUT``: seconds any Hub request may wait for the server
  (default 10);
- ``LVSEG_HUB_USE_TOKEN``: ``1`` lets Hub fetches send the owner's ``HF_TOKEN``
  (default: anonymous; never in public mode);
- ``LVSEG_PUBLIC``: ``1`` for a public deployment (see the README,
  "Deploying publicly").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from . import settings
from .errors import ScanReadError

#: Voxel sizes (mm) outside this range are not from a scanner.
SPACING_RANGE_MM: tuple[float, float] = (1e-3, 1e3)

@dataclass(frozen=True)
class Limits:
    """Resource limits on one untrusted scan (see the module docstring)."""

    max_voxels: int = 128_000_000
    max_data_bytes: int = 1024 * 2**20
    max_grid_voxels: int = 8_000_000
    max_frames: int = 100
    max_weights_bytes: int = 512 * 2**20

    @classmethod
    def from_env(cls) -> "Limits":
        """The limits set in the environment, defaults otherwise (smaller ones
        for scans in public mode: 32 M voxels, 256 MB, 40 frames)."""
        public = public_mode()
        return cls(
            settings.max_voxels(32_000_000 if public else cls.max_voxels),
            settings.max_data_bytes(256 * 2**20 if public else cls.max_data_bytes),
            settings.max_grid_voxels(cls.max_grid_voxels),
            settings.max_frames(40 if public else cls.max_frames),
            settings.max_weights_bytes(cls.max_weights_bytes))


def _shape_text(shape: Sequence[int]) -> str:
    return " x ".join(str(int(s)) for s in shape)


def check_data_size(shape: Sequence[int], itemsize: int, label: str,
                    extra_bytes: int = 0) -> None:
    """Raise :class:`ScanReadError` unless an array of ``shape`` with ``itemsize``
    bytes per value (plus ``extra_bytes`` of header) fits the limits."""
    limits = Limits.from_env()
    voxels = math.prod(int(s) for s in shape)
    data = voxels * int(itemsize) + int(extra_bytes)
    frames = int(shape[3]) if len(shape) > 3 else 1
    if frames > limits.max_frames:
        raise ScanReadError(f"{label}: too many frames: the header declares {frames}; the "
                            f"limit is {limits.max_frames} (LVSEG_MAX_FRAMES)")
    if voxels > limits.max_voxels or data > limits.max_data_bytes:
        raise ScanReadError(
            f"{label}: too large: the header declares {_shape_text(shape)} voxels "
            f"({voxels / 1e6:.1f} M voxels, {data / 2**20:.0f} MB of data); the limit is "
            f"{limits.max_voxels / 1e6:.0f} M voxels and {limits.max_data_bytes / 2**20:.0f} MB "
            "(LVSEG_MAX_VOXELS, LVSEG_MAX_DATA_MB)")


def check_spacing(spacing: Sequence[float], label: str = "scan") -> tuple[float, ...]:
    """``spacing`` (mm) as floats, or :class:`ScanReadError` when a voxel size is
    not finite or outside :data:`SPACING_RANGE_MM`."""
    values = tuple(float(s) for s in spacing)
    lo, hi = SPACING_RANGE_MM
    bad = [s for s in values if not (math.isfinite(s) and lo <= s <= hi)]
    if bad:
        shown = ", ".join(f"{s:.4g}" for s in values)
        raise ScanReadError(f"{label}: voxel size ({shown}) mm is not usable; each must be "
                            f"a finite number from {lo:g} to {hi:g} mm")
    return values


def check_grid(size_xy: Sequence[int], z: int, label: str = "scan") -> None:
    """Raise :class:`ScanReadError` when a frame resampled to ``size_xy`` in-plane
    (``z`` slices) exceeds ``LVSEG_MAX_GRID_VOXELS``."""
    limit = Limits.from_env().max_grid_voxels
    voxels = math.prod(int(s) for s in size_xy) * int(z)
    if voxels > limit:
        raise ScanReadError(
            f"{label}: too large once resampled to the model's pixel size: "
            f"{_shape_text((*size_xy, z))} voxels ({voxels / 1e6:.1f} M) per frame, over "
            f"the {limit / 1e6:.0f} M limit (LVSEG_MAX_GRID_VOXELS); check the voxel size "
            "in the header")


def public_mode() -> bool:
    """True in a public deployment (``LVSEG_PUBLIC=1``)."""
    return settings.public_mode()


def hub_token() -> bool | None:
    """The ``token`` argument of Hub fetches: ``False`` (anonymous) unless the
    owner opted in with ``LVSEG_HUB_USE_TOKEN=1`` outside public mode, then
    ``None`` (huggingface_hub's own token lookup, ``HF_TOKEN``)."""
    return None if settings.hub_use_token() and not public_mode() else False


def hub_timeout() -> float:
    """Seconds a Hub request may wait for the server (``LVSEG_HUB_TIMEOUT``)."""
    return settings.hub_timeout()
