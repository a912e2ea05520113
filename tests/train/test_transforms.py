"""The training augmentation (train.transforms, train.data stacks) on synthetic hearts."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from tests.conftest import make_heart
from lvseg_core.records import TrainConfig
from train.data import StackDataset, Volume, collate_stacks, pad_stack
from train.transforms import Augment, AugmentOptions, StackSampler

#: Every transform applied on every call: a change anywhere shows.
ALWAYS = AugmentOptions(**{name: 1.0 for name in (
    "scale_prob", "rotate_prob", "elastic_prob", "noise_prob", "blur_prob", "brightness_prob",
    "contrast_prob", "low_res_prob", "gamma_prob", "inverted_gamma_prob", "bias_prob")})


def _volume(z: int = 6, z_mm: float = 10.0, seed: int = 0) -> Volume:
    scan, labels = make_heart((96, 88, z), (1.5, 1.5, z_mm), seed=seed)
    image = scan.array / scan.array.max()
    image = np.ascontiguousarray(image.transpose(2, 0, 1), np.float32)
    return Volume("synthetic", image, np.ascontiguousarray(labels.transpose(2, 0, 1)),
                  float(image.mean()), float(image.std()), z_mm)


def test_slice_augment_shapes_labels_and_change():
    vol = _volume()
    aug = Augment((64, 64), options=ALWAYS)
    aug.set_seed(0)
    image, label = aug(vol.image[2][None], vol.label[2][None])
    assert image.shape == (1, 64, 64) and label.shape == (1, 64, 64)
    assert image.dtype == np.float32 and np.isfinite(image).all()
    assert set(np.unique(label)) <= {0, 1, 2, 3}
    assert (label > 0).any(), "the crop must keep the heart"
    # Not identity: the same crop without augmentation differs.
    plain = Augment((64, 64), augment=False)
    plain.set_seed(0)
    p_image, _ = plain(vol.image[2][None], vol.label[2][None])
    assert not np.allclose(image, p_image, atol=1e-3)


def test_crops_keep_the_heart_mostly():
    vol = _volume()
    aug = Augment((64, 64))
    aug.set_seed(3)
    with_heart = [(aug(vol.image[z][None], vol.label[z][None])[1] > 0).any()
                  for _ in range(10) for z in range(vol.image.shape[0])]
    # 2 of 3 crops are centred on the heart; anywhere-crops may also contain it.
    assert np.mean(with_heart) >= 0.6


def test_seeded_reproducibility():
    vol = _volume()
    runs = []
    for _ in range(2):
        aug = Augment((64, 64), options=ALWAYS)
        aug.set_seed(7)
        runs.append([aug(vol.image[z][None], vol.label[z][None]) for z in range(3)])
    for (a, la), (b, lb) in zip(*runs):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    other = Augment((64, 64), options=ALWAYS)
    other.set_seed(8)
    c, _ = other(vol.image[0][None], vol.label[0][None])
    assert not np.array_equal(c, runs[0][0][0])


def test_inverted_gamma_is_used_and_keeps_stats():
    from monai.transforms import RandAdjustContrastd

    aug = Augment((64, 64), options=ALWAYS)
    gammas = [t for t in aug.intensity.transforms if isinstance(t, RandAdjustContrastd)]
    assert any(t.adjuster.invert_image for t in gammas)
    assert all(t.adjuster.retain_stats for t in gammas)


def test_stack_sampler_varies_depth_and_spacing():
    vol = _volume(z=10, z_mm=10.0)
    sampler = StackSampler(AugmentOptions(), seed=0)
    depths = []
    for _ in range(60):
        image, label = sampler(vol.image, vol.label, vol.z_mm)
        assert image.shape[1:] == vol.image.shape[1:] and image.shape[0] == label.shape[0]
        assert set(np.unique(label)) <= {0, 1, 2, 3}
        depths.append(image.shape[0])
    # 10 slices at 10 mm resampled to 5-10 mm: 10-20 slices to draw 1-20 from.
    assert min(depths) <= 3 and max(depths) >= 15
    assert 1 in depths or 2 in depths


def test_stack_dataset_pads_and_collate_trims():
    vols = [_volume(z=8, seed=s) for s in range(4)]
    ds = StackDataset(vols, (48, 48), augment=True, seed=1, z_divisor=2)
    items = [ds[i] for i in range(4)]
    for image, label, depth in items:
        assert image.shape == (1, 20, 48, 48) and label.shape == (1, 20, 48, 48)
        assert 1 <= depth <= 20
        assert (label[0, depth:] == 0).all()
        # Padding is what inference pads with: the z-scored minimum (0 in [0, 1]).
        pad = image[0, depth:]
        assert pad.numel() == 0 or torch.allclose(pad, pad.flatten()[0].expand_as(pad))
    image, label = collate_stacks(items, z_divisor=2)
    deepest = max(d for _, _, d in items)
    assert image.shape[:3] == (4, 1, deepest + deepest % 2)
    assert label.shape == image.shape and label.dtype == torch.long


def test_thin_stacks_are_padded_as_inference_pads_them():
    """Below ``min_depth`` the end slices repeat (image and label), as ``prepare`` does."""
    rng = np.random.default_rng(0)
    image = rng.random((2, 16, 16)).astype(np.float32)
    label = rng.integers(0, 4, (2, 16, 16)).astype(np.uint8)
    stack, labels = pad_stack(image, label, depth=10, min_depth=8)
    index = np.clip(np.arange(8) - 3, 0, 1)       # prepare(): z_before = (8 - 2) // 2
    np.testing.assert_array_equal(stack[:8], image[index])
    np.testing.assert_array_equal(labels[:8], label[index])
    assert (labels[8:] == 0).all() and np.allclose(stack[8:], image.min())
    # Without min_depth the stack is only padded with background.
    stack, labels = pad_stack(image, label, depth=10)
    np.testing.assert_array_equal(stack[:2], image)
    assert (labels[2:] == 0).all()
    ds = StackDataset([_volume(z=8, seed=s) for s in range(3)], (48, 48), augment=True,
                      seed=1, z_divisor=2, min_depth=8)
    assert all(depth >= 8 for _, _, depth in (ds[i] for i in range(3)))


def test_options_are_recorded_in_the_config(tmp_path):
    cfg = TrainConfig(augmentation=AugmentOptions(scale=(0.8, 1.2)).to_dict())
    cfg.save(tmp_path / "config.json")
    loaded = TrainConfig.load(tmp_path / "config.json")
    options = AugmentOptions.from_dict(loaded.augmentation)
    assert options.scale == (0.8, 1.2) and options.gamma == (0.7, 1.5)
    assert options.stack_depths == (1, 20)


@pytest.mark.parametrize("bad", [{"gamma": [0.7, 1.5], "unknown": 1}])
def test_options_ignore_unknown_keys(bad):
    assert AugmentOptions.from_dict(bad).gamma == (0.7, 1.5)


def test_thin_stack_prob_draws_thin_stacks_and_keeps_the_old_stream_when_off():
    vol = _volume(z=10, z_mm=10.0)

    def depths(options, seed=0):
        sampler = StackSampler(options, seed=seed)
        return [sampler(vol.image, vol.label, vol.z_mm)[0].shape[0] for _ in range(200)]

    plain = depths(AugmentOptions())
    assert depths(AugmentOptions(thin_stack_prob=0.0)) == plain
    boosted = depths(AugmentOptions(thin_stack_prob=0.5))
    thin = sum(d <= 3 for d in boosted) / len(boosted)
    assert sum(d <= 3 for d in plain) / len(plain) < 0.25 and 0.45 < thin < 0.7
    assert set(depths(AugmentOptions(thin_stack_prob=1.0, thin_stack_depths=(1, 1)))) == {1}


@pytest.mark.parametrize("given, fragment", [
    ([1], "JSON object"),
    ({"thin_stack": 0.3}, "unknown augmentation option(s) thin_stack"),
    ({"thin_stack_prob": 1.5}, "probability in [0, 1]"),
    ({"thin_stack_prob": "0.3"}, "probability"),
    ({"thin_stack_prob": True}, "probability"),
    ({"thin_stack_depths": [1, 2.5]}, "pair of whole numbers"),
    ({"scale": [0.7]}, "pair of numbers"),
    ({"noise_std": float("nan")}, "number >= 0"),
])
def test_augmentation_overrides_are_checked(given, fragment):
    from lvseg_core.errors import LVSegError

    with pytest.raises(LVSegError, match=re.escape(fragment)):
        AugmentOptions.check_overrides(given)


def test_augmentation_option_reaches_the_config_and_rebuilds():
    from train.cli import _config, build_parser

    args = build_parser().parse_args(["fit", "--model", "vnet", "--augmentation",
                                      '{"thin_stack_prob": 0.3, "scale": [0.8, 1.2]}'])
    cfg = _config(args)
    assert cfg.augmentation == {"thin_stack_prob": 0.3, "scale": [0.8, 1.2]}
    options = AugmentOptions.from_dict(cfg.augmentation)
    assert options.thin_stack_prob == 0.3 and options.scale == (0.8, 1.2)
    assert _config(build_parser().parse_args(["fit", *cfg.cli_args()])) == cfg
