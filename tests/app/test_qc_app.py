"""The app's quality-control banner (``streamlit.testing.v1.AppTest``), with the
bundled U-Net: an upload that is not a cardiac MRI gets an error banner with
the reason; a real validation volume gets the all-clear and no warning."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import ROOT, acdc_frame

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest


def _nifti_bytes(array: np.ndarray, affine: np.ndarray) -> bytes:
    return gzip.compress(nib.Nifti1Image(array.astype(np.float32), affine).to_bytes())


@pytest.fixture
def upload_page(tmp_path, monkeypatch):
    monkeypatch.setenv("LVSEG_SAMPLES", str(tmp_path))      # no samples: upload only
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="arch").value == "unet"
    if any(r.key == "segment_mode" for r in at.radio):      # samples found: pick Upload
        at.radio(key="segment_mode").set_value("Upload").run()
    return at


def _upload(at, name: str, data: bytes):
    at.file_uploader(key="segment_upload").upload(name, data, "application/gzip")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_banner_for_a_constant_upload(upload_page):
    at = _upload(upload_page, "blank.nii.gz",
                 _nifti_bytes(np.full((128, 128, 8), 500.0), np.diag([1.5, 1.5, 10.0, 1.0])))
    assert any(s.value == "blank" for s in at.subheader)       # the result is shown...
    errors = [e.value for e in at.error]
    assert len(errors) == 1                                    # ...with one plain banner
    assert errors[0].startswith("Do not use this result: the image is constant")
    assert "\n" not in errors[0]


def test_banner_for_a_photograph_stacked_into_a_volume(upload_page):
    from skimage.data import camera
    from skimage.transform import resize

    photo = resize(camera().astype(np.float32), (200, 200))
    at = _upload(upload_page, "photo.nii.gz",
                 _nifti_bytes(np.repeat(photo[..., None], 8, axis=2),
                              np.diag([1.4, 1.4, 10.0, 1.0])))
    errors = [e.value for e in at.error]
    assert errors and "copies of one picture" in errors[0]


def test_no_warning_for_a_real_validation_volume(upload_page, acdc_dir):
    path = acdc_frame(acdc_dir / "patient002", "ED")
    at = _upload(upload_page, path.name, path.read_bytes())
    assert not at.error and not at.warning, ([e.value for e in at.error],
                                             [w.value for w in at.warning])
    assert [s.value for s in at.success] == ["Quality control found no problem."]
