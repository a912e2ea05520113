"""Regional wall thickness (AHA 16 segments) by pathology group, from expert labels.

For every ACDC patient with labelled ED and ES frames, the 16-segment wall
thickness and thickening come from :func:`lvseg_core.regional.aha_wall_thickness`
on the manual label maps; the table gives per group the mean (and range) of
the mid-ventricular ED thickness, of the thickest segment at ED and of the
mean systolic thickening.

    python -m bench.regional --json bench/results/regional.json
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path

from bench.common import data_problem, default_data, fmt, log, run_main, write_json
from lvseg_core.errors import LVSegError

#: Study figures reported per group (keys of lvseg_core.regional.thickness_summary).
FIGURES: tuple[str, ...] = ("mid_ed_mm", "max_ed_mm", "mean_thickening_pct")


def patient_thickness(folder: Path) -> dict:
    """AHA rows and summary of one ACDC patient folder, from its expert labels."""
    from lvseg_core.data import patient_cases
    from lvseg_core.io import load_nifti
    from lvseg_core.regional import aha_wall_thickness, thickness_summary

    frames = {c.phase: c for c in patient_cases(folder) if c.phase in ("ED", "ES") and c.label}
    if set(frames) != {"ED", "ES"}:
        raise LVSegError(f"{folder.name}: labelled ED and ES frames not both found")
    ed = load_nifti(frames["ED"].label)
    es = load_nifti(frames["ES"].label)
    rows = aha_wall_thickness(ed.array.astype("uint8"), es.array.astype("uint8"), ed.spacing,
                              ed.affine)
    return {"patient": folder.name, "group": frames["ED"].group, "segments": rows,
            **thickness_summary(rows)}


def _stats(values: list[float]) -> dict:
    kept = [v for v in values if math.isfinite(v)]
    if not kept:
        return {"n": 0, "mean": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"n": len(kept), "mean": sum(kept) / len(kept), "min": min(kept), "max": max(kept)}


def compute(data: Path, progress=None) -> dict:
    """Per patient and per group figures of every labelled patient under ``data``."""
    folders = sorted(p for p in Path(data).iterdir() if (p / "Info.cfg").is_file())
    patients, failed = [], []
    for i, folder in enumerate(folders, start=1):
        try:
            patients.append(patient_thickness(folder))
        except LVSegError as err:
            failed.append({"patient": folder.name, "error": str(err)})
        if progress:
            progress(i, len(folders), folder.name)
    groups: dict[str, list[dict]] = defaultdict(list)
    for p in patients:
        groups[p["group"]].append(p)
    by_group = {g: {f: _stats([p[f] for p in ps]) for f in FIGURES} for g, ps in sorted(groups.items())}
    return {"kind": "regional", "source": "expert labels", "data": str(data),
            "by_group": by_group, "patients": patients, "failed": failed}


def table(result: dict) -> str:
    """Markdown table: group, n, mid ED, thickest segment ED, thickening."""
    lines = ["| group | n | mid ED thickness mm, mean (range) | thickest segment ED mm, mean "
             "(range) | mean thickening %, mean (range) |", "|---|---|---|---|---|"]
    for group, figures in result["by_group"].items():
        cells = [f"{fmt(s['mean'], 1)} ({fmt(s['min'], 1)}-{fmt(s['max'], 1)})"
                 for s in (figures[f] for f in FIGURES)]
        lines.append(f"| {group} | {figures['mid_ed_mm']['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(args) -> int:
    problem = data_problem(args.data)
    if problem:
        raise LVSegError(problem)
    from tqdm import tqdm

    folders = [p for p in Path(args.data).iterdir() if (p / "Info.cfg").is_file()]
    with tqdm(total=len(folders), desc="patients", file=sys.stderr, disable=None) as bar:
        result = compute(args.data, progress=lambda *_: bar.update(1))
    print(table(result))
    for f in result["failed"]:
        log(f"skipped {f['patient']}: {f['error']}")
    write_json(result, args.json)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_data(),
                        help="ACDC-layout folder (default: $LVSEG_DATA or ../shared/data/acdc)")
    parser.add_argument("--json", type=Path, default=None, help="write the result as JSON")
    return parser


if __name__ == "__main__":
    sys.exit(run_main(main, build_parser().parse_args()))
