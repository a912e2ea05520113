"""Tests of lvseg_core.inference (Segmenter) and lvseg_core.postprocess."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lvseg_core.inference import (Segmentation, Segmenter, autocast_dtype, cpu_has_native_bf16,
                                  device_name)
from lvseg_core.labels import NUM_CLASSES
from lvseg_core.models import create_model
from lvseg_core.postprocess import keep_largest_components, largest_component
from lvseg_core.preprocess import PreprocessPlan, prepare, slice_axis
from lvseg_core.scan import Scan
from tests.conftest import make_heart

SMALL_UNET = {"decoder_channels": (32, 16, 8, 8)}
SMALL_VNET = {"base_channels": 4, "convs_per_level": (1, 1)}



@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return create_model("unet", **SMALL_UNET).eval()


@pytest.fixture(scope="module")
def small_heart():
    return make_heart(shape=(60, 66, 5), spacing=(1.5, 1.5, 8.0), seed=1)


# --------------------------------------------------------------------------- #
# Segmenter with random weights: shapes, types, probabilities
# --------------------------------------------------------------------------- #

def test_segment_3d(unet, small_heart):
    scan, _ = small_heart
    seg = Segmenter(unet, device="cpu").segment(scan, probabilities=True)
    assert isinstance(seg, Segmentation)
    assert seg.mask.shape == scan.shape3d
    assert seg.mask.dtype == np.uint8
    assert set(np.unique(seg.mask)) <= {0, 1, 2, 3}
    assert seg.probabilities.shape == (NUM_CLASSES, *scan.shape3d)
    assert seg.probabilities.dtype == np.float16
    np.testing.assert_allclose(seg.probabilities.astype(np.float32).sum(0), 1.0, atol=3e-3)
    assert (seg.probabilities >= 0).all()
    assert seg.seconds > 0 and len(seg.frame_seconds) == 1
    assert seg.device == device_name("cpu") and seg.device.startswith("CPU")


def test_mask_is_argmax_without_postprocessing(unet, small_heart):
    scan, _ = small_heart
    seg = Segmenter(unet, device="cpu", postprocess=False).segment(scan, probabilities=True)
    probs = Segmenter(unet, device="cpu").predict_probabilities(scan.array, scan.spacing)
    assert probs.dtype == torch.float32 and probs.shape == (NUM_CLASSES, *scan.shape3d)
    assert np.array_equal(seg.mask, probs.argmax(0).numpy())
    np.testing.assert_allclose(seg.probabilities.astype(np.float32), probs.numpy(), atol=1e-3)


def test_probabilities_not_requested(unet, small_heart):
    scan, _ = small_heart
    assert Segmenter(unet, device="cpu").segment(scan).probabilities is None


def test_batch_size_does_not_change_result(unet, small_heart):
    scan, _ = small_heart
    a = Segmenter(unet, device="cpu", batch_size=2, postprocess=False)
    b = Segmenter(unet, device="cpu", batch_size=64, postprocess=False)
    pa = a.predict_probabilities(scan.array, scan.spacing)
    pb = b.predict_probabilities(scan.array, scan.spacing)
    torch.testing.assert_close(pa, pb, atol=1e-5, rtol=1e-4)


def test_segment_4d_with_progress(unet):
    frames = [make_heart(shape=(48, 52, 4), seed=s)[0] for s in range(3)]
    cine = Scan(np.stack([f.array for f in frames], axis=-1), frames[0].affine, name="cine")
    calls = []
    segmenter = Segmenter(unet, device="cpu")
    seg = segmenter.segment(cine, probabilities=True, progress=lambda d, t: calls.append((d, t)))
    assert seg.mask.shape == (48, 52, 4, 3) and seg.mask.dtype == np.uint8
    assert seg.probabilities.shape == (NUM_CLASSES, 48, 52, 4, 3)
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert len(seg.frame_seconds) == 3
    # each frame is segmented as its own volume
    for t, frame in enumerate(frames):
        alone = segmenter.segment(frame).mask
        assert np.array_equal(seg.mask[..., t], alone)


def test_vnet_z_not_multiple_of_divisor():
    torch.manual_seed(0)
    model = create_model("vnet", **SMALL_VNET, z_strides=(2, 2)).eval()
    plan = PreprocessPlan.from_dict(model.preprocess)
    assert plan.z_divisor == 4
    scan, _ = make_heart(shape=(45, 38, 10), spacing=(1.4, 1.7, 9.0), seed=2)
    seg = Segmenter(model, device="cpu").segment(scan, probabilities=True)
    assert seg.mask.shape == (45, 38, 10) and seg.mask.dtype == np.uint8
    assert set(np.unique(seg.mask)) <= {0, 1, 2, 3}
    assert seg.probabilities.shape == (NUM_CLASSES, 45, 38, 10)
    np.testing.assert_allclose(seg.probabilities.astype(np.float32).sum(0), 1.0, atol=3e-3)
    prepared = prepare(scan.array, scan.spacing, plan)
    assert prepared.image.shape[0] == 12 and prepared.z_pad == 2


def test_segmenter_reads_the_plan(unet):
    segmenter = Segmenter(unet, device="cpu")
    assert segmenter.plan == PreprocessPlan.from_dict(unet.preprocess)
    assert segmenter.architecture == "unet"
    assert not segmenter.model.training


# --------------------------------------------------------------------------- #
# post-processing
# --------------------------------------------------------------------------- #

def test_keep_largest_components_removes_island():
    labels = np.zeros((40, 40, 6), np.uint8)
    labels[10:22, 10:22, 1:5] = 3          # big LV
    labels[8:24, 8:10, 1:5] = 2            # some Myo touching it
    labels[22:26, 10:22, 1:5] = 1          # RV touching the LV: part of the heart
    labels[30:33, 30:33, 2:4] = 3          # small detached LV island
    out = keep_largest_components(labels)
    assert out.dtype == labels.dtype and out.shape == labels.shape
    expected = labels.copy()
    expected[30:33, 30:33, 2:4] = 0
    assert np.array_equal(out, expected)


def test_keep_largest_components_prefers_the_heart_over_a_bigger_blob():
    labels = np.zeros((40, 40, 4), np.uint8)
    labels[5:20, 5:20, :] = 2              # myocardium region: most of the heart
    labels[8:11, 8:11, 1:3] = 3            # small ES LV cavity inside it (18 voxels)
    labels[25:33, 25:33, :] = 3            # a far bigger false-positive "LV" blob (256)
    labels[0:3, 25:35, 0] = 1              # RV fragment detached from the heart
    out = keep_largest_components(labels)
    assert (out[8:11, 8:11, 1:3] == 3).all()        # the true LV is kept
    assert not out[25:33, 25:33, :].any()            # the bigger blob is dropped
    assert not (out == 1).any()                      # detached RV fragment dropped
    assert (out == 2).sum() == (labels == 2).sum()


def test_keep_largest_components_diagonal_connectivity():
    labels = np.zeros((30, 30, 4), np.uint8)
    labels[12:14, 12:14, 1] = 2            # two Myo pieces touching diagonally in 3D
    labels[14:16, 14:16, 2] = 2            # (26-connectivity: one component)
    out = keep_largest_components(labels)
    assert (out == 2).sum() == 8


def test_keep_largest_components_empty_and_idempotent():
    empty = np.zeros((8, 8, 3), np.uint8)
    assert np.array_equal(keep_largest_components(empty), empty)
    _, labels = make_heart(shape=(48, 48, 4))
    assert np.array_equal(keep_largest_components(labels), labels)  # nothing detached
    noisy = labels.copy()
    noisy[0, 0, 0] = 3
    noisy[47, 47, 3] = 1
    cleaned = keep_largest_components(noisy)
    assert np.array_equal(cleaned, labels)
    assert np.array_equal(keep_largest_components(cleaned), cleaned)


def test_largest_component_binary():
    mask = np.zeros((10, 10, 2), bool)
    mask[0:2, 0:2, 0] = True
    mask[5:9, 5:9, :] = True
    out = largest_component(mask)
    assert out.dtype == bool and out.sum() == 32 and not out[0:2, 0:2].any()


def test_segmenter_postprocess_flag_matters(unet, small_heart):
    scan, _ = small_heart
    raw = Segmenter(unet, device="cpu", postprocess=False).segment(scan).mask
    cleaned = Segmenter(unet, device="cpu", postprocess=True).segment(scan).mask
    assert np.array_equal(cleaned, keep_largest_components(raw))


# --------------------------------------------------------------------------- #
# a briefly trained model really segments
# --------------------------------------------------------------------------- #

def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def test_trained_unet_segments_synthetic_heart():
    torch.manual_seed(0)
    model = create_model("unet", **SMALL_UNET)
    plan = PreprocessPlan.from_dict(model.preprocess)
    scan, labels = make_heart(shape=(64, 64, 6), spacing=(1.5625, 1.5625, 8.0), seed=0)
    prepared = prepare(scan.array, scan.spacing, plan)
    assert prepared.image.shape == (6, 1, 64, 64)  # same spacing, already a multiple of 32
    x = prepared.image
    y = torch.from_numpy(labels.transpose(2, 0, 1).astype(np.int64))
    target = F.one_hot(y, NUM_CLASSES).permute(0, 3, 1, 2).float()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(40):
        optimiser.zero_grad()
        logits = model(x)
        probs = logits.softmax(1)
        soft_dice = (2 * (probs * target).sum((0, 2, 3)) + 1) / (
            probs.sum((0, 2, 3)) + target.sum((0, 2, 3)) + 1)
        loss = F.cross_entropy(logits, y) + 1 - soft_dice.mean()
        loss.backward()
        optimiser.step()
    model.eval()

    # a new scan: other noise, raw intensities rescaled (normalisation must cope)
    test_scan, test_labels = make_heart(shape=(64, 64, 6), spacing=(1.5625, 1.5625, 8.0), seed=5)
    test_scan = Scan(test_scan.array * 0.01 + 3.0, test_scan.affine, name="rescaled")
    mask = Segmenter(model, device="cpu").segment(test_scan).mask
    scores = {v: dice(mask == v, test_labels == v) for v in (1, 2, 3)}
    assert all(score > 0.8 for score in scores.values()), scores


def test_autocast_dtype_per_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype(cpu, "fp32") is None and autocast_dtype(cuda, "fp32") is None
    assert autocast_dtype(cpu, "bf16") == torch.bfloat16
    assert autocast_dtype(cuda, "auto") == torch.float16
    native = cpu_has_native_bf16()
    assert autocast_dtype(cpu, "auto") == (torch.bfloat16 if native else None)


def test_bf16_precision_matches_fp32_labels(unet, small_heart):
    scan, _ = small_heart
    fp32 = Segmenter(unet, device="cpu", precision="fp32").segment(scan, probabilities=True)
    bf16 = Segmenter(unet, device="cpu", precision="bf16").segment(scan, probabilities=True)
    assert bf16.mask.shape == fp32.mask.shape
    assert np.abs(bf16.probabilities.astype(np.float32)
                  - fp32.probabilities.astype(np.float32)).max() < 0.1
    assert (bf16.mask == fp32.mask).mean() > 0.95
    with pytest.raises(ValueError):
        Segmenter(unet, device="cpu", precision="fp8")


@pytest.mark.parametrize("order", [(2, 0, 1), (0, 2, 1)])
def test_slice_axis_stored_first_or_second(unet, small_heart, order):
    # The same stack written with its slice axis elsewhere gets the same labels,
    # on its own axes.
    scan, _ = small_heart
    seg = Segmenter(unet, device="cpu")
    reference = seg.predict_probabilities(scan.array, scan.spacing)
    spacing = tuple(np.asarray(scan.spacing)[list(order)])
    assert slice_axis(spacing) == order.index(2)
    moved = seg.predict_probabilities(scan.array.transpose(order), spacing)
    assert moved.shape == (NUM_CLASSES, *scan.array.transpose(order).shape)
    expected = reference.permute(0, *(1 + i for i in order))
    torch.testing.assert_close(moved, expected, atol=1e-5, rtol=0)


def test_slice_axis_keeps_near_isotropic_volumes():
    assert slice_axis((1.5, 1.5, 8.0)) == 2
    assert slice_axis((1.2, 1.0, 1.1)) == 2       # no clearly coarse axis
    assert slice_axis((1.0, 1.4, 1.0)) == 2       # below the ratio
    assert slice_axis((1.25, 10.0, 1.25)) == 1
    assert slice_axis((1.0, 1.0)) == 2


def test_tta_averages_the_flipped_predictions(unet, small_heart):
    scan, _ = small_heart
    plain = Segmenter(unet, device="cpu", precision="fp32")
    tta = Segmenter(unet, device="cpu", precision="fp32", tta=True)
    probs = tta.predict_probabilities(scan.array, scan.spacing)
    assert probs.shape == (NUM_CLASSES, *scan.shape3d)
    torch.testing.assert_close(probs.sum(0), torch.ones(scan.shape3d), atol=1e-5, rtol=0)
    # By hand: the prepared slices, flipped in-plane, through the plain segmenter.
    image = prepare(scan.array, scan.spacing, plain.plan).image
    flips = [torch.softmax(plain._logits(image.flip(d)), 1).flip(d) for d in ((-2,), (-1,),
                                                                             (-2, -1))]
    expected = (torch.softmax(plain._logits(image), 1) + sum(flips)) / 4
    torch.testing.assert_close(torch.from_numpy(tta._probabilities(image.numpy())), expected,
                               atol=1e-5, rtol=0)
    assert not torch.allclose(probs, plain.predict_probabilities(scan.array, scan.spacing),
                              atol=1e-3)


def test_cpu_flags_read_from_cpuinfo():
    # bfloat16 counts as native only with AVX-512 BF16 or AMX among the flags
    # (oneDNN also says yes on AVX-512 CPUs that only emulate it).
    from lvseg_core.inference import NATIVE_BF16_FLAGS, cpu_flags

    ice_lake = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512bw avx512_vnni\n\n"
    sapphire = ice_lake.replace("avx512_vnni", "avx512_vnni avx512_bf16 amx_bf16 amx_tile")
    assert "avx512bw" in cpu_flags(ice_lake)
    assert not cpu_flags(ice_lake) & NATIVE_BF16_FLAGS
    assert cpu_flags(sapphire) & NATIVE_BF16_FLAGS == {"avx512_bf16", "amx_bf16"}
    assert cpu_flags("Features\t: fp asimd bf16\n") == {"fp", "asimd", "bf16"}
    assert cpu_flags("") == frozenset()
