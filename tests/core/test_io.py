"""Tests of lvseg_core.io: NIfTI, DICOM, zip archives, pictures and dispatch."""

from __future__ import annotations

import gzip
import shutil
import stat
import struct
import uuid
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from lvseg_core.errors import LVSegError, ScanReadError
from lvseg_core.io import (is_scan_file, load_dicom_file, load_dicom_series, load_image,
                           load_label, load_nifti, load_scan, safe_extract_zip,
                           save_dicom_series, save_mask)
from lvseg_core.scan import Scan
from tests.conftest import acdc_frame, make_heart

# ------------------------------------------------------------------ helpers


def oblique_affine(spacing=(1.5, 1.5, 8.0), origin=(12.5, -40.0, 33.0)) -> np.ndarray:
    """A right-handed, double-oblique voxel-to-world affine (mm)."""
    a, b = np.deg2rad(30.0), np.deg2rad(-25.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rx @ rz @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def oblique_heart(shape=(48, 40, 5)) -> tuple[Scan, np.ndarray]:
    """make_heart with an oblique affine."""
    scan, labels = make_heart(shape=shape)
    return Scan(scan.array, oblique_affine(), name="oblique"), labels


def cine_heart(nt: int = 4) -> Scan:
    """A small oblique 4D scan with trigger times."""
    scan, _ = oblique_heart(shape=(32, 28, 4))
    frames = [scan.array * (1.0 + 0.1 * t) + 5 * t for t in range(nt)]
    times = [12.5 + 40.0 * t for t in range(nt)]
    return Scan(np.stack(frames, -1), scan.affine, name="cine",
                meta={"trigger_times": times})


def write_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def tolerance(scan: Scan) -> float:
    """Largest quantisation error of the uint16 DICOM writer, plus margin."""
    return float(scan.array.max() - scan.array.min()) / 65535 * 0.51 + 1e-6


def assert_same_scan(read: Scan, original: Scan) -> None:
    assert read.array.shape == original.array.shape
    assert read.array.dtype == np.float32
    np.testing.assert_allclose(read.array, original.array, rtol=0, atol=tolerance(original))
    np.testing.assert_allclose(read.affine, original.affine, rtol=0, atol=1e-3)
    np.testing.assert_allclose(read.spacing, original.spacing, atol=1e-3)


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return path


def patch_zip(path: Path, local_offset: int, central_offset: int, fmt: str, value) -> None:
    """Overwrite one field in every local and central header of a zip file."""
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", local_offset), (b"PK\x01\x02", central_offset)):
        start = data.find(signature)
        while start >= 0:
            struct.pack_into(fmt, data, start + offset, value)
            start = data.find(signature, start + 4)
    path.write_bytes(bytes(data))


def tree(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*"))


# ------------------------------------------------------------------ NIfTI


def test_nifti_3d_round_trip(tmp_path, heart):
    scan, labels = heart
    src = write_nifti(scan.array, scan.affine, tmp_path / "case01.nii.gz")
    read = load_nifti(src)
    assert read.name == "case01"
    assert read.array.dtype == np.float32 and read.array.shape == scan.array.shape
    np.testing.assert_array_equal(read.array, scan.array)
    np.testing.assert_array_equal(read.affine, scan.affine)
    assert "nifti_header" in read.meta

    out = save_mask(labels, read, tmp_path / "case01_seg.nii.gz")
    img = nib.load(str(out))
    assert img.get_data_dtype() == np.uint8
    assert img.shape == scan.shape3d
    np.testing.assert_array_equal(img.affine, read.affine)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), labels)
    np.testing.assert_array_equal(load_label(out, read), labels)
    assert load_label(out, read).dtype == np.uint8


