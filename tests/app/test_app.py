"""Headless tests of the Streamlit app (``streamlit.testing.v1.AppTest``).

The app runs in-process on a small synthetic ACDC-layout sample folder made
with :func:`tests.conftest.make_heart` and with random-init weights of a
narrow U-Net written to a temporary "bundled" folder (trained weights are
not needed to test the app: only the numbers change). Runs are listed from a
temporary runs folder, so real training runs are never touched.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from lvseg_app import jobs
from lvseg_core import hub
from lvseg_core.models import create_model
from tests.conftest import ROOT, make_heart, non_qc_errors

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest

PAGES = ("app_pages/segment.py", "app_pages/compare.py", "app_pages/train.py", "app_pages/data.py",
         "app_pages/models.py")
SMALL_UNET = {"encoder_depth": 3, "decoder_channels": (16, 8, 8)}
TIMEOUT = 120


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    nib.save(nib.Nifti1Image(array, affine), str(path))


def make_sample_folder(root: Path) -> Path:
    """Two ACDC-layout patients (ED frame 1, ES frame 2) with synthetic hearts."""
    for n, group in ((1, "NOR"), (2, "DCM")):
        folder = root / f"patient{n:03d}"
        folder.mkdir(parents=True)
        (folder / "Info.cfg").write_text(f"ED: 1\nES: 2\nGroup: {group}\n")
        for frame, seed in ((1, n), (2, n + 10)):
            scan, labels = make_heart(seed=seed)
            if frame == 2:                       # a smaller LV cavity at end-systole
                labels = labels.copy()
                lv = labels == 3
                labels[lv & (np.indices(labels.shape)[0] % 3 == 0)] = 2
            stem = folder / f"patient{n:03d}_frame{frame:02d}"
            _save(scan.array, scan.affine, stem.with_name(stem.name + ".nii.gz"))
            _save(labels, scan.affine, stem.with_name(stem.name + "_gt.nii.gz"))
    return root


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Folders shared by the tests: weights, samples, runs (all temporary)."""
    root = tmp_path_factory.mktemp("app")
    torch.manual_seed(0)
    create_model("unet", **SMALL_UNET).save_pretrained(root / "weights" / "unet")
    (root / "empty_weights").mkdir()
    make_sample_folder(root / "samples")
    (root / "runs").mkdir()
    return root


def open_app(monkeypatch, weights: Path, runs: Path, samples: Path) -> AppTest:
    """app.py run once with these weights, runs and samples folders."""
    monkeypatch.setenv("LVSEG_WEIGHTS_DIR", str(weights))
    monkeypatch.setenv("LVSEG_RUNS_DIR", str(runs))
    monkeypatch.setenv("LVSEG_SAMPLES", str(samples))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture
def app(env, monkeypatch):
    """An AppTest of app.py with the temporary weights, samples and runs."""
    return open_app(monkeypatch, env / "weights", env / "runs", env / "samples")


