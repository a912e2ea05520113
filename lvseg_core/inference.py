"""The :class:`Segmenter`: a loaded model that segments scans.

2D models see a frame as one batch of slices, V-Net sees the whole volume;
CUDA is used when present (with mixed precision), the CPU otherwise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .hub import Weights, load_model
from .models import LVSegModel
from .postprocess import keep_largest_components
from .preprocess import PreprocessPlan, prepare, restore, slice_axis
from .scan import Scan


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (AVX-512 BF16 or AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device``; None means plain float32.

    ``auto`` is float16 on CUDA, bfloat16 on CPUs with native bfloat16 (about
    3x faster there, same Dice on ACDC to three decimals), else float32.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None


def device_name(device: torch.device | str) -> str:
    """Human-readable device, e.g. ``"CUDA (NVIDIA A10G)"`` or ``"CPU (2 threads)"``."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"CUDA ({torch.cuda.get_device_name(device)})"
    return f"CPU ({torch.get_num_threads()} threads)"


@dataclass
class Segmentation:
    """The result of segmenting one scan.

    Attributes:
        mask: uint8 labels on the scan's grid, ``(x, y, z)`` or ``(x, y, z, t)``.
        probabilities: float16 class probabilities ``(C, x, y, z[, t])`` when
            requested, else None.
        seconds: wall time of inference (model load excluded).
        device: where it ran.
    """

    mask: np.ndarray
    probabilities: np.ndarray | None = None
    seconds: float = 0.0
    device: str = ""
    frame_seconds: list[float] = field(default_factory=list)