def test_nifti_4d_round_trip(tmp_path):
    scan = cine_heart(nt=3)
    src = write_nifti(scan.array, scan.affine, tmp_path / "cine.nii")
    read = load_nifti(src)
    assert read.is_cine and read.array.shape == scan.array.shape and read.name == "cine"
    mask = (read.array > 500).astype(np.uint8)
    out = save_mask(mask, read, tmp_path / "cine_mask.nii.gz")
    img = nib.load(str(out))
    assert img.shape == read.array.shape and img.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(img.affine, read.affine)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), mask)
    # one frame's 3D mask on the 4D scan's grid
    out3 = save_mask(mask[..., 0], read, tmp_path / "frame0_mask.nii.gz")
    assert nib.load(str(out3)).shape == read.shape3d


def test_oblique_affine_kept_exactly(tmp_path):
    scan, labels = oblique_heart()
    src = write_nifti(scan.array, scan.affine, tmp_path / "obl.nii.gz")
    read = load_nifti(src)
    out = save_mask(labels, read, tmp_path / "obl_seg.nii.gz")
    img = nib.load(str(out))
    np.testing.assert_array_equal(img.affine, read.affine)  # bit for bit
    assert img.header["sform_code"] == nib.load(str(src)).header["sform_code"]
    # a scan without a NIfTI header (e.g. from DICOM): sform and qform code 1
    out2 = save_mask(labels, scan, tmp_path / "obl_seg2.nii.gz")
    hdr = nib.load(str(out2)).header
    assert int(hdr["sform_code"]) == 1 and int(hdr["qform_code"]) == 1
    np.testing.assert_allclose(hdr.get_sform(), scan.affine, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(hdr.get_qform(), scan.affine, rtol=1e-6, atol=1e-4)


def test_header_codes_kept(tmp_path, heart):
    scan, labels = heart
    img = nib.Nifti1Image(scan.array, scan.affine)
    img.header.set_qform(None, code=0)
    img.header.set_sform(scan.affine, code=2)
    src = tmp_path / "acdc_like.nii.gz"
    nib.save(img, str(src))
    read = load_nifti(src)
    out = nib.load(str(save_mask(labels, read, tmp_path / "acdc_like_seg.nii.gz")))
    assert int(out.header["sform_code"]) == 2 and int(out.header["qform_code"]) == 0
    np.testing.assert_array_equal(out.affine, read.affine)


def test_nifti_dimensions(tmp_path):
    two_d = load_nifti(write_nifti(np.ones((7, 5), np.float32), np.eye(4), tmp_path / "a.nii"))
    assert two_d.array.shape == (7, 5, 1)
    padded = write_nifti(np.ones((7, 5, 3, 1, 1), np.float32), np.eye(4), tmp_path / "b.nii")
    assert load_nifti(padded).array.shape == (7, 5, 3)
    five_d = write_nifti(np.ones((7, 5, 3, 2, 2), np.float32), np.eye(4), tmp_path / "five.nii")
    with pytest.raises(ScanReadError, match="five.nii.*5D"):
        load_nifti(five_d)
    one_d = write_nifti(np.ones((9,), np.float32), np.eye(4), tmp_path / "line.nii")
    with pytest.raises(ScanReadError, match="line.nii"):
        load_nifti(one_d)


def test_bad_nifti_files(tmp_path, heart):
    scan, _ = heart
    good = write_nifti(scan.array, scan.affine, tmp_path / "good.nii.gz").read_bytes()
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good[: len(good) // 2])
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(np.random.default_rng(1).bytes(5000))
    plain_junk = tmp_path / "plain.nii"
    plain_junk.write_bytes(np.random.default_rng(2).bytes(5000))
    not_gz = tmp_path / "notgz.nii.gz"
    not_gz.write_bytes(gzip.decompress(good)[:200])
    for path in (truncated, junk, plain_junk, not_gz):
        with pytest.raises(ScanReadError) as info:
            load_nifti(path)
        message = str(info.value)
        assert path.name in message and "\n" not in message
    with pytest.raises(ScanReadError, match="missing.nii.gz"):
        load_nifti(tmp_path / "missing.nii.gz")


def test_label_errors(tmp_path, heart):
    scan, labels = heart
    wrong_shape = write_nifti(labels[:, :-1], scan.affine, tmp_path / "shape_gt.nii.gz")
    with pytest.raises(ScanReadError, match="shape_gt.nii.gz.*does not match"):
        load_label(wrong_shape, scan)
    seven = labels.copy()
    seven[0, 0, 0] = 7
    bad = write_nifti(seven, scan.affine, tmp_path / "seven_gt.nii.gz")
    with pytest.raises(ScanReadError, match="seven_gt.nii.gz.*found 7"):
        load_label(bad, scan)
    halves = write_nifti(labels.astype(np.float32) + 0.5, scan.affine, tmp_path / "f_gt.nii")
    with pytest.raises(ScanReadError, match="f_gt.nii.*non-integer"):
        load_label(halves, scan)


def test_save_mask_refusals(tmp_path, heart):
    scan, labels = heart
    src = write_nifti(scan.array, scan.affine, tmp_path / "scan.nii.gz")
    read = load_nifti(src)
    out = save_mask(labels, read, tmp_path / "mask.nii.gz")
    with pytest.raises(LVSegError, match="exists"):
        save_mask(labels, read, out)
    save_mask(np.zeros_like(labels), read, out, overwrite=True)
    assert nib.load(str(out)).get_fdata().max() == 0
    with pytest.raises(LVSegError, match="scan.nii.gz"):
        save_mask(labels, read, src, overwrite=True)
    assert load_nifti(src).array.max() > 3  # the scan is untouched
    with pytest.raises(LVSegError, match="shape"):
        save_mask(labels[:, :, :2], read, tmp_path / "small.nii.gz")
    with pytest.raises(LVSegError, match=r"\.nii"):
        save_mask(labels, read, tmp_path / "mask.png")


# ------------------------------------------------------------------ DICOM


def scatter_without_extensions(files: list[Path], folder: Path) -> Path:
    """Copy DICOM files to ``folder`` under random extension-less names,
    plus a text file, a hidden file and a fake DICOMDIR."""
    folder.mkdir()
    for path in files:
        shutil.copy(path, folder / uuid.uuid4().hex[:10])
    (folder / "README").write_text("not a DICOM file\n")
    (folder / ".DS_Store").write_bytes(b"\0" * 64)
    (folder / "DICOMDIR").write_bytes(b"\0" * 200)
    return folder


def test_dicom_oblique_round_trip_shuffled(tmp_path):
    scan, _ = oblique_heart()
    written = save_dicom_series(scan, tmp_path / "series")
    assert len(written) == scan.shape3d[2]
    ds = pydicom.dcmread(str(written[0]))
    assert ds.SOPClassUID == pydicom.uid.MRImageStorage
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert (ds.Rows, ds.Columns) == (scan.shape3d[1], scan.shape3d[0])
    np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], [1.5, 1.5])
    folder = scatter_without_extensions(written, tmp_path / "shuffled")
    read = load_dicom_series(folder)
    assert_same_scan(read, scan)
    assert read.name == "shuffled" and read.meta["series_description"] == "LVSeg"
    assert load_scan(folder).array.shape == scan.array.shape


