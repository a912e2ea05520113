"""Segment page: one scan in, the segmentation, its accuracy and the clinical indices out."""

from __future__ import annotations

import numpy as np
import streamlit as st

from lvseg_core.clinical import rv_ef_caution
from lvseg_core.errors import LVSegError, ScanReadError, SeriesChoiceError
from lvseg_core.io import upload
from lvseg_core.labels import STRUCTURES
from lvseg_core.render import auto_window
from lvseg_app import analysis as an
from lvseg_app import clinical as clin
from lvseg_app import viz
from lvseg_app.admission import queued
from lvseg_app.caching import samples
from lvseg_app.sidebar import current_choice, get_segmenter, page_setup
from lvseg_app.ui import error_message, fmt, guard

STATE = "segment_analysis"       # the current Analysis
STATE_ID = "segment_analysis_id"  # increases with each new analysis (widget keys)
SERIES_STATE = "segment_series"   # (file id, series of an upload that holds several)


def _store(result: an.Analysis | None) -> None:
    st.session_state[STATE] = result
    st.session_state[STATE_ID] = st.session_state.get(STATE_ID, 0) + 1
    for key in [k for k in st.session_state if str(k).startswith("segment_cache_")]:
        del st.session_state[key]


def run_analysis(load, truth_frame: int = 0) -> None:
    """Load (``load() -> (scan, truth)``), segment and store the result."""
    choice = current_choice()
    _store(None)
    with queued(), st.status(f"Segmenting with {choice.label}…", expanded=True) as status:
        try:
            st.write("Loading the model…")
            segmenter = get_segmenter(choice)
            notice = getattr(segmenter.weights, "notice", "")
            if notice:
                st.warning(notice)
            st.write("Reading the scan…")
            scan, truth, *rest = load()
            truth_note = rest[0] if rest else ""
            bar = st.progress(0.0, text="Segmenting (then a flipped pass checks the result)…")

            def progress(done: int, total: int) -> None:
                bar.progress(done / total, text=f"Segmented frame {done} of {total}")

            result = an.analyse(scan, segmenter, truth, truth_frame, progress=progress)
            if truth_note:
                result.notes.append(truth_note)
        except BaseException:
            status.update(label="Segmentation failed", state="error", expanded=False)
            raise
        status.update(label=f"Segmented {scan.name} in {result.segmentation.seconds:.2f} s "
                            f"({result.segmentation.device})", state="complete",
                      expanded=False)
    _store(result)
    st.session_state["segment_choice"] = choice.label


def series_picker(file_id: str) -> str | None:
    """A picker of the DICOM series of an uploaded zip that holds several of equal
    size (known once reading it raised SeriesChoiceError); the chosen UID."""
    known = st.session_state.get(SERIES_STATE)
    if not known or known[0] != file_id:
        return None
    series = known[1]
    uids = [s["series_uid"] for s in series]
    st.info(f"This upload holds {len(series)} DICOM series of {series[0]['n_images']} images "
            "each; pick the one to segment.", icon=":material/info:")
    return st.selectbox("DICOM series", uids, key=f"segment_series_{file_id}",
                        format_func=lambda u: next(
                            f"{s['description'] or '(no description)'} · {u}"
                            for s in series if s["series_uid"] == u))


