"""The :class:`Scan`: an image volume with its voxel-to-world geometry."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import ScanReadError


@dataclass
class Scan:
    """A short-axis MRI scan.

    Attributes:
        array: image intensities, float32, shape ``(x, y, z)`` for one frame or
            ``(x, y, z, t)`` for a cine series. Intensities are as read
            (raw scanner units or already normalised); models normalise them.
        affine: 4x4 voxel-to-world matrix (mm, nibabel/RAS convention).
        name: short name used for output files (no extension).
        source: where the scan came from (path or description).
        meta: extra facts (e.g. ``{"ED": 0, "ES": 9, "group": "NOR"}``,
            DICOM trigger times in ms).
    """

    array: np.ndarray
    affine: np.ndarray
    name: str = "scan"
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array, dtype=np.float32)
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.array.ndim not in (3, 4):
            raise ScanReadError(
                f"{self.name}: expected a 3D (x, y, z) or 4D (x, y, z, t) image, "
                f"got shape {self.array.shape}"
            )
        if self.affine.shape != (4, 4):
            raise ScanReadError(f"{self.name}: affine must be 4x4, got {self.affine.shape}")
        if not np.isfinite(self.affine).all():
            raise ScanReadError(f"{self.name}: affine contains NaN or infinity")

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size ``(sx, sy, sz)`` in mm, from the affine's column norms."""
        zooms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return tuple(float(z) for z in zooms)

    @property
    def is_cine(self) -> bool:
        """True for a 4D ``(x, y, z, t)`` scan."""
        return self.array.ndim == 4

    @property
    def n_frames(self) -> int:
        """Number of cardiac frames (1 for a 3D scan)."""
        return self.array.shape[3] if self.is_cine else 1

    @property
    def shape3d(self) -> tuple[int, int, int]:
        """Spatial shape ``(x, y, z)``."""
        return tuple(int(s) for s in self.array.shape[:3])

    def frame(self, t: int) -> "Scan":
        """Frame ``t`` as a 3D scan (a 3D scan returns itself for ``t == 0``)."""
        if not self.is_cine:
            if t != 0:
                raise IndexError(f"{self.name} has one frame; asked for frame {t}")
            return self
        if not 0 <= t < self.n_frames:
            raise IndexError(f"{self.name} has {self.n_frames} frames; asked for frame {t}")
        return Scan(self.array[..., t], self.affine, f"{self.name}_frame{t:02d}",
                    self.source, dict(self.meta))

    def frames(self) -> list["Scan"]:
        """All frames as 3D scans."""
        return [self.frame(t) for t in range(self.n_frames)]

    def require_3d(self) -> "Scan":
        """Return self, or raise a clear error if this is a 4D scan."""
        if self.is_cine:
            raise ScanReadError(
                f"{self.name}: a 3D scan is required here, got 4D {self.array.shape}; "
                "pick one frame"
            )
        return self
