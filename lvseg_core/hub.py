"""Where weights come from and go to: bundled folders, the Hugging Face Hub, training runs.

A weights source is one of:

- ``None`` or ``"bundled"``: ``weights/<architecture>/`` shipped in the
  repository (works offline on a fresh machine);
- a local folder holding ``config.json`` + ``model.safetensors``, or a
  training run folder (its exported ``model/`` sub-folder is used);
- a Hub repo id ``owner/name`` with an optional ``@revision``, fetched with
  ``huggingface_hub`` into its cache (``HF_HOME``); ``HF_HUB_OFFLINE=1`` reads
  the cache only. Fetches are anonymous unless the owner opted in, and every
  request has a timeout (:mod:`lvseg_core.policy`). Weights that cannot be
  fetched are an error; with ``fallback=True`` the bundled weights are used
  instead and :attr:`Weights.notice` says so.

:func:`push_to_hub` uploads a weights folder (the model wrote its own card,
``README.md``, with :meth:`LVSegModel.save_pretrained`); :func:`push_run` the
exported ``model/`` of a finished training run.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx2
from huggingface_hub import HfApi, snapshot_download
from huggingface_hub import constants as hf_constants
from huggingface_hub.utils import _http as hf_http
from huggingface_hub.errors import (
    GatedRepoError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from . import policy, settings
from .errors import LVSegError, WeightsError, first_line
from .hashing import WEIGHTS_FILE, read_sha256
from .models import check_architecture, read_config

if TYPE_CHECKING:
    import torch

    from .models import LVSegModel

#: Files a weights folder consists of.
WEIGHT_FILES = ("config.json", "model.safetensors", "README.md")


@dataclass(frozen=True)
class Weights:
    """A resolved weights source.

    Attributes:
        architecture: architecture named in the folder's config.
        folder: local folder with ``config.json`` and ``model.safetensors``.
        source: the source as the user gave it.
        kind: ``"bundled"``, ``"local"`` or ``"hub"``.
        notice: a message for the user when a fallback happened, else "".
    """

    architecture: str
    folder: Path
    source: str
    kind: str
    notice: str = ""

    @functools.cached_property
    def sha256(self) -> str:
        """Hex SHA-256 of ``model.safetensors``: which exact weights made a mask."""
        return read_sha256(self.folder / WEIGHTS_FILE)

    @property
    def description(self) -> str:
        """One-line description, e.g. ``hub:owner/name@main``."""
        if self.kind == "bundled":
            return f"bundled:{self.folder.name}"
        return f"{self.kind}:{self.source}"


def bundled_folder(architecture: str) -> Path:
    """Folder of the bundled weights of ``architecture`` (under
    :func:`lvseg_core.settings.weights_dir`)."""
    return settings.weights_dir() / check_architecture(architecture)


def available_bundled() -> list[str]:
    """Architectures with bundled weights present."""
    return [p.name for p in sorted(settings.weights_dir().glob("*"))
            if (p / "model.safetensors").is_file()]


def weights_folder(path: Path) -> Path | None:
    """``path`` itself, or the exported model of a training run folder, if any."""
    for candidate in (path, path / "model"):
        if (candidate / "config.json").is_file() and (candidate / "model.safetensors").is_file():
            return candidate
    return None


def parse_repo(source: str) -> tuple[str, str | None]:
    """Split ``"owner/name@revision"`` (``hf://`` prefix allowed) into id and revision."""
    source = source.removeprefix("hf://")
    repo_id, _, revision = source.partition("@")
    check_repo_id(repo_id, WeightsError, shown=repr(source),
                  invalid=f"{source!r} is neither a weights folder nor a Hub repo id "
                          "(owner/name[@revision])")
    return repo_id, revision or None


def check_repo_id(repo_id: str, error: type[LVSegError] = LVSegError,
                  shown: str | None = None, invalid: str | None = None) -> str:
    """``repo_id`` if it is a Hub repo id ``owner/name``, else raise ``error``.

    ``shown`` names the id in messages (default ``repr(repo_id)``); ``invalid``
    replaces the message for a malformed id.
    """
    shown = shown or repr(repo_id)
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise error(invalid or f"{shown} is not a Hub repo id (owner/name)") from None
    if "/" not in repo_id:
        raise error(f"{shown}: a Hub repo id has the form owner/name")
    return repo_id


def _enforce_timeout(request) -> None:
    """httpx request hook: give every Hub request a timeout. huggingface_hub
    sends some (``repo_info``, tree listings) with ``timeout=None``, which waits
    for ever on a server that accepts the connection and never answers."""
    seconds = policy.hub_timeout()
    current = dict(request.extensions.get("timeout") or {})
    request.extensions = {**request.extensions, "timeout": {
        key: seconds if current.get(key) is None else min(current[key], seconds)
        for key in ("connect", "read", "write", "pool")}}


_HOOKED = threading.Lock()
_hooked = False


def _install_timeouts() -> None:
    """Make huggingface_hub's shared HTTP client enforce :func:`_enforce_timeout`
    (its documented ``set_client_factory``), once per process."""
    global _hooked
    with _HOOKED:
        if _hooked:
            return

        def factory():
            client = hf_http.default_client_factory()
            client.event_hooks["request"].append(_enforce_timeout)
            return client

        hf_http.set_client_factory(factory)
        _hooked = True


def _checked_commit(repo_id: str, revision: str | None, where: str, token, endpoint,
                    timeout: float) -> str | None:
    """The commit of ``revision`` after checking that the weight files fit
    ``LVSEG_MAX_WEIGHTS_MB``, or None when the Hub cannot be reached."""
    try:
        info = HfApi(endpoint=endpoint, token=token).model_info(
            repo_id, revision=revision, files_metadata=True, timeout=timeout, token=token)
    except (httpx2.ConnectError, httpx2.TimeoutException, OfflineModeIsEnabled):
        return None
    limit = policy.Limits.from_env().max_weights_bytes
    for entry in info.siblings or []:
        if entry.rfilename in WEIGHT_FILES and (entry.size or 0) > limit:
            raise WeightsError(f"Hub repo {where}: {entry.rfilename} is {entry.size / 2**20:.0f} MB, "
                               f"over the {limit / 2**20:.0f} MB limit (LVSEG_MAX_WEIGHTS_MB)")
    return info.sha


def fetch_from_hub(repo_id: str, revision: str | None = None,
                   cache_dir: str | Path | None = None, local_files_only: bool = False) -> Path:
    """Download (or read from the cache) a weights repo; returns its snapshot folder.

    Anonymous (``token=False``) unless the owner opted in
    (:func:`lvseg_core.policy.hub_token`); each request times out after
    ``LVSEG_HUB_TIMEOUT`` seconds; weight files over ``LVSEG_MAX_WEIGHTS_MB``
    are refused before they are downloaded; ``HF_ENDPOINT`` is read at each call.

    Raises:
        WeightsError: repo or revision not found, gated, or not cached while
            offline / unreachable.
    """
    where = f"{repo_id}@{revision}" if revision else repo_id
    _install_timeouts()
    timeout = policy.hub_timeout()
    token = policy.hub_token()
    endpoint = settings.hub_endpoint()
    try:
        if not local_files_only and not hf_constants.is_offline_mode():
            commit = _checked_commit(repo_id, revision, where, token, endpoint, timeout)
            # unreachable: the cache may still hold it
            revision, local_files_only = (commit, False) if commit else (revision, True)
        folder = snapshot_download(
            repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=list(WEIGHT_FILES),
            local_files_only=local_files_only, etag_timeout=timeout, token=token,
            endpoint=endpoint,
        )
    except (RepositoryNotFoundError, GatedRepoError):
        raise WeightsError(f"Hub repo {where} not found or not accessible") from None
    except RevisionNotFoundError:
        raise WeightsError(f"Hub repo {repo_id} has no revision {revision!r}") from None
    except LocalEntryNotFoundError:
        raise WeightsError(
            f"Hub repo {where} cannot be reached and is not in the local cache") from None
    except (OSError, ValueError) as err:
        raise WeightsError(f"Hub repo {where}: download failed ({type(err).__name__})") from None
    found = weights_folder(Path(folder))
    if found is None:
        raise WeightsError(f"Hub repo {where} has no config.json + model.safetensors")
    return found


def resolve_weights(architecture: str, source: str | Path | None = None,
                    fallback: bool = False) -> Weights:
    """Turn a weights source into a local folder (see the module docstring).

    Args:
        architecture: the architecture the caller wants.
        source: None/"bundled", a folder, or a Hub repo id.
        fallback: when Hub weights cannot be fetched (unreachable, not
            found, not accessible), use the bundled weights and set
            :attr:`Weights.notice` instead of raising.

    Raises:
        WeightsError: with a one-line message, for every failure.
    """
    check_architecture(architecture)
    text = str(source) if source is not None else "bundled"
    if text == "bundled":
        folder = bundled_folder(architecture)
        if weights_folder(folder) is None:
            raise WeightsError(
                f"no bundled weights for {architecture} in {folder}; train them with "
                f"'python -m train fit --model {architecture}' or pass --weights")
        return _checked(Weights(architecture, folder, "bundled", "bundled"))
    path = Path(text).expanduser()
    if path.exists():
        folder = weights_folder(path)
        if folder is None:
            raise WeightsError(f"{path}: no config.json + model.safetensors (or run model/) there")
        return _checked(Weights(architecture, folder, text, "local"))
    repo_id, revision = parse_repo(text)
    try:
        folder = fetch_from_hub(repo_id, revision)
    except WeightsError as err:
        if not fallback:
            raise
        try:
            bundled = resolve_weights(architecture, None)
        except WeightsError as missing:
            raise WeightsError(f"{err}, and {missing}") from None
        return Weights(bundled.architecture, bundled.folder, text, "bundled",
                       notice=f"{err}; using the bundled {architecture} weights instead")
    return _checked(Weights(architecture, folder, text, "hub"))


def _checked(weights: Weights) -> Weights:
    config = read_config(weights.folder)
    if config["architecture"] != weights.architecture:
        raise WeightsError(
            f"{weights.source}: these are {config['architecture']} weights, "
            f"not {weights.architecture}")
    return weights


def load_model(architecture: str, source: str | Path | None = None,
               device: str | torch.device = "cpu", fallback: bool = False
               ) -> tuple[LVSegModel, Weights]:
    """Resolve ``source`` (see :func:`resolve_weights`) and load the model in
    eval mode on ``device`` (cached)."""
    weights = resolve_weights(architecture, source, fallback=fallback)
    model = _load_folder(str(weights.folder), weights_stamp(weights.folder), str(device))
    return model, weights


def weights_stamp(folder: Path) -> int:
    """Newest modification time (ns) of a weights folder's ``model.safetensors`` and
    ``config.json`` (0 when neither exists): caches keyed by it reload a retrained
    model, or a config given new QC limits."""
    times = [(folder / name).stat().st_mtime_ns for name in ("model.safetensors", "config.json")
             if (folder / name).is_file()]
    return int(max(times, default=0))


@functools.lru_cache(maxsize=8)
def _load_folder(folder: str, stamp: int, device: str) -> LVSegModel:
    from .models import LVSegModel

    model = LVSegModel.from_pretrained(folder)
    return model.to(device).eval()


# ---------------------------------------------------------------- pushing


def _token() -> str:
    token = settings.hub_token()
    if not token:
        raise LVSegError("set HF_TOKEN to a Hugging Face write token to push to the Hub")
    return token


def push_to_hub(folder: str | Path, repo_id: str, private: bool = False) -> str:
    """Upload a weights folder to the Hub (token from ``HF_TOKEN``); returns its URL.

    Raises:
        LVSegError: no token, offline, or the upload failed.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.utils import HfHubHTTPError

    folder = Path(folder)
    if not (folder / "model.safetensors").is_file():
        raise LVSegError(f"{folder}: not a weights folder (no model.safetensors)")
    if settings.hub_offline():
        raise LVSegError("HF_HUB_OFFLINE is set: cannot push to the Hub")
    token = _token()
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder),
                                 commit_message="Upload LVSeg weights")
    except HfHubHTTPError as err:
        raise LVSegError(f"push to {repo_id} failed: {first_line(err)}") from None
    except (OSError, ValueError) as err:
        raise LVSegError(f"push to {repo_id} failed: cannot reach the Hub "
                         f"({type(err).__name__})") from None
    return str(getattr(info, "commit_url", f"https://huggingface.co/{repo_id}"))


def push_run(run_dir: str | Path, repo_id: str) -> str:
    """Upload a finished run's exported ``model/`` to the Hub (the app's push: needs
    ``LVSEG_ALLOW_PUSH=1`` and ``HF_TOKEN``).

    Returns the commit URL. Raises :class:`LVSegError` with a one-line reason.
    """
    if not settings.push_allowed():
        raise LVSegError("pushing to the Hub from the app is switched off; the owner opts in "
                         "with LVSEG_ALLOW_PUSH=1 (never in public mode)")
    model = Path(run_dir) / "model"
    if not (model / "model.safetensors").is_file():
        raise LVSegError(f"{Path(run_dir).name}: no exported model/ (has the run finished?)")
    _token()
    check_repo_id(repo_id)
    return push_to_hub(model, repo_id)