def test_dicom_axes_follow_pixel_spacing(tmp_path):
    """x = columns (PixelSpacing[1]), y = rows (PixelSpacing[0])."""
    scan, _ = make_heart(shape=(30, 20, 3), spacing=(0.8, 1.25, 6.0))
    written = save_dicom_series(scan, tmp_path / "aniso")
    ds = pydicom.dcmread(str(written[0]))
    assert (ds.Rows, ds.Columns) == (20, 30)
    np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], [1.25, 0.8])
    read = load_dicom_series(tmp_path / "aniso")
    np.testing.assert_allclose(read.spacing, (0.8, 1.25, 6.0), atol=1e-6)
    assert_same_scan(read, scan)


def test_dicom_left_handed_affine_same_geometry(tmp_path):
    scan, _ = make_heart(shape=(20, 16, 4))
    flipped = Scan(scan.array, np.diag([-1.5, 1.5, 8.0, 1.0]), name="las")
    save_dicom_series(flipped, tmp_path / "las")
    read = load_dicom_series(tmp_path / "las")
    # slices come back ordered along the slice normal: z reversed, same world points
    np.testing.assert_allclose(read.array, flipped.array[:, :, ::-1],
                               atol=tolerance(flipped))
    last = flipped.affine @ [0, 0, 3, 1]
    np.testing.assert_allclose(read.affine @ [0, 0, 0, 1], last, atol=1e-3)
    np.testing.assert_allclose(read.spacing, flipped.spacing, atol=1e-3)


