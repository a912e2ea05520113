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

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from . import onnx_export
from .errors import LVSegError

BACKENDS: tuple[str, ...] = ("auto", "torch", "onnx")

#: Architectures for which ``auto`` picks ONNX Runtime on a CPU: where it was
#: measured faster than torch bf16 (``python -m bench.speed``: U-Net and
#: Attention U-Net int8 several times faster; V-Net int8 slower than bf16, as
#: ONNX Runtime's int8 3D convolutions are).
ONNX_PAYS: frozenset[str] = frozenset({"unet", "attention_unet"})


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


def open_onnx(architecture: str, weights_folder: Path | None, preprocess: dict,
              load_model: Callable[[], Any], segmenter_class, build: bool = True,
              report: Callable[[str], None] | None = None) -> onnx_export.OnnxNetwork:
    """The ONNX network for these weights: a valid build beside the weights or
    in the cache, else (``build``) a new one made from ``load_model()``.

    The torch model is only loaded when a build has to be made, so a prediction
    with a cached build imports no network library but ONNX Runtime.
    ``segmenter_class`` (:class:`~lvseg_core.inference.Segmenter`) runs the
    build's Dice check.

    Raises:
        LVSegError: ONNX Runtime missing, no weights file, or the build failed.
    """
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
            found = onnx_export.build(load_model(), key, cache, segmenter_class, report=report)
        except LVSegError:
            raise
        except Exception as err:  # export / quantisation failures of any kind
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise LVSegError(f"ONNX build of {architecture} failed: {first}") from None
    return onnx_export.OnnxNetwork(found.path, batch_size=found.batch_size,
                                   precision=found.precision, record=found.record)


def ensure_build(architecture: str, segmenter_class, source: str | None = None,
                 beside_weights: bool = False, report: Callable[[str], None] | None = None
                 ) -> onnx_export.OnnxBuild:
    """The build for ``architecture``'s weights ``source``, made if needed; with
    ``beside_weights`` it is also copied into the weights folder, so that a
    fresh machine finds it there and needs no calibration (it is still used
    only while its recorded key matches the weights file)."""
    from .hub import load_model, resolve_weights

    weights = resolve_weights(architecture, source)
    model, _ = load_model(architecture, weights.folder, "cpu")
    sha = onnx_export.file_sha256(weights.folder / onnx_export.WEIGHTS_FILE)
    key = onnx_export.build_key(architecture, sha, model.preprocess)
    found = onnx_export.find_build(weights.folder, key)
    if found is None:
        found = onnx_export.build(model, key, onnx_export.build_folders(weights.folder, key)[-1],
                                  segmenter_class, report=report)
    if beside_weights and found.path.parent != weights.folder:
        tmp = Path(tempfile.mkdtemp(prefix=".onnx.", dir=weights.folder))
        try:
            for name in (onnx_export.ONNX_FILE, onnx_export.RECORD_FILE):
                shutil.copy2(found.path.parent / name, tmp / name)
            onnx_export.install(tmp, weights.folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        found, why = onnx_export.read_build(weights.folder, key)
        if found is None:
            raise LVSegError(f"{weights.folder}: copied ONNX build is not valid ({why})")
    return found
