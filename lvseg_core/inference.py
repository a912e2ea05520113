"""The :class:`Segmenter`: a loaded model that segments scans.

2D models see a frame as one batch of slices, V-Net sees the whole volume;
CUDA is used when present (with mixed precision), the CPU otherwise. The
network runs in PyTorch or, on a CPU, in ONNX Runtime (see
:mod:`lvseg_core.backends`).
"""

from __future__ import annotations

import functools
import glob
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .backends import auto_build, check_backend, default_backend, network, open_onnx
from .errors import LVSegError
from .hub import Weights, load_model, resolve_weights
from .models import read_config
from .models.config import default_plan
from .onnx_export import OnnxNetwork, default_threads
from .postprocess import keep_largest_components
from .qc import RULES, Rule, model_rules
from .preprocess import PreprocessPlan, prepare, restore, slice_axis
from .registry import spatial_dims
from .scan import Scan

if TYPE_CHECKING:
    import torch

    from .models import LVSegModel


@dataclass(frozen=True)
class CpuDevice:
    """The CPU while torch is not imported (a prediction on the ONNX path): it has
    the ``type`` of a ``torch.device`` and prints as one; :func:`as_device` turns
    it into ``torch.device("cpu")`` once torch is loaded."""

    type: str = "cpu"

    def __str__(self) -> str:
        return "cpu"


def as_device(device: Any) -> "torch.device | CpuDevice":
    """``device`` (a name, ``torch.device`` or :class:`CpuDevice`) as a
    ``torch.device``; the CPU as a :class:`CpuDevice` while torch is not imported."""
    if str(device) == "cpu" and "torch" not in sys.modules:
        return CpuDevice()
    import torch

    return torch.device(str(device))


def gpu_visible() -> bool:
    """True when this machine shows a GPU device node (NVIDIA ``/dev/nvidia*``, AMD
    ROCm ``/dev/kfd``), so that asking torch about CUDA can say yes; without one
    the CPU is chosen without importing torch (seconds at start-up)."""
    return bool(glob.glob("/dev/nvidia[0-9]*") or glob.glob("/dev/kfd"))


def default_device() -> "torch.device | CpuDevice":
    """CUDA when available, else CPU."""
    if "torch" not in sys.modules and not gpu_visible():
        return CpuDevice()
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


