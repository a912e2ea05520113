"""DICOM SEG output: written with highdicom, read back with highdicom, pixels per
segment equal to the mask, on real DICOM series (ACDC volumes written as DICOM,
pydicom's own MR test file) including cine, one frame of reference per slice,
anonymised dates and missing patient fields."""

from __future__ import annotations

import copy
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from lvseg_core.errors import LVSegError
from lvseg_core.io import load_dicom_series, load_label, load_nifti, save_dicom_series, save_mask
from lvseg_core.io.dicom_seg import sanitised_copy, write_dicom_seg
from lvseg_core.provenance import Provenance
from lvseg_core.scan import Scan

from tests.conftest import acdc_frame

PROVENANCE = Provenance("0.1.0", "unet", "bundled:unet", "ab" * 32, "2026-12-01 00:00 UTC")


def read_back(paths: list[Path]) -> dict[str, np.ndarray]:
    """SOPInstanceUID of each referenced source image -> (rows, cols, 3) segment masks."""
    out: dict[str, np.ndarray] = {}
    for path in paths:
        seg = hd.seg.segread(str(path))
        assert seg.number_of_segments == 3
        assert [seg.get_segment_description(i).segment_label for i in (1, 2, 3)] == [
            "RV cavity", "LV myocardium", "LV cavity"]
        described = [seg.get_segment_description(i) for i in (1, 2, 3)]
        # (category, property type, anatomic region): a cavity is blood in a ventricle
        assert [(d.segmented_property_category.value, d.segmented_property_type.value,
                 [r.value for r in d.anatomic_regions]) for d in described] == [
            ("85756007", "87612001", ["53085002"]),
            ("85756007", "49848007", ["87878005"]),
            ("85756007", "87612001", ["87878005"])]
        assert all(d.segmented_property_type.scheme_designator == "SCT" for d in described)
        assert [d.segmented_property_type.meaning for d in described] == [
            "Blood", "Left Ventricle Myocardium", "Blood"]
        algorithm = seg.get_segment_description(1).algorithm_identification[0]
        assert algorithm.AlgorithmName == "LVSeg"
        assert "unet" in algorithm.AlgorithmVersion
        assert algorithm.AlgorithmSource == "bundled:unet"
        assert f"weights_sha256={'ab' * 32}" in algorithm.AlgorithmParameters
        uids = [uid for _, _, uid in seg.get_source_image_uids()]
        pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids,
                                                   segment_numbers=[1, 2, 3])
        for uid, frame in zip(uids, pixels):
            assert uid not in out, "a source image is referenced twice"
            out[uid] = frame
    return out


def assert_pixels_match_sources(paths: list[Path], folder: Path) -> None:
    """Every source image of ``folder`` is referenced once, and the SEG pixels of
    each equal that image's own pixels (which hold ACDC labels): this proves the
    mask-axes-to-instance mapping independently of the reader."""
    frames = read_back(paths)
    sources = {}
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(str(f))
        sources[ds.SOPInstanceUID] = ds
    assert set(frames) == set(sources)
    for uid, frame in frames.items():
        ds = sources[uid]  # the stored intensities are the labels (rescaled)
        labels = np.rint(ds.pixel_array * float(ds.get("RescaleSlope", 1) or 1)
                         + float(ds.get("RescaleIntercept", 0) or 0))
        for k, value in enumerate((1, 2, 3)):
            assert np.array_equal(frame[..., k] > 0, labels == value), (uid, value)


def label_scan(labels: np.ndarray, affine: np.ndarray, trigger=None) -> Scan:
    """A scan whose intensities are its labels: the DICOM pixels then prove the mapping."""
    meta = {} if trigger is None else {"trigger_times": trigger}
    return Scan(labels.astype(np.float32), affine, name="labels", meta=meta)


def test_acdc_volume_seg_matches_nifti_mask(tmp_path, acdc_dir):
    patient = acdc_dir / "patient002"
    image = load_nifti(acdc_frame(patient, "ED"))
    truth = load_nifti(acdc_frame(patient, "ED", label=True)).array.astype(np.uint8)
    folder = tmp_path / "series"
    save_dicom_series(image, folder)
    scan = load_dicom_series(folder)
    assert np.allclose(scan.affine, image.affine)
    nifti = save_mask(truth, scan, tmp_path / "out" / "p2_seg.nii.gz")
    mask = load_label(nifti, scan)
    paths, notes = write_dicom_seg(mask, scan.meta["source_files"], tmp_path / "out", "p2",
                                   PROVENANCE)
    assert [p.name for p in paths] == ["p2_seg.dcm"]
    frames = read_back(paths)
    assert len(frames) == scan.shape3d[2]
    for z, row in enumerate(scan.meta["source_files"]):
        uid = pydicom.dcmread(row[0], stop_before_pixels=True).SOPInstanceUID
        for k, value in enumerate((1, 2, 3)):
            assert np.array_equal(frames[uid][..., k] > 0, mask[:, :, z].T == value)
    # Existing output is kept unless overwrite.
    with pytest.raises(LVSegError, match="already exists"):
        write_dicom_seg(mask, scan.meta["source_files"], tmp_path / "out", "p2", PROVENANCE)