class Segmenter:
    """Segments scans with one model.

    Args:
        model: a loaded :class:`~lvseg_core.models.LVSegModel`.
        device: torch device; default CUDA if available, else CPU.
        postprocess: keep the largest connected component per structure.
        batch_size: slices per forward pass for 2D models.
        weights: where the model came from (for reports).
        precision: ``"auto"`` (see :func:`autocast_dtype`), ``"fp32"``, or
            ``"bf16"`` (bfloat16 autocast; labels may differ from fp32 at a few
            voxels).
    """

    PRECISIONS = ("auto", "fp32", "bf16")

    #: In-plane flips averaged by test-time augmentation (dims of ``(n, C, X, Y)``).
    TTA_FLIPS: tuple[tuple[int, ...], ...] = ((-2,), (-1,), (-2, -1))

    def __init__(self, model: LVSegModel, device: str | torch.device | None = None,
                 postprocess: bool = True, batch_size: int = 32,
                 weights: Weights | None = None, precision: str = "auto",
                 tta: bool = False) -> None:
        if precision not in self.PRECISIONS:
            raise ValueError(f"precision must be one of {self.PRECISIONS}, got {precision!r}")
        self.device = torch.device(device) if device is not None else default_device()
        self.memory_format = model.memory_format
        self.model = model.to(self.device, memory_format=self.memory_format).eval()
        self.plan = PreprocessPlan.from_dict(model.preprocess)
        self.postprocess = postprocess
        self.batch_size = batch_size
        self.weights = weights
        self.precision = precision
        self.dtype = autocast_dtype(self.device, precision)
        self.tta = bool(tta)

    @classmethod
    def from_source(cls, architecture: str, weights: str | None = None,
                    device: str | torch.device | None = None, fallback: bool = False,
                    **kwargs) -> "Segmenter":
        """Load (cached) ``architecture`` from a weights source; see :mod:`lvseg_core.hub`
        (``fallback``: bundled weights when Hub weights cannot be fetched)."""
        device = torch.device(device) if device is not None else default_device()
        model, info = load_model(architecture, weights, device, fallback=fallback)
        return cls(model, device, weights=info, **kwargs)

    @property
    def architecture(self) -> str:
        return self.model.architecture

    @property
    def device_label(self) -> str:
        return device_name(self.device)

    @property
    def precision_label(self) -> str:
        """What the network computes in: ``"fp32"``, ``"bf16"`` or ``"fp16"``."""
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "fp32")

    @torch.inference_mode()
    def _logits(self, image: torch.Tensor) -> torch.Tensor:
        """Network logits for ``(n, 1, X, Y)`` slices -> ``(n, C, X, Y)``."""
        autocast = torch.autocast(self.device.type, dtype=self.dtype or torch.float32,
                                  enabled=self.dtype is not None)
        with autocast:
            if self.model.spatial_dims == 3:
                volume = image.permute(1, 0, 2, 3)[None].to(   # (1, 1, z, X, Y)
                    self.device, memory_format=self.memory_format)
                return self.model(volume)[0].permute(1, 0, 2, 3).float()
            outs = [self.model(image[i:i + self.batch_size].to(
                        self.device, memory_format=self.memory_format)).float()
                    for i in range(0, image.shape[0], self.batch_size)]
            return torch.cat(outs)

    def _probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """Softmax ``(n, C, X, Y)`` of prepared slices ``(n, 1, X, Y)``; with
        :attr:`tta`, the mean over the image and its three in-plane flips
        (mirroring, as nnU-Net does: 4x the work, smoother borders)."""
        probs = torch.softmax(self._logits(image), dim=1)
        if not self.tta:
            return probs
        for dims in self.TTA_FLIPS:
            probs += torch.softmax(self._logits(image.flip(dims)), dim=1).flip(dims)
        return probs / (1 + len(self.TTA_FLIPS))

    def predict_probabilities(self, volume: np.ndarray, spacing) -> torch.Tensor:
        """Class probabilities ``(C, x, y, z)`` (CPU, float32) of one frame ``(x, y, z)``.

        A stack stored with its slice axis first or second (see
        :func:`~lvseg_core.preprocess.slice_axis`) is segmented slice by
        slice all the same, and the result is on the input's axes.
        """
        axis = slice_axis(spacing)
        if axis != 2:
            volume = np.moveaxis(volume, axis, 2)
            spacing = tuple(spacing[i] for i in range(3) if i != axis) + (spacing[axis],)
        prepared = prepare(volume, spacing, self.plan)
        probs = restore(self._probabilities(prepared.image).cpu(), prepared)
        return probs if axis == 2 else torch.movedim(probs, 3, axis + 1).contiguous()

    def segment_volume(self, volume: np.ndarray, spacing, probabilities: bool = False
                       ) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels ``(x, y, z)`` uint8 (and float16 probabilities) of one frame."""
        probs = self.predict_probabilities(volume, spacing)
        labels = self.labels_of(probs)
        return labels, (probs.numpy().astype(np.float16) if probabilities else None)

    def labels_of(self, probs: torch.Tensor) -> np.ndarray:
        """uint8 labels ``(x, y, z)`` of probabilities ``(C, x, y, z)``: argmax, then
        the largest component per structure when :attr:`postprocess` is on."""
        labels = probs.argmax(0).numpy().astype(np.uint8)
        return keep_largest_components(labels) if self.postprocess else labels

    def segment(self, scan: Scan, probabilities: bool = False,
                progress: Callable[[int, int], None] | None = None) -> Segmentation:
        """Segment every frame of ``scan``.

        Args:
            scan: 3D or 4D scan.
            probabilities: also return the class probabilities.
            progress: called as ``progress(done, total)`` after each frame.
        """
        masks, probs, times = [], [], []
        for t, frame in enumerate(scan.frames()):
            start = time.perf_counter()
            labels, p = self.segment_volume(frame.array, scan.spacing, probabilities)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            times.append(time.perf_counter() - start)
            masks.append(labels)
            probs.append(p)
            if progress is not None:
                progress(t + 1, scan.n_frames)
        if scan.is_cine:
            mask = np.stack(masks, axis=-1)
            prob = np.stack(probs, axis=-1) if probabilities else None
        else:
            mask, prob = masks[0], probs[0]
        return Segmentation(mask, prob, float(sum(times)), self.device_label, times)