def test_dicom_cine_round_trip(tmp_path):
    scan = cine_heart(nt=4)
    written = save_dicom_series(scan, tmp_path / "cine")
    assert len(written) == scan.shape3d[2] * scan.n_frames
    folder = scatter_without_extensions(written, tmp_path / "cine_shuffled")
    read = load_dicom_series(folder)
    assert read.is_cine
    assert_same_scan(read, scan)
    assert read.meta["trigger_times"] == pytest.approx(scan.meta["trigger_times"])

    (tmp_path / "cine" / written[5].name).unlink()  # one phase missing at one slice
    with pytest.raises(ScanReadError, match="different numbers of images"):
        load_dicom_series(tmp_path / "cine")


def test_dicom_two_series(tmp_path):
    big, _ = oblique_heart(shape=(24, 20, 5))
    small, _ = make_heart(shape=(16, 16, 3))
    a = save_dicom_series(big, tmp_path / "a", series_description="SAX")
    b = save_dicom_series(small, tmp_path / "b", series_description="LOC")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for path in a + b:
        shutil.copy(path, mixed / f"{path.parent.name}_{path.name}")
    read = load_dicom_series(mixed)
    assert_same_scan(read, big)
    skipped = read.meta["skipped_series"]
    assert len(skipped) == 1 and skipped[0]["description"] == "LOC"
    chosen = load_dicom_series(mixed, series_uid=skipped[0]["series_uid"])
    assert_same_scan(chosen, small)
    with pytest.raises(ScanReadError, match="not found"):
        load_dicom_series(mixed, series_uid="1.2.3")
    # two series of equal size: ambiguous, the error lists them
    c = save_dicom_series(big, tmp_path / "c", series_description="SAX again")
    for path in c:
        shutil.copy(path, mixed / f"c_{path.name}")
    with pytest.raises(ScanReadError, match="SAX again"):
        load_dicom_series(mixed)


def test_dicom_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ScanReadError, match="empty"):
        load_dicom_series(empty)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("hello")
    (junk / "data.bin").write_bytes(np.random.default_rng(0).bytes(1000))
    with pytest.raises(ScanReadError, match="no DICOM image files"):
        load_dicom_series(junk)
    with pytest.raises(ScanReadError, match="not found"):
        load_dicom_series(tmp_path / "nowhere")

    scan, _ = make_heart(shape=(16, 12, 4))
    written = save_dicom_series(scan, tmp_path / "nogeo")
    ds = pydicom.dcmread(str(written[1]))
    del ds.ImagePositionPatient
    ds.save_as(str(written[1]))
    with pytest.raises(ScanReadError, match=f"{written[1].name}.*ImagePositionPatient"):
        load_dicom_series(tmp_path / "nogeo")

    gap = save_dicom_series(scan, tmp_path / "gap")
    gap[1].unlink()
    with pytest.raises(ScanReadError, match="uneven slice spacing"):
        load_dicom_series(tmp_path / "gap")

    other, _ = make_heart(shape=(20, 12, 4))
    sizes = save_dicom_series(scan, tmp_path / "sizes")
    extra = save_dicom_series(other, tmp_path / "extra")
    uid = pydicom.dcmread(str(sizes[0])).SeriesInstanceUID
    ds = pydicom.dcmread(str(extra[0]))
    ds.SeriesInstanceUID = uid
    ds.save_as(str(tmp_path / "sizes" / "odd.dcm"))
    with pytest.raises(ScanReadError, match="image size"):
        load_dicom_series(tmp_path / "sizes")

    with pytest.raises(LVSegError, match="not empty"):
        save_dicom_series(scan, tmp_path / "sizes")


