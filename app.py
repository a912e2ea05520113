"""LVSeg: heart segmentation in short-axis cine MRI (``streamlit run app.py``).

This script declares the pages and draws what they share: the model and
weights picker and the device, in the sidebar. Each page script in
``app_pages/`` only draws; the work is done in :mod:`lvseg_app` and
:mod:`lvseg_core`.

The folder is deliberately not called ``pages/``: Streamlit treats a
``pages/`` folder beside the main script as an old-style multipage app until
``st.navigation`` has run once in the process, so a first visitor arriving on
``/train`` would get that page alone, without this script around it.
"""

from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="LVSeg · cardiac MRI segmentation", page_icon="🫀",
                   layout="wide")

from lvseg_app.sidebar import draw_sidebar, mark_shell_drawn  # noqa: E402  (after set_page_config)

PAGES = [
    st.Page("app_pages/segment.py", title="Segment", icon=":material/favorite:", default=True),
    st.Page("app_pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("app_pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("app_pages/data.py", title="Data", icon=":material/dataset:"),
    st.Page("app_pages/models.py", title="Models", icon=":material/deployed_code:"),
]

page = st.navigation(PAGES)
draw_sidebar()
with st.sidebar:
    st.caption("LVSeg segments the RV cavity, LV myocardium and LV cavity (ACDC labels). "
               "Research and teaching use only: not a medical device.")
mark_shell_drawn()
page.run()
