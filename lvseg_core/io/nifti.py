"""NIfTI reading and writing: scans, label maps and predicted masks.

Arrays are ``(x, y, z)`` or ``(x, y, z, t)`` in voxel order; affines map voxel
indices to world millimetres in the nibabel (RAS+) convention.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import LVSegError, ScanReadError
from ..files import replacing
from ..labels import check_labels
from ..policy import check_data_size, check_spacing
from ..scan import Scan
from ._common import as_path, reason, require_file, strip_suffixes

#: File name endings read and written as NIfTI (lower case, longest first).
NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")



def nifti_stem(name: str) -> str:
    """File name without its ``.nii`` / ``.nii.gz`` ending."""
    return strip_suffixes(name, NIFTI_SUFFIXES)


def is_nifti_name(name: str) -> bool:
    """True when ``name`` ends in ``.nii`` or ``.nii.gz`` (any case)."""
    return name.lower().endswith(NIFTI_SUFFIXES)


#: Header sizes (bytes) of NIfTI-1 and NIfTI-2.
_HEADER_CLASSES = {348: nib.Nifti1Header, 540: nib.Nifti2Header}


def _check_header(path: Path) -> None:
    """Refuse, from the header alone, a file whose data would exceed the limits
    (:mod:`lvseg_core.policy`): a gzip bomb is "too large", and nothing is
    decompressed but the header. nibabel then reads exactly the bytes the
    header declares (extensions up to ``vox_offset``, then the data), so this
    check also caps decompression. A voxel size nibabel would silently repair
    (zero pixdim without qform/sform) is refused. Unparseable headers are left
    to nibabel."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            block = fh.read(540)
    except (OSError, EOFError, zlib.error):
        return
    for order in ("<", ">"):
        size = int(np.frombuffer(block[:4], dtype=f"{order}i4")[0]) if len(block) >= 4 else 0
        if size in _HEADER_CLASSES and len(block) >= size:
            break
    else:
        return
    try:
        header = _HEADER_CLASSES[size](block[:size], check=False)
        shape = header.get_data_shape()
        itemsize = header.get_data_dtype().itemsize
        offset = int(header["vox_offset"])
        codes = int(header["qform_code"]), int(header["sform_code"])
        pixdim = [float(v) for v in header["pixdim"][1:1 + min(3, len(shape))]]
    except Exception:  # nibabel raises many types for bad headers; it reports them below
        return
    check_data_size(shape, itemsize, path.name, extra_bytes=max(offset, 0))
    if codes == (0, 0) and not all(np.isfinite(v) and v != 0 for v in pixdim):
        # nibabel would silently take 1 mm for a zero voxel size
        raise ScanReadError(f"{path.name}: NIfTI voxel size (pixdim) {pixdim} mm is zero or "
                            "not finite, and the header has no qform/sform")


def _image(path: Path, what: str) -> nib.Nifti1Image | nib.Nifti2Image:
    """The NIfTI image of ``path`` with its header checked (:func:`_check_header`);
    no voxel data read yet."""
    require_file(path, what)
    if not is_nifti_name(path.name):
        raise ScanReadError(f"{path.name}: a NIfTI {what} must end in .nii or .nii.gz")
    _check_header(path)
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for bad files
        raise ScanReadError(f"{path.name}: not a readable NIfTI file ({reason(exc)})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ScanReadError(f"{path.name}: not a NIfTI-1/NIfTI-2 image "
                            f"(read as {type(img).__name__})")
    return img


def _data(img, path: Path, index=()) -> np.ndarray:
    """The (scaled) voxels of ``img``, or only those of ``index`` (a slicing
    tuple): nibabel then reads and keeps just that part."""
    try:
        data = img.dataobj[index] if index else np.asanyarray(img.dataobj)
    except Exception as exc:  # truncated gzip, short file, bad dtype...
        raise ScanReadError(f"{path.name}: NIfTI data cannot be read, the file is "
                            f"truncated or corrupt ({reason(exc)})") from None
    return np.asarray(data)


def _open(path: Path, what: str) -> tuple[nib.Nifti1Image | nib.Nifti2Image, np.ndarray]:
    """Read a NIfTI file; return the image and its raw (scaled) data array."""
    img = _image(path, what)
    return img, _data(img, path)


def nifti_frames(path: str | os.PathLike, what: str = "scan") -> tuple[int, ...]:
    """Shape ``(x, y, z, t)`` of a 4D NIfTI file, from its (checked) header alone.

    Raises:
        ScanReadError: unreadable, over the limits, or not 4D.
    """
    path = as_path(path)
    shape = tuple(int(s) for s in _image(path, what).shape)
    if len(shape) != 4 or 0 in shape:
        raise ScanReadError(f"{path.name}: NIfTI {what} of shape {shape}; expected a 4D "
                            "(x, y, z, t) cine")
    return shape


