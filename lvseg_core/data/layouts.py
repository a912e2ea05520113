"""Other datasets' folder layouts and label maps: M&Ms-1 and M&Ms-2 beside ACDC.

Label maps (value -> structure):

- ``acdc`` (ACDC, LVSeg's own): 1 RV cavity, 2 LV myocardium, 3 LV cavity;
- ``mnms`` (M&Ms and M&Ms-2 releases): 1 LV cavity, 2 LV myocardium, 3 RV cavity.

Layout ``mnms``, the M&Ms-2 release (short-axis ED/ES volumes)::

    <root>/<id>/<id>_SA_ED.nii.gz      image at end-diastole
    <root>/<id>/<id>_SA_ED_gt.nii.gz   its labels (mnms convention)
    <root>/<id>/<id>_SA_ES.nii.gz / <id>_SA_ES_gt.nii.gz

``<root>`` may also be one ``<id>`` folder. Other files (long-axis ``_LA_``
volumes, CSV tables) are ignored.

Layout ``mnms1``, the M&Ms-1 release (4D short-axis cines)::

    <root>/.../<id>/<id>_sa.nii.gz     cine, (x, y, z, t)
    <root>/.../<id>/<id>_sa_gt.nii.gz  labels (mnms convention) at the ED and ES frames only
    <root>/211230_M&Ms_Dataset_information_diagnosis_opendataset.csv

Case folders may sit up to :data:`MNMS1_DEPTH` levels below ``<root>`` (the
release's ``Training/Labeled/<id>``, ``Validation/<id>``, ``Testing/<id>``).
The CSV (any ``*M&Ms*.csv`` in ``<root>`` or a folder between it and the case
folders) gives per ``External code`` the ``ED`` and ``ES`` frame indices
(0-based, as the release counts them) and ``Vendor``/``Centre``; a case it
does not list takes ED and ES from the labels: the two frames that hold any,
ED the one with the larger LV cavity, and says so in its ``note``.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import LVSegError, one_line
from ..io._common import skip_reason
from .acdc import Case, find_cases, is_acdc_folder

#: Label map name -> {value: structure}.
LABEL_MAPS: dict[str, dict[int, str]] = {
    "acdc": {1: "RV", 2: "Myo", 3: "LV"},
    "mnms": {1: "LV", 2: "Myo", 3: "RV"},
}

#: Layouts ``evaluate`` knows, and the label map of each.
LAYOUTS: dict[str, str] = {"acdc": "acdc", "mnms": "mnms", "mnms1": "mnms"}

#: Folder levels below the root searched for M&Ms-1 case folders.
MNMS1_DEPTH: int = 3

#: Columns an M&Ms-1 CSV must have.
MNMS1_COLUMNS: tuple[str, ...] = ("External code", "ED", "ES")

#: Largest M&Ms-1 CSV read (bytes; the release's is about 20 kB).
MNMS1_CSV_MAX_BYTES: int = 10 * 2**20

_MNMS_IMAGE = re.compile(r"^(?P<id>.+)_SA_(?P<phase>ED|ES)\.nii(\.gz)?$")
_MNMS1_IMAGE = re.compile(r"^(?P<id>.+)_sa\.nii(\.gz)?$", re.IGNORECASE)


def convert_labels(mask: np.ndarray, source: str, target: str) -> np.ndarray:
    """``mask`` relabelled from label map ``source`` to ``target`` (uint8, same shape).

    Background stays 0; values outside the map raise :class:`LVSegError`.
    """
    for name in (source, target):
        if name not in LABEL_MAPS:
            raise LVSegError(f"unknown label map {name!r}; use one of {', '.join(LABEL_MAPS)}")
    arr = np.asarray(mask)
    if source == target:
        return arr.astype(np.uint8, copy=False)
    value_of = {structure: value for value, structure in LABEL_MAPS[target].items()}
    table = np.zeros(256, np.uint8)
    for value, structure in LABEL_MAPS[source].items():
        table[value] = value_of[structure]
    if arr.size and (arr.min() < 0 or arr.max() > max(LABEL_MAPS[source])):
        raise LVSegError(f"label map has values outside 0..{max(LABEL_MAPS[source])}")
    return table[arr.astype(np.intp)]


@dataclass(frozen=True)
class LayoutCase(Case):
    """A :class:`~lvseg_core.data.Case` of any layout, with its label map.

    Attributes:
        label_map: convention of ``label`` (a key of :data:`LABEL_MAPS`).
        case_name: output name (e.g. ``"A0S9V9_SA_ED"``); "" keeps the ACDC name.
        time_index: frame of a 4D ``image``/``label`` (0-based), None for 3D files.
        vendor, centre: scanner vendor and centre (M&Ms-1 CSV), or "".
        note: how ED/ES were found when it is worth saying, or "".
        problem: why the case cannot be scored (one line), or "".
    """

    label_map: str = "acdc"
    case_name: str = ""
    time_index: int | None = None
    vendor: str = ""
    centre: str = ""
    note: str = ""
    problem: str = ""

    @property
    def name(self) -> str:
        return self.case_name or super().name


def _mnms_folders(root: Path) -> list[Path]:
    if any(_MNMS_IMAGE.match(p.name) for p in root.iterdir() if p.is_file()):
        return [root]
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")
                  and any(_MNMS_IMAGE.match(p.name) for p in d.iterdir() if p.is_file()))


def is_mnms_folder(path: str | Path) -> bool:
    """True when ``path`` is one M&Ms-2 case folder or a folder of them."""
    path = Path(path)
    return path.is_dir() and bool(_mnms_folders(path))


def detect_layout(path: str | Path) -> str | None:
    """``"acdc"``, ``"mnms"``, ``"mnms1"`` or None for a folder."""
    if is_acdc_folder(path):
        return "acdc"
    if is_mnms_folder(path):
        return "mnms"
    if Path(path).is_dir() and _mnms1_folders(Path(path)):
        return "mnms1"
    return None


def _mnms1_image(folder: Path) -> Path | None:
    """The ``<id>_sa.nii[.gz]`` cine of a case folder, or None."""
    try:
        images = sorted(p for p in folder.iterdir() if _MNMS1_IMAGE.match(p.name))
    except OSError:
        return None
    return images[0] if images else None


def _mnms1_folders(root: Path) -> list[tuple[Path, Path]]:
    """``(case folder, cine)`` of every M&Ms-1 case at most :data:`MNMS1_DEPTH`
    levels below ``root`` (links leading outside ``root`` are not followed)."""
    top = root.resolve()
    found, level = [], [root]
    for _ in range(MNMS1_DEPTH + 1):
        below = []
        for folder in level:
            image = _mnms1_image(folder)
            if image is not None and not skip_reason(image, top):
                found.append((folder, image))
                continue
            try:
                below += sorted(d for d in folder.iterdir() if d.is_dir()
                                and not d.name.startswith(".") and not skip_reason(d, top))
            except OSError:
                continue
        level = below
    return found


def _csv_rows(path: Path) -> dict[str, dict[str, str]]:
    """``External code`` -> row of an M&Ms-1 CSV (the first row of a code wins).

    Raises:
        LVSegError: unreadable, too large, or without the :data:`MNMS1_COLUMNS`.
    """
    try:
        size = path.stat().st_size
        if size > MNMS1_CSV_MAX_BYTES:
            raise LVSegError(f"{path.name}: {size / 2**20:.0f} MB is too large for an M&Ms "
                             f"information CSV (at most {MNMS1_CSV_MAX_BYTES // 2**20} MB)")
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in MNMS1_COLUMNS if c not in columns]
            if missing:
                raise LVSegError(f"{path.name}: not an M&Ms information CSV: no column "
                                 f"{', '.join(repr(c) for c in missing)} (needs "
                                 f"{', '.join(MNMS1_COLUMNS)})")
            rows: dict[str, dict[str, str]] = {}
            for raw in reader:
                row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()
                       if isinstance(v, str)}
                rows.setdefault(row.get("External code", ""), row)
    except OSError as err:
        raise LVSegError(f"{path.name}: cannot read ({err.strerror or err})") from None
    except csv.Error as err:
        raise LVSegError(f"{path.name}: not a readable CSV ({one_line(err)})") from None
    rows.pop("", None)
    return rows


def _mnms1_table(root: Path, folders: list[Path]) -> tuple[dict[str, dict[str, str]], str]:
    """Rows and file name of the M&Ms-1 CSV of ``root`` ({} and "" when none):
    the last by name of the ``*M&Ms*.csv`` files in ``root`` and in the folders
    between it and the case folders."""
    top = root.resolve()
    places = {root}
    for folder in folders:
        parent = folder.parent
        while parent != root and root in parent.parents:
            places.add(parent)
            parent = parent.parent
    tables = sorted((p for place in places for p in place.glob("*.csv")
                     if "m&ms" in p.name.lower() and p.is_file() and not skip_reason(p, top)),
                    key=lambda p: p.name)
    return (_csv_rows(tables[-1]), tables[-1].name) if tables else ({}, "")


def _frame_index(row: dict[str, str], phase: str, frames: int, table: str) -> tuple[int, str]:
    """The 0-based ``phase`` frame of a CSV row, or -1 and why it is unusable."""
    text = row.get(phase, "")
    try:
        value = float(text)
    except ValueError:
        return -1, f"{table}: {phase} {text[:20]!r} is not a frame index"
    if not value.is_integer() or not 0 <= value < frames:
        return -1, (f"{table}: {phase} frame {text[:20]} is outside the cine's {frames} "
                    f"frames (0 to {frames - 1})")
    return int(value), ""


def mnms1_cases(root: Path) -> list[LayoutCase]:
    """The ED and ES frames of every M&Ms-1 case of ``root`` (see the module
    docstring); cases whose frames cannot be found carry a ``problem``.

    Raises:
        LVSegError: the CSV is unreadable or lacks a needed column.
    """
    from ..io.nifti import labelled_frames, nifti_frames, nifti_stem

    found = _mnms1_folders(root)
    table, table_name = _mnms1_table(root, [folder for folder, _ in found])
    cases = []
    for folder, image in found:
        case_id = nifti_stem(image.name)[:-3]
        label = image.with_name(image.name.replace(".nii", "_gt.nii", 1))
        label = label if label.is_file() and not skip_reason(label, root.resolve()) else None
        row = table.get(case_id, {})
        base = LayoutCase(case_id, 0, "", "", image, label, "mnms", f"{case_id}_sa",
                          vendor=row.get("Vendor", ""), centre=row.get("Centre", ""))
        try:
            frames = nifti_frames(image)[3]
            if row:
                for phase in ("ED", "ES"):
                    t, problem = _frame_index(row, phase, frames, table_name)
                    cases.append(replace(base, frame=t + 1, phase=phase, time_index=t,
                                         case_name=f"{case_id}_{phase}", problem=problem))
                continue
            if label is None:
                cases.append(replace(base, problem="no ED/ES frames: not in an M&Ms CSV, "
                                                   "and no labels"))
                continue
            labelled = labelled_frames(label)
        except LVSegError as err:
            cases.append(replace(base, problem=one_line(err)))
            continue
        if len(labelled) != 2:
            cases.append(replace(base, problem=f"{label.name}: {len(labelled)} labelled "
                                               "frame(s), not 2, and no M&Ms CSV row gives "
                                               "ED and ES"))
            continue
        ed, es = sorted(labelled, key=lambda t: (-labelled[t], t))
        note = (f"ED frame {ed} and ES frame {es} taken from the labelled frames of "
                f"{label.name} (no M&Ms CSV row; ED has the larger LV cavity)")
        for phase, t in (("ED", ed), ("ES", es)):
            cases.append(replace(base, frame=t + 1, phase=phase, time_index=t,
                                 case_name=f"{case_id}_{phase}", note=note))
    return cases


def mnms_cases(root: Path) -> list[LayoutCase]:
    """The ED/ES images (with their ``_gt`` labels when present) of an M&Ms-2 folder."""
    cases = []
    for folder in _mnms_folders(root):
        for image in sorted(folder.iterdir()):
            match = _MNMS_IMAGE.match(image.name)
            if not match or not image.is_file():
                continue
            label = image.with_name(image.name.replace(".nii", "_gt.nii", 1))
            phase = match.group("phase")
            cases.append(LayoutCase(folder.name, 1 if phase == "ED" else 2, phase, "", image,
                                    label if label.is_file() else None, "mnms",
                                    image.name.split(".nii")[0]))
    return cases


def find_layout_cases(root: str | Path, layout: str | None = None,
                      require_labels: bool = False,
                      notes: list[str] | None = None) -> tuple[str, list[LayoutCase]]:
    """The layout (given or detected) and the cases of ``root``; ``notes`` gets a
    line per skipped link (:func:`~lvseg_core.data.find_cases`).

    Raises:
        LVSegError: unknown layout, a folder of neither layout, or no (labelled) cases.
    """
    root = Path(root)
    if not root.is_dir():
        raise LVSegError(f"{root}: no such folder")
    if layout is not None and layout not in LAYOUTS:
        raise LVSegError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    layout = layout or detect_layout(root)
    if layout is None:
        raise LVSegError(f"{root}: neither an ACDC folder (patientNNN/Info.cfg) nor an M&Ms "
                         "folder (<id>/<id>_SA_ED.nii.gz, or M&Ms-1 <id>/<id>_sa.nii.gz)")
    if layout == "acdc":
        return layout, [LayoutCase(c.patient, c.frame, c.phase, c.group, c.image, c.label,
                                   "acdc") for c in find_cases(root, require_labels, notes)]
    cases = mnms_cases(root) if layout == "mnms" else mnms1_cases(root)
    if require_labels:
        cases = [c for c in cases if c.label is not None]
    if not cases:
        what = "labelled " if require_labels else ""
        pattern = "_SA_ED[_gt]" if layout == "mnms" else "_sa[_gt]"
        raise LVSegError(f"{root}: no {what}{'M&Ms-1' if layout == 'mnms1' else 'M&Ms'} "
                         f"cases (<id>/<id>{pattern}.nii.gz)")
    return layout, cases
