"""Every setting of LVSeg, read from the environment in this one module.

Like nnU-Net's ``paths.py``: the engine, the trainer, the app and the
benchmarks ask these functions and never read ``os.environ`` themselves.
Values are read on each call (not at import), so a test or a caller may
change the environment at any time.

==========================  =====================================  ==========================
variable                    function                               default
==========================  =====================================  ==========================
``LVSEG_DATA``              :func:`data_dir`                       ``../shared/data/acdc``
``LVSEG_SAMPLES``           :func:`sample_dir_candidates`          ``LVSEG_DATA``, then default
``LVSEG_WEIGHTS_DIR``       :func:`weights_dir`                    ``<repo>/weights``
``LVSEG_RUNS_DIR``          :func:`runs_dir`                       ``<repo>/runs``
``LVSEG_MAX_UPLOAD_MB``     :func:`max_upload_bytes`               200
``LVSEG_ALLOW_TRAINING``    :func:`training_allowed`               on (off when public)
``LVSEG_ALLOW_PUSH``        :func:`push_allowed`                   off (off when public)
``LVSEG_ANALYSIS_SLOTS``    :func:`analysis_slots`                 1
``LVSEG_ANALYSIS_QUEUE``    :func:`analysis_queue`                 4
``LVSEG_RUN_DIR``           :func:`worker_run_dir`                 set by the trainer (DDP)
``HF_HUB_OFFLINE``          :func:`hub_offline`                    off
``HF_TOKEN``                :func:`hub_token`                      none
``HF_HOME``                 :func:`hub_home`                       ``~/.cache/huggingface``
``HF_ENDPOINT``             :func:`hub_endpoint`                   huggingface_hub's own
``LVSEG_MAX_VOXELS``        :func:`max_voxels`                     (policy.Limits)
``LVSEG_MAX_DATA_MB``       :func:`max_data_bytes`                 (policy.Limits)
``LVSEG_MAX_GRID_VOXELS``   :func:`max_grid_voxels`                (policy.Limits)
``LVSEG_MAX_FRAMES``        :func:`max_frames`                     (policy.Limits)
``LVSEG_MAX_WEIGHTS_MB``    :func:`max_weights_bytes`              (policy.Limits)
``LVSEG_HUB_TIMEOUT``       :func:`hub_timeout`                    10 s
``LVSEG_HUB_USE_TOKEN``     :func:`hub_use_token`                  off
``LVSEG_PUBLIC``            :func:`public_mode`                    off
``LVSEG_BACKEND``           :func:`backend`                        ``auto``
``LVSEG_ONNX_CACHE``        :func:`onnx_cache_dir`                 ``~/.cache/lvseg/onnx``
==========================  =====================================  ==========================

To add a setting: a function here that reads and parses it (with its
default), a row in the table above and in the README's settings paragraph;
callers import the function.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from .errors import LVSegError

#: The repository root (where ``weights/`` lives and ``python -m train`` runs).
REPO = Path(__file__).resolve().parents[1]

#: The ACDC copy beside the repository, when ``LVSEG_DATA`` is not set.
DEFAULT_DATA = REPO.parent / "shared" / "data" / "acdc"

#: Environment variable naming the run folder for the processes DDP launches.
RUN_DIR_ENV = "LVSEG_RUN_DIR"

_TRUE = ("1", "true", "yes", "on")


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    return value.strip().lower() in _TRUE


def _positive(name: str, default: float) -> float:
    """A positive number from the environment variable ``name`` (``default`` when unset)."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise LVSegError(f"setting {name}={text!r} must be a positive number")
    return value


def data_dir() -> Path:
    """The labelled ACDC-layout folder: ``$LVSEG_DATA`` or ``../shared/data/acdc``."""
    return Path(os.environ.get("LVSEG_DATA") or DEFAULT_DATA).expanduser()


def sample_dir_candidates() -> list[Path]:
    """Where the app looks for sample patients, in order: ``$LVSEG_SAMPLES``,
    ``$LVSEG_DATA``, ``../shared/data/acdc``."""
    names = [os.environ.get("LVSEG_SAMPLES"), os.environ.get("LVSEG_DATA"), str(DEFAULT_DATA)]
    return [Path(n).expanduser() for n in names if n]


def weights_dir() -> Path:
    """Bundled weights, ``<dir>/<architecture>/``: ``$LVSEG_WEIGHTS_DIR`` or ``<repo>/weights``."""
    return Path(os.environ.get("LVSEG_WEIGHTS_DIR") or REPO / "weights").expanduser()


def ensemble_limits_file() -> Path:
    """QC limits of ensembles, keyed by their members' weights: ``<weights_dir>/ensemble_qc.json``."""
    return weights_dir() / "ensemble_qc.json"


def runs_dir() -> Path:
    """Training runs: ``$LVSEG_RUNS_DIR`` or ``<repo>/runs``."""
    return Path(os.environ.get("LVSEG_RUNS_DIR") or REPO / "runs").expanduser()


