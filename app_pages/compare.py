"""Compare page: the three models on one scan, and on a labelled folder."""

from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from lvseg_core import settings
from lvseg_core.errors import LVSegError
from lvseg_core.labels import STRUCTURES
from lvseg_core.render import auto_window
from lvseg_core.registry import ARCHITECTURES, DISPLAY_NAMES
from lvseg_app import analysis as an
from lvseg_app import viz
from lvseg_app.admission import queued
from lvseg_app.caching import samples
from lvseg_app.sidebar import current_choice, get_segmenter, page_setup, weights_sources
from lvseg_app.ui import error_message, fmt, guard

SCAN_STATE = "compare_scan"        # {"scan", "truth", "results": {arch: Analysis | str}}
FOLDER_STATE = "compare_folder"    # {"results": {label: dict}, "failed": {label: str}}


def pick_weights() -> dict[str, tuple[str, str | None] | str]:
    """Per architecture: ``(label, source)`` of the weights to use, or why there are none."""
    chosen: dict[str, tuple[str, str | None] | str] = {}
    cols = st.columns(len(ARCHITECTURES))
    for col, arch in zip(cols, ARCHITECTURES):
        name = DISPLAY_NAMES[arch]
        options = weights_sources(arch)
        sidebar = current_choice()
        if sidebar.architecture == arch and sidebar.source and not Path(sidebar.source).exists():
            options[f"hub {sidebar.source}"] = sidebar.source     # the sidebar's Hub repo
        if not options:
            col.warning(f"{name}: no weights yet (bundled or finished run).",
                        icon=":material/warning:")
            chosen[arch] = f"no {name} weights yet"
            continue
        label = col.selectbox(f"{name} weights", list(options), key=f"compare_weights_{arch}")
        chosen[arch] = (label, options[label])
    return chosen


# ---------------------------------------------------------------- one scan


def one_scan(chosen) -> None:
    st.subheader("One scan, three models")
    root, patients = samples()
    segment_result = st.session_state.get("segment_analysis")
    sources = []
    if segment_result is not None:
        sources.append("The scan on the Segment page")
    if patients:
        sources.append("A sample patient")
    if not sources:
        st.info("Open or upload a scan on the Segment page first (no sample folder is set: "
                "LVSEG_SAMPLES).")
        return
    source = st.radio("Scan", sources, horizontal=True, key="compare_source")
    sample = view = None
    if source == "A sample patient":
        cols = st.columns(2)
        labels = [p.label for p in patients]
        picked = cols[0].selectbox("Sample patient", labels, key="compare_sample")
        sample = patients[labels.index(picked)]
        view = cols[1].radio("Frames", an.SAMPLE_VIEWS, horizontal=True, index=1,
                             key="compare_view")
    usable = {a: c for a, c in chosen.items() if isinstance(c, tuple)}
    if st.button("Run the models", type="primary", key="compare_run",
                 disabled=not usable):
        with queued():
            run_models(chosen, sample, view, segment_result)
    draw_scan_results()


def run_models(chosen, sample, view, segment_result) -> None:
    """Segment the picked scan with every model that has weights; keep the results."""
    truth_frame = 0
    if sample is not None:
        scan, truth = an.load_sample(sample, view)
    else:
        scan, truth = segment_result.scan, segment_result.truth
        if truth is not None and scan.is_cine and len(segment_result.truth_frames) == 1:
            truth_frame = segment_result.truth_frames[0]
            truth = segment_result.truth_at(truth_frame)
    results: dict[str, an.Analysis | str] = {}
    bar = st.progress(0.0, text="Comparing…")
    for i, arch in enumerate(ARCHITECTURES):
        choice = chosen[arch]
        if not isinstance(choice, tuple):
            continue                      # no weights: said above
        bar.progress(i / len(ARCHITECTURES), text=f"{DISPLAY_NAMES[arch]}…")
        try:
            segmenter = get_segmenter(architecture=arch, source=choice[1])
            results[arch] = an.analyse(scan, segmenter, truth, truth_frame)
        except Exception as err:  # one model failing does not stop the others
            results[arch] = error_message(err, f"running {DISPLAY_NAMES[arch]}")
    bar.progress(1.0, text="Done")
    st.session_state[SCAN_STATE] = {"scan": scan, "results": results}