def test_single_dicom_file(tmp_path):
    scan, _ = make_heart(shape=(16, 12, 1), spacing=(1.2, 1.2, 7.0))
    path = save_dicom_series(scan, tmp_path / "one")[0]
    read = load_scan(path)
    assert read.array.shape == (16, 12, 1)
    assert_same_scan(read, scan)
    bare = tmp_path / "IMG0001"
    shutil.copy(path, bare)
    assert load_scan(bare, kind="dicom").array.shape == (16, 12, 1)
    assert load_dicom_file(bare).spacing == pytest.approx((1.2, 1.2, 7.0))


# ------------------------------------------------------------------ zip archives


def test_zip_refusals(tmp_path):
    dest = tmp_path / "dest"
    empty = make_zip(tmp_path / "empty.zip", {})
    with pytest.raises(ScanReadError, match="empty.zip.*no files"):
        safe_extract_zip(empty, dest)
    only_dirs = make_zip(tmp_path / "dirs.zip", {"a/": b"", "a/b/": b""})
    with pytest.raises(ScanReadError, match="no files"):
        safe_extract_zip(only_dirs, dest)

    evil = make_zip(tmp_path / "evil.zip", {"ok.txt": b"fine", "../evil.txt": b"owned"})
    with pytest.raises(ScanReadError, match="evil.zip.*unsafe"):
        safe_extract_zip(evil, dest)
    assert not (tmp_path / "evil.txt").exists()
    nested = make_zip(tmp_path / "nested.zip", {"a/../../evil2.txt": b"owned"})
    with pytest.raises(ScanReadError, match="unsafe"):
        safe_extract_zip(nested, dest)
    assert not (tmp_path / "evil2.txt").exists()

    outside = tmp_path / "outside" / "abs.txt"
    absolute = make_zip(tmp_path / "abs.zip", {outside.as_posix(): b"owned"})
    with pytest.raises(ScanReadError, match="absolute"):
        safe_extract_zip(absolute, dest)
    drive = make_zip(tmp_path / "drive.zip", {"C:/Windows/evil.txt": b"owned"})
    with pytest.raises(ScanReadError, match="absolute"):
        safe_extract_zip(drive, dest)
    assert not outside.exists() and not (tmp_path / "outside").exists()

    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ScanReadError, match="symbolic link"):
        safe_extract_zip(link, dest)

    encrypted = make_zip(tmp_path / "enc.zip", {"secret.dcm": b"x" * 100})
    patch_zip(encrypted, 6, 8, "<H", 0x1)
    with pytest.raises(ScanReadError, match="encrypted"):
        safe_extract_zip(encrypted, dest)

    not_zip = tmp_path / "fake.zip"
    not_zip.write_bytes(b"PK\x03\x04" + np.random.default_rng(0).bytes(300))
    with pytest.raises(ScanReadError, match="fake.zip"):
        safe_extract_zip(not_zip, dest)
    assert tree(dest) == []