def max_upload_bytes() -> int:
    """Largest upload accepted: ``$LVSEG_MAX_UPLOAD_MB`` (default 200) in bytes."""
    return int(float(os.environ.get("LVSEG_MAX_UPLOAD_MB") or "200") * 1024 * 1024)


def training_allowed() -> bool:
    """Whether the app may start and stop runs (``LVSEG_ALLOW_TRAINING``, default on;
    ``0``, ``false``, ``no`` or ``off`` turn it off; never in public mode)."""
    value = os.environ.get("LVSEG_ALLOW_TRAINING", "1").strip().lower()
    return value not in ("0", "false", "no", "off") and not public_mode()


def push_allowed() -> bool:
    """``LVSEG_ALLOW_PUSH``: the app may push weights to the Hub with ``HF_TOKEN``
    (default off: an explicit opt-in; never in public mode)."""
    return _flag("LVSEG_ALLOW_PUSH", False) and not public_mode()


def analysis_slots() -> int:
    """``LVSEG_ANALYSIS_SLOTS``: analyses the app runs at once, all visitors
    together (default 1)."""
    return max(1, int(_positive("LVSEG_ANALYSIS_SLOTS", 1)))


def analysis_queue() -> int:
    """``LVSEG_ANALYSIS_QUEUE``: analyses that may wait for a slot; more are
    refused with "the server is busy" (default 4)."""
    return max(1, int(_positive("LVSEG_ANALYSIS_QUEUE", 4)))


def worker_run_dir() -> Path | None:
    """The run folder rank 0 announced to the processes DDP launches (``LVSEG_RUN_DIR``)."""
    value = os.environ.get(RUN_DIR_ENV)
    return Path(value) if value else None


def announce_run_dir(run: str | Path) -> None:
    """Name the run folder for the DDP workers this process launches (they inherit it)."""
    os.environ[RUN_DIR_ENV] = str(run)


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub parses it (1/true/yes/on)."""
    return _flag("HF_HUB_OFFLINE", False)


def hub_token() -> str | None:
    """``HF_TOKEN`` (a Hub write token), or None."""
    return os.environ.get("HF_TOKEN") or None


def backend() -> str:
    """The inference backend used when none is named: ``LVSEG_BACKEND``
    (``auto``, ``torch`` or ``onnx``; checked by :mod:`lvseg_core.backends`), default ``auto``."""
    return (os.environ.get("LVSEG_BACKEND") or "auto").strip().lower()


def onnx_cache_dir() -> Path:
    """Where ONNX builds are cached: ``$LVSEG_ONNX_CACHE``, else
    ``$XDG_CACHE_HOME/lvseg/onnx``, else ``~/.cache/lvseg/onnx``."""
    if os.environ.get("LVSEG_ONNX_CACHE"):
        return Path(os.environ["LVSEG_ONNX_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "lvseg" / "onnx"


def hub_home() -> str:
    """``HF_HOME``, the Hub cache root (for messages; huggingface_hub reads it itself)."""
    return os.environ.get("HF_HOME", "~/.cache/huggingface")


def hub_endpoint() -> str | None:
    """``HF_ENDPOINT`` (a Hub mirror or a local test server), or None for the default."""
    return os.environ.get("HF_ENDPOINT") or None


def max_voxels(default: int) -> int:
    """``LVSEG_MAX_VOXELS``: voxels of one scan, ``x * y * z * t``."""
    return int(_positive("LVSEG_MAX_VOXELS", default))


def max_data_bytes(default: int) -> int:
    """``LVSEG_MAX_DATA_MB`` in bytes: what a file's data may occupy once decompressed."""
    return int(_positive("LVSEG_MAX_DATA_MB", default / 2**20) * 2**20)


def max_grid_voxels(default: int) -> int:
    """``LVSEG_MAX_GRID_VOXELS``: voxels of one frame on the network's grid."""
    return int(_positive("LVSEG_MAX_GRID_VOXELS", default))


def max_frames(default: int) -> int:
    """``LVSEG_MAX_FRAMES``: frames of one cine scan."""
    return int(_positive("LVSEG_MAX_FRAMES", default))


def max_weights_bytes(default: int) -> int:
    """``LVSEG_MAX_WEIGHTS_MB`` in bytes: the largest weights file fetched from the Hub."""
    return int(_positive("LVSEG_MAX_WEIGHTS_MB", default / 2**20) * 2**20)


def hub_timeout() -> float:
    """Seconds a Hub request may wait for the server (``LVSEG_HUB_TIMEOUT``, default 10)."""
    return _positive("LVSEG_HUB_TIMEOUT", 10.0)


def hub_use_token() -> bool:
    """``LVSEG_HUB_USE_TOKEN``: Hub fetches may send the owner's ``HF_TOKEN``."""
    return _flag("LVSEG_HUB_USE_TOKEN", False)


def public_mode() -> bool:
    """``LVSEG_PUBLIC``: a public deployment (see the README, "Deploying publicly")."""
    return _flag("LVSEG_PUBLIC", False)
