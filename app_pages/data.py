"""Data page: explore an ACDC-layout dataset folder."""

from __future__ import annotations

import streamlit as st

from lvseg_core import explore, settings
from lvseg_core.data import find_cases, select_cases
from lvseg_core.errors import LVSegError
from lvseg_app import viz
from lvseg_app.analysis import default_samples_dir
from lvseg_app.sidebar import page_setup
from lvseg_app.ui import guard


@st.cache_data(show_spinner="Reading the headers…", ttl=600)
def _overview(root: str):
    return explore.overview(root)


@st.cache_data(show_spinner=False, ttl=600)
def _label_tables(root: str, patients: tuple[str, ...]):
    balance, ends = explore.label_tables(select_cases(root, patients=patients))
    return balance, explore.end_slice_shares(ends)


@st.cache_data(show_spinner=False, ttl=600)
def _histograms(root: str, patients: tuple[str, ...], by: str):
    return explore.intensity_histograms(select_cases(root, patients=patients), by=by)


def main() -> None:
    st.title("Data")
    st.caption("What a dataset folder holds: patients, grids, class balance, intensities, "
               "and the expert labels slice by slice.")
    if settings.public_mode():              # only the configured samples, no server paths
        samples_dir = default_samples_dir()
        root = str(samples_dir) if samples_dir is not None else ""
        if not root:
            st.info("No sample folder is configured on this deployment (LVSEG_SAMPLES).")
            return
        st.caption("The sample patients of this deployment.")
    else:
        root = st.text_input(
            "Dataset folder (ACDC layout: patientNNN/Info.cfg, frames, _gt labels)",
            str(default_samples_dir() or ""), key="data_root")
    if not root:
        st.info("Enter a dataset folder (or set LVSEG_DATA / LVSEG_SAMPLES).")
        return
    table = _overview(root)
    if table.empty:
        raise LVSegError(f"{root}: no frames found")
    patients = sorted(table["patient"].unique())
    groups = explore.group_counts(table)

    cols = st.columns(4)
    cols[0].metric("Patients", len(patients))
    cols[1].metric("Frames", len(table))
    cols[2].metric("Labelled frames", int(table["labelled"].sum()))
    cols[3].metric("Groups", len(groups))

    left, right = st.columns(2)
    left.plotly_chart(viz.bar_counts(groups, title="Patients per pathology group",
                                     y_title="patients"), key="data_groups")
    if "slices" in table:
        slices = table["slices"].value_counts().sort_index()
        right.plotly_chart(viz.bar_counts({str(k): int(v) for k, v in slices.items()},
                                          title="Short-axis slices per volume",
                                          x_title="slices", y_title="volumes"),
                           key="data_slices")
    with st.expander("Grids: sizes and voxel spacing"):
        if "x" in table:
            sizes = table.groupby(["x", "y"]).size().rename("volumes").reset_index()
            st.dataframe(sizes.sort_values("volumes", ascending=False), hide_index=True)
            st.dataframe(table[["sx_mm", "sy_mm", "sz_mm", "slices"]].describe().round(2))
        st.dataframe(table, hide_index=True)

    # ---- class balance and intensities on a chosen subset
    st.subheader("Class balance and intensities")
    count = st.slider("Patients read (first of each group in turn)", 1, len(patients),
                      min(10, len(patients)), key="data_count") if len(patients) > 1 else 1
    by_group = {g: sorted(table[table["group"] == g]["patient"].unique()) for g in groups}
    chosen: list[str] = []
    while len(chosen) < count:
        before = len(chosen)
        for g in groups:
            rest = [p for p in by_group[g] if p not in chosen]
            if rest and len(chosen) < count:
                chosen.append(rest[0])
        if len(chosen) == before:
            break
    subset = tuple(sorted(chosen))
    with st.spinner(f"Reading {len(subset)} patients…"):
        balance, ends = _label_tables(root, subset)
    if balance.empty:
        st.info("No labelled frames among these patients.")
    else:
        left, right = st.columns(2)
        unit = left.radio("Size in", ["ml", "voxels"], horizontal=True, key="data_unit",
                          format_func={"ml": "mL", "voxels": "voxels"}.get)
        left.plotly_chart(viz.class_balance(balance[balance["structure"] != "background"],
                                            value=unit), key="data_balance")
        share = balance.pivot_table(index="structure", columns="phase", values="fraction",
                                    aggfunc="mean") * 100
        right.markdown("**Share of the voxels (%)**, mean over frames")
        right.dataframe(share.round(3))
        right.caption("The background dominates: why the loss combines Dice with "
                      "cross-entropy.")
        st.markdown("**Structures the expert drew on the end slices** (% of frames)")
        st.dataframe(ends.round(1))
        st.caption("The base is the end with the larger LV. In systole the base descends "
                   "toward the apex, so at ES the most basal slice may cut the LV and, "
                   "beside it, the right atrium: experts then draw no RV there.")
        by = st.radio("Histograms by", ["structure", "group"], horizontal=True,
                      key="data_hist_by")
        with st.spinner("Computing histograms…"):
            curves = _histograms(root, subset, by)
        st.plotly_chart(viz.histograms(curves, title=f"Intensity by {by}",
                                       x_title="intensity / 99.5th percentile of the volume"),
                        key="data_hist")

    # ---- gallery
    st.subheader("Gallery")
    cols = st.columns(3)
    patient = cols[0].selectbox("Patient", patients, key="data_patient")
    cases = [c for c in find_cases(root) if c.patient == patient]
    labels = [f"{c.name} ({c.phase})" if c.phase else c.name for c in cases]
    picked = cols[1].selectbox("Frame", labels, key="data_frame")
    opacity = cols[2].slider("Label opacity", 0.0, 1.0, 0.4, 0.05, key="data_opacity")
    case = cases[labels.index(picked)]
    images = explore.gallery(case, max_slices=12, opacity=opacity)
    grid = st.columns(4)
    for i, (caption, rgb) in enumerate(images):
        grid[i % 4].image(rgb, caption=caption, width="stretch")
    st.caption("Colours: RV blue, myocardium green, LV red (expert labels).")


page_setup()
with guard("exploring the dataset"):
    main()