def texts(at) -> str:
    """All markdown, captions, titles and subheaders of the page, as one string."""
    parts = [e.value for kind in ("title", "subheader", "markdown", "caption")
             for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def no_problems(at) -> None:
    """No exception and no error, except the QC banner: random-init weights segment
    nothing sensible and QC rightly says so (the banner is tested in test_qc_app.py)."""
    assert not at.exception, [e.value for e in at.exception]
    assert not non_qc_errors(at), non_qc_errors(at)


# ---------------------------------------------------------------- navigation


def test_every_page_opens(app):
    titles = {}
    for page in PAGES:
        app.switch_page(page).run()
        assert not app.exception, (page, [e.value for e in app.exception])
        titles[page] = [t.value for t in app.title]
    assert titles == {"app_pages/segment.py": ["Segment"], "app_pages/compare.py": ["Compare"],
                      "app_pages/train.py": ["Train"], "app_pages/data.py": ["Data"],
                      "app_pages/models.py": ["Models"]}
    # The shared sidebar is on every page: model, weights source and device.
    assert app.selectbox(key="arch").value == "unet"
    assert app.radio(key="weights_kind").value == "Bundled"
    assert "Device:" in "\n".join(c.value for c in app.caption)


# ---------------------------------------------------------------- segment


def test_segment_sample_shows_metrics_and_indices(app):
    assert app.selectbox(key="segment_sample").value == "patient001 · NOR"
    app.button(key="segment_sample_run").click().run()
    no_problems(app)
    labels = {m.label: m.value for m in app.metric}
    assert labels["Model"] == "U-Net" and labels["Inference time"].endswith(" s")
    # Metrics against the expert labels, and the clinical indices of ED + ES.
    assert "Accuracy against the ground truth" in texts(app)
    assert {"Dice RV", "Dice Myo", "Dice LV", "LV EF", "LV EDV", "LV ESV",
            "Myocardial mass"} <= set(labels)
    tables = [d.value for d in app.dataframe]
    metrics = next(t for t in tables if "HD95 (mm)" in t.columns)
    assert list(metrics.index) == ["RV", "Myo", "LV", "mean"]
    assert set(metrics.columns) >= {"Dice", "IoU", "Precision", "Recall", "F1", "HD95 (mm)"}
    assert ((metrics["Dice"] >= 0) & (metrics["Dice"] <= 1)).all()
    indices = next(t for t in tables if "predicted" in t.columns and "manual" in t.columns)
    assert "LV ejection fraction (%)" in indices.index
    # These weights store no evaluation: no RV EF caution.
    assert not any(i.value.startswith("RV EF:") for i in app.info)
    # Overlay, probability map, error map and volume curve are drawn; the 3D
    # surface on request.
    assert len(app.get("plotly_chart")) == 4
    app.toggle(key="segment_show_3d").set_value(True).run()
    no_problems(app)
    assert len(app.get("plotly_chart")) == 5
    assert "mesh3d" in json.dumps([c.proto.spec for c in app.get("plotly_chart")]).lower()
    downloads = app.get("download_button")
    assert len(downloads) == 3  # mask, results CSV, HTML report
    # Moving through the slices and frames redraws without an error.
    app.slider(key=next(s.key for s in app.slider if s.key.startswith("segment_slice"))) \
        .set_value(1).run()
    frame = next(s for s in app.select_slider if s.key.startswith("segment_frame"))
    frame.set_value(1).run()
    no_problems(app)
    app.checkbox(key="segment_show_LV").uncheck().run()
    no_problems(app)


def test_segment_page_cautions_about_the_rv_ef(env, monkeypatch, tmp_path):
    """Weights whose evaluation recorded a large RV EF error say so beside the indices."""
    import shutil

    weights = tmp_path / "weights"
    shutil.copytree(env / "weights", weights)
    config = json.loads((weights / "unet" / "config.json").read_text())
    config["metrics"] = {"eval_cases": 20.0, "eval_split": "validation",
                         "eval_rv_ef_abs_error": 9.43}
    (weights / "unet" / "config.json").write_text(json.dumps(config))
    app = open_app(monkeypatch, weights, env / "runs", env / "samples")
    app.button(key="segment_sample_run").click().run()
    no_problems(app)
    cautions = [i.value for i in app.info if i.value.startswith("RV EF:")]
    assert len(cautions) == 1
    assert "10 ACDC validation patients" in cautions[0] and "9.4 points" in cautions[0]
    assert "basal ES slice" in cautions[0]


def test_segment_one_frame_has_volumes_but_no_ef(app):
    app.radio(key="segment_view").set_value("ES").run()
    app.button(key="segment_sample_run").click().run()
    no_problems(app)
    labels = {m.label for m in app.metric}
    assert "Dice LV" in labels and "LV EF" not in labels
    assert "end-systolic frame" in texts(app)


def _nifti_bytes(array: np.ndarray, affine: np.ndarray) -> bytes:
    img = nib.Nifti1Image(array, affine)
    return gzip.compress(img.to_bytes())


def _upload_mode(app):
    app.radio(key="segment_mode").set_value("Upload").run()
    assert not app.exception
    return app


def _upload_cine(app, cine: np.ndarray, truth: np.ndarray, affine: np.ndarray) -> None:
    """Upload a cine ``(x, y, z, t)`` and its ground truth through the Segment page, run it."""
    app.file_uploader(key="segment_upload").upload(
        "cine.nii.gz", _nifti_bytes(cine, affine), "application/gzip")
    app.file_uploader(key="segment_upload_gt").upload(
        "cine_gt.nii.gz", _nifti_bytes(truth, affine), "application/gzip")
    app.run()
    no_problems(app)


def test_bad_upload_shows_one_line_error(app):
    _upload_mode(app)
    app.file_uploader(key="segment_upload").upload("broken.nii.gz", b"this is not a scan",
                                                   "application/gzip")
    app.run()
    assert not app.exception
    assert len(app.error) == 1
    message = app.error[0].value
    assert "broken.nii.gz" in message and "\n" not in message and "Traceback" not in message
    # The app keeps working: the other pages still open.
    app.switch_page("app_pages/models.py").run()
    assert not app.exception


def test_upload_cine_scan_gives_volume_curve(app):
    _upload_mode(app)
    scan, labels = make_heart()
    frames = [np.roll(scan.array, shift, axis=0) for shift in (0, 1, 2, 1)]
    cine = np.stack(frames, axis=-1)
    _upload_cine(app, cine, labels, scan.affine)
    labels_shown = {m.label for m in app.metric}
    assert {"LV EF", "Dice LV"} <= labels_shown    # ground truth given for frame 0
    assert "Volume over the cycle" in json.dumps(
        [c.proto.spec for c in app.get("plotly_chart")])


def test_missing_weights_gives_clear_message(app, env, monkeypatch):
    monkeypatch.setenv("LVSEG_WEIGHTS_DIR", str(env / "empty_weights"))
    app.run()
    assert any("No bundled U-Net weights" in w.value for w in app.warning)
    app.button(key="segment_sample_run").click().run()
    assert not app.exception
    assert any("No bundled U-Net weights" in e.value for e in app.error)


# ---------------------------------------------------------------- other pages


def test_compare_runs_available_models(app):
    app.switch_page("app_pages/compare.py").run()
    warnings = " ".join(w.value for w in app.warning)
    assert "Attention U-Net: no weights" in warnings and "V-Net: no weights" in warnings
    app.button(key="compare_run").click().run()
    no_problems(app)
    assert len(app.get("plotly_chart")) == 1                 # U-Net only
    assert any("HD95 (mm)" in d.value.columns for d in app.dataframe)


def test_compare_folder_evaluation(app):
    pytest.importorskip("lvseg_core.workflows")
    app.switch_page("app_pages/compare.py").run()
    app.button(key="compare_evaluate").click().run()
    no_problems(app)
    summary = app.dataframe[0].value
    assert list(summary.index) == ["U-Net"] and summary.loc["U-Net", "cases"] == 4
    assert {"LV EF error (pp)", "RV EF error (pp)"} <= set(summary.columns)
    assert len(app.get("plotly_chart")) == 4                 # the box plots


def test_data_page_summarises_the_folder(app):
    app.switch_page("app_pages/data.py").run()
    no_problems(app)
    values = {m.label: m.value for m in app.metric}
    assert values["Patients"] == "2" and values["Labelled frames"] == "4"
    assert len(app.get("imgs")) >= 1 or len(app.get("image")) >= 1
    ends = [f.value for f in app.dataframe if "basal RV" in getattr(f.value, "columns", [])]
    assert len(ends) == 1 and list(ends[0].index) == ["ED", "ES"]
    assert (ends[0]["frames"] == 2).all() and (ends[0]["basal LV"] == 100).all()


def test_models_page_shows_card(app):
    app.switch_page("app_pages/models.py").run()
    no_problems(app)
    assert "U-Net (bundled)" in texts(app)
    params = {m.label: m.value for m in app.metric}["Parameters"]
    assert params.endswith(" M")
    assert any("No bundled V-Net weights" in i.value for i in app.info)


def test_models_page_shows_evaluation_figures(app, env):
    folder = env / "weights" / "unet"
    original = (folder / "config.json").read_text()
    config = json.loads(original)
    config["metrics"] = {"val_dice": 0.5, "eval_dice_RV": 0.81, "eval_dice_Myo": 0.82,
                         "eval_dice_LV": 0.93, "eval_dice_mean": 0.853, "eval_hd95_mm_mean": 4.8,
                         "eval_cases": 20.0, "eval_ef_abs_error": 2.6,
                         "eval_rv_ef_abs_error": 9.4, "eval_split": "validation"}
    (folder / "config.json").write_text(json.dumps(config))
    try:
        app.switch_page("app_pages/models.py").run()
    finally:                                   # the weights folder is shared by the module
        (folder / "config.json").write_text(original)
    no_problems(app)
    assert {m.label: m.value for m in app.metric}["Validation Dice"] == "0.853"
    table = app.dataframe[0].value
    assert list(table["Dice"]) == ["0.810", "0.820", "0.930", "0.853"]
    assert any("20 validation volume(s)" in c.value and "LV EF error 2.6 points" in c.value
               and "RV EF error 9.4 points" in c.value for c in app.caption)


def test_train_page_lists_runs_and_selects_weights(app, env):
    run = env / "runs" / "unet-test"
    (run / "model").mkdir(parents=True)
    create_model("unet", **SMALL_UNET).save_pretrained(run / "model")
    (run / "config.json").write_text(json.dumps({"model": "unet", "epochs": 2}))
    events = [{"event": "start", "time": 1.0, "max_epochs": 2},
              {"event": "epoch", "epoch": 0, "max_epochs": 2, "train_loss": 1.0,
               "val_loss": 1.1, "val_dice": 0.5},
              {"event": "epoch", "epoch": 1, "max_epochs": 2, "train_loss": 0.7,
               "val_loss": 0.9, "val_dice": 0.6},
              {"event": "end", "time": 2.0, "epochs": 2, "interrupted": False}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    app.switch_page("app_pages/train.py").run()
    no_problems(app)
    table = app.dataframe[0].value
    assert table.loc["unet-test", "status"] == "finished"
    assert table.loc["unet-test", "best val Dice"] == pytest.approx(0.6)
    assert "No run in progress." in texts(app)
    app.button(key="train_use").click().run()
    no_problems(app)
    assert app.radio(key="weights_kind").value == "Training run"
    assert app.selectbox(key="weights_run").value == "unet-test"
    # The run's weights segment the sample.
    app.switch_page("app_pages/segment.py").run()
    app.button(key="segment_sample_run").click().run()
    no_problems(app)
    assert {m.label: m.value for m in app.metric}["Weights"] == "local"


def test_train_page_refuses_a_missing_data_folder(app, env):
    app.switch_page("app_pages/train.py").run()
    app.text_input(key="train_data").set_value(str(env / "nowhere")).run()
    app.button(key="train_start").click().run()
    assert not app.exception
    assert any("data folder not found" in e.value for e in app.error)
    assert not any(p.name.startswith("unet-2") for p in (env / "runs").iterdir())


def test_upload_size_limit_is_configured():
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert 1 <= config["server"]["maxUploadSize"] <= 1024
    assert config["client"]["showErrorDetails"] in ("none", False)


def test_size_limit_in_library(monkeypatch):
    from lvseg_core.errors import ScanReadError
    from lvseg_core.io import upload

    monkeypatch.setenv("LVSEG_MAX_UPLOAD_MB", repr(10 / 2**20))
    with pytest.raises(ScanReadError, match="over the upload limit"):
        upload.load_uploaded_scan("big.nii.gz", b"x" * 11)
    with pytest.raises(ScanReadError, match="empty"):
        upload.load_uploaded_scan("empty.nii.gz", b"")
    assert upload.safe_file_name("../../etc/pa ss.nii.gz") == "pa_ss.nii.gz"


def test_dockerfile_runs_the_app_on_8501():
    text = (ROOT / "Dockerfile").read_text()
    for needle in ("EXPOSE 8501", "STREAMLIT_SERVER_PORT=8501", "HF_HOME=",
                   "STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION=false",
                   'CMD ["streamlit", "run", "app.py"]'):
        assert needle in text, needle


def test_upload_dicom_zip_and_png(app, tmp_path):
    import zipfile

    from PIL import Image

    from lvseg_core.io import save_dicom_series

    scan, _ = make_heart()
    files = save_dicom_series(scan, tmp_path / "series")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for f in files:
            zf.write(f, f"study/{f.name}")
    _upload_mode(app)
    app.file_uploader(key="segment_upload").upload("study.zip", archive.getvalue(),
                                                   "application/zip")
    app.run()
    no_problems(app)
    assert any(s.value == "study" for s in app.subheader)
    assert "Clinical indices" in texts(app)
    labels = [b.proto.label for b in app.get("download_button")]
    assert any("DICOM SEG" in label for label in labels)  # a DICOM upload gets its SEG

    picture = io.BytesIO()
    grey = (scan.array[..., 2] / scan.array.max() * 255).astype(np.uint8).T
    Image.fromarray(grey).save(picture, format="PNG")
    app.file_uploader(key="segment_upload").upload("slice.png", picture.getvalue(), "image/png")
    app.run()
    no_problems(app)
    assert any(s.value == "slice" for s in app.subheader)
    assert any("1 mm assumed" in i.value for i in app.info)     # no pixel size in a PNG


def test_hub_unreachable_is_a_one_line_error(app, monkeypatch):
    # Named weights that cannot be fetched are never silently replaced (issue 13).
    from lvseg_core.errors import WeightsError

    def unreachable(repo_id, revision=None, **kwargs):
        raise WeightsError(f"Hub repo {repo_id} cannot be reached and is not in the local cache")

    monkeypatch.setattr(hub, "fetch_from_hub", unreachable)
    app.radio(key="weights_kind").set_value("Hugging Face Hub").run()
    assert any("Enter a Hugging Face Hub repo id" in w.value for w in app.warning)
    app.text_input(key="hub_repo").set_value("someone/lvseg-unet-offline-test").run()
    app.button(key="segment_sample_run").click().run()
    assert not app.exception
    assert [e.value for e in app.error] == [
        "Hub repo someone/lvseg-unet-offline-test cannot be reached and is not in the local cache"]
    assert "Dice LV" not in {m.label for m in app.metric}


def test_training_can_be_switched_off(app, monkeypatch):
    monkeypatch.setenv("LVSEG_ALLOW_TRAINING", "0")
    app.switch_page("app_pages/train.py").run()
    no_problems(app)
    assert app.button(key="train_start").disabled
    assert app.button(key="train_lr_find").disabled and app.button(key="train_overfit").disabled
    assert any("LVSEG_ALLOW_TRAINING" in i.value for i in app.info)


def test_train_page_starts_a_real_background_run(app, env):
    """The Start button launches ``python -m train fit`` (1 epoch on the synthetic
    sample folder); the page shows it in progress, then in the table of runs."""
    import time

    app.switch_page("app_pages/train.py").run()
    for key, value in (("train_data", str(env / "samples")), ("train_name", "page-run")):
        app.text_input(key=key).set_value(value)
    for key, value in (("train_epochs", 1), ("train_crop", 64), ("train_batch", 4),
                       ("train_threads", 1), ("train_patience", 0)):
        app.number_input(key=key).set_value(value)
    app.run()
    app.button(key="train_start").click().run()
    no_problems(app)
    assert any("page-run" in s.value for s in app.success)
    run = env / "runs" / "page-run"
    assert jobs.read_process(run)["command"][2:4] == ["train", "fit"]
    deadline = time.time() + 240
    while time.time() < deadline and jobs.is_running(run):
        time.sleep(1)
    app.run()
    no_problems(app)
    table = app.dataframe[0].value
    assert table.loc["page-run", "status"] == "finished", jobs.log_tail(run)
    assert table.loc["page-run", "weights"] == "model/"


def test_cine_ground_truth_for_every_frame(app):
    from lvseg_core.errors import ScanReadError
    from lvseg_core.io import upload

    scan, labels = make_heart()
    cine = np.stack([scan.array] * 3, axis=-1)
    truth = np.stack([labels] * 3, axis=-1)
    like = upload.load_uploaded_scan("cine.nii.gz", _nifti_bytes(cine, scan.affine))
    got = upload.load_uploaded_label("cine_gt.nii.gz", _nifti_bytes(truth, scan.affine), like)
    assert got.shape == cine.shape and got.dtype == np.uint8
    with pytest.raises(ScanReadError, match="label values"):
        upload.load_uploaded_label("bad_gt.nii.gz",
                                   _nifti_bytes(truth.astype(np.float32) * 1.5, scan.affine),
                                   like)
    _upload_mode(app)
    _upload_cine(app, cine, truth, scan.affine)
    assert "LV EF" in {m.label for m in app.metric}
    indices = next(d.value for d in app.dataframe if "manual" in d.value.columns)
    assert "difference" in indices.columns        # manual indices from the 4D labels


def test_precision_choice_reaches_the_segmenter(app):
    app.selectbox(key="precision").set_value("bf16").run()
    app.button(key="segment_sample_run").click().run()
    no_problems(app)
    assert "precision bf16" in texts(app)
    assert "bf16" in app.session_state["segment_analysis"].precision


def test_backend_choice_reaches_the_segmenter(app, tmp_path, monkeypatch):
    monkeypatch.setenv("LVSEG_ONNX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LVSEG_DATA", str(tmp_path / "no-data"))  # a float32 build: fast
    app.selectbox(key="backend").set_value("onnx").run()
    app.button(key="segment_sample_run").click().run()
    no_problems(app)
    assert app.session_state["model_choice"].backend == "onnx"
    builds = list((tmp_path / "cache").glob("unet-*/model.onnx"))
    assert len(builds) == 1                       # the ONNX model was built and used


def test_tta_choice_reaches_the_segmenter(app):
    app.checkbox(key="tta").check().run()
    app.button(key="segment_sample_run").click().run()
    no_problems(app)
    assert "flip TTA" in texts(app)
    assert app.session_state["segment_analysis"].tta is True
