"""Other datasets' folder layouts and label maps: M&Ms / M&Ms-2 beside ACDC.

Label maps (value -> structure):

- ``acdc`` (ACDC, LVSeg's own): 1 RV cavity, 2 LV myocardium, 3 LV cavity;
- ``mnms`` (M&Ms and M&Ms-2 releases): 1 LV cavity, 2 LV myocardium, 3 RV cavity.

M&Ms-2 layout (short-axis ED/ES volumes)::

    <root>/<id>/<id>_SA_ED.nii.gz      image at end-diastole
    <root>/<id>/<id>_SA_ED_gt.nii.gz   its labels (mnms convention)
    <root>/<id>/<id>_SA_ES.nii.gz / <id>_SA_ES_gt.nii.gz

``<root>`` may also be one ``<id>`` folder. Other files (long-axis ``_LA_``
volumes, CSV tables) are ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import LVSegError
from .acdc import Case, find_cases, is_acdc_folder

#: Label map name -> {value: structure}.
LABEL_MAPS: dict[str, dict[int, str]] = {
    "acdc": {1: "RV", 2: "Myo", 3: "LV"},
    "mnms": {1: "LV", 2: "Myo", 3: "RV"},
}

#: Layouts ``evaluate`` knows, and the label map of each.
LAYOUTS: dict[str, str] = {"acdc": "acdc", "mnms": "mnms"}

_MNMS_IMAGE = re.compile(r"^(?P<id>.+)_SA_(?P<phase>ED|ES)\.nii(\.gz)?$")


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
    """

    label_map: str = "acdc"
    case_name: str = ""

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
    """``"acdc"``, ``"mnms"`` or None for a folder."""
    if is_acdc_folder(path):
        return "acdc"
    if is_mnms_folder(path):
        return "mnms"
    return None


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
                      require_labels: bool = False) -> tuple[str, list[LayoutCase]]:
    """The layout (given or detected) and the cases of ``root``.

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
                         "folder (<id>/<id>_SA_ED.nii.gz)")
    if layout == "acdc":
        cases = [LayoutCase(c.patient, c.frame, c.phase, c.group, c.image, c.label, "acdc")
                 for c in find_cases(root, require_labels=require_labels)]
    else:
        cases = mnms_cases(root)
        if require_labels:
            cases = [c for c in cases if c.label is not None]
        if not cases:
            what = "labelled " if require_labels else ""
            raise LVSegError(f"{root}: no {what}M&Ms cases (<id>/<id>_SA_ED[_gt].nii.gz)")
    return layout, cases
