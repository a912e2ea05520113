"""Train page: start training runs in the background, watch them, use their weights."""

from __future__ import annotations

import streamlit as st

from lvseg_core import hub, settings
from lvseg_core.records import TrainConfig, epoch_events, read_events, read_lr_find
from lvseg_core.registry import ARCHITECTURES, DISPLAY_NAMES
from lvseg_app import jobs
from lvseg_app import viz
from lvseg_app.analysis import default_samples_dir
from lvseg_app.sidebar import page_setup, use_run_as_weights
from lvseg_app.ui import error_message, fmt, guard

POLL_SECONDS = 5


def options_panel() -> TrainConfig:
    """The options of ``python -m train`` as widgets (shared by the three buttons)."""
    data_default = str(default_samples_dir() or settings.data_dir())
    with st.container(border=True):
        cols = st.columns([1.2, 2, 1.6])
        model = cols[0].selectbox("Architecture", list(ARCHITECTURES), key="train_model",
                                  format_func=DISPLAY_NAMES.get)
        data = cols[1].text_input("Data folder (ACDC layout)", data_default, key="train_data")
        cols[2].text_input("Run name (empty: <model>-<date>-<time>)", key="train_name",
                           placeholder=f"{model}-…")
        cols = st.columns(6)
        epochs = cols[0].number_input("Epochs", 1, 1000, 30, key="train_epochs")
        lr = cols[1].number_input("Learning rate", 1e-6, 1.0, 1e-3, format="%.0e",
                                  step=1e-4, key="train_lr")
        batch = cols[2].number_input("Batch size", 1, 256, 2 if model == "vnet" else 16,
                                     key="train_batch")
        wd = cols[3].number_input("Weight decay", 0.0, 1.0, 1e-4, format="%.0e", step=1e-5,
                                  key="train_wd")
        crop = cols[4].number_input("Crop (px, square)", 32, 512, 176, 16, key="train_crop")
        depth = cols[5].number_input("V-Net slices", 2, 32, 8, 2, key="train_depth",
                                     disabled=model != "vnet")
        cols = st.columns(6)
        schedule = cols[0].selectbox("Schedule", ["onecycle", "cosine", "constant"],
                                     key="train_schedule")
        patience = cols[1].number_input("Early-stop patience", 0, 1000, 10, key="train_patience")
        hours = cols[2].number_input("Time limit (h, 0 = none)", 0.0, 240.0, 0.0, 0.25,
                                     key="train_hours")
        threads = cols[3].number_input("CPU threads (0 = all)", 0, 256, 0, key="train_threads")
        precision = cols[4].selectbox("Precision", ["auto", "32-true", "bf16-mixed",
                                                    "16-mixed"], key="train_precision")
        limit = cols[5].number_input("Share of batches / epoch", 0.01, 1.0, 1.0, 0.05,
                                     key="train_limit")
        augment = st.checkbox("Augmentation (flips, rotations, intensity)", True,
                              key="train_augment")
    max_time = None
    if hours:
        minutes = int(round(hours * 60))
        max_time = f"{minutes // 1440:02d}:{minutes // 60 % 24:02d}:{minutes % 60:02d}:00"
    return TrainConfig(
        model=model, data=data, epochs=int(epochs), lr=float(lr), batch_size=int(batch),
        weight_decay=float(wd), crop=(int(crop), int(crop)), depth=int(depth),
        schedule=schedule, augment=augment, patience=int(patience), max_time=max_time,
        threads=int(threads) or None, precision=None if precision == "auto" else precision,
        limit_train_batches=min(1.0, float(limit)))


def start_buttons(options: TrainConfig) -> None:
    name = st.session_state.get("train_name", "").strip() or None
    allowed = settings.training_allowed()
    if not allowed:
        st.info("Starting runs is switched off on this server (LVSEG_ALLOW_TRAINING=0); "
                "runs started elsewhere are shown below.", icon=":material/lock:")
    cols = st.columns([1.3, 1.3, 1.3, 3])
    started = None
    if cols[0].button("Start training", type="primary", key="train_start",
                      icon=":material/play_arrow:", disabled=not allowed):
        started = jobs.start_fit(options, name)
    if cols[1].button("LR range test", key="train_lr_find", icon=":material/query_stats:",
                      disabled=not allowed,
                      help="python -m train lr-find: 100 steps with a growing learning "
                           "rate; the loss curve suggests a learning rate."):
        started = jobs.start_lr_find(options, name=name)
    if cols[2].button("Overfit check", key="train_overfit", icon=":material/fact_check:",
                      disabled=not allowed,
                      help="Trains on 2 batches without augmentation: the loss should go "
                           "towards 0, otherwise the pipeline has a bug."):
        started = jobs.start_overfit(options, name=name)
    cols[3].caption("Runs start as background processes (`python -m train …`) that keep "
                    "going when this page is closed; their folders are under "
                    f"`{settings.runs_dir()}`.")
    if started is not None:
        st.success(f"Started {started.kind} run **{started.name}** (process {started.pid}).",
                   icon=":material/rocket_launch:")


