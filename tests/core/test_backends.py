"""Tests of the inference backends: ONNX Runtime builds, their cache, and ``auto``.

Real ONNX Runtime sessions on real exports; the builds of small random-weight
models are made without calibration data (float32, fast); the bundled U-Net
uses its shipped int8 build, or builds one into a temporary cache.
"""

from __future__ import annotations

import importlib.abc
import json
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from lvseg_core import onnx_export
from lvseg_core.backends import ensure_build, onnxruntime_available
from lvseg_core.data import VALIDATION_PATIENTS
from lvseg_core.errors import LVSegError
from lvseg_core.hub import available_bundled
from lvseg_core.inference import Segmenter
from lvseg_core.io import load_nifti
from lvseg_core.models import LVSegModel, create_model
from tests.conftest import acdc_frame, make_heart

SMALL_UNET = {"decoder_channels": (32, 16, 8, 8)}

pytestmark = pytest.mark.skipif(not onnxruntime_available(), reason="onnxruntime not installed")


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    """An empty ONNX cache and no calibration data (builds are float32)."""
    monkeypatch.setenv("LVSEG_ONNX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LVSEG_DATA", str(tmp_path / "no-data"))
    monkeypatch.delenv("LVSEG_BACKEND", raising=False)  # the default, auto
    return tmp_path / "cache"


def _save_small_unet(folder, seed: int = 0):
    torch.manual_seed(seed)
    model = create_model("unet", **SMALL_UNET).eval()
    model.save_pretrained(folder)
    return folder


def _logits(segmenter: Segmenter, x: np.ndarray) -> np.ndarray:
    return segmenter._logits(torch.from_numpy(x)).numpy()


def test_onnx_build_cached_and_rebuilt_when_weights_change(tmp_path, cache):
    folder = _save_small_unet(tmp_path / "weights")
    first = Segmenter.from_source("unet", str(folder), device="cpu", backend="onnx")
    assert first.backend == "onnx" and first.precision_label == "fp32"
    record = first.onnx.record
    assert record["key"]["weights_sha256"] == onnx_export.file_sha256(folder / "model.safetensors")
    assert "no calibration data" in record["reason"]
    assert first.onnx.path.parent.parent == cache
    x = np.random.default_rng(0).standard_normal((3, 1, 64, 96), dtype=np.float32)
    torch_fp32 = Segmenter(LVSegModel.from_pretrained(str(folder)), "cpu", precision="fp32",
                           backend="torch")
    np.testing.assert_allclose(_logits(first, x), _logits(torch_fp32, x), atol=1e-3)

    again = Segmenter.from_source("unet", str(folder), device="cpu", backend="onnx")
    assert again.onnx.path == first.onnx.path
    assert again.onnx.record["built"] == record["built"]  # reused, not rebuilt

    _save_small_unet(folder, seed=1)  # the weights file changes in place
    changed = Segmenter.from_source("unet", str(folder), device="cpu", backend="onnx")
    assert changed.onnx.path != first.onnx.path
    new_torch = Segmenter(LVSegModel.from_pretrained(str(folder)), "cpu", precision="fp32",
                          backend="torch")
    np.testing.assert_allclose(_logits(changed, x), _logits(new_torch, x), atol=1e-3)
    assert np.abs(_logits(changed, x) - _logits(first, x)).max() > 1e-2


def test_shipped_build_beside_stale_weights_is_not_used(tmp_path, cache):
    folder = _save_small_unet(tmp_path / "weights")
    shipped = ensure_build("unet", Segmenter, str(folder), beside_weights=True)
    assert shipped.path == folder / onnx_export.ONNX_FILE
    assert Segmenter.from_source("unet", str(folder), "cpu", backend="onnx").onnx.path \
        == shipped.path
    _save_small_unet(folder, seed=1)
    used = Segmenter.from_source("unet", str(folder), "cpu", backend="onnx")
    assert used.onnx.path != shipped.path
    key = used.onnx.record["key"]
    found, why = onnx_export.read_build(folder, key)
    assert found is None and "other weights" in why


