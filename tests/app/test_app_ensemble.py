"""The ensemble in the app: sidebar choice, Segment page and Compare page (streamlit.testing)."""

from __future__ import annotations

import pytest
import torch

from lvseg_core.models import create_model
from tests.app.test_app import make_sample_folder, no_problems, open_app

TINY = {"unet": {"encoder_depth": 3, "decoder_channels": (16, 8, 8)},
        "attention_unet": {"channels": (4, 8, 16)},
        "vnet": {"base_channels": 2}}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("app_ensemble")
    torch.manual_seed(0)
    for arch, kwargs in TINY.items():
        create_model(arch, **kwargs).save_pretrained(root / "weights" / arch)
        if arch != "vnet":
            create_model(arch, **kwargs).save_pretrained(root / "partial" / arch)
    make_sample_folder(root / "samples")
    (root / "runs").mkdir()
    return root


def _app(env, monkeypatch, weights: str = "weights"):
    return open_app(monkeypatch, env / weights, env / "runs", env / "samples")


def test_sidebar_ensemble_segments_a_sample(env, monkeypatch):
    app = _app(env, monkeypatch)
    assert "Ensemble (all three, averaged)" in app.selectbox(key="arch").options
    app.selectbox(key="arch").set_value("ensemble").run()
    no_problems(app)
    app.button(key="segment_sample_run").click().run()
    no_problems(app)
    analysis = app.session_state["segment_analysis"]
    assert analysis.architecture == "ensemble"
    assert analysis.weights == "bundled:unet + bundled:attention_unet + bundled:vnet"


def test_ensemble_without_every_bundled_model_says_which(env, monkeypatch):
    app = _app(env, monkeypatch, weights="partial")
    app.selectbox(key="arch").set_value("ensemble").run()
    warnings = " ".join(w.value for w in app.sidebar.warning)
    assert "V-Net has none" in warnings


def test_compare_page_adds_the_ensemble(env, monkeypatch):
    app = _app(env, monkeypatch)
    app.switch_page("app_pages/compare.py").run()
    app.button(key="compare_run").click().run()
    no_problems(app)
    assert len(app.get("plotly_chart")) == 4            # three models + the ensemble
    assert app.session_state["compare_scan"]["results"]["ensemble"].architecture == "ensemble"