def draw_scan_results() -> None:
    state = st.session_state.get(SCAN_STATE)
    if not state:
        return
    scan = state["scan"]
    results = state["results"]
    depth = scan.shape3d[2]
    cols = st.columns(3)
    k = cols[0].slider("Slice", 1, depth, max(1, (depth + 1) // 2), key="compare_slice") - 1 \
        if depth > 1 else 0
    t = 0
    if scan.is_cine:
        t = cols[1].slider("Frame", 0, scan.n_frames - 1, 0, key="compare_frame")
    opacity = cols[2].slider("Overlay opacity", 0.0, 1.0, 0.45, 0.05, key="compare_opacity")
    window, level = auto_window(scan.array)
    cols = st.columns(len(ARCHITECTURES))
    for col, arch in zip(cols, ARCHITECTURES):
        with col:
            st.markdown(f"**{DISPLAY_NAMES[arch]}**")
            result = results.get(arch)
            if result is None:
                st.info("No weights for this model.", icon=":material/info:")
                continue
            if not isinstance(result, an.Analysis):
                st.error(result, icon=":material/error:")
                continue
            st.caption(f"{result.weights} · {result.segmentation.seconds:.2f} s on "
                       f"{result.segmentation.device}")
            image = result.image_at(t)[..., k]
            st.plotly_chart(viz.slice_overlay(image, result.mask_at(t)[..., k],
                                              spacing=scan.spacing, window=window, level=level,
                                              opacity=opacity, height=380),
                            key=f"compare_overlay_{arch}")
            if t in result.metrics:
                m = result.metrics[t]
                table = {s: {"Dice": m["dice"][s], "HD95 (mm)": m["hd95_mm"][s]}
                         for s in (*STRUCTURES, "mean")}
                st.dataframe(_frame(table).style.format("{:.3f}", na_rep="n/a"))
            if result.indices is not None:
                st.caption(f"LV EF {fmt(result.indices['LV_EF_pct'], 1)} % · "
                           f"LV EDV {fmt(result.indices['LV_EDV_ml'], 1)} mL")


def _frame(rows: dict):
    import pandas as pd

    return pd.DataFrame.from_dict(rows, orient="index")


# ---------------------------------------------------------------- labelled folder


def folder(chosen) -> None:
    st.subheader("A labelled folder")
    root, patients = samples()
    if settings.public_mode():              # only the configured samples, no server paths
        path = str(root or "")
        if path:
            st.caption("The sample patients of this deployment.")
    else:
        path = st.text_input("ACDC-layout folder", value=str(root or ""),
                             key="compare_folder_path")
    if not path:
        st.info("Enter an ACDC-layout folder (patientNNN/Info.cfg, frames and _gt labels).")
        return
    try:
        folder_patients = patients if root is not None and path == str(root) \
            else an.list_samples(path)
    except LVSegError as err:
        st.error(error_message(err), icon=":material/error:")
        return
    names = [p.patient for p in folder_patients]
    groups = sorted({p.group for p in folder_patients if p.group})
    cols = st.columns([2, 1])
    per_group = cols[0].slider("Patients per pathology group", 1,
                               min(16, len(names)), 1, key="compare_per_group",
                               help="Each patient gives two labelled volumes (ED and ES). "
                                    "On a CPU a volume takes a few seconds per model.") \
        if len(names) > 1 else 1         # a slider needs min < max
    picked = []
    for group in groups or [""]:
        picked += [p.patient for p in folder_patients if p.group == group][:per_group]
    usable = {a: c for a, c in chosen.items() if isinstance(c, tuple)}
    models = cols[1].multiselect("Models", list(usable), default=list(usable),
                                 format_func=DISPLAY_NAMES.get, key="compare_models")
    st.caption(f"{len(picked)} patients ({2 * len(picked)} volumes) × {len(models)} models")
    if st.button("Evaluate", type="primary", key="compare_evaluate",
                 disabled=not (models and picked)):
        with queued():
            evaluate_models(path, picked, models, usable)
    draw_folder_results()


def evaluate_models(path: str, picked: list[str], models: list[str], usable: dict) -> None:
    """Evaluate each model on the picked patients of ``path``; keep the results."""
    from lvseg_core.workflows import evaluate_dataset

    results, failed = {}, {}
    bar = st.progress(0.0, text="Evaluating…")
    total = len(models)
    with tempfile.TemporaryDirectory(prefix="lvseg-compare-") as tmp:
        subset = an.make_subset(path, picked, tmp)
        for i, arch in enumerate(models):
            label = DISPLAY_NAMES[arch]

            def progress(done: int, count: int, name: str, i=i, label=label) -> None:
                bar.progress((i + done / count) / total,
                             text=f"{label}: {name} ({done}/{count})")

            try:
                segmenter = get_segmenter(architecture=arch, source=usable[arch][1])
                results[label] = evaluate_dataset(subset, segmenter, progress=progress)
            except Exception as err:
                failed[label] = error_message(err, f"evaluating {label}")
    bar.progress(1.0, text="Done")
    st.session_state[FOLDER_STATE] = {"results": results, "failed": failed}


def draw_folder_results() -> None:
    state = st.session_state.get(FOLDER_STATE)
    if not state:
        return
    for label, message in state["failed"].items():
        st.error(f"{label}: {message}", icon=":material/error:")
    if not state["results"]:
        return
    summary, cases = an.evaluation_frames(state["results"])
    st.dataframe(summary.style.format("{:.3f}", na_rep="n/a", subset=[
        c for c in summary.columns if c not in ("cases", "failed")]))
    per_structure = cases[cases["structure"] != "mean"]
    means = cases[cases["structure"] == "mean"]
    left, right = st.columns(2)
    left.plotly_chart(viz.box_plot(per_structure, "dice", x="model",
                                   title="Dice per model and structure"),
                      key="compare_box_dice")
    right.plotly_chart(viz.box_plot(per_structure, "hd95_mm", x="model",
                                    title="HD95 (mm) per model and structure"),
                       key="compare_box_hd95")
    left, right = st.columns(2)
    left.plotly_chart(viz.box_plot(means, "dice", x="group", color="model",
                                   title="Mean Dice per pathology group"),
                      key="compare_box_group_dice")
    right.plotly_chart(viz.box_plot(means, "hd95_mm", x="group", color="model",
                                    title="Mean HD95 (mm) per pathology group"),
                       key="compare_box_group_hd95")
    with st.expander("Per-case values"):
        st.dataframe(cases.pivot_table(index=["case", "group", "phase"],
                                       columns=["model", "structure"], values="dice")
                     .round(3), key=None)
    st.download_button("Per-case table (CSV)", cases.to_csv(index=False), "compare_cases.csv",
                       "text/csv", on_click="ignore", key="compare_download",
                       icon=":material/download:")


def main() -> None:
    st.title("Compare")
    st.caption("U-Net, Attention U-Net and V-Net on the same data.")
    chosen = pick_weights()
    with guard("comparing the models on one scan"):
        one_scan(chosen)
    st.divider()
    with guard("evaluating the folder"):
        folder(chosen)


page_setup()
main()