def draw_live(run: jobs.RunInfo) -> None:
    """Progress, curves, log and stop button of one running run."""
    with st.container(border=True):
        head = st.columns([4, 1])
        head[0].markdown(f"**{run.name}** · {run.kind} · "
                         f"{DISPLAY_NAMES.get(run.model, run.model)} · process {run.pid}")
        if run.started_here:
            if head[1].button("Stop", key=f"train_stop_{run.name}", icon=":material/stop:",
                              disabled=not settings.training_allowed()):
                try:
                    jobs.stop_run(run.path, timeout=5)
                    st.toast(f"Stopped {run.name}")
                except Exception as err:
                    st.error(error_message(err, "stopping the run"))
                st.rerun()
        else:
            head[1].caption("started outside the app")
        epochs = epoch_events(read_events(run.path))
        text = (f"epoch {run.epochs_done}/{run.max_epochs or '?'} · {run.fraction:.0%} · "
                f"elapsed {jobs.format_seconds(run.elapsed)} · "
                f"ETA {jobs.format_seconds(run.eta_seconds)}")
        if run.best_dice is not None:
            text += f" · best val Dice {run.best_dice:.3f}"
        st.progress(min(max(run.fraction, 0.0), 1.0), text=text)
        if epochs:
            st.plotly_chart(viz.training_curves(epochs, height=280), key=f"train_live_{run.name}")
        with st.expander("Log"):
            st.code(jobs.log_tail(run.path) or "(no output yet)", language=None)


def live_section() -> None:
    """Running runs, refreshed every few seconds while any is running."""
    running = [r for r in jobs.list_runs() if r.running]
    names = sorted(r.name for r in running)

    def body() -> None:
        current = [r for r in jobs.list_runs() if r.running]
        if sorted(r.name for r in current) != names:
            st.rerun()              # a run started or ended: redraw the whole page
        if not current:
            st.caption("No run in progress.")
        for run in current:
            draw_live(run)

    st.subheader("In progress")
    st.fragment(body, run_every=POLL_SECONDS if running else None)()


def finished_section() -> None:
    st.subheader("Runs")
    all_runs = [r for r in jobs.list_runs() if not r.running]
    if not all_runs:
        st.caption("No finished runs yet.")
        return
    import pandas as pd

    table = pd.DataFrame([r.summary() for r in all_runs]).set_index("run")
    st.dataframe(table.style.format(na_rep="").format(
        {c: "{:.3f}" for c in table.columns if "Dice" in c or "loss" in c}, na_rep=""))
    names = [r.name for r in all_runs]
    picked = st.selectbox("Run", names, key="train_pick")
    run = all_runs[names.index(picked)] if picked in names else all_runs[0]
    if run.status == "failed":
        st.error(f"{run.name} failed: {run.error}", icon=":material/error:")
    cols = st.columns([1.5, 2.5, 1.2])
    if run.has_model:
        cols[0].button("Use as weights", key="train_use", icon=":material/check_circle:",
                       on_click=use_run_as_weights, args=(run.name, run.model),
                       help="Select these weights in the sidebar for the other pages.")
        if settings.push_allowed() and settings.hub_token():
            repo = cols[1].text_input("Hub repo id", key="train_repo",
                                      placeholder="owner/lvseg-" + (run.model or "model"),
                                      label_visibility="collapsed")
            if cols[2].button("Push to Hub", key="train_push", disabled=not repo,
                              icon=":material/cloud_upload:"):
                with st.spinner(f"Uploading {run.name} to {repo}…"):
                    url = hub.push_run(run.path, repo.strip())
                st.success(f"Pushed: {url}")
        elif not settings.public_mode():
            cols[1].caption("Pushing to the Hugging Face Hub is off: the owner sets "
                            "LVSEG_ALLOW_PUSH=1 and HF_TOKEN (a write token).")
    elif run.kind == "fit" and run.status != "failed":
        cols[0].caption("No exported model/ (the run did not finish).")

    if run.kind == "lr-find":
        result = read_lr_find(run.path)
        if result:
            st.plotly_chart(viz.lr_find_curve(result["lr"], result["loss"],
                                              result.get("suggestion")), key="train_lr_plot")
            st.caption(f"Suggested learning rate: {fmt(result.get('suggestion'), 6)} "
                       "(steepest descent of the smoothed loss).")
        return
    epochs = epoch_events(read_events(run.path))
    if epochs:
        st.plotly_chart(viz.training_curves(epochs), key="train_curves")
        if run.kind == "overfit":
            first, last = epochs[0].get("train_loss"), epochs[-1].get("train_loss")
            st.caption(f"Overfit check: training loss {fmt(first)} → {fmt(last)} "
                       "(should approach 0).")
    with st.expander("Log"):
        st.code(jobs.log_tail(run.path) or "(no log)", language=None)


def main() -> None:
    st.title("Train")
    st.caption("Train U-Net, Attention U-Net or V-Net on an ACDC-layout folder with "
               "`python -m train` (Lightning), as background runs.")
    if settings.public_mode():
        st.info("Training and pushing are switched off on this public deployment "
                "(LVSEG_PUBLIC=1); the runs made by the owner are shown below.",
                icon=":material/lock:")
    else:
        with guard("starting the run"):
            options = options_panel()
            start_buttons(options)
    with guard("reading the running runs"):
        live_section()
    with guard("reading the finished runs"):
        finished_section()


page_setup()
main()
