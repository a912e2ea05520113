"""Models page: the model cards of the weights this app can use."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from lvseg_core import settings
from lvseg_core.labels import STRUCTURES
from lvseg_core.registry import DISPLAY_NAMES
from lvseg_app import catalog
from lvseg_app.admission import queued
from lvseg_app.sidebar import get_segmenter, missing_weights_message, page_setup
from lvseg_app.ui import fmt, guard

SPEED_STATE = "models_speed"     # {card title: seconds per volume}


def card(c: catalog.WeightsCard, i: int) -> None:
    with st.container(border=True):
        st.markdown(f"### {c.title}")
        cols = st.columns(4)
        cols[0].metric("Parameters", f"{c.parameters / 1e6:.2f} M")
        cols[1].metric("Size", f"{c.size_mb:.1f} MB")
        evaluated = c.metrics.get("eval_dice_mean") is not None
        dice = c.metrics.get("eval_dice_mean" if evaluated else "val_dice")
        cols[2].metric("Validation Dice", fmt(dice) if dice is not None else "n/a")
        speed = st.session_state.get(SPEED_STATE, {}).get(c.title)
        cols[3].metric("Speed", f"{speed:.2f} s / volume" if speed else "not measured")
        left, right = st.columns(2)
        with left:
            st.markdown("**Validation metrics**")
            if evaluated:
                names = [*STRUCTURES, "mean"]
                table = {"structure": names}
                for figure, label in (("dice", "Dice"), ("iou", "IoU"), ("hd95_mm", "HD95 (mm)")):
                    table[label] = [fmt(c.metrics.get(f"eval_{figure}_{s}")) for s in names]
                st.dataframe(table, hide_index=True)
                m = c.metrics
                rv_ef = m.get("eval_rv_ef_abs_error")
                st.caption(f"`python -m lvseg_core evaluate` on {fmt(m.get('eval_cases'), 0)} "
                           f"{m.get('eval_split', '')} volume(s), post-processed, original grids;"
                           f" LV EF error {fmt(m.get('eval_ef_abs_error'), 1)} points"
                           + (f", RV EF error {fmt(rv_ef, 1)} points." if rv_ef is not None
                              else "."))
            elif any(c.metrics.get(f"val_dice_{s}") is not None for s in STRUCTURES):
                rows = {s: c.metrics.get(f"val_dice_{s}") for s in STRUCTURES}
                st.dataframe({"structure": list(rows), "Dice": [fmt(v) for v in rows.values()]},
                             hide_index=True)
            else:
                st.caption("No validation metrics recorded with these weights.")
            if c.metrics.get("val_loss") is not None:
                st.caption(f"Validation loss {fmt(c.metrics['val_loss'])}")
        with right:
            st.markdown("**Training**")
            t = c.training
            public = settings.public_mode()     # no server paths for visitors
            facts = {
                "Architecture": f"{c.display_name} ({c.architecture})",
                "Training data": (Path(str(t["data"])).name if public else t["data"])
                if t.get("data") else "unknown",
                "Run": t.get("run") or "",
                "Best epoch / epochs run": f"{t.get('best_epoch', '?')} / "
                                           f"{t.get('epochs_run', '?')}",
                "Training time": f"{float(t['seconds']) / 60:.0f} min" if t.get("seconds")
                else "",
                "Learning rate, batch": f"{t.get('lr', '?')}, {t.get('batch_size', '?')}",
                "Widths": str(c.arch_args or "defaults"),
                "Weights file": f"{c.folder.name if public else c.folder} ({c.modified_text})",
            }
            st.dataframe({"": list(facts), "value": [str(v) for v in facts.values()]},
                         hide_index=True)
        buttons = st.columns([1, 4])
        if buttons[0].button("Measure speed", key=f"models_speed_{i}",
                             icon=":material/speed:",
                             help="Segments a synthetic 232 × 256 × 10 volume (ACDC size)."):
            with queued(), st.spinner("Timing…"):
                segmenter = get_segmenter(architecture=c.architecture,
                                          source=None if c.kind == "bundled" else c.source)
                seconds = catalog.measure_speed(segmenter)
            st.session_state.setdefault(SPEED_STATE, {})[c.title] = seconds
            st.rerun()
        if c.readme:
            with buttons[1].expander("Model card (README.md)"):
                st.markdown(c.readme.split("---", 2)[-1] if c.readme.startswith("---")
                            else c.readme)


def main() -> None:
    st.title("Models")
    st.caption("The weights available to this app: bundled with the repository "
               "(`weights/<model>/`) and exported by finished training runs.")
    cards, problems = catalog.list_weights()
    for problem in problems:
        st.warning(problem, icon=":material/warning:")
    for arch in catalog.missing_bundled():
        st.info(missing_weights_message(arch), icon=":material/info:")
    if not cards:
        st.caption("No weights yet.")
    for i, c in enumerate(cards):
        card(c, i)
    st.caption("Architectures: "
               + "; ".join(f"{DISPLAY_NAMES[a]}" for a in DISPLAY_NAMES)
               + ". Hub repos chosen in the sidebar are loaded on first use and cached "
                 "(HF_HOME).")


page_setup()
with guard("reading the model cards"):
    main()
