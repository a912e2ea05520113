"""The per-scan pipeline: segment -> metrics -> volumes -> clinical indices -> one result.

Every caller that segments a scan and measures it goes through :func:`run_scan`
(``predict`` and ``evaluate`` in :mod:`lvseg_core.workflows`, the app's
Segment and Compare pages, the benchmarks through ``evaluate``), so the
measurements of a scan are the same everywhere. Reading the scan is
:func:`lvseg_core.io.load_scan` (or :mod:`lvseg_core.io.upload` for bytes);
what a caller writes from the result (a CSV row, a JSON record, a page) is
its own business.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .clinical import cine_indices, structure_volumes
from .errors import LVSegError, ScanReadError, one_line
from .labels import NUM_CLASSES
from .metrics import evaluate_segmentation
from .qc import MAX_PROBABILITY_VALUES, QC_FLIPS, QCResult, check_segmentation
from .scan import Scan

if TYPE_CHECKING:  # pragma: no cover
    from .inference import Segmentation


@dataclass
class ScanResult:
    """A segmented scan with its measurements.

    Attributes:
        scan: the input, 3D ``(x, y, z)`` or cine ``(x, y, z, t)``.
        segmentation: mask (same shape, uint8 ACDC labels), seconds, device
            and, when asked for, probabilities.
        architecture, weights: which model produced it (weights as described
            by :attr:`lvseg_core.hub.Weights.description`, or ``"in-memory"``).
        truth: expert labels on the scan's grid (3D for a 3D scan, 4D for a
            cine scan), or None.
        truth_frames: frames with ground truth (``[0]`` for a labelled 3D scan).
        metrics: frame -> :func:`~lvseg_core.metrics.evaluate_segmentation`.
        volumes: per frame, predicted structure volumes in mL.
        manual_volumes: per labelled frame, the same from the ground truth.
        indices: :func:`~lvseg_core.clinical.cine_indices` of a cine scan (None
            for a 3D scan, or when they cannot be computed: see ``notes``).
        manual_indices: the same from the ground truth when ED and ES are labelled.
        notes: remarks for the user.
        precision: what the network computed in (``fp32``, ``bf16``, ``fp16``).
        tta: whether test-time flips were averaged.
        qc: quality control of the segmentation (:mod:`lvseg_core.qc`).
    """

    scan: Scan
    segmentation: Segmentation
    architecture: str
    weights: str
    truth: np.ndarray | None = None
    truth_frames: list[int] = field(default_factory=list)
    metrics: dict[int, dict] = field(default_factory=dict)
    volumes: list[dict[str, float]] = field(default_factory=list)
    manual_volumes: dict[int, dict[str, float]] = field(default_factory=dict)
    indices: dict | None = None
    manual_indices: dict | None = None
    notes: list[str] = field(default_factory=list)
    precision: str = "fp32"
    tta: bool = False
    qc: QCResult | None = None

    @property
    def mask(self) -> np.ndarray:
        return self.segmentation.mask

    @property
    def ed(self) -> int | None:
        return self.indices["ED_frame"] if self.indices else None

    @property
    def es(self) -> int | None:
        return self.indices["ES_frame"] if self.indices else None

    def image_at(self, t: int = 0) -> np.ndarray:
        """Intensities ``(x, y, z)`` of frame ``t``."""
        return self.scan.array[..., t] if self.scan.is_cine else self.scan.array

    def mask_at(self, t: int = 0) -> np.ndarray:
        """Predicted labels ``(x, y, z)`` of frame ``t``."""
        return self.mask[..., t] if self.mask.ndim == 4 else self.mask

    def truth_at(self, t: int = 0) -> np.ndarray | None:
        """Expert labels ``(x, y, z)`` of frame ``t``, or None."""
        if self.truth is None or t not in self.truth_frames:
            return None
        if self.truth.ndim == 4:
            return self.truth[..., t]
        return self.truth


def place_truth(scan: Scan, truth: np.ndarray | None,
                truth_frame: int = 0) -> tuple[np.ndarray | None, list[int]]:
    """Check ``truth`` against ``scan``; return it on the scan's grid with its frames.

    A 3D scan takes ``(x, y, z)`` labels; a cine scan ``(x, y, z, t)`` (every
    frame labelled) or one frame ``(x, y, z)`` at ``truth_frame``.

    Raises:
        ScanReadError: the shape matches neither; LVSegError: ``truth_frame`` outside.
    """
    if truth is None:
        return None, []
    truth = np.asarray(truth)
    if not scan.is_cine:
        if truth.shape != scan.shape3d:
            raise ScanReadError(f"ground truth shape {truth.shape} does not match the scan "
                                f"{scan.shape3d}")
        return truth, [0]
    if truth.shape == scan.array.shape:
        return truth, list(range(scan.n_frames))
    if truth.shape == scan.shape3d:
        if not 0 <= truth_frame < scan.n_frames:
            raise LVSegError(f"ground-truth frame {truth_frame} is outside 0..{scan.n_frames - 1}")
        full = np.zeros(scan.array.shape, np.uint8)
        full[..., truth_frame] = truth
        return full, [truth_frame]
    raise ScanReadError(f"ground truth shape {truth.shape} does not match the scan "
                        f"{scan.array.shape}")


def _meta_frame(scan: Scan, key: str) -> int | None:
    """``scan.meta[key]`` (``"ED"``/``"ES"``) when it is a frame of the scan, else None."""
    frame = scan.meta.get(key)
    return frame if isinstance(frame, int) and 0 <= frame < scan.n_frames else None


def run_scan(scan: Scan, segmenter, truth: np.ndarray | None = None, truth_frame: int = 0,
             probabilities: bool = False,
             progress: Callable[[int, int], None] | None = None,
             qc_flips: Sequence[tuple[int, ...]] = QC_FLIPS) -> ScanResult:
    """Segment ``scan`` and measure it.

    Args:
        scan: 3D or cine scan (from :func:`lvseg_core.io.load_scan`).
        segmenter: a :class:`~lvseg_core.inference.Segmenter`.
        truth: expert labels, see :func:`place_truth` (None: no metrics).
        truth_frame: the frame a 3D ``truth`` of a cine scan belongs to.
        probabilities: keep the class probabilities in the segmentation.
        progress: ``progress(done, total)`` after each frame.
        qc_flips: flipped passes of quality control (``()``: none, half the time).

    Returns:
        Volumes of every frame; metrics and manual volumes of the labelled
        frames; for a cine scan its volume curves and clinical indices (ED/ES
        from ``scan.meta`` when given, else from the LV volume curve), and the
        manual indices when ED and ES are labelled; ``qc`` of the result
        (:func:`lvseg_core.qc.check_segmentation`, with the class probabilities
        when they fit in :data:`~lvseg_core.qc.MAX_PROBABILITY_VALUES`).

    Raises:
        LVSegError: a ground truth that does not match the scan, or a failing step.
    """
    truth, truth_frames = place_truth(scan, truth, truth_frame)
    fits = NUM_CLASSES * int(np.prod(scan.array.shape)) <= MAX_PROBABILITY_VALUES
    options = {"probabilities": True} if probabilities or fits else {}
    if progress is not None:
        options["progress"] = progress
    segmentation = segmenter.segment(scan, **options)
    weights = getattr(segmenter, "weights", None)
    result = ScanResult(scan=scan, segmentation=segmentation,
                        architecture=segmenter.architecture,
                        weights=weights.description if weights is not None else "in-memory",
                        truth=truth, truth_frames=truth_frames,
                        precision=str(getattr(segmenter, "precision_label", "fp32")),
                        tta=bool(getattr(segmenter, "tta", False)))
    spacing = scan.spacing
    result.volumes = [structure_volumes(result.mask_at(t), spacing)
                      for t in range(scan.n_frames)]
    for t in truth_frames:
        labels = result.truth_at(t)
        result.metrics[t] = evaluate_segmentation(result.mask_at(t), labels, spacing)
        result.manual_volumes[t] = structure_volumes(labels, spacing)
    if scan.is_cine:
        try:
            result.indices = cine_indices(result.mask, spacing, ed=_meta_frame(scan, "ED"),
                                          es=_meta_frame(scan, "ES"))
        except LVSegError as err:
            result.notes.append(one_line(err))
        else:
            ed, es = result.ed, result.es
            if truth is not None and ed in truth_frames and es in truth_frames:
                result.manual_indices = cine_indices(truth, spacing, ed=ed, es=es)
    result.qc = check_segmentation(scan, segmentation, segmenter if qc_flips else None,
                                   qc_flips, result.ed, result.es,
                                   rules=getattr(segmenter, "qc_rules", None))
    if not probabilities:
        segmentation.probabilities = None
    return result