def test_mapping_proved_by_source_pixels(tmp_path, heart):
    # Oblique, left-handed geometry: the reader reorders slices; the SEG must follow.
    _, labels = heart
    affine = np.array([[0.0, 1.4, 0.3, -20.0], [-1.5, 0.0, 0.0, 40.0],
                       [0.0, 0.1, -8.0, 12.0], [0, 0, 0, 1.0]])
    folder = tmp_path / "series"
    save_dicom_series(label_scan(labels, affine), folder)
    scan = load_dicom_series(folder)
    mask = np.rint(scan.array).astype(np.uint8)  # intensities are the labels
    paths, _ = write_dicom_seg(mask, scan.meta["source_files"], tmp_path, "oblique", PROVENANCE)
    assert_pixels_match_sources(paths, folder)


def test_cine_one_seg_per_phase(tmp_path, heart):
    _, labels = heart
    cine = np.stack([np.roll(labels, t, axis=0) for t in range(3)], axis=-1)
    folder = tmp_path / "cine"
    save_dicom_series(label_scan(cine, np.diag([1.5, 1.5, 8.0, 1.0]), [0.0, 300.0, 600.0]),
                      folder)
    scan = load_dicom_series(folder)
    assert scan.is_cine and scan.n_frames == 3
    mask = np.rint(scan.array).astype(np.uint8)
    paths, _ = write_dicom_seg(mask, scan.meta["source_files"], tmp_path / "out", "cine",
                               PROVENANCE)
    assert [p.name for p in paths] == [f"cine_t{t:02d}_seg.dcm" for t in range(3)]
    for t, path in enumerate(paths):
        referenced = read_back([path])
        # Each phase's SEG references that phase's image at every slice position.
        assert len(referenced) == scan.shape3d[2]
        phase_uids = {pydicom.dcmread(row[t], stop_before_pixels=True).SOPInstanceUID
                      for row in scan.meta["source_files"]}
        assert set(referenced) == phase_uids
    assert_pixels_match_sources(paths, folder)