def _frame(path: Path, t: int, what: str):
    img = _image(path, what)
    shape = tuple(int(s) for s in img.shape)
    if len(shape) != 4 or not 0 <= t < shape[3]:
        raise ScanReadError(f"{path.name}: no frame {t} in a NIfTI {what} of shape {shape} "
                            "(frames are counted from 0)")
    return img, _to_spatial(_data(img, path, (Ellipsis, int(t))), path, max_dims=3)


def _to_spatial(data: np.ndarray, path: Path, max_dims: int) -> np.ndarray:
    """Reshape ``data`` to 3D (or up to ``max_dims``) dims: 2D gains z=1,
    trailing singleton dims beyond 3 are dropped."""
    if data.ndim < 2:
        raise ScanReadError(f"{path.name}: {data.ndim}D NIfTI data {data.shape}; "
                            "expected an image of at least 2 dimensions")
    if data.ndim == 2:
        data = data[:, :, np.newaxis]
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim > max_dims:
        want = "(x, y, z)" if max_dims == 3 else "(x, y, z) or (x, y, z, t)"
        raise ScanReadError(f"{path.name}: {data.ndim}D NIfTI data {data.shape}; "
                            f"expected {want}")
    if 0 in data.shape:
        raise ScanReadError(f"{path.name}: NIfTI image is empty, shape {data.shape}")
    return data


def _check_affine(affine: np.ndarray, path: Path) -> np.ndarray:
    """Raise unless ``affine`` is finite with non-zero voxel sizes."""
    affine = np.asarray(affine, dtype=np.float64)
    if not np.isfinite(affine).all():
        raise ScanReadError(f"{path.name}: NIfTI affine contains NaN or infinity")
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(zooms == 0) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ScanReadError(f"{path.name}: NIfTI affine is degenerate "
                            f"(voxel sizes {np.round(zooms, 4).tolist()} mm)")
    check_spacing(zooms, path.name)
    return affine


def load_nifti(path: str | os.PathLike) -> Scan:
    """Read a ``.nii``/``.nii.gz`` scan.

    Returns a :class:`Scan` with a float32 array of shape ``(x, y, z)`` or
    ``(x, y, z, t)`` (a 2D image becomes ``(x, y, 1)``; trailing singleton
    dims such as ``t = 1`` are dropped) and the nibabel affine (mm, RAS+).
    The input header is kept in ``meta["nifti_header"]`` so that
    :func:`save_mask` writes matching geometry. Non-finite voxels are set to 0
    and counted in ``meta["non_finite_voxels"]``.
    """
    path = as_path(path)
    img, raw = _open(path, "scan")
    return _scan(img, _to_spatial(raw, path, max_dims=4), path)


def load_nifti_frame(path: str | os.PathLike, t: int) -> Scan:
    """Frame ``t`` (0-based) of a 4D ``(x, y, z, t)`` NIfTI cine as a 3D scan
    (as :func:`load_nifti`); only that frame's voxels are read and kept, after
    the whole file's size is checked from its header."""
    path = as_path(path)
    img, data = _frame(path, t, "scan")
    scan = _scan(img, data, path)
    scan.meta["nifti_header"].set_data_shape(data.shape)
    scan.meta["frame_index"] = int(t)
    return scan


def _scan(img, data: np.ndarray, path: Path) -> Scan:
    """A :class:`Scan` of ``data`` read from ``img`` (see :func:`load_nifti`)."""
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise ScanReadError(f"{path.name}: unsupported NIfTI data type {data.dtype}")
    array = data.astype(np.float32)
    meta: dict = {"nifti_header": img.header.copy(), "source_format": "nifti"}
    bad = ~np.isfinite(array)
    if bad.any():
        meta["non_finite_voxels"] = int(bad.sum())
        array[bad] = 0.0
    affine = _check_affine(img.affine, path)
    return Scan(array, affine, name=nifti_stem(path.name), source=str(path), meta=meta)


def load_label(path: str | os.PathLike, like: Scan) -> np.ndarray:
    """Read a label map for ``like``: uint8 ``(x, y, z)`` with values in 0..3.

    The shape must equal ``like.shape3d`` (a 2D map becomes ``(x, y, 1)``).
    """
    path = as_path(path)
    _img, raw = _open(path, "label file")
    return _label(_to_spatial(raw, path, max_dims=3), path, like)


def load_label_frame(path: str | os.PathLike, t: int, like: Scan) -> np.ndarray:
    """Frame ``t`` (0-based) of a 4D label file for ``like`` (as :func:`load_label`);
    only that frame is read."""
    path = as_path(path)
    _img, data = _frame(path, t, "label file")
    return _label(data, path, like)


