"""LVSeg: heart segmentation in short-axis cine MRI (``streamlit run app.py``).

This script declares the pages and draws what they share: the model and
weights picker and the device, in the sidebar. Each page script in
``pages/`` draws; the work is done in :mod:`lvseg_core`.
"""

from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="LVSeg · cardiac MRI segmentation", page_icon="🫀",
                   layout="wide")

from pages.common import draw_sidebar, mark_shell_drawn  # noqa: E402  (after set_page_config)

PAGES = [
    st.Page("pages/segment.py", title="Segment", icon=":material/favorite:", default=True),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/data.py", title="Data", icon=":material/dataset:"),
    st.Page("pages/models.py", title="Models", icon=":material/deployed_code:"),
]

page = st.navigation(PAGES)
draw_sidebar()
with st.sidebar:
    st.caption("LVSeg segments the RV cavity, LV myocardium and LV cavity (ACDC labels). "
               "Research and teaching use only: not a medical device.")
mark_shell_drawn()
page.run()