def pydicom_series(folder: Path, n_slices=3, n_phases=1, messy=False) -> Path:
    """A series built from pydicom's MR_small.dcm: ``n_slices`` positions along the
    slice normal, ``n_phases`` images per position. ``messy``: one frame of
    reference per slice, anonymised dates ``20120000``, no PatientID/PatientSex."""
    base = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    iop = np.array([float(v) for v in base.ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    ipp = np.array([float(v) for v in base.ImagePositionPatient])
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    series_uid = generate_uid()
    for z in range(n_slices):
        frame_uid = generate_uid()
        for t in range(n_phases):
            ds = copy.deepcopy(base)
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.SeriesInstanceUID = series_uid
            ds.ImagePositionPatient = [f"{v:.4f}" for v in ipp + 5.0 * z * normal]
            ds.InstanceNumber = 1 + z * n_phases + t
            labels = rng.integers(0, 4, (ds.Rows, ds.Columns))
            ds.PixelData = labels.astype(ds.pixel_array.dtype).tobytes()
            if n_phases > 1:
                ds.TriggerTime = str(100.0 * t)
            if messy:
                ds.FrameOfReferenceUID = frame_uid
                ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20120000"
                for keyword in ("PatientID", "PatientSex", "PatientBirthDate"):
                    if keyword in ds:
                        delattr(ds, keyword)
            ds.save_as(str(folder / f"im{z}_{t}.dcm"))
    return folder


@pytest.mark.parametrize("n_phases", [1, 2])
def test_pydicom_mr_series(tmp_path, n_phases):
    folder = pydicom_series(tmp_path / "mr", n_phases=n_phases)
    scan = load_dicom_series(folder)
    mask = np.rint(scan.array).astype(np.uint8)
    paths, notes = write_dicom_seg(mask, scan.meta["source_files"], tmp_path / "out", "mr",
                                   PROVENANCE)
    assert len(paths) == n_phases
    assert_pixels_match_sources(paths, folder)


def test_messy_export_one_seg_per_frame_of_reference(tmp_path):
    folder = pydicom_series(tmp_path / "messy", n_slices=3, n_phases=2, messy=True)
    before = {f.name: f.read_bytes() for f in folder.iterdir()}
    scan = load_dicom_series(folder)
    mask = np.rint(scan.array).astype(np.uint8)
    paths, notes = write_dicom_seg(mask, scan.meta["source_files"], tmp_path / "out", "messy",
                                   PROVENANCE)
    # 2 phases x 3 frames of reference.
    assert sorted(p.name for p in paths) == sorted(
        f"messy_t{t:02d}_for{k:02d}_seg.dcm" for t in range(2) for k in (1, 2, 3))
    assert any("StudyDate '20120000'" in n for n in notes)
    assert any("PatientID missing" in n for n in notes)
    assert_pixels_match_sources(paths, folder)
    for path in paths:
        seg = pydicom.dcmread(str(path))
        assert seg.StudyDate == "" and seg.PatientID == ""
    # The sources are untouched.
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == before


def test_sanitised_copy_leaves_source_alone():
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.StudyDate = "20120000"
    fixed, changes = sanitised_copy(ds)
    assert ds.StudyDate == "20120000" and fixed.StudyDate == ""
    assert changes and "StudyDate" in changes[0]


def test_shape_mismatch_is_a_clear_error(tmp_path):
    folder = pydicom_series(tmp_path / "mr")
    scan = load_dicom_series(folder)
    with pytest.raises(LVSegError, match="does not match"):
        write_dicom_seg(np.zeros((5, 5, 3), np.uint8), scan.meta["source_files"], tmp_path,
                        "bad", PROVENANCE)
    with pytest.raises(LVSegError, match="does not match"):
        write_dicom_seg(np.zeros(scan.shape3d[:2] + (2,), np.uint8),
                        scan.meta["source_files"], tmp_path, "bad", PROVENANCE)


def test_seg_for_a_zipped_series(tmp_path):
    import zipfile

    from lvseg_core.io import load_scan
    from lvseg_core.io.dicom_seg import write_dicom_seg_for

    folder = pydicom_series(tmp_path / "mr", n_phases=2)
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"export/{f.name}")
    scan = load_scan(archive)  # read from a temporary folder that is gone now
    mask = np.rint(scan.array).astype(np.uint8)
    paths, _ = write_dicom_seg_for(archive, mask, tmp_path / "out", "zipped", PROVENANCE)
    assert len(paths) == 2
    assert_pixels_match_sources(paths, folder)
    with pytest.raises(LVSegError, match="does not match"):
        write_dicom_seg_for(archive, mask[:, :, :2], tmp_path / "out2", "bad", PROVENANCE)


def test_seg_download_of_an_upload(tmp_path):
    import io
    import zipfile

    from lvseg_core.io import load_scan
    from lvseg_core.io.dicom_seg import dicom_seg_download

    folder = pydicom_series(tmp_path / "mr", n_phases=2)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f.name)
    archive = tmp_path / "up.zip"
    archive.write_bytes(buffer.getvalue())
    mask = np.rint(load_scan(archive).array).astype(np.uint8)
    name, data, mime = dicom_seg_download("up.zip", buffer.getvalue(), mask, PROVENANCE, "up")
    assert name == "up_seg.zip" and mime == "application/zip"
    out = tmp_path / "segs"
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        zf.extractall(out)
    assert_pixels_match_sources(sorted(out.iterdir()), folder)
    single = pydicom_series(tmp_path / "one", n_slices=1)
    dcm = next(single.iterdir())
    mask1 = np.rint(load_scan(dcm).array).astype(np.uint8)
    name, data, mime = dicom_seg_download("x.dcm", dcm.read_bytes(), mask1, PROVENANCE, "x")
    assert name == "x_seg.dcm" and mime == "application/dicom"
    with pytest.raises(LVSegError, match="needs a DICOM upload"):
        dicom_seg_download("x.nii.gz", b"", mask1, PROVENANCE)


def test_seg_for_the_chosen_series_of_a_zip(tmp_path):
    import zipfile

    from lvseg_core.io import load_scan
    from lvseg_core.io.dicom_seg import write_dicom_seg_for

    first = pydicom_series(tmp_path / "a")
    second = pydicom_series(tmp_path / "b")
    uid = pydicom.dcmread(str(next(second.iterdir())), stop_before_pixels=True).SeriesInstanceUID
    archive = tmp_path / "two.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for folder in (first, second):
            for f in sorted(folder.iterdir()):
                zf.write(f, f"{folder.name}/{f.name}")
    scan = load_scan(archive, series_uid=uid)
    mask = np.rint(scan.array).astype(np.uint8)
    paths, _ = write_dicom_seg_for(archive, mask, tmp_path / "out", "b", PROVENANCE,
                                   series_uid=uid)
    assert_pixels_match_sources(paths, second)
