"""Tests of lvseg_core.render: intensities and label maps as RGB pictures."""

from __future__ import annotations

import numpy as np
import pytest

from lvseg_core import render


def test_window_level_maps_range_to_0_255():
    image = np.array([[0.0, 50.0, 100.0, 150.0]])
    out = render.window_level(image, window=100, level=50)
    assert out.dtype == np.uint8
    assert out.tolist() == [[0, 128, 255, 255]]
    window, level = render.auto_window(np.arange(1000.0))
    assert window > 0 and 400 < level < 600
    assert render.auto_window(np.zeros((4, 4)))[0] > 0     # flat image: window never 0


def test_overlay_rejects_mismatched_mask():
    with pytest.raises(ValueError):
        render.overlay_rgb(np.zeros((4, 5)), np.zeros((5, 4), np.uint8))


def test_error_masks_are_disjoint_and_correct():
    gt = np.array([[0, 3, 3, 1]])
    pred = np.array([[3, 3, 0, 3]])
    fp, fn = render.error_masks(pred, gt)
    assert fp.tolist() == [[True, False, False, True]]      # LV where truth differs
    assert fn.tolist() == [[False, False, True, False]]     # LV missed (predicted bg)
    assert not (fp & fn).any()
    fp_rv, fn_rv = render.error_masks(pred, gt, structures=("RV",))
    assert fp_rv.sum() == 0 and fn_rv.tolist() == [[False, False, False, True]]
