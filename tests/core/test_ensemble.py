"""The ensemble (lvseg_core.ensemble) with the real bundled weights."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from lvseg_core.ensemble import (
    Ensemble,
    calibration_command,
    ensemble_name,
    load_segmenter,
    member_sources,
    parse_members,
)
from lvseg_core.errors import LVSegError
from lvseg_core.inference import Segmenter
from lvseg_core.models import ARCHITECTURES
from lvseg_core.registry import ensemble_key, is_ensemble, model_argument, model_display_name
from tests.conftest import make_heart


@pytest.fixture(scope="module")
def members() -> dict[str, Segmenter]:
    return {name: Segmenter.from_source(name, None, "cpu", precision="fp32")
            for name in ARCHITECTURES}


def test_parse_members():
    assert parse_members("ensemble") == list(ARCHITECTURES)
    assert parse_members("unet,attention_unet") == ["unet", "attention_unet"]
    assert parse_members(" vnet ") == ["vnet"]
    for bad in ("", "unet,unet", "unet,resnet", ",", "unet,"):
        with pytest.raises(LVSegError):
            parse_members(bad)
    assert ensemble_name(list(ARCHITECTURES)) == "ensemble"
    assert ensemble_name(["unet", "vnet"]) == "ensemble(unet,vnet)"


@pytest.mark.parametrize("bad, message", [
    ("unet,resnet", "unknown model 'resnet'"), ("unet,unet", "named twice"),
    ("unet,", "two or more models"), (",", "name a model")])
def test_model_argument_is_one_line_usage_error(bad, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message) as err:
        model_argument(bad)
    assert "\n" not in str(err.value)


def test_ensemble_keys_and_names():
    assert model_argument(" unet,attention_unet ") == "unet,attention_unet"
    assert [is_ensemble(m) for m in ("unet", "ensemble", "attention_unet,unet")] == [
        False, True, True]
    # One key per ensemble, in registry order; all three named is "ensemble".
    assert ensemble_key(["attention_unet", "unet"]) == "unet,attention_unet"
    assert ensemble_key(["vnet", "unet", "attention_unet"]) == "ensemble"
    assert model_display_name("unet,attention_unet") == "Ensemble (U-Net + Attention U-Net)"
    assert model_display_name("ensemble") == "Ensemble"
    assert model_display_name("vnet") == "V-Net" and model_display_name("resnet") == "resnet"
    assert calibration_command({"attention_unet": "a", "unet": "b"}) == (
        "python -m bench.qc --calibrate --models unet,attention_unet --store")


def test_member_sources():
    assert member_sources(["unet", "vnet"], None) == [None, None]
    assert member_sources(["unet", "vnet"], "bundled") == [None, None]
    assert member_sources(["unet", "vnet"], "a/u, b/v") == ["a/u", "b/v"]
    assert member_sources(["unet", "vnet"], {"vnet": "x"}) == [None, "x"]
    with pytest.raises(LVSegError, match="one source per model"):
        member_sources(["unet", "vnet"], "some/folder")
    with pytest.raises(LVSegError):
        member_sources(["unet", "vnet"], ["a", "b", "c"])
    with pytest.raises(LVSegError):
        member_sources(["unet"], {"vnet": "x"})


def test_ensemble_of_one_is_that_model(members, heart):
    scan, _ = heart
    unet = members["unet"]
    alone = Ensemble([unet])
    np.testing.assert_allclose(alone.predict_probabilities(scan.array, scan.spacing).numpy(),
                               unet.predict_probabilities(scan.array, scan.spacing).numpy(),
                               atol=1e-6)
    np.testing.assert_array_equal(alone.segment(scan).mask, unet.segment(scan).mask)
    assert alone.architecture == "ensemble(unet)"


def test_probabilities_are_the_mean_and_sum_to_one(members):
    # A 2D and a 3D member: different plans (divisors 32 and 8, z padding for the V-Net),
    # odd sizes so that padding and restoring are exercised.
    scan, _ = make_heart((75, 83, 5), (1.3, 1.7, 9.0), seed=3)
    pair = Ensemble([members["unet"], members["vnet"]])
    probs = pair.predict_probabilities(scan.array, scan.spacing)
    assert probs.shape == (4, 75, 83, 5)
    torch.testing.assert_close(probs.sum(0), torch.ones(75, 83, 5), atol=1e-4, rtol=0)
    each = pair.member_probabilities(scan.array, scan.spacing)
    torch.testing.assert_close(probs, (each[0] + each[1]) / 2)
    assert not torch.allclose(each[0], each[1], atol=1e-3), "members should differ"
    seg = pair.segment(scan, probabilities=True)
    assert seg.mask.shape == scan.array.shape and seg.mask.dtype == np.uint8
    assert seg.probabilities.shape == (4, 75, 83, 5)
    assert set(np.unique(seg.mask)) <= {0, 1, 2, 3}


def test_slice_axis_first_comes_back_on_the_input_axes(members):
    scan, _ = make_heart((64, 60, 4), (1.5, 1.5, 10.0), seed=5)
    pair = Ensemble([members["attention_unet"], members["vnet"]])
    moved = np.ascontiguousarray(np.moveaxis(scan.array, 2, 0))
    probs = pair.predict_probabilities(moved, (10.0, 1.5, 1.5))
    assert probs.shape == (4, 4, 64, 60)
    reference = pair.predict_probabilities(scan.array, scan.spacing)
    torch.testing.assert_close(torch.movedim(probs, 1, 3), reference, atol=1e-5, rtol=0)


def test_load_segmenter_and_reports(members):
    single = load_segmenter("unet", device="cpu")
    assert type(single) is Segmenter
    full = load_segmenter("ensemble", device="cpu", precision="fp32", tta=True)
    assert isinstance(full, Ensemble) and full.architecture == "ensemble"
    assert full.architectures == list(ARCHITECTURES) and full.tta
    assert full.weights.description == " + ".join(f"bundled:{a}" for a in ARCHITECTURES)
    assert full.precision_label == "fp32"
    assert full.weights.sha256 == "+".join(m.weights.sha256 for m in full.members)
    # Members come from hub.load_model's cache: no second copy of the weights.
    assert full.members[0].model is members["unet"].model


def test_ensemble_on_real_acdc(members, acdc_dir):
    from lvseg_core.io import load_label, load_nifti
    from lvseg_core.metrics import dice
    from tests.conftest import acdc_frame

    patient = acdc_dir / "patient002"
    scan = load_nifti(acdc_frame(patient, "ED")).require_3d()
    gt = load_label(acdc_frame(patient, "ED", label=True), scan)
    full = Ensemble(list(members.values()))
    probs = full.predict_probabilities(scan.array, scan.spacing)
    assert probs.shape[1:] == scan.shape3d
    torch.testing.assert_close(probs.sum(0), torch.ones(scan.shape3d), atol=1e-4, rtol=0)
    mask = full.segment(scan).mask
    scores = {k: dice(mask, gt, k) for k in (1, 2, 3)}
    assert scores[3] >= 0.9 and np.mean(list(scores.values())) >= 0.85, scores


def test_validation_metrics_are_the_weights_own(tmp_path, members):
    """A segmenter reports the ``eval_*`` figures stored with its weights; an
    ensemble, whose figures no weights store, reports none."""
    model, kept = members["unet"].model, members["unet"].model.metrics
    model.metrics = {"val_dice": 0.8, "eval_rv_ef_abs_error": 9.4, "eval_split": "validation"}
    try:
        model.save_pretrained(tmp_path / "w")
        model.metrics = {}
        model.save_pretrained(tmp_path / "none")
    finally:
        model.metrics = kept
    segmenter = Segmenter.from_source("unet", str(tmp_path / "w"), "cpu", backend="torch")
    assert segmenter.validation_metrics == {"eval_rv_ef_abs_error": 9.4,
                                            "eval_split": "validation"}
    assert Segmenter.from_source("unet", str(tmp_path / "none"), "cpu",
                                 backend="torch").validation_metrics == {}
    ensemble = Ensemble([segmenter, members["vnet"]])
    assert ensemble.validation_metrics == {}
    assert ensemble.members_validation_metrics == [segmenter.validation_metrics,
                                                   members["vnet"].validation_metrics]
    assert segmenter.members_validation_metrics == [segmenter.validation_metrics]
