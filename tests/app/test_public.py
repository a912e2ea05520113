"""The app in public mode (``LVSEG_PUBLIC=1``), visited as a hostile visitor would (issue 13).

Real Streamlit (``AppTest``), a real fake Hub on 127.0.0.1 that logs request
headers, real hostile uploads (a gzip bomb, too many frames, a constant
scan, a ground truth of another shape). The owner's ``HF_TOKEN`` is set and
the owner even opted in to token use: public mode must still never send it.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from bench.hostile import OWNER_TOKEN, fake_hub, gzip_bomb, two_series_folder
from lvseg_app import admission
from lvseg_core import hub
from lvseg_core.errors import LVSegError
from tests.app.test_app import TIMEOUT, _nifti_bytes, _upload_mode, env, texts  # noqa: F401 (env: a fixture)
from tests.conftest import ROOT, make_heart, non_qc_errors

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest

PAGES = ("app_pages/segment.py", "app_pages/compare.py", "app_pages/train.py",
         "app_pages/data.py", "app_pages/models.py")


@pytest.fixture
def hub_log(monkeypatch, tmp_path):
    with fake_hub() as (url, seen):
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        yield seen


@pytest.fixture
def public_app(env, monkeypatch, hub_log):
    """app.py as a public Space: owner token set and opted in, training and push asked for."""
    for key, value in (("LVSEG_WEIGHTS_DIR", env / "weights"), ("LVSEG_RUNS_DIR", env / "runs"),
                       ("LVSEG_SAMPLES", env / "samples"), ("LVSEG_PUBLIC", "1"),
                       ("HF_TOKEN", OWNER_TOKEN), ("LVSEG_HUB_USE_TOKEN", "1"),
                       ("LVSEG_ALLOW_TRAINING", "1"), ("LVSEG_ALLOW_PUSH", "1")):
        monkeypatch.setenv(key, str(value))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_no_server_folder_box_and_nothing_to_start(public_app):
    for page in PAGES:
        public_app.switch_page(page).run()
        assert not public_app.exception, (page, [e.value for e in public_app.exception])
        boxes = [t.label for t in public_app.text_input]
        assert not [b for b in boxes if "folder" in b.lower()], (page, boxes)
        keys = {b.key for b in public_app.button}
        assert not keys & {"train_start", "train_lr_find", "train_overfit", "train_push",
                           "train_stop"}, (page, keys)
        shown = texts(public_app) + " ".join(i.value for i in public_app.info)
        assert str(ROOT.parent) not in shown, page       # no server paths on any page
    public_app.switch_page("app_pages/train.py").run()
    assert any("LVSEG_PUBLIC" in i.value for i in public_app.info)
    public_app.switch_page("app_pages/data.py").run()
    assert {m.label: m.value for m in public_app.metric}["Patients"] == "2"   # the samples


def test_private_repo_is_fetched_without_the_owner_token(public_app, hub_log):
    public_app.radio(key="weights_kind").set_value("Hugging Face Hub").run()
    public_app.text_input(key="hub_repo").set_value("victim-org/private-weights").run()
    public_app.button(key="segment_sample_run").click().run()
    assert not public_app.exception
    assert any("victim-org/private-weights" in e.value for e in public_app.error)
    assert hub_log, "the fake Hub was never asked"
    assert not [r for r in hub_log if "authorization" in r]


def test_hostile_uploads_one_line_no_server_path(public_app, tmp_path):
    _upload_mode(public_app)
    bomb = gzip_bomb(tmp_path / "bomb.nii.gz")
    scan, _ = make_heart((32, 32, 2))
    cine = np.stack([scan.array] * 45, axis=-1)
    for name, data, needle in (("bomb.nii.gz", bomb.read_bytes(), "too large"),
                               ("cine.nii.gz", _nifti_bytes(cine, scan.affine),
                                "LVSEG_MAX_FRAMES")):
        public_app.file_uploader(key="segment_upload").upload(name, data, "application/gzip")
        public_app.run()
        assert not public_app.exception
        errors = [e.value for e in public_app.error]
        assert len(errors) == 1 and needle in errors[0], errors
        assert "/tmp" not in errors[0] and "lvseg-upload" not in errors[0], errors


def test_constant_upload_segments_and_draws(public_app):
    _upload_mode(public_app)
    scan, _ = make_heart()
    flat = np.zeros_like(scan.array)
    public_app.file_uploader(key="segment_upload").upload(
        "flat.nii.gz", _nifti_bytes(flat, scan.affine), "application/gzip")
    public_app.run()
    assert not public_app.exception
    # the only error is quality control's banner, which says why the result is unusable
    assert [e.value for e in public_app.error] == [
        "Do not use this result: the image is constant (no contrast): there is nothing to "
        "segment."]
    assert any(s.value == "flat" for s in public_app.subheader)
    assert "Clinical indices" in texts(public_app)


def test_ground_truth_of_another_shape_is_left_out(public_app):
    _upload_mode(public_app)
    scan, labels = make_heart()
    public_app.file_uploader(key="segment_upload").upload(
        "heart.nii.gz", _nifti_bytes(scan.array, scan.affine), "application/gzip")
    public_app.file_uploader(key="segment_upload_gt").upload(
        "heart_gt.nii.gz", _nifti_bytes(labels[:50], scan.affine), "application/gzip")
    public_app.run()
    assert not public_app.exception and not non_qc_errors(public_app), non_qc_errors(public_app)
    notes = [i.value for i in public_app.info if "Ground truth not used" in i.value]
    assert len(notes) == 1 and "does not match" in notes[0], notes
    assert any(s.value == "heart" for s in public_app.subheader)
    assert "Accuracy against the ground truth" not in texts(public_app)


def test_zip_with_two_series_offers_a_picker(public_app, tmp_path):
    import io
    import zipfile

    folder = tmp_path / "study"
    two_series_folder(folder)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f.name)
    _upload_mode(public_app)
    public_app.file_uploader(key="segment_upload").upload("study.zip", archive.getvalue(),
                                                          "application/zip")
    public_app.run()
    assert not public_app.exception and not non_qc_errors(public_app), non_qc_errors(public_app)
    picker = [s for s in public_app.selectbox if s.label == "DICOM series"]
    assert len(picker) == 1 and len(picker[0].options) == 2
    assert any("2 DICOM series" in i.value for i in public_app.info)
    assert any(s.value == "study" for s in public_app.subheader)      # the first one, segmented
    first = public_app.session_state["segment_analysis"].scan.meta["series_uid"]
    picker[0].select_index(1).run()
    assert not public_app.exception and not non_qc_errors(public_app)
    second = public_app.session_state["segment_analysis"].scan.meta["series_uid"]
    assert first != second
    assert all(any(uid in label for label in picker[0].options) for uid in (first, second))


def test_dockerfile_deploys_in_public_mode():
    text = (ROOT / "Dockerfile").read_text()
    assert "LVSEG_PUBLIC=1" in text.split("FROM ", 1)[1]      # an ENV of the image, not a comment


def test_push_needs_an_explicit_opt_in(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", OWNER_TOKEN)
    monkeypatch.delenv("LVSEG_ALLOW_PUSH", raising=False)
    monkeypatch.delenv("LVSEG_PUBLIC", raising=False)
    with pytest.raises(LVSegError, match="LVSEG_ALLOW_PUSH"):
        hub.push_run(tmp_path, "owner/name")
    monkeypatch.setenv("LVSEG_ALLOW_PUSH", "1")
    monkeypatch.setenv("LVSEG_PUBLIC", "1")
    with pytest.raises(LVSegError, match="never in public mode"):
        hub.push_run(tmp_path, "owner/name")


def test_one_analysis_per_session_and_a_bounded_queue(monkeypatch):
    """Two slots' worth of visitors: one runs, one waits (and is told), one is refused."""
    monkeypatch.setenv("LVSEG_ANALYSIS_SLOTS", "1")
    monkeypatch.setenv("LVSEG_ANALYSIS_QUEUE", "1")
    gate = admission.gate()
    release = threading.Event()
    waited: list[int] = []
    order: list[str] = []

    def first():
        with admission.analysis_slot(session={}):
            order.append("first")
            release.wait(30)

    def second():
        with admission.analysis_slot(waited.append, session={}):
            order.append("second")

    a = threading.Thread(target=first)
    a.start()
    while "first" not in order:
        time.sleep(0.01)
    b = threading.Thread(target=second)
    b.start()
    while not waited:
        time.sleep(0.01)
    assert gate.waiting == 1 and waited[0] == 1
    with pytest.raises(admission.Busy, match="server is busy"):
        with admission.analysis_slot(session={}):
            pass
    session = {"_lvseg_analysis_running": 1.0}
    with pytest.raises(admission.Busy, match="this session"):
        with admission.analysis_slot(session=session):
            pass
    release.set()
    a.join(30)
    b.join(30)
    assert order == ["first", "second"] and gate.waiting == 0