def input_panel() -> None:
    """Sample picker or upload widgets; starts an analysis when asked."""
    root, patients = samples()
    modes = ["Sample scan", "Upload"] if patients else ["Upload"]
    mode = st.radio("Input", modes, horizontal=True, key="segment_mode",
                    label_visibility="collapsed")
    if mode == "Sample scan":
        cols = st.columns([3, 3, 1.4], vertical_alignment="bottom")
        labels = [p.label for p in patients]
        picked = cols[0].selectbox("Sample patient", labels, key="segment_sample",
                                   help="ACDC-layout patients of the sample folder "
                                        "(setting LVSEG_SAMPLES)")
        view = cols[1].radio("Frames", an.SAMPLE_VIEWS, horizontal=True, key="segment_view",
                             help="ED + ES: both frames, so that EF and stroke volume can "
                                  "be computed; expert labels are used as ground truth.")
        if cols[2].button("Segment", type="primary", key="segment_sample_run",
                          width="stretch"):
            sample = patients[labels.index(picked)]
            run_analysis(lambda: an.load_sample(sample, view))
            st.session_state["segment_source"] = "sample"
        return

    cols = st.columns(2)
    scan_file = cols[0].file_uploader(
        "Scan: NIfTI (3D or 4D cine), DICOM series as .zip, .dcm, PNG/JPG", key="segment_upload",
        type=list(upload.SCAN_TYPES))
    truth_file = cols[1].file_uploader(
        "Ground truth (optional): NIfTI label map, 0 bg · 1 RV · 2 Myo · 3 LV",
        key="segment_upload_gt", type=list(upload.LABEL_TYPES))
    with st.expander("Upload options"):
        opts = st.columns(2)
        spacing = opts[0].number_input("Pixel size of a PNG/JPG (mm, 0 = unknown)", 0.0, 10.0,
                                       0.0, 0.05, key="segment_pixel_mm")
        truth_frame = int(opts[1].number_input("Ground truth is frame (cine scans, from 0)", 0,
                                               1000, 0, key="segment_gt_frame"))
    if scan_file is None:
        if st.session_state.get("segment_source") == "upload":
            _store(None)                   # the upload was removed: so are its results
            st.session_state["segment_upload_key"] = None
        st.caption("Drop a scan to segment it; files stay in this session and are not kept.")
        return
    choice = current_choice()
    series_uid = series_picker(scan_file.file_id)
    key = (scan_file.file_id, truth_file.file_id if truth_file else None, spacing, truth_frame,
           choice.label, series_uid)
    again = st.button("Segment again", key="segment_again") \
        if st.session_state.get("segment_upload_key") == key else False
    if st.session_state.get("segment_upload_key") == key and not again:
        if st.session_state.get("segment_upload_error"):   # keep showing why it failed
            st.error(st.session_state["segment_upload_error"], icon=":material/error:")
        return
    st.session_state["segment_upload_key"] = key
    st.session_state["segment_upload_error"] = ""

    def load():
        try:
            scan = upload.load_uploaded_scan(scan_file.name, scan_file.getvalue(),
                                             spacing_mm=spacing or None, series_uid=series_uid)
        except SeriesChoiceError as err:    # offer the series, read the first
            st.session_state[SERIES_STATE] = (scan_file.file_id, err.series)
            st.rerun()
        truth, note = None, ""
        if truth_file is not None:
            try:
                truth = upload.load_uploaded_label(truth_file.name, truth_file.getvalue(), scan)
            except ScanReadError as err:     # segment without it, and say why
                note = f"Ground truth not used: {error_message(err)}"
        return scan, truth, note

    try:
        run_analysis(load, truth_frame)
        st.session_state["segment_source"] = "upload"
    except Exception as err:
        st.session_state["segment_upload_error"] = error_message(err, "reading the upload")
        raise


# ---------------------------------------------------------------- results


def _cached(name: str, make):
    """A per-analysis cache in the session (cleared when a new scan is analysed)."""
    key = f"segment_cache_{name}"
    if key not in st.session_state:
        st.session_state[key] = make()
    return st.session_state[key]


def qc_banner(a: an.Analysis) -> None:
    """Quality control of the result: a warning to check it, an error not to use it."""
    if a.qc is None:
        return
    if a.qc.status == "fail":
        st.error(a.qc.message, icon=":material/dangerous:")
    elif a.qc.status == "check":
        st.warning(a.qc.message, icon=":material/warning:")
    else:
        st.success(a.qc.message, icon=":material/verified:")