def test_zip_bombs(tmp_path):
    dest = tmp_path / "dest"
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", bytes(50 * 1024 * 1024))
    assert bomb.stat().st_size < 1024 * 1024
    with pytest.raises(ScanReadError, match="bomb.zip.*limit"):
        safe_extract_zip(bomb, dest, max_total_bytes=1024 * 1024)
    assert tree(dest) == []

    # headers lying about the size: caught while writing, partial output removed
    liar = tmp_path / "liar.zip"
    with zipfile.ZipFile(liar, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", bytes(4 * 1024 * 1024))
    patch_zip(liar, 22, 24, "<I", 1000)
    with pytest.raises(ScanReadError, match="liar.zip"):
        safe_extract_zip(liar, dest, max_total_bytes=1024 * 1024)
    assert tree(dest) == []

    many = make_zip(tmp_path / "many.zip", {f"f{i}.txt": b"x" for i in range(12)})
    with pytest.raises(ScanReadError, match="more than 10 files"):
        safe_extract_zip(many, dest, max_files=10)


def test_zip_of_dicom_series_loads(tmp_path):
    scan, _ = oblique_heart(shape=(24, 20, 4))
    written = save_dicom_series(scan, tmp_path / "series")
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, path in enumerate(written):
            zf.write(path, f"study/SAX/{i:08d}")  # nested, no extensions
        zf.writestr("study/readme.txt", "export notes")
        zf.writestr("__MACOSX/study/._00000000", b"\0" * 50)
    dest = safe_extract_zip(archive, tmp_path / "out")
    assert (dest / "study" / "SAX" / "00000000").is_file()
    read = load_scan(archive)
    assert_same_scan(read, scan)
    assert read.name == "study" and read.source == str(archive)


# ------------------------------------------------------------------ pictures and dispatch


def test_png_transposed(tmp_path):
    pixels = np.arange(15, dtype=np.uint8).reshape(3, 5) * 10  # 3 rows, 5 columns
    Image.fromarray(pixels, mode="L").save(tmp_path / "slice.png")
    scan = load_scan(tmp_path / "slice.png")
    assert scan.array.shape == (5, 3, 1) and scan.array.dtype == np.float32
    assert scan.array[4, 1, 0] == pixels[1, 4] == 90
    np.testing.assert_array_equal(scan.array[..., 0], pixels.T)
    assert scan.meta["assumed_spacing"] is True and scan.name == "slice"
    np.testing.assert_array_equal(scan.affine, np.eye(4))

    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[2, 5] = 255
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "colour.jpg", quality=100)
    colour = load_image(tmp_path / "colour.jpg", spacing_mm=0.7)
    assert colour.array.shape == (6, 4, 1)
    assert colour.array[5, 2, 0] > 200 and colour.meta["assumed_spacing"] is False
    assert colour.spacing[:2] == pytest.approx((0.7, 0.7))

    deep = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    Image.fromarray(deep).save(tmp_path / "deep.tif")
    np.testing.assert_array_equal(load_image(tmp_path / "deep.tif").array[..., 0], deep.T)

    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(ScanReadError, match="broken.png"):
        load_scan(tmp_path / "broken.png")
    with pytest.raises(ScanReadError, match="spacing"):
        load_image(tmp_path / "slice.png", spacing_mm=-1)


def test_load_scan_dispatch(tmp_path, heart):
    scan, _ = heart
    with pytest.raises(ScanReadError, match="not found"):
        load_scan(tmp_path / "ghost.nii.gz")
    (tmp_path / "notes.docx").write_bytes(b"hello")
    with pytest.raises(ScanReadError, match=r"notes.docx.*\.nii\.gz.*\.png"):
        load_scan(tmp_path / "notes.docx")
    with pytest.raises(ScanReadError, match="unknown scan kind"):
        load_scan(tmp_path / "notes.docx", kind="movie")
    src = write_nifti(scan.array, scan.affine, tmp_path / "p1.nii.gz")
    assert load_scan(src).array.shape == scan.array.shape

    inner = make_zip(tmp_path / "one_nifti.zip", {"p1.nii.gz": src.read_bytes()})
    assert load_scan(inner).name == "p1"

    for name, expected in [("p1.nii.gz", True), ("p1.NII", True), ("p1_gt.nii.gz", False),
                           ("p1_seg.nii.gz", False), ("p1_seg.nii", False),
                           ("shot.PNG", True), ("x.tiff", True), ("study.zip", False),
                           ("notes.txt", False), (".hidden.nii.gz", False),
                           ("IM0001.dcm", False)]:
        assert is_scan_file(tmp_path / name) is expected, name


# ------------------------------------------------------------------ real data


def test_acdc_volume_dicom_round_trip(tmp_path, acdc_dir):
    folder = acdc_dir / "patient002"
    scan = load_nifti(acdc_frame(folder, "ED"))
    labels = load_label(acdc_frame(folder, "ED", label=True), scan)
    assert labels.shape == scan.shape3d and set(np.unique(labels)) <= {0, 1, 2, 3}
    save_dicom_series(scan, tmp_path / "p002")
    read = load_dicom_series(tmp_path / "p002")
    assert_same_scan(read, scan)
    np.testing.assert_allclose(read.array, scan.array, atol=1e-4)
