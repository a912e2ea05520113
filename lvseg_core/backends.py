"""Inference backends behind the :class:`~lvseg_core.inference.Segmenter`.

- ``torch``: the PyTorch model (CUDA with float16 autocast, CPU with bfloat16
  autocast where the CPU has it natively);
- ``onnx``: ONNX Runtime on the CPU, running the build of
  :mod:`lvseg_core.onnx_export` for these weights (int8 where that keeps Dice);
- ``auto``: torch on CUDA; on a CPU the ONNX backend for the architectures in
  :data:`ONNX_PAYS` when ONNX Runtime is installed and a build for the weights
  exists or can be made, else torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import LVSegError

BACKENDS: tuple[str, ...] = ("auto", "torch", "onnx")

#: Architectures for which ``auto`` picks ONNX Runtime on a CPU: where it was
#: measured faster than torch (``python -m bench.speed``, see the README).
ONNX_PAYS: frozenset[str] = frozenset({"unet"})


def default_backend() -> str:
    """The backend used when none is named (:func:`lvseg_core.settings.backend`)."""
    from . import settings

    return check_backend(settings.backend())


def check_backend(name: str) -> str:
    """``name`` if it is one of :data:`BACKENDS`, else a ValueError."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


def onnxruntime_available() -> bool:
    """True when ONNX Runtime can be imported and onnx (for the export) is installed
    (found, not imported: it takes seconds and only a build needs it)."""
    from importlib.util import find_spec

    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return find_spec("onnx") is not None


def default_threads() -> int:
    """Intra-op threads for ONNX Runtime: torch's setting, so both backends use
    the same share of the CPU."""
    import torch

    return max(1, torch.get_num_threads())


class OnnxNetwork:
    """An ONNX model in an ONNX Runtime CPU session.

    ``run`` maps float32 ``(n, 1, X, Y)`` slices (or a ``(1, 1, z, X, Y)``
    stack) to float32 logits with the class channel second.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None,
                 batch_size: int = 1, precision: str = "fp32",
                 record: dict[str, Any] | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # Idle threads sleep instead of spinning: on a shared CPU (a laptop, a
        # free Space, this 2-core machine) spinning cost 1.5x in wall time.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.batch_size = max(1, int(batch_size))
        self.precision = precision
        self.record = dict(record or {})

    def run(self, image: np.ndarray) -> np.ndarray:
        """Logits of one batch, float32."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(
            image, dtype=np.float32)})[0]


def open_onnx(architecture: str, weights_folder: Path | None, preprocess: dict,
              load_model: Callable[[], Any], build: bool = True,
              report: Callable[[str], None] | None = None) -> OnnxNetwork:
    """The ONNX network for these weights: a valid build beside the weights or
    in the cache, else (``build``) a new one made from ``load_model()``.

    The torch model is only loaded when a build has to be made, so a prediction
    with a cached build imports no network library but ONNX Runtime.

    Raises:
        LVSegError: ONNX Runtime missing, no weights file, or the build failed.
    """
    from . import onnx_export

    if not onnxruntime_available():
        raise LVSegError("--backend onnx needs ONNX Runtime: pip install onnxruntime onnx")
    if weights_folder is None or not (weights_folder / onnx_export.WEIGHTS_FILE).is_file():
        raise LVSegError("the ONNX backend needs weights from a file (model.safetensors); "
                         "this model was given in memory")
    key = onnx_export.build_key(architecture,
                                onnx_export.file_sha256(weights_folder / onnx_export.WEIGHTS_FILE),
                                preprocess)
    found = onnx_export.find_build(weights_folder, key)
    if found is None:
        if not build:
            raise LVSegError(f"no ONNX build for these {architecture} weights")
        cache = onnx_export.build_folders(weights_folder, key)[-1]
        _, why = onnx_export.read_build(cache, key)
        if report is not None:
            report(f"building the ONNX model of these weights once ({why}); cache {cache}")
        try:
            found = onnx_export.build(load_model(), key, cache, report=report)
        except LVSegError:
            raise
        except Exception as err:  # export / quantisation failures of any kind
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise LVSegError(f"ONNX build of {architecture} failed: {first}") from None
    return OnnxNetwork(found.path, batch_size=found.batch_size, precision=found.precision,
                       record=found.record)
