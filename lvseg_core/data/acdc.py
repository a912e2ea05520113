"""The ACDC folder layout: ``<root>/patientNNN/{Info.cfg, patientNNN_frameNN[_gt].nii.gz}``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import LVSegError

#: Pathology groups an ACDC Info.cfg may name.
GROUPS: tuple[str, ...] = ("DCM", "HCM", "MINF", "NOR", "RV")

_FRAME = re.compile(r"^(patient\d+)_frame(\d+)\.nii(\.gz)?$")


@dataclass(frozen=True)
class Case:
    """One frame of one patient in an ACDC-layout folder.

    Attributes:
        patient: folder name, e.g. ``"patient002"``.
        frame: frame number as in the file name (1-based, ACDC convention).
        phase: ``"ED"``, ``"ES"`` or ``""`` when Info.cfg names neither.
        group: pathology group from Info.cfg (DCM, HCM, MINF, NOR, RV) or "".
        image: path of the image.
        label: path of the expert label map, or None.
    """

    patient: str
    frame: int
    phase: str
    group: str
    image: Path
    label: Path | None

    @property
    def name(self) -> str:
        """Case name used for outputs, e.g. ``patient002_frame01``."""
        return f"{self.patient}_frame{self.frame:02d}"


def read_info(path: str | Path) -> dict[str, str]:
    """Parse an ACDC ``Info.cfg`` (``Key: value`` lines) into a dict."""
    info: dict[str, str] = {}
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as err:
        raise LVSegError(f"{path}: cannot read ({err.strerror})") from None
    for line in text.splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            info[key.strip()] = value.strip()
    return info


def is_acdc_folder(path: str | Path) -> bool:
    """True when ``path`` is one ACDC patient folder or a folder of them."""
    path = Path(path)
    if not path.is_dir():
        return False
    if (path / "Info.cfg").is_file():
        return True
    return any((p / "Info.cfg").is_file() for p in path.glob("patient*"))


def patient_cases(folder: Path) -> list[Case]:
    """The frames of one patient folder (images with an optional ``_gt`` label)."""
    info = read_info(folder / "Info.cfg") if (folder / "Info.cfg").is_file() else {}
    phases = {}
    for phase in ("ED", "ES"):
        if info.get(phase, "").strip().isdigit():
            phases[int(info[phase])] = phase
    group = info.get("Group", "")
    group = group if group in GROUPS else ""
    cases = []
    for image in sorted(folder.iterdir()):
        match = _FRAME.match(image.name)
        if not match:
            continue
        frame = int(match.group(2))
        label = image.with_name(image.name.replace(".nii", "_gt.nii", 1))
        cases.append(Case(match.group(1), frame, phases.get(frame, ""), group,
                          image, label if label.is_file() else None))
    return cases


def _shown(value: str) -> str:
    value = value if len(value) <= 40 else value[:37] + "..."
    return repr(value)


def info_problem(folder: Path) -> str:
    """Why a patient folder's ``Info.cfg`` cannot be trusted, or "": missing,
    ED/ES that are not frame numbers, a Group that is not one of :data:`GROUPS`."""
    path = folder / "Info.cfg"
    if not path.is_file():
        return "no Info.cfg: its ED/ES frames and group are unknown, patient not used"
    try:
        info = read_info(path)
    except LVSegError as err:
        return str(err)
    for phase in ("ED", "ES"):
        if not info.get(phase, "").isdigit():
            return f"Info.cfg {phase} {_shown(info.get(phase, ''))} is not a frame number"
    if info.get("Group", "") not in GROUPS:
        return (f"Info.cfg Group {_shown(info.get('Group', ''))} is not one of "
                f"{', '.join(GROUPS)}; group left empty")
    return ""


def _patient_folders(root: Path, notes: list[str] | None = None) -> list[Path]:
    """The sub-folders of ``root`` (sorted) that may be read as patient folders:
    a link leading outside ``root`` (or a broken one) is skipped, with a
    one-line note in ``notes``, so that nothing outside the input is read."""
    from ..io._common import skip_reason

    top = root.resolve()
    kept = []
    for path in sorted(root.iterdir()):
        if path.is_symlink() and (why := skip_reason(path, top)):
            if notes is not None:
                notes.append(f"{root.name}/{path.name} skipped: {why}")
        elif path.is_dir():
            kept.append(path)
    return kept


def dataset_problems(root: str | Path) -> list[dict[str, str]]:
    """``{"name", "error"}`` for each patient folder of an ACDC-layout ``root``
    with frame files whose Info.cfg is missing or invalid (:func:`info_problem`)."""
    root = Path(root)
    folders = [root] if (root / "Info.cfg").is_file() else [
        p for p in _patient_folders(root) if p.name.startswith("patient")]
    problems = []
    for folder in folders:
        if not any(_FRAME.match(p.name) for p in folder.iterdir()):
            continue
        problem = info_problem(folder)
        if problem:
            problems.append({"name": folder.name, "error": problem})
    return problems


def find_cases(root: str | Path, require_labels: bool = False,
               notes: list[str] | None = None) -> list[Case]:
    """All frames of an ACDC-layout folder (a patient folder or a folder of them).

    A patient folder that is a link leading outside ``root`` is skipped, with a
    one-line note appended to ``notes``.

    Raises:
        LVSegError: if the folder does not exist or holds no ACDC frames (or,
            with ``require_labels``, no labelled frames).
    """
    root = Path(root)
    if not root.is_dir():
        raise LVSegError(f"{root}: no such folder")
    folders = [root] if (root / "Info.cfg").is_file() else [
        p for p in _patient_folders(root, notes) if (p / "Info.cfg").is_file()]
    cases = [case for folder in folders for case in patient_cases(folder)]
    if require_labels:
        cases = [case for case in cases if case.label is not None]
    if not cases:
        what = "labelled frames (patientNNN_frameNN_gt.nii.gz)" if require_labels else "frames"
        raise LVSegError(f"{root}: no ACDC {what} found (expected patientNNN/Info.cfg layout)")
    return cases