def results(a: an.Analysis, aid: int) -> None:
    scan = a.scan
    st.subheader(scan.name)
    seg = a.segmentation
    cols = st.columns(4)
    cols[0].metric("Model", a.model_name)
    cols[1].metric("Inference time", f"{seg.seconds:.2f} s",
                   help="Preprocessing, network and post-processing; model loading and "
                        "file reading excluded.")
    cols[2].metric("Device", seg.device)
    cols[3].metric("Weights", a.weights.split(":", 1)[0], help=a.weights)
    sx, sy, sz = scan.spacing
    shape = " × ".join(str(s) for s in scan.array.shape)
    st.caption(f"Shape {shape} voxels · spacing {sx:.2f} × {sy:.2f} × {sz:.2f} mm"
               + (f" · {scan.n_frames} frames" if scan.is_cine else "")
               + f" · precision {a.precision}" + (" · flip TTA" if a.tta else ""))
    qc_banner(a)
    for note in a.notes:
        st.info(note, icon=":material/info:")
    made_with, now = st.session_state.get("segment_choice"), current_choice().label
    if made_with and made_with != now:
        st.info(f"These results come from {made_with}; press Segment to use {now}.",
                icon=":material/info:")

    # ---- display controls
    depth = scan.shape3d[2]
    window0, level0 = _cached("window", lambda: auto_window(scan.array))
    lo, hi = _cached("range", lambda: (float(np.nanmin(scan.array)),
                                       float(np.nanmax(scan.array))))
    if not hi > lo:                  # a constant scan: sliders need min < max
        hi = lo + 1.0
    span = hi - lo
    with st.container(border=True):
        row = st.columns([3, 3, 2])
        k = row[0].slider("Slice", 1, depth, max(1, (depth + 1) // 2), key=f"segment_slice_{aid}",
                          help="Short-axis slice, base to apex as stored") - 1 \
            if depth > 1 else 0
        if scan.is_cine:
            start = a.ed if a.ed is not None else 0
            t = row[1].select_slider("Frame", options=list(range(scan.n_frames)), value=start,
                                     format_func=a.frame_label, key=f"segment_frame_{aid}")
        else:
            t = 0
            row[1].caption("One frame (3D scan)")
        opacity = row[2].slider("Overlay opacity", 0.0, 1.0, 0.45, 0.05, key="segment_opacity")
        row = st.columns([1, 1, 1, 3, 3])
        shown = [s for i, s in enumerate(STRUCTURES)
                 if row[i].checkbox(s, True, key=f"segment_show_{s}")]
        window = row[3].slider("Window", span / 100, span * 2,
                               min(max(window0, span / 100), span * 2),
                               key=f"segment_window_{aid}")
        level = row[4].slider("Level", lo, hi, min(max(level0, lo), hi),
                              key=f"segment_level_{aid}")

    image = a.image_at(t)[..., k]
    mask = a.mask_at(t)[..., k]
    where = f"slice {k + 1}/{depth}" + (f", {a.frame_label(t)}" if scan.is_cine else "")
    left, right = st.columns(2)
    left.plotly_chart(viz.slice_overlay(image, mask, spacing=scan.spacing, window=window,
                                        level=level, opacity=opacity, structures=shown,
                                        title=f"Segmentation · {where}"),
                      key=f"segment_overlay_{aid}")
    with right:
        structure = st.selectbox("Probability map of", STRUCTURES, index=2,
                                 key="segment_prob_structure")
        prob = a.probability_at(structure, t)
        if prob is None:
            st.info("No probability map for this scan.")
        else:
            st.plotly_chart(viz.probability_map(prob[..., k].astype(np.float32), image,
                                                spacing=scan.spacing, structure=structure,
                                                window=window, level=level),
                            key=f"segment_prob_{aid}")

    # ---- accuracy
    truth = a.truth_at(t)
    if a.truth_frames:
        st.subheader("Accuracy against the ground truth")
        if truth is None:
            labelled = ", ".join(a.frame_label(f) for f in a.truth_frames)
            st.info(f"Ground truth is given for {labelled}; pick that frame.")
        else:
            left, right = st.columns([1.1, 1])
            with left:
                st.markdown(f"**Metrics, {a.frame_label(t) if scan.is_cine else 'whole volume'}"
                            "** (3D, per structure)")
                table = an.metrics_table(a.metrics[t])
                st.dataframe(table.style.format("{:.3f}", na_rep="n/a"), key=None)
                dice = a.metrics[t]["dice"]
                cols = st.columns(3)
                for col, s in zip(cols, STRUCTURES):
                    col.metric(f"Dice {s}", fmt(dice[s]))
            right.plotly_chart(viz.error_map(image, mask, truth[..., k], spacing=scan.spacing,
                                             window=window, level=level, structures=shown,
                                             title=f"Errors · {where}"),
                               key=f"segment_errors_{aid}")
    else:
        st.caption("Add a ground-truth label map (or open a sample) to see Dice, IoU, "
                   "precision, recall, F1 and HD95 with an error map.")

    # ---- clinical indices
    st.subheader("Clinical indices")
    if a.indices is not None:
        ind = a.indices
        cols = st.columns(5)
        manual = a.manual_indices or {}

        def delta(key):
            return f"{ind[key] - manual[key]:+.1f} vs manual" if key in manual else None

        cols[0].metric("LV EF", f"{fmt(ind['LV_EF_pct'], 1)} %", delta("LV_EF_pct"),
                       delta_color="off")
        cols[1].metric("LV EDV", f"{fmt(ind['LV_EDV_ml'], 1)} mL", delta("LV_EDV_ml"),
                       delta_color="off")
        cols[2].metric("LV ESV", f"{fmt(ind['LV_ESV_ml'], 1)} mL", delta("LV_ESV_ml"),
                       delta_color="off")
        cols[3].metric("RV EF", f"{fmt(ind['RV_EF_pct'], 1)} %", delta("RV_EF_pct"),
                       delta_color="off")
        cols[4].metric("Myocardial mass", f"{fmt(ind['Myo_mass_g'], 1)} g",
                       delta("Myo_mass_g"), delta_color="off")
        left, right = st.columns([1, 1.2])
        left.dataframe(an.indices_table(a).style.format("{:.1f}", na_rep="n/a"))
        left.caption(f"ED = {a.frame_label(a.ed)}, ES = {a.frame_label(a.es)}"
                     + ("" if scan.meta.get("ED") is not None
                        else " (largest and smallest LV volume)")
                     + ". Volumes by slice summation; mass = myocardium volume × 1.05 g/mL.")
        caution = rv_ef_caution(a.validation)
        if caution:
            left.info(caution)
        if scan.n_frames > 2:
            right.plotly_chart(viz.volume_curve([v["LV"] for v in a.volumes],
                                                [v["RV"] for v in a.volumes],
                                                ed=a.ed, es=a.es),
                               key=f"segment_curve_{aid}")
        else:
            right.plotly_chart(viz.volume_curve([v["LV"] for v in a.volumes],
                                                [v["RV"] for v in a.volumes],
                                                ed=a.ed, es=a.es, height=300),
                               key=f"segment_curve_{aid}")
            right.caption("Two frames (ED and ES): upload a 4D cine scan for the whole cycle.")
    else:
        st.dataframe(an.volumes_table(a, t).style.format("{:.1f}", na_rep="n/a"))
        st.caption("Ejection fraction and stroke volume need an end-diastolic and an "
                   "end-systolic frame: upload a 4D cine scan, or open a sample with ED + ES.")

    # ---- AHA segments
    if clin.has_study(a):
        st.subheader("AHA 16-segment wall thickness")
        try:
            rows = _cached("aha", lambda: clin.aha_rows(a))
        except LVSegError as err:
            st.info(f"No AHA segments: {err}")
        else:
            ed_png, thick_png = _cached("bullseyes", lambda: clin.bullseyes(rows))
            cols = st.columns(2)
            cols[0].image(ed_png, caption="ED wall thickness (mm)")
            cols[1].image(thick_png, caption="Systolic thickening (%)")
            st.dataframe(rows, hide_index=True)
            st.caption("Segments oriented by the RV insertion points; thickness measured "
                       "perpendicular to the wall at ED and ES. Without an oriented affine "
                       "(e.g. the ACDC samples) anterior and inferior may be swapped.")

    # ---- 3D
    st.subheader("3D surface")
    if st.toggle("Show the 3D surface of this frame", False, key="segment_show_3d",
                 help="Marching-cubes surfaces in mm; off by default because a 3D view "
                      "is heavy for browsers without a graphics card."):
        fig = _cached(f"mesh_{t}_{','.join(shown)}",
                      lambda: viz.surface_mesh(a.mask_at(t), scan.spacing, structures=shown,
                                               step_size=2))
        if len(fig.data):
            st.plotly_chart(fig, key=f"segment_mesh_{aid}")
        else:
            st.info("Nothing segmented in this frame.")

    # ---- downloads
    st.subheader("Downloads")
    cols = st.columns(2)
    cols[0].download_button("Mask (NIfTI, same grid as the scan)",
                            data=_cached("nifti", lambda: an.mask_nifti_bytes(a)),
                            file_name=an.mask_file_name(a), mime="application/gzip",
                            key=f"segment_dl_mask_{aid}", on_click="ignore",
                            icon=":material/download:")
    cols[1].download_button("Metrics and indices (CSV)", data=an.results_csv(a),
                            file_name=upload.safe_file_name(f"{scan.name}_results.csv"),
                            mime="text/csv", key=f"segment_dl_csv_{aid}", on_click="ignore",
                            icon=":material/download:")
    choice = current_choice()
    same_model = st.session_state.get("segment_choice") == choice.label and not choice.problem
    segmenter = get_segmenter(choice) if same_model else None  # cached: for the weights hash
    cols = st.columns(2)
    cols[0].download_button("Report (HTML, one self-contained page)",
                            data=_cached("report", lambda: clin.report_html(a, segmenter)),
                            file_name=clin.report_file_name(a), mime="text/html",
                            key=f"segment_dl_report_{aid}", on_click="ignore",
                            icon=":material/download:")
    uploaded = st.session_state.get("segment_upload")
    if (st.session_state.get("segment_source") == "upload" and uploaded is not None
            and clin.is_dicom_upload(uploaded.name)):
        try:
            name, data, mime = _cached("dicom_seg", lambda: clin.seg_download(
                a, uploaded.name, uploaded.getvalue(), segmenter))
        except LVSegError as err:
            cols[1].warning(f"No DICOM SEG: {err}")
        else:
            cols[1].download_button("Segmentation (DICOM SEG, for PACS viewers)", data=data,
                                    file_name=name, mime=mime, key=f"segment_dl_seg_{aid}",
                                    on_click="ignore", icon=":material/download:")


def main() -> None:
    st.title("Segment")
    st.caption("Segment the RV cavity, the LV myocardium and the LV cavity in a short-axis "
               "scan with the model chosen in the sidebar.")
    with guard("reading and segmenting the scan"):
        input_panel()
    a = st.session_state.get(STATE)
    if a is not None:
        with guard("drawing the results"):
            results(a, st.session_state.get(STATE_ID, 0))


page_setup()
main()