def labelled_frames(path: str | os.PathLike) -> dict[int, int]:
    """``{frame index: voxels of label 1}`` of the frames of a 4D label file that
    hold any label (the whole file is read once: its size was checked from the
    header)."""
    path = as_path(path)
    img = _image(path, "label file")
    if len(img.shape) != 4:
        raise ScanReadError(f"{path.name}: label file of shape {tuple(img.shape)}; "
                            "expected a 4D (x, y, z, t) cine")
    data = _data(img, path)
    return {t: int(np.count_nonzero(data[..., t] == 1)) for t in range(data.shape[3])
            if np.any(data[..., t])}


def _label(data: np.ndarray, path: Path, like: Scan) -> np.ndarray:
    if data.shape != like.shape3d:
        raise ScanReadError(f"{path.name}: label shape {data.shape} does not match "
                            f"scan {like.name} shape {like.shape3d}")
    return check_labels(data, path.name)


def _mask_array(mask: np.ndarray, like: Scan) -> np.ndarray:
    """Validate ``mask`` against ``like`` and return it as uint8."""
    mask = np.asarray(mask)
    if mask.shape not in (like.shape3d, like.array.shape):
        raise LVSegError(f"{like.name}: mask shape {mask.shape} does not match scan "
                         f"shape {like.array.shape}")
    if mask.dtype == np.uint8:
        return mask
    if mask.dtype == bool:
        return mask.astype(np.uint8)
    if not np.issubdtype(mask.dtype, np.number) or np.iscomplexobj(mask):
        raise LVSegError(f"{like.name}: mask must be an integer array, got {mask.dtype}")
    if mask.size and (not np.isfinite(mask).all()
                      or not np.array_equal(mask, np.round(mask))
                      or mask.min() < 0 or mask.max() > 255):
        raise LVSegError(f"{like.name}: mask values must be integers 0..255")
    return mask.astype(np.uint8)


def _mask_header(like: Scan) -> tuple[type, nib.Nifti1Header | None, bool]:
    """Image class, header copy and whether its geometry equals ``like.affine``."""
    header = like.meta.get("nifti_header")
    if isinstance(header, nib.Nifti2Header):
        cls = nib.Nifti2Image
    elif isinstance(header, nib.Nifti1Header):
        cls = nib.Nifti1Image
    else:
        return nib.Nifti1Image, None, False
    header = header.copy()
    try:
        same = np.array_equal(header.get_best_affine(), like.affine)
    except Exception:  # a header with unusable geometry: rebuild it
        same = False
    return cls, header, same


def save_mask(mask: np.ndarray, like: Scan, path: str | os.PathLike,
              overwrite: bool = False) -> Path:
    """Write a uint8 mask, ``(x, y, z)`` or ``(x, y, z, t)``, as NIfTI.

    The file gets exactly ``like``'s grid: its shape (the 3D shape, or the full
    4D shape for a cine mask) and affine (mm). When ``like`` was read from
    NIfTI its header is reused, so qform/sform and their codes are unchanged;
    otherwise both are set to ``like.affine`` with code 1 (scanner).
    Refuses to replace an existing file unless ``overwrite`` and never writes
    over the scan's own source file. Returns the written path.
    """
    path = as_path(path)
    if not is_nifti_name(path.name):
        raise LVSegError(f"{path.name}: a mask file must end in .nii or .nii.gz")
    data = _mask_array(mask, like)
    if like.source:
        try:
            same_file = path.resolve() == as_path(like.source).resolve()
        except (OSError, ValueError):
            same_file = False
        if same_file:
            raise LVSegError(f"{path.name}: refusing to write a mask over the scan "
                             "it was computed from")
    if path.is_dir():
        raise LVSegError(f"{path.name}: is a folder, cannot write a mask there")
    if path.exists() and not overwrite:
        raise LVSegError(f"{path.name}: file exists; pass overwrite=True to replace it")

    cls, header, same_geometry = _mask_header(like)
    img = cls(data, like.affine, header=header)
    hdr = img.header
    if not same_geometry:
        s_code = int(header["sform_code"]) if header is not None else 0
        q_code = int(header["qform_code"]) if header is not None else 0
        s_code = s_code or q_code or 1
        q_code = q_code or s_code
        hdr.set_sform(like.affine, code=s_code)
        hdr.set_qform(like.affine, code=q_code)
    if header is None:
        hdr.set_xyzt_units("mm", "msec")
    hdr.set_data_dtype(np.uint8)
    hdr.set_slope_inter(1.0, 0.0)
    hdr["cal_min"] = 0
    hdr["cal_max"] = 0
    hdr.set_intent("label")
    hdr["descrip"] = b"LVSeg mask"
    try:
        suffix = ".nii.gz" if path.name.lower().endswith(".gz") else ".nii"
        with replacing(path, suffix) as tmp:
            nib.save(img, tmp)
    except OSError as exc:
        raise LVSegError(f"{path.name}: cannot write mask ({reason(exc)})") from None
    return path
