"""Safe extraction of untrusted zip archives (uploaded DICOM studies)."""

from __future__ import annotations

import os
import re
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import ScanReadError
from ._common import as_path, reason, require_file

#: Default limit on the total uncompressed size of an archive (bytes).
MAX_TOTAL_BYTES = 2 * 1024**3
#: Default limit on the number of files in an archive.
MAX_FILES = 20_000

_CHUNK = 1024 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")


def _check_member(info: zipfile.ZipInfo, dest: Path, label: str) -> Path:
    """The extraction target of ``info`` inside ``dest``, or raise if unsafe."""
    name = info.filename
    shown = name if len(name) <= 80 else name[:77] + "..."
    unix = name.replace("\\", "/")
    if "\x00" in name:
        raise ScanReadError(f"{label}: unsafe zip member name {shown!r} (NUL byte)")
    if unix.startswith("/") or _DRIVE.match(unix):
        raise ScanReadError(f"{label}: unsafe zip member {shown!r} (absolute path)")
    parts = PurePosixPath(unix).parts
    if ".." in parts:
        raise ScanReadError(f"{label}: unsafe zip member {shown!r} ('..' in path)")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ScanReadError(f"{label}: zip member {shown!r} is a symbolic link; "
                            "links are not allowed")
    if info.flag_bits & 0x1:
        raise ScanReadError(f"{label}: zip member {shown!r} is encrypted; "
                            "upload an archive without a password")
    target = dest.joinpath(*[p for p in parts if p not in ("", ".")]).resolve()
    if target != dest and dest not in target.parents:
        raise ScanReadError(f"{label}: unsafe zip member {shown!r} (escapes the "
                            "extraction folder)")
    return target


def safe_extract_zip(path: str | os.PathLike, dest: str | os.PathLike,
                     max_total_bytes: int = MAX_TOTAL_BYTES,
                     max_files: int = MAX_FILES) -> Path:
    """Extract the untrusted zip ``path`` into ``dest``; return ``dest`` (resolved).

    Refuses (:class:`ScanReadError`, before writing anything) archives that are
    not zips, hold no files, more than ``max_files`` files, members with
    absolute paths, drive letters or ``..``, symbolic links, encrypted
    members, or declare more than ``max_total_bytes`` uncompressed. While
    writing, stops as soon as the real bytes exceed ``max_total_bytes`` (lying
    headers) or a member is corrupt; files written so far are then removed.
    """
    path = as_path(path)
    label = path.name
    require_file(path, "zip archive")
    dest = as_path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ScanReadError(f"{label}: cannot create extraction folder ({reason(exc)})") from None
    dest = dest.resolve()
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ScanReadError(f"{label}: not a valid zip archive") from None
    except Exception as exc:  # OSError, LargeZipFile, ValueError on odd headers
        raise ScanReadError(f"{label}: cannot open zip archive ({reason(exc)})") from None
    with archive:
        infos = archive.infolist()
        plan: list[tuple[zipfile.ZipInfo, Path]] = []
        dirs: list[Path] = []
        declared = 0
        for info in infos:
            target = _check_member(info, dest, label)
            if info.is_dir():
                dirs.append(target)
                continue
            plan.append((info, target))
            declared += info.file_size
            if len(plan) > max_files:
                raise ScanReadError(f"{label}: more than {max_files} files in the archive")
        if not plan:
            raise ScanReadError(f"{label}: zip archive contains no files")
        if declared > max_total_bytes:
            raise ScanReadError(f"{label}: archive would expand to {declared / 1e6:.1f} MB, "
                                f"over the {max_total_bytes / 1e6:.1f} MB limit")
        targets = {}
        for info, target in plan:
            if target in targets or target in dirs:
                raise ScanReadError(f"{label}: zip member {info.filename!r} appears twice")
            targets[target] = info
        _extract(archive, plan, dirs, dest, label, max_total_bytes)
    return dest


def _extract(archive: zipfile.ZipFile, plan: list[tuple[zipfile.ZipInfo, Path]],
             dirs: list[Path], dest: Path, label: str, max_total_bytes: int) -> None:
    """Write the checked members, counting real bytes; undo on failure."""
    created: list[Path] = []

    def make_dir(folder: Path) -> None:
        missing = []
        while folder != dest and not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for d in reversed(missing):
            d.mkdir()
            created.append(d)

    written = 0
    member = "(folder)"
    try:
        for folder in dirs:
            make_dir(folder)
        for info, target in plan:
            member = info.filename
            make_dir(target.parent)
            with archive.open(info) as src, open(target, "xb") as out:
                created.append(target)
                while chunk := src.read(_CHUNK):
                    written += len(chunk)
                    if written > max_total_bytes:
                        raise ScanReadError(
                            f"{label}: archive expands to more than "
                            f"{max_total_bytes / 1e6:.1f} MB (the limit); extraction stopped")
                    out.write(chunk)
    except ScanReadError:
        _undo(created)
        raise
    except FileExistsError:
        _undo(created)
        raise ScanReadError(f"{label}: extraction folder already holds {member!r}") from None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError,
            RuntimeError) as exc:  # bad CRC, truncated data, unsupported compression
        _undo(created)
        raise ScanReadError(f"{label}: cannot extract {member!r} ({reason(exc)})") from None


def _undo(created: list[Path]) -> None:
    """Remove files and folders created by a failed extraction (newest first)."""
    for item in reversed(created):
        try:
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item, ignore_errors=True)
            else:
                item.unlink(missing_ok=True)
        except OSError:
            pass