#: CPU flags (Linux ``/proc/cpuinfo``) of a native bfloat16 dot product.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (or its text ``cpuinfo``);
    empty where there is no such file (macOS, Windows)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (AVX-512 BF16 or AMX).

    oneDNN also says yes on AVX-512 CPUs without them (Ice Lake), where it
    emulates bfloat16: the V-Net ran 3.4x slower there than in float32, so
    the CPU's own flags decide.
    """
    if not cpu_flags() & NATIVE_BF16_FLAGS:
        return False
    import torch

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
    import torch

    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None


def device_name(device: torch.device | str) -> str:
    """Human-readable device, e.g. ``"CUDA (NVIDIA A10G)"`` or ``"CPU (2 threads)"``."""
    device = as_device(device)
    if device.type == "cuda":
        import torch

        return f"CUDA ({torch.cuda.get_device_name(device)})"
    return f"CPU ({default_threads()} threads)"


def choose_onnx(backend: str, device: torch.device, architecture: str,
                weights: Weights | None, preprocess: dict,
                load: Callable[[], LVSegModel], report: Callable[[str], None] | None = None,
                precision: str = "auto") -> tuple[OnnxNetwork | None, str]:
    """The ONNX network ``backend`` asks for on ``device``, or None for torch, and
    a notice saying why ``auto`` chose torch on a CPU (see :mod:`lvseg_core.backends`).

    ``load`` gives the torch model when ``onnx`` has to make a build. Under
    ``auto`` an explicit ``precision`` (``fp32``, ``bf16``) asks for torch at
    that precision: the ONNX build runs in its own (int8).
    """
    if backend == "torch" or (backend == "auto" and device.type != "cpu"):
        return None, ""  # auto on CUDA: torch
    if backend == "auto" and precision != "auto":
        return None, f"precision {precision} asked: the torch backend runs (ONNX runs int8)"
    if device.type != "cpu":
        raise LVSegError("the ONNX backend runs on the CPU; on CUDA use the torch backend")
    folder = weights.folder if weights is not None else None
    if backend == "auto":
        found, why = auto_build(architecture, folder, preprocess)
        return (network(found), "") if found is not None else (None, why)
    return open_onnx(architecture, folder, preprocess, load, Segmenter, report=report), ""


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    """Softmax of float32 ``logits`` along ``axis`` (the class channel)."""
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


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
            voxels); torch backend only.
        backend: ``"auto"``, ``"torch"`` or ``"onnx"`` (see
            :mod:`lvseg_core.backends`; default ``$LVSEG_BACKEND`` or ``auto``); ``onnx`` needs ``weights`` (the build
            is keyed by the weights file). :attr:`notice` says why ``auto``
            fell back to torch.
        onnx: an :class:`~lvseg_core.backends.OnnxNetwork` to run instead of
            ``model`` (``model`` may then be None); its measured batch size
            replaces ``batch_size``.
        report: called with a one-line message at each step of an ONNX build.
    """

    PRECISIONS = ("auto", "fp32", "bf16")

    #: The ONNX Runtime network in use (None: the torch model runs).
    onnx: OnnxNetwork | None = None
    #: Quality-control limits: the model's own (config.json ``qc_limits``) or the default.
    qc_rules: tuple[Rule, ...] = RULES
    _model: LVSegModel | None = None

    #: In-plane flips averaged by test-time augmentation (dims of ``(n, C, X, Y)``).
    TTA_FLIPS: tuple[tuple[int, ...], ...] = ((-2,), (-1,), (-2, -1))

    def __init__(self, model: LVSegModel | None, device: str | torch.device | None = None,
                 postprocess: bool = True, batch_size: int = 32,
                 weights: Weights | None = None, precision: str = "auto",
                 tta: bool = False, backend: str | None = None, onnx: OnnxNetwork | None = None,
                 report: Callable[[str], None] | None = None) -> None:
        if precision not in self.PRECISIONS:
            raise ValueError(f"precision must be one of {self.PRECISIONS}, got {precision!r}")
        backend = check_backend(backend or default_backend())
        if model is None and (onnx is None or weights is None):
            raise ValueError("Segmenter needs a model, or an ONNX network and its weights")
        self.device = as_device(device) if device is not None else default_device()
        self._model = None
        if model is not None:
            self._model = model.to(self.device, memory_format=model.memory_format).eval()
            self._config = model.config()
        else:
            self._config = read_config(weights.folder)
            self._config.setdefault("preprocess", None)
            self._config["preprocess"] = self._config["preprocess"] or default_plan(
                self._config["architecture"], self._config.get("arch_args"))
        self.spatial_dims = spatial_dims(self._config["architecture"])
        self.plan = PreprocessPlan.from_dict(self._config.get("preprocess"))
        self.qc_rules = model_rules(self._config.get("qc_limits"),
                                    f"{weights.folder if weights else 'model'}: config.json")
        self.postprocess = postprocess
        self.batch_size = batch_size
        self.weights = weights
        self.precision = precision
        self.tta = bool(tta)
        #: Why the requested backend was not used ("" when it was).
        self.notice = ""
        if onnx is None:
            onnx, self.notice = choose_onnx(backend, self.device, self.architecture, weights,
                                            self._config["preprocess"], lambda: self.model,
                                            report, precision)
        self.onnx = onnx
        #: Autocast dtype of the torch network (None: float32, or ONNX Runtime runs).
        self.dtype = None if onnx is not None else autocast_dtype(self.device, precision)

    @classmethod
    def from_source(cls, architecture: str, weights: str | None = None,
                    device: str | torch.device | None = None, fallback: bool = False,
                    backend: str | None = None, **kwargs) -> "Segmenter":
        """Load (cached) ``architecture`` from a weights source; see :mod:`lvseg_core.hub`
        (``fallback``: bundled weights when Hub weights cannot be fetched).

        With the ONNX backend and a valid build for the weights, the torch model
        is not loaded at all (see :func:`choose_onnx`).
        """
        device = as_device(device) if device is not None else default_device()
        backend = check_backend(backend or default_backend())
        info = resolve_weights(architecture, weights, fallback=fallback)
        config = read_config(info.folder)
        preprocess = config.get("preprocess") or default_plan(architecture,
                                                              config.get("arch_args"))
        network, notice = choose_onnx(backend, device, architecture, info, preprocess,
                                      lambda: load_model(architecture, info.folder, device)[0],
                                      kwargs.get("report"), kwargs.get("precision", "auto"))
        if network is not None:
            return cls(None, device, weights=info, onnx=network, **kwargs)
        model, _ = load_model(architecture, info.folder, device)
        segmenter = cls(model, device, weights=info, backend="torch", **kwargs)
        segmenter.notice = notice
        return segmenter

    @property
    def model(self) -> LVSegModel:
        """The torch model (loaded on first use when only the ONNX network was)."""
        if self._model is None:
            model, _ = load_model(self._config["architecture"], self.weights.folder, self.device)
            self._model = model.to(memory_format=self.memory_format).eval()
        return self._model

    @model.setter
    def model(self, model: LVSegModel | None) -> None:
        self._model = model

    @property
    def memory_format(self) -> "torch.memory_format":
        import torch

        return torch.channels_last if self.spatial_dims == 2 else torch.channels_last_3d

    @property
    def backend(self) -> str:
        """The backend in use: ``"onnx"`` or ``"torch"``."""
        return "onnx" if self.onnx is not None else "torch"

    @property
    def architecture(self) -> str:
        return self._config["architecture"]

    @property
    def validation_metrics(self) -> dict[str, float | str]:
        """The ``eval_*`` figures stored with the weights (``python -m lvseg_core
        evaluate`` of these weights, e.g. ``eval_rv_ef_abs_error`` in percentage
        points, ``eval_split``); empty when the weights carry none."""
        return {k: v for k, v in (self._config.get("metrics") or {}).items()
                if k.startswith("eval_")}

    @property
    def members_validation_metrics(self) -> list[dict[str, float | str]]:
        """:attr:`validation_metrics` of each model behind the predictions
        (this one; an ensemble's members)."""
        return [self.validation_metrics]

    @property
    def device_label(self) -> str:
        if self.onnx is not None:
            return f"{device_name(self.device)[:-1]}, ONNX Runtime {self.onnx.precision})"
        return device_name(self.device)

    @property
    def precision_label(self) -> str:
        """What the network computes in: ``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"int8"``."""
        if self.onnx is not None:
            return self.onnx.precision
        return {"torch.bfloat16": "bf16", "torch.float16": "fp16"}.get(str(self.dtype), "fp32")

    def _logits(self, image: "torch.Tensor") -> "torch.Tensor":
        """Network logits for ``(n, 1, X, Y)`` slices -> ``(n, C, X, Y)`` (torch tensors)."""
        import torch

        if self.onnx is not None:
            return torch.from_numpy(self._onnx_logits(image.numpy()))
        with torch.inference_mode():
            return self._torch_logits(image)

    def _torch_logits(self, image: "torch.Tensor") -> "torch.Tensor":
        import torch

        autocast = torch.autocast(self.device.type, dtype=self.dtype or torch.float32,
                                  enabled=self.dtype is not None)
        with autocast:
            if self.spatial_dims == 3:
                volume = image.permute(1, 0, 2, 3)[None].to(   # (1, 1, z, X, Y)
                    self.device, memory_format=self.memory_format)
                return self.model(volume)[0].permute(1, 0, 2, 3).float()
            outs = [self.model(image[i:i + self.batch_size].to(
                        self.device, memory_format=self.memory_format)).float()
                    for i in range(0, image.shape[0], self.batch_size)]
            return torch.cat(outs)

    def _onnx_logits(self, image: np.ndarray) -> np.ndarray:
        if self.spatial_dims == 3:  # (z, 1, X, Y) -> (1, 1, z, X, Y) and back
            out = self.onnx.run(image.transpose(1, 0, 2, 3)[None])[0]
            return np.ascontiguousarray(out.transpose(1, 0, 2, 3))
        size = self.onnx.batch_size
        return np.concatenate([self.onnx.run(image[i:i + size])
                               for i in range(0, image.shape[0], size)])

    def _network(self, image: np.ndarray) -> np.ndarray:
        """Logits ``(n, C, X, Y)`` float32 of prepared slices ``(n, 1, X, Y)``: ONNX
        Runtime on numpy arrays (no torch), or the torch model."""
        if self.onnx is not None:
            return self._onnx_logits(image)
        import torch

        with torch.inference_mode():
            return self._torch_logits(torch.from_numpy(image)).cpu().numpy()

    def _probabilities(self, image: np.ndarray) -> np.ndarray:
        """Softmax ``(n, C, X, Y)`` of prepared slices ``(n, 1, X, Y)``; with
        :attr:`tta`, the mean over the image and its three in-plane flips
        (mirroring, as nnU-Net does: 4x the work, smoother borders)."""
        probs = softmax(self._network(image))
        if not self.tta:
            return probs
        for dims in self.TTA_FLIPS:
            flipped = np.ascontiguousarray(np.flip(image, dims))
            probs += np.flip(softmax(self._network(flipped)), dims)
        return probs / (1 + len(self.TTA_FLIPS))

    def probability_array(self, volume: np.ndarray, spacing) -> np.ndarray:
        """Class probabilities ``(C, x, y, z)`` float32 (numpy) of one frame ``(x, y, z)``.

        A stack stored with its slice axis first or second (see
        :func:`~lvseg_core.preprocess.slice_axis`) is segmented slice by
        slice all the same, and the result is on the input's axes.
        """
        axis = slice_axis(spacing)
        if axis != 2:
            volume = np.moveaxis(volume, axis, 2)
            spacing = tuple(spacing[i] for i in range(3) if i != axis) + (spacing[axis],)
        prepared = prepare(volume, spacing, self.plan)
        probs = restore(self._probabilities(prepared.array), prepared)
        return probs if axis == 2 else np.ascontiguousarray(np.moveaxis(probs, 3, axis + 1))

    def predict_probabilities(self, volume: np.ndarray, spacing) -> "torch.Tensor":
        """:meth:`probability_array` as a torch tensor ``(C, x, y, z)`` (CPU, float32)."""
        import torch

        return torch.from_numpy(self.probability_array(volume, spacing))

    def segment_volume(self, volume: np.ndarray, spacing, probabilities: bool = False
                       ) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels ``(x, y, z)`` uint8 (and float16 probabilities) of one frame."""
        probs = self.probability_array(volume, spacing)
        labels = self.labels_of(probs)
        return labels, (probs.astype(np.float16) if probabilities else None)

    def labels_of(self, probs) -> np.ndarray:
        """uint8 labels ``(x, y, z)`` of probabilities ``(C, x, y, z)`` (numpy or
        torch): argmax, then the largest component per structure when
        :attr:`postprocess` is on."""
        labels = np.asarray(probs).argmax(0).astype(np.uint8)
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
                import torch

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
