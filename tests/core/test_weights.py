"""The shipped weights still segment: two held-out ACDC volumes per bundled model.

Noise, a broken export or a wrong preprocessing plan in ``weights/<model>/``
fails here (the other tests only check shapes and plumbing). Skipped with a
reason when the ACDC data is absent. Point ``LVSEG_WEIGHTS_DIR`` elsewhere to
check other weights.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.domain_shift import thin_stack
from lvseg_core import settings
from lvseg_core.inference import Segmenter
from lvseg_core.io import load_label, load_nifti
from lvseg_core.labels import LABEL_OF, STRUCTURES
from lvseg_core.metrics import dice
from lvseg_core.models import ARCHITECTURES
from tests.conftest import acdc_frame

#: Validation patients of the standard split (never trained on) and their phase.
VOLUMES = (("patient019", "ES"), ("patient078", "ED"))
MIN_LV, MIN_MEAN = 0.90, 0.85
#: Thin stacks (1 and 3 middle slices, as scanners that acquire few slices write them).
THIN_SLICES, MIN_THIN_RV, MIN_THIN_MEAN = (1, 3), 0.70, 0.80


def _scores(mask: np.ndarray, gt: np.ndarray) -> tuple[dict[str, float], float]:
    scores = {name: dice(mask, gt, LABEL_OF[name]) for name in STRUCTURES}
    return scores, float(np.mean(list(scores.values())))


def _held_out(acdc_dir, patient: str, phase: str):
    folder = acdc_dir / patient
    if not folder.is_dir():
        pytest.skip(f"validation patient {patient} not in {acdc_dir}")
    scan = load_nifti(acdc_frame(folder, phase)).require_3d()
    return scan, load_label(acdc_frame(folder, phase, label=True), scan)


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_bundled_weights_segment_held_out_volumes(architecture, acdc_dir):
    if not (settings.weights_dir() / architecture / "model.safetensors").is_file():
        pytest.fail(f"no bundled weights in {settings.weights_dir() / architecture}")
    segmenter = Segmenter.from_source(architecture, None, "cpu")
    for patient, phase in VOLUMES:
        scan, gt = _held_out(acdc_dir, patient, phase)
        scores, mean = _scores(segmenter.segment(scan).mask, gt)
        assert scores["LV"] >= MIN_LV and mean >= MIN_MEAN, (
            f"{architecture} ({settings.weights_dir() / architecture}) on {patient} {phase}: "
            f"Dice {', '.join(f'{k} {v:.3f}' for k, v in scores.items())}, mean {mean:.3f}")


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_bundled_weights_segment_thin_stacks(architecture, acdc_dir):
    """A 1- or 3-slice stack still gets an RV (the V-Net found none before its plan
    padded thin stacks to its training depth)."""
    segmenter = Segmenter.from_source(architecture, None, "cpu")
    for patient, phase in VOLUMES:
        scan, gt = _held_out(acdc_dir, patient, phase)
        for count in THIN_SLICES:
            thin, thin_gt = thin_stack(scan, gt, count)
            scores, mean = _scores(segmenter.segment(thin).mask, thin_gt)
            assert scores["RV"] >= MIN_THIN_RV and mean >= MIN_THIN_MEAN, (
                f"{architecture} on {count} slice(s) of {patient} {phase}: "
                f"Dice {', '.join(f'{k} {v:.3f}' for k, v in scores.items())}")


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_bundled_weight_files_stay_under_10_mb(architecture):
    """The repository ships every file under 10 MB; a wide model is stored in
    float16 (its convolution kernels) to stay there."""
    for path in (settings.weights_dir() / architecture).iterdir():
        assert path.stat().st_size < 10 * 2**20, f"{path} is over 10 MB"


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_shipped_onnx_build_is_for_the_shipped_weights(architecture):
    """A build shipped beside the weights is theirs (not stale after new weights)
    and ``auto`` runs it on a CPU, instead of falling back to torch in silence."""
    folder = settings.weights_dir() / architecture
    if not (folder / "onnx.json").is_file():
        pytest.skip(f"{folder} ships no ONNX build")
    pytest.importorskip("onnxruntime")
    segmenter = Segmenter.from_source(architecture, None, "cpu", backend="auto")
    assert segmenter.backend == "onnx", segmenter.notice
    assert segmenter.onnx.path == folder / "model.onnx"


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_bundled_weights_carry_their_own_qc_limits(architecture):
    """Each model's QC limits of the prediction signals were calibrated with the
    weights beside them: new weights without recalibration fail here."""
    import json

    from lvseg_core import qc
    from lvseg_core.hashing import read_sha256

    folder = settings.weights_dir() / architecture
    config = json.loads((folder / "config.json").read_text())
    limits = config.get("qc_limits")
    assert limits, (f"{folder}/config.json has no qc_limits: python -m bench.qc --calibrate "
                    f"--models {architecture} --store")
    sha = read_sha256(folder / "model.safetensors")
    assert limits["calibration"]["weights_sha256"] == sha, f"{folder}: calibrated other weights"
    keys = {r.key for r in qc.RULES if r.signal in qc.PREDICTION_SIGNALS}
    assert keys <= set(limits)
    assert Segmenter.from_source(architecture, None, "cpu").qc_rules == qc.model_rules(limits)


@pytest.mark.parametrize("model", ["ensemble", "unet,attention_unet"])
def test_bundled_ensemble_carries_its_own_qc_limits(model):
    """The ensemble of the three bundled models, and the U-Net + Attention U-Net pair,
    have QC limits calibrated with these weights (averaging raises the entropy: the
    U-Net's limits rated half the three's clean validation volumes unsure); new weights
    of a member without recalibration fail here."""
    from lvseg_core import qc
    from lvseg_core.ensemble import Ensemble, member_identity, read_ensemble_limits

    ensemble = Ensemble.from_source(model, device="cpu")
    identity = member_identity(ensemble.members)
    assert any(e["members"] == identity for e in read_ensemble_limits()), (
        f"{settings.ensemble_limits_file()} has no limits for the bundled weights: "
        f"python -m bench.qc --calibrate --models {model} --store")
    assert ensemble.qc_rules != qc.RULES and "not calibrated" not in ensemble.notice
    others = [e["qc_limits"] for e in read_ensemble_limits() if e["members"] != identity]
    assert all(qc.model_rules(o, "other") != ensemble.qc_rules for o in others)
