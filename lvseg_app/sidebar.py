"""The shared sidebar: the model, weights, precision and backend picker, and the model it chose.

Drawn by ``app.py`` around every page (or by :func:`page_setup` when a page
runs alone); the pages ask :func:`current_choice` and :func:`get_segmenter`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import streamlit as st

from lvseg_core import hub, settings
from lvseg_core.errors import WeightsError
from lvseg_core.registry import ARCHITECTURES, DISPLAY_NAMES, ENSEMBLE, parse_members

from . import jobs
from .caching import device_label, load_segmenter

#: Weights sources offered in the sidebar.
WEIGHTS_KINDS = ("Bundled", "Hugging Face Hub", "Training run")

#: The sidebar's model choices: each architecture, then the ensemble of all of them.
MODEL_OPTIONS = (*ARCHITECTURES, ENSEMBLE)


def model_name(choice: str) -> str:
    """Display name of an architecture or of the ensemble."""
    return "Ensemble (all three, averaged)" if choice == ENSEMBLE else \
        DISPLAY_NAMES.get(choice, choice)


# ---------------------------------------------------------------- model choice


@dataclass(frozen=True)
class ModelChoice:
    """The sidebar's model and weights.

    Attributes:
        architecture: registry name (``unet``, ``attention_unet``, ``vnet``).
        source: weights source for :func:`lvseg_core.hub.resolve_weights`
            (None: bundled; a Hub repo id; a run folder).
        label: short description for the user.
        problem: why no weights can be used now ("" when fine).
        precision: ``auto``, ``fp32`` or ``bf16``
            (see :func:`lvseg_core.inference.autocast_dtype`).
        tta: average the image and its in-plane flips (4x slower).
        backend: ``auto``, ``torch`` or ``onnx`` (see :mod:`lvseg_core.backends`).
    """

    architecture: str
    source: str | None
    label: str
    problem: str = ""
    precision: str = "auto"
    tta: bool = False
    backend: str = "auto"

    @property
    def name(self) -> str:
        return model_name(self.architecture)


def missing_weights_message(architecture: str) -> str:
    if architecture == ENSEMBLE:
        missing = [a for a in parse_members(ENSEMBLE) if not bundled_available(a)]
        return (f"The ensemble averages the bundled weights of every model; "
                f"{', '.join(DISPLAY_NAMES[a] for a in missing)} has none yet.")
    name = DISPLAY_NAMES.get(architecture, architecture)
    where = "" if settings.public_mode() else f" ({hub.bundled_folder(architecture)} has none)"
    return (f"No bundled {name} weights yet{where}. "
            f"Train them on the Train page (or `python -m train fit --model {architecture}`), "
            "or pick a "
            "Hugging Face Hub repo or a finished training run in the sidebar.")


def bundled_available(architecture: str) -> bool:
    """Bundled weights exist (for the ensemble: for every member)."""
    return all(hub.weights_folder(hub.bundled_folder(a)) is not None
               for a in parse_members(architecture))


#: Sidebar widget keys whose values are kept across pages (see :func:`_restore`).
SIDEBAR_KEYS = ("arch", "weights_kind", "hub_repo", "weights_run", "precision", "tta",
                "backend")

#: Inference precisions offered in the sidebar.
PRECISIONS = {"auto": "auto (fastest this device computes natively)", "bf16": "bf16",
              "fp32": "fp32 (exact)"}

#: Inference backends offered in the sidebar.
BACKENDS = {"auto": "auto (ONNX Runtime on a CPU where faster)", "torch": "torch",
            "onnx": "ONNX Runtime (CPU)"}


def _keep(key: str) -> None:
    """``on_change`` callback: remember a sidebar value outside the widget."""
    st.session_state[f"_keep_{key}"] = st.session_state.get(key)


def _restore() -> None:
    """Give the sidebar widgets their remembered values.

    Streamlit forgets a widget's state when a run does not draw that same
    widget; remembering the values in plain session state keeps the choice
    whichever way a page is run.
    """
    for key in SIDEBAR_KEYS:
        kept = st.session_state.get(f"_keep_{key}")
        if kept is not None:
            st.session_state[key] = kept


def choose_weights(architecture: str, key_prefix: str = "", container=None) -> ModelChoice:
    """Weights widgets for ``architecture`` (radio + repo id / run); returns the choice."""
    where = container or st
    name = DISPLAY_NAMES.get(architecture, architecture)
    if architecture == ENSEMBLE:
        where.caption("The bundled weights of each model; their class probabilities are "
                      "averaged on the scan's grid.")
        problem = "" if bundled_available(ENSEMBLE) else missing_weights_message(ENSEMBLE)
        return ModelChoice(ENSEMBLE, None, "Ensemble · bundled", problem=problem)
    kind = where.radio("Weights", WEIGHTS_KINDS, key=f"{key_prefix}weights_kind",
                       on_change=_keep, args=(f"{key_prefix}weights_kind",),
                       help="Bundled: weights/<model>/ in the repository (works offline). "
                            "Hub: a Hugging Face repo id owner/name[@revision]. "
                            "Training run: a finished run of the Train page.")
    if kind == "Hugging Face Hub":
        repo = where.text_input("Hub repo id", key=f"{key_prefix}hub_repo",
                                on_change=_keep, args=(f"{key_prefix}hub_repo",),
                                placeholder="owner/lvseg-unet@main").strip()
        if not repo:
            return ModelChoice(architecture, None, f"{name} · Hub",
                               problem="Enter a Hugging Face Hub repo id (owner/name).")
        return ModelChoice(architecture, repo, f"{name} · hub:{repo}")
    if kind == "Training run":
        finished = jobs.weights_runs(architecture)
        if not finished:
            return ModelChoice(architecture, None, f"{name} · run",
                               problem=f"No finished {name} training run with exported "
                                       "weights yet; start one on the Train page.")
        names = [r.name for r in finished]
        if st.session_state.get(f"{key_prefix}weights_run") not in names:
            st.session_state[f"{key_prefix}weights_run"] = names[0]
            _keep(f"{key_prefix}weights_run")
        chosen = where.selectbox("Training run", names, key=f"{key_prefix}weights_run",
                                 on_change=_keep, args=(f"{key_prefix}weights_run",))
        run = finished[names.index(chosen)] if chosen in names else finished[0]
        return ModelChoice(architecture, str(run.path), f"{name} · run {run.name}")
    if not bundled_available(architecture):
        return ModelChoice(architecture, None, f"{name} · bundled",
                           problem=missing_weights_message(architecture))
    return ModelChoice(architecture, None, f"{name} · bundled")


def draw_sidebar() -> ModelChoice:
    """The shared sidebar: model picker, weights source and device."""
    _restore()
    with st.sidebar:
        st.markdown("#### Model")
        arch = st.selectbox("Architecture", list(MODEL_OPTIONS), key="arch",
                            format_func=model_name,
                            on_change=_keep, args=("arch",))
        choice = choose_weights(arch)
        if choice.problem:
            st.warning(choice.problem, icon=":material/warning:")
        precision = st.selectbox(
            "Precision", list(PRECISIONS), key="precision", format_func=PRECISIONS.get,
            on_change=_keep, args=("precision",),
            help="auto: float16 on a GPU, bfloat16 on CPUs with AVX-512 BF16 or AMX "
                 "(about 3x faster, same Dice on ACDC), else float32. Reduced precision "
                 "may change labels at a few voxels.")
        if precision != "auto":
            choice = replace(choice, precision=precision, label=f"{choice.label} · {precision}")
        if "backend" not in st.session_state:  # first run: the LVSEG_BACKEND default
            default = settings.backend()
            st.session_state["backend"] = default if default in BACKENDS else "auto"
        backend = st.selectbox(
            "Backend", list(BACKENDS), key="backend", format_func=BACKENDS.get,
            on_change=_keep, args=("backend",),
            help="auto: torch on a GPU; on a CPU ONNX Runtime where these weights have an "
                 "ONNX build whose recorded check passed (Dice kept, faster than torch: every "
                 "bundled model), torch otherwise. onnx: builds one if "
                 "needed (a minute, cached). Precision applies to torch only.")
        choice = replace(choice, backend=backend)
        if backend != "auto":
            choice = replace(choice, label=f"{choice.label} · {backend}")
        if st.checkbox("Test-time flips", key="tta", on_change=_keep, args=("tta",),
                       help="Average the prediction of the image and of its three in-plane "
                            "flips: smoother borders, about 4x the inference time."):
            choice = replace(choice, tta=True, label=f"{choice.label} · flip TTA")
        st.caption(f"Device: **{device_label()}**")
    st.session_state["model_choice"] = choice
    return choice


SHELL_FLAG = "_lvseg_shell_drawn"


def mark_shell_drawn() -> None:
    """Called by ``app.py`` after drawing the sidebar, just before running the page."""
    st.session_state[SHELL_FLAG] = True


def page_setup() -> None:
    """Called first by every page: draws the shared sidebar when the page runs
    without ``app.py`` around it (a test harness that runs the page script
    directly)."""
    if not st.session_state.pop(SHELL_FLAG, False):
        draw_sidebar()


def current_choice() -> ModelChoice:
    """The choice made in the sidebar on this run."""
    choice = st.session_state.get("model_choice")
    if choice is None:
        arch = next(iter(ARCHITECTURES))
        return ModelChoice(arch, None, DISPLAY_NAMES[arch],
                           problem="" if bundled_available(arch) else missing_weights_message(arch))
    return choice


def use_run_as_weights(run_name: str, architecture: str) -> None:
    """Button callback: select a training run's weights in the sidebar."""
    for key, value in (("arch", architecture), ("weights_kind", "Training run"),
                       ("weights_run", run_name)):
        st.session_state[key] = value
        _keep(key)