def test_corrupted_cached_onnx_is_rebuilt(tmp_path, cache):
    folder = _save_small_unet(tmp_path / "weights")
    built = Segmenter.from_source("unet", str(folder), "cpu", backend="onnx").onnx
    good = built.path.read_bytes()
    built.path.write_bytes(good[: len(good) // 2] + b"\x00" * 64)  # truncated and garbled
    found, why = onnx_export.read_build(built.path.parent, built.record["key"])
    assert found is None and "sha256" in why
    rebuilt = Segmenter.from_source("unet", str(folder), "cpu", backend="onnx").onnx
    assert rebuilt.path == built.path
    assert onnx_export.file_sha256(rebuilt.path) == rebuilt.record["onnx_sha256"]
    assert rebuilt.record["built"] >= built.record["built"]
    x = np.zeros((1, 1, 64, 64), np.float32)
    assert rebuilt.run(x).shape == (1, 4, 64, 64)


def test_unreadable_record_is_rebuilt(tmp_path, cache):
    folder = _save_small_unet(tmp_path / "weights")
    built = Segmenter.from_source("unet", str(folder), "cpu", backend="onnx").onnx
    (built.path.parent / onnx_export.RECORD_FILE).write_text("{not json")
    rebuilt = Segmenter.from_source("unet", str(folder), "cpu", backend="onnx").onnx
    assert json.loads((rebuilt.path.parent / onnx_export.RECORD_FILE).read_text())["key"] \
        == built.record["key"]


class _NoOnnxRuntime(importlib.abc.MetaPathFinder):
    """An import finder that makes ``onnxruntime`` unimportable."""

    def find_spec(self, name, path=None, target=None):
        if name == "onnxruntime" or name.startswith("onnxruntime."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def test_auto_falls_back_to_torch_without_onnxruntime(tmp_path, cache, monkeypatch):
    folder = _save_small_unet(tmp_path / "weights")  # imports the model libraries first
    for name in [m for m in sys.modules if m == "onnxruntime" or m.startswith("onnxruntime.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_NoOnnxRuntime(), *sys.meta_path])
    assert not onnxruntime_available()
    seg = Segmenter.from_source("unet", str(folder), device="cpu")
    assert seg.backend == "torch" and "ONNX Runtime is not installed" in seg.notice
    scan, _ = make_heart(shape=(60, 66, 4))
    assert seg.segment(scan).mask.shape == scan.shape3d
    with pytest.raises(LVSegError, match="pip install onnxruntime"):
        Segmenter.from_source("unet", str(folder), device="cpu", backend="onnx")
    assert not cache.exists()  # nothing was built


def test_backend_choices_and_in_memory_models(tmp_path, cache):
    model = create_model("unet", **SMALL_UNET).eval()
    assert Segmenter(model, "cpu").backend == "torch"  # auto: no weights file to key a build
    with pytest.raises(LVSegError, match="weights from a file"):
        Segmenter(model, "cpu", backend="onnx")
    with pytest.raises(ValueError, match="backend"):
        Segmenter(model, "cpu", backend="tensorrt")
    folder = _save_small_unet(tmp_path / "weights")
    assert Segmenter.from_source("unet", str(folder), "cpu", backend="torch").backend == "torch"
    auto = Segmenter.from_source("unet", str(folder), "cpu")  # no build: auto makes none
    assert auto.backend == "torch" and "no valid ONNX build" in auto.notice
    assert not cache.exists()


def _bundled_copy(tmp_path, name: str = "unet"):
    """The bundled U-Net's files (weights, config, shipped int8 build) in a folder of
    the test's own, and the parsed onnx.json."""
    import shutil

    from lvseg_core.hub import bundled_folder

    if name not in available_bundled():
        pytest.skip(f"no bundled {name} weights")
    source = bundled_folder(name)
    folder = tmp_path / name
    folder.mkdir()
    for file in ("config.json", "model.safetensors", onnx_export.ONNX_FILE,
                 onnx_export.RECORD_FILE):
        shutil.copy2(source / file, folder / file)
    return folder, json.loads((folder / onnx_export.RECORD_FILE).read_text())


def test_auto_uses_a_build_whose_recorded_check_passed(tmp_path, cache):
    folder, record = _bundled_copy(tmp_path)
    assert onnx_export.check_result(record) == (True, "")
    assert record["speed"]["onnx_seconds_per_slice"] < record["speed"]["torch_seconds_per_slice"]
    seg = Segmenter.from_source("unet", str(folder), device="cpu")  # auto
    assert seg.backend == "onnx" and seg.precision_label == "int8" and seg.notice == ""
    assert seg.onnx.path == folder / onnx_export.ONNX_FILE and seg._model is None
    # An explicit precision under auto asks for torch at that precision, and says so.
    exact = Segmenter.from_source("unet", str(folder), device="cpu", precision="fp32")
    assert exact.backend == "torch" and exact.precision_label == "fp32"
    assert "precision fp32 asked" in exact.notice
    # With a GPU auto is torch on CUDA, whatever the build (no CUDA is touched here).
    from lvseg_core.inference import choose_onnx

    assert choose_onnx("auto", torch.device("cuda"), "unet", seg.weights, seg._config[
        "preprocess"], lambda: None) == (None, "")


@pytest.mark.parametrize("change, why", [
    (lambda r: r["check"].update(dice_onnx_int8=r["check"]["dice_torch_fp32"] - 0.01),
     "int8 loses 0.0100 mean Dice"),
    (lambda r: r["speed"].update(onnx_seconds_per_slice=2 * r["speed"][
        "torch_seconds_per_slice"]), "measured slower than torch"),
    (lambda r: r.pop("speed"), "no speed against torch recorded"),
    (lambda r: r.pop("check"), "no Dice check recorded"),
    (lambda r: r["check"].update(dice_onnx_int8="?"), "unreadable check"),
])
def test_auto_chooses_torch_when_the_recorded_check_failed(tmp_path, cache, change, why):
    folder, record = _bundled_copy(tmp_path)
    change(record)
    (folder / onnx_export.RECORD_FILE).write_text(json.dumps(record))
    seg = Segmenter.from_source("unet", str(folder), device="cpu")
    assert seg.backend == "torch" and why in seg.notice
    # --backend onnx still runs the build (the key and file hash are valid)
    assert Segmenter.from_source("unet", str(folder), "cpu", backend="onnx").onnx.path \
        == folder / onnx_export.ONNX_FILE


def test_auto_chooses_torch_for_a_stale_or_unchecked_build(tmp_path, cache):
    folder, _ = _bundled_copy(tmp_path)
    _save_small_unet(folder)  # retrained weights beside the shipped build: stale
    stale = Segmenter.from_source("unet", str(folder), device="cpu")
    assert stale.backend == "torch" and "no valid ONNX build" in stale.notice
    # A build made without labelled data has no Dice check: valid for --backend onnx,
    # not for auto.
    unchecked = ensure_build("unet", Segmenter, str(folder), beside_weights=True)
    assert unchecked.precision == "fp32" and "speed" in unchecked.record
    seg = Segmenter.from_source("unet", str(folder), device="cpu")
    assert seg.backend == "torch" and "no Dice check recorded" in seg.notice


def test_calibration_uses_training_patients_only(acdc_dir):
    calib, check = onnx_export.pick_patients(acdc_dir)
    names = {c.patient for c in calib} | {c.patient for c in check}
    assert not names & set(VALIDATION_PATIENTS)
    assert not {c.patient for c in calib} & {c.patient for c in check}
    assert len({c.patient for c in calib}) == onnx_export.BUILD_PLAN["calibration_patients"]
    assert all(c.label is not None for c in check)


@pytest.mark.skipif("unet" not in available_bundled(), reason="no bundled U-Net weights")
def test_onnx_matches_torch_fp32_on_a_real_volume(acdc_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LVSEG_ONNX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LVSEG_DATA", str(acdc_dir))
    monkeypatch.delenv("LVSEG_BACKEND", raising=False)
    scan = load_nifti(acdc_frame(acdc_dir / VALIDATION_PATIENTS[0], "ED"))
    onnx = Segmenter.from_source("unet", device="cpu")  # auto on a CPU: ONNX Runtime
    assert onnx.backend == "onnx", onnx.notice
    torch_fp32 = Segmenter.from_source("unet", device="cpu", backend="torch", precision="fp32")
    a, b = onnx.segment(scan).mask, torch_fp32.segment(scan).mask
    assert a.shape == b.shape == scan.shape3d
    assert np.mean(a == b) >= 0.995
    assert (a > 0).sum() > 1000  # a heart was found, not an empty mask on both sides
    if onnx.precision_label == "int8":
        check = onnx.onnx.record["check"]
        assert check["dice_torch_fp32"] - check["dice_onnx_int8"] <= onnx_export.DICE_TOLERANCE


@pytest.mark.skipif("unet" not in available_bundled(), reason="no bundled U-Net weights")
def test_cli_backend_option(acdc_dir, tmp_path, monkeypatch, capsys):
    from lvseg_core import cli

    monkeypatch.setenv("LVSEG_ONNX_CACHE", str(tmp_path / "cache"))
    scan = acdc_frame(acdc_dir / VALIDATION_PATIENTS[0], "ED")
    outs = {}
    for backend in ("onnx", "torch"):
        out = tmp_path / backend
        assert cli.main(["predict", str(scan), "--model", "unet", "--device", "cpu",
                         "--backend", backend, "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        assert ("ONNX Runtime" in printed) == (backend == "onnx")
        outs[backend] = np.asanyarray(nib.load(next(out.glob("*_seg.nii.gz"))).dataobj)
    assert np.mean(outs["onnx"] == outs["torch"]) >= 0.995


LEAN_PREDICT = """
import json, sys
from lvseg_core import cli
code = cli.main(sys.argv[1:])
print(json.dumps({"code": code, "loaded": sorted(
    m for m in ("torch", "monai", "segmentation_models_pytorch", "lightning")
    if m in sys.modules)}))
"""


@pytest.mark.parametrize("backend", ["onnx", None])  # None: the default, auto
def test_onnx_prediction_imports_no_torch(acdc_dir, tmp_path, backend):
    """A real ``predict`` (with QC) on the shipped ONNX build, in a fresh process:
    torch, MONAI and smp are never imported."""
    import os
    import subprocess

    from tests.conftest import ROOT

    if "unet" not in available_bundled():
        pytest.skip("no bundled U-Net weights")
    env = {k: v for k, v in os.environ.items() if k != "LVSEG_BACKEND"}
    args = ["predict", str(acdc_frame(acdc_dir / VALIDATION_PATIENTS[0], "ED")),
            "--model", "unet", "--out", str(tmp_path / "out")]
    args += ["--backend", backend] if backend else []
    run = subprocess.run([sys.executable, "-c", LEAN_PREDICT, *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "loaded": []}
    assert "ONNX Runtime int8" in run.stdout
    mask = nib.load(next((tmp_path / "out").glob("*_seg.nii.gz")))
    assert set(np.unique(np.asanyarray(mask.dataobj))) == {0, 1, 2, 3}
