"""Inference backends behind the :class:`~lvseg_core.inference.Segmenter`.

- ``torch``: the PyTorch model (CUDA with float16 autocast, CPU with bfloat16
  autocast where the CPU has it natively);
- ``onnx``: ONNX Runtime on the CPU, running the build of
  :mod:`lvseg_core.onnx_export` for these weights (int8 where that keeps Dice);
- ``auto``: decided from facts (:func:`auto_build`): torch on CUDA; on a CPU
  ONNX Runtime when it is installed and a valid (not stale) build of these
  weights exists whose recorded check passed (int8 or float32 Dice within the
  tolerance of torch float32 on labelled held-out volumes, and measured faster
  than torch, see :func:`lvseg_core.onnx_export.check_result`); else torch.
  ``auto`` never starts a build: ``--backend onnx`` or ``build-onnx`` make one.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from . import onnx_export
from .errors import LVSegError

BACKENDS: tuple[str, ...] = ("auto", "torch", "onnx")

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


def _weights_key(architecture: str, weights_folder: Path | None, preprocess: dict
                 ) -> dict | None:
    """The build key of the weights file in ``weights_folder`` (None: no file)."""
    if weights_folder is None or not (weights_folder / onnx_export.WEIGHTS_FILE).is_file():
        return None
    sha = onnx_export.file_sha256(weights_folder / onnx_export.WEIGHTS_FILE)
    return onnx_export.build_key(architecture, sha, preprocess)


def network(found: onnx_export.OnnxBuild) -> onnx_export.OnnxNetwork:
    """An ONNX Runtime session of a validated build."""
    return onnx_export.OnnxNetwork(found.path, batch_size=found.batch_size,
                                   precision=found.precision, record=found.record)


def auto_build(architecture: str, weights_folder: Path | None, preprocess: dict
               ) -> tuple[onnx_export.OnnxBuild | None, str]:
    """The build ``auto`` runs on a CPU, or None and why torch runs instead ("" for a
    model given in memory, which has no file to key a build)."""
    if not onnxruntime_available():
        return None, "ONNX Runtime is not installed: using torch"
    key = _weights_key(architecture, weights_folder, preprocess)
    if key is None:
        return None, ""
    found = onnx_export.find_build(weights_folder, key)
    if found is None:
        return None, (f"no valid ONNX build of these {architecture} weights (make one with "
                      f"'build-onnx --model {architecture}'): using torch")
    passed, why = onnx_export.check_result(found.record)
    if not passed:
        return None, f"the ONNX build at {found.path.parent} is not used ({why}): using torch"
    return found, ""


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
    key = _weights_key(architecture, weights_folder, preprocess)
    if key is None:
        raise LVSegError("the ONNX backend needs weights from a file (model.safetensors); "
                         "this model was given in memory")
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
    return network(found)


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
    elif "speed" not in found.record:
        if report is not None:
            report(f"timing the build at {found.path.parent} against torch (not recorded yet)")
        found = onnx_export.add_speed(found, model, segmenter_class)
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