# ---------------------------------------------------------------- models


def get_segmenter(choice: ModelChoice | None = None, architecture: str | None = None,
                  source: str | None = None, precision: str | None = None,
                  tta: bool | None = None, backend: str | None = None):
    """The cached :class:`~lvseg_core.inference.Segmenter` of a choice (or of
    ``architecture`` + ``source``). Raises :class:`WeightsError` with a
    user-facing message when there are no weights."""
    if choice is not None:
        if choice.problem:
            raise WeightsError(choice.problem)
        architecture, source = choice.architecture, choice.source
        precision = precision or choice.precision
        tta = choice.tta if tta is None else tta
        backend = backend or choice.backend
    if backend is None:
        backend = current_choice().backend
    if precision is None:
        precision = current_choice().precision
    if tta is None:
        tta = current_choice().tta
    if architecture is None:
        raise WeightsError("no model chosen")
    if source is None and not bundled_available(architecture):
        raise WeightsError(missing_weights_message(architecture))
    return load_segmenter(architecture, source, precision, tta, backend)


def weights_sources(architecture: str) -> dict[str, str | None]:
    """Local weights of ``architecture``: ``{label: source}`` (bundled and finished runs)."""
    out: dict[str, str | None] = {}
    if bundled_available(architecture):
        out["bundled"] = None
    for run in jobs.weights_runs(architecture):
        out[f"run {run.name}"] = str(run.path)
    return out
