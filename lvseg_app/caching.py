"""What the app keeps between reruns: loaded models, the device, the sample list."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from lvseg_core import hub
from lvseg_core.errors import LVSegError
from lvseg_core.registry import ENSEMBLE, parse_members

from .analysis import Sample, default_samples_dir, list_samples


@st.cache_resource(show_spinner=False)
def _device_label() -> str:
    from lvseg_core.inference import default_device, device_name

    return device_name(default_device())


def device_label() -> str:
    """``"CPU (2 threads)"`` or ``"CUDA (NVIDIA A10G)"``."""
    return _device_label()


@st.cache_resource(show_spinner=False, max_entries=6, ttl=3600)
def _load_segmenter(architecture: str, source: str | None, folder: str, stamp: float,
                    precision: str = "auto", tta: bool = False, backend: str | None = None):
    from lvseg_core.ensemble import load_segmenter as load

    return load(architecture, source, precision=precision, tta=tta, backend=backend)


def _stamp(architecture: str, source: str | None) -> tuple[str, float]:
    """Folder and weights time (:func:`~lvseg_core.hub.weights_stamp`) that identify a
    local source (reload on change);
    for the bundled ensemble, its members' folders and newest time."""
    if source is None and architecture == ENSEMBLE:
        stamps = [_stamp(a, None) for a in parse_members(ENSEMBLE)]
        return "+".join(f for f, _ in stamps), max(t for _, t in stamps)
    if source is None:
        folder = hub.bundled_folder(architecture)
    else:
        path = Path(source)
        if not path.exists():
            return source, 0.0                       # a Hub repo: the id is the key
        folder = hub.weights_folder(path) or path
    return str(folder), float(hub.weights_stamp(folder))


def load_segmenter(architecture: str, source: str | None, precision: str = "auto",
                   tta: bool = False, backend: str | None = None):
    """The cached :class:`~lvseg_core.inference.Segmenter` of ``architecture`` with the
    weights ``source`` and ``backend`` (reloaded when a local weights file changes);
    ``"ensemble"`` gives the :class:`~lvseg_core.ensemble.Ensemble` of the bundled models."""
    folder, stamp = _stamp(architecture, source)
    return _load_segmenter(architecture, source, folder, stamp, precision, tta, backend)


# ---------------------------------------------------------------- samples


@st.cache_data(show_spinner=False, ttl=300)
def _samples(root: str) -> list[Sample]:
    return list_samples(root)


def samples() -> tuple[Path | None, list[Sample]]:
    """The sample folder (``LVSEG_SAMPLES`` / ``LVSEG_DATA`` / ``../shared/data/acdc``)
    and its patients; ``(None, [])`` when there is none."""
    root = default_samples_dir()
    if root is None:
        return None, []
    try:
        return root, _samples(str(root))
    except LVSegError:
        return root, []
