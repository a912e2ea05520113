"""Tests of lvseg_app.viz: the Plotly figures of the app (no browser needed)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from PIL import Image

from lvseg_app import viz
from lvseg_core.labels import COLOURS, STRUCTURES
from tests.conftest import make_heart


@pytest.fixture(scope="module")
def heart():
    return make_heart()


def _decode(fig: go.Figure) -> np.ndarray:
    """The PNG of the first image trace, as an array ``(rows, cols, 3)``."""
    source = fig.data[0].source
    assert source.startswith("data:image/png;base64,")
    data = base64.b64decode(source.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_slice_overlay_colours_and_toggles(heart):
    scan, labels = heart
    image, mask = scan.array[..., 2], labels[..., 2]
    fig = viz.slice_overlay(image, mask, spacing=scan.spacing, opacity=1.0)
    rgb = _decode(fig)
    assert rgb.shape == (image.shape[1], image.shape[0], 3)   # displayed as (y, x)
    x, y = np.argwhere(mask == 3)[0]
    assert tuple(rgb[y, x]) == COLOURS["LV"]
    names = {t.name for t in fig.data if isinstance(t, go.Scatter)}
    assert names == set(STRUCTURES)
    # LV toggled off: the LV pixel is grey again.
    rgb_off = _decode(viz.slice_overlay(image, mask, spacing=scan.spacing, opacity=1.0,
                                        structures=("RV", "Myo")))
    assert len(set(rgb_off[y, x].tolist())) == 1
    # Axes are in mm: the x range spans x voxels times the spacing.
    assert fig.layout.xaxis.range[1] == pytest.approx(image.shape[0] * scan.spacing[0])


def test_error_map_and_probability_map(heart):
    scan, labels = heart
    pred = np.roll(labels, 3, axis=0)
    fig = viz.error_map(scan.array[..., 1], pred[..., 1], labels[..., 1], spacing=scan.spacing)
    assert "FP" in fig.layout.title.text and "FN" in fig.layout.title.text
    prob = (labels[..., 1] == 3).astype(np.float32)
    fig = viz.probability_map(prob, scan.array[..., 1], spacing=scan.spacing, structure="LV",
                              opacity=1.0)
    bar = next(t for t in fig.data if isinstance(t, go.Scatter))
    assert bar.marker.cmin == 0 and bar.marker.cmax == 1 and bar.marker.showscale
    rgb = _decode(fig)
    x, y = np.argwhere(prob == 1)[0]
    assert tuple(rgb[y, x]) == tuple(viz._colour_table()[-1])    # P = 1: top colour
    x, y = np.argwhere(prob == 0)[0]
    assert len(set(rgb[y, x].tolist())) == 1                       # P = 0: grey image
    assert len(fig.to_json()) < 60_000                             # a PNG, not numbers


def test_volume_curve_marks_ed_es():
    fig = viz.volume_curve([120, 100, 60, 80], [150, 130, 90, 120], ed=0, es=2)
    assert [t.name for t in fig.data] == ["LV", "RV"]
    texts = [a.text for a in fig.layout.annotations]
    assert any(t.startswith("ED 120") for t in texts) and any(t.startswith("ES 60") for t in texts)


def test_surface_mesh_in_mm(heart):
    scan, labels = heart
    fig = viz.surface_mesh(labels, scan.spacing, step_size=2)
    meshes = [t for t in fig.data if isinstance(t, go.Mesh3d)]
    assert {m.name for m in meshes} == set(STRUCTURES)
    lv = [m for m in meshes if m.name == "LV"][0]
    z = np.asarray(lv.z, dtype=float)
    # z spans the slices in mm (8 mm apart), within the volume's extent.
    assert z.min() >= -scan.spacing[2] and z.max() <= labels.shape[2] * scan.spacing[2]
    assert z.max() - z.min() > 2 * scan.spacing[2]
    empty = viz.surface_mesh(np.zeros((8, 8, 3), np.uint8), (1, 1, 1))
    assert len(empty.data) == 0


def test_tables_and_training_figures():
    frame = pd.DataFrame({"model": ["U-Net"] * 3 + ["V-Net"] * 3,
                          "structure": list(STRUCTURES) * 2,
                          "dice": [0.8, 0.7, 0.9, 0.75, 0.65, 0.85]})
    fig = viz.box_plot(frame, "dice")
    assert len(fig.data) == 3
    fig = viz.training_curves([
        {"epoch": 0, "train_loss": 1.0, "val_loss": 1.1, "val_dice": 0.4, "val_dice_LV": 0.5},
        {"epoch": 1, "train_loss": 0.7, "val_loss": None, "val_dice": 0.6, "val_dice_LV": 0.7},
    ])
    assert {"train loss", "val loss", "mean Dice", "Dice LV"} <= {t.name for t in fig.data}
    fig = viz.lr_find_curve([1e-5, 1e-4, 1e-3], [2.0, 1.0, 3.0], 1e-4)
    assert fig.layout.xaxis.type == "log"
    balance = pd.DataFrame({"structure": list(STRUCTURES) * 2, "phase": ["ED"] * 3 + ["ES"] * 3,
                            "ml": [150.0, 120.0, 140.0, 70.0, 125.0, 50.0]})
    fig = viz.class_balance(balance)
    assert [t.name for t in fig.data] == ["ED", "ES"]
    # ES LV cavities of 50, 4 and 146 mL: mean 67, SD 72; the lower bar stops at zero.
    spread = pd.concat([balance, pd.DataFrame({"structure": ["LV", "LV"], "phase": ["ES"] * 2,
                                               "ml": [4.0, 146.0]})])
    es = viz.class_balance(spread[spread["phase"] == "ES"]).data[0]
    lv = list(STRUCTURES).index("LV")
    assert es.error_y.array[lv] > es.y[lv] and es.error_y.arrayminus[lv] == es.y[lv]
    fig = viz.histograms({"ED": (np.linspace(0, 1, 5), np.ones(4))})
    assert len(fig.data[0].x) == 4


def test_surface_mesh_keeps_a_face_budget():
    rng = np.random.default_rng(0)
    ragged = rng.integers(0, 4, size=(64, 64, 8)).astype(np.uint8)   # noise: huge surfaces
    fig = viz.surface_mesh(ragged, (1.5, 1.5, 8.0), max_faces=9000)
    faces = sum(len(t.i) for t in fig.data)
    assert 0 < faces <= 9000
