"""Whole-command speed of ``predict`` on a 240-image cine DICOM series, side by side.

The series is made from a real ACDC patient with the project's DICOM writer:
``--slices`` slices x ``--frames`` phases, the phases blended from the
patient's ED and ES frames along one cardiac cycle (ED -> ES -> ED). Each
checkout given with ``--checkout NAME=PATH`` (default: this one) runs

    python -m lvseg_core predict <series> --model unet --out <tmp>

as a fresh process (imports, model load, DICOM read, segmentation, writing),
in turns, ``--repeats`` times; the median wall time is kept. For the code at
the start of issue 14::

    git worktree add /tmp/lvseg-base 33bfcc8
    python -m bench.predict_speed --checkout base=/tmp/lvseg-base --checkout now=. \\
        --json bench/results/predict_speed.json

Extra ``predict`` options for one checkout: ``NAME=PATH::--backend torch``.
Timings on a shared machine vary with its load: the JSON records it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, default_data, log, run_main, write_json
from lvseg_core.errors import LVSegError


def make_cine_series(data: Path, folder: Path, slices: int = 10, frames: int = 24,
                     patient: str = "patient002") -> dict:
    """Write a ``slices`` x ``frames`` cine DICOM series from ``patient``'s ED and
    ES frames into ``folder``; returns what was written."""
    import numpy as np

    from lvseg_core.data import read_info
    from lvseg_core.io import load_nifti, save_dicom_series
    from lvseg_core.scan import Scan

    info = read_info(data / patient / "Info.cfg")
    ed, es = (load_nifti(data / patient / f"{patient}_frame{int(info[p]):02d}.nii.gz")
              for p in ("ED", "ES"))
    if ed.shape3d[2] < slices:
        raise LVSegError(f"{patient} has {ed.shape3d[2]} slices, fewer than {slices}")
    weight = (1 - np.cos(2 * np.pi * np.arange(frames) / frames)) / 2  # 0 at ED, 1 at ES
    cine = np.stack([(1 - w) * ed.array[..., :slices] + w * es.array[..., :slices]
                     for w in weight], axis=-1)
    scan = Scan(cine.astype(np.float32), ed.affine, name=f"{patient}_cine")
    paths = save_dicom_series(scan, folder, series_description="LVSeg bench cine")
    return {"patient": patient, "shape": list(cine.shape), "images": len(paths),
            "megabytes": sum(p.stat().st_size for p in paths) / 1e6}


def parse_checkout(text: str) -> tuple[str, Path, list[str]]:
    """``NAME=PATH[::extra predict options]``."""
    name, sep, rest = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=PATH")
    path, _, extra = rest.partition("::")
    return name, Path(path).expanduser().resolve(), shlex.split(extra)


def predict_once(checkout: Path, series: Path, out: Path, extra: list[str]) -> float:
    """Wall seconds of one ``predict`` process in ``checkout``."""
    command = [sys.executable, "-m", "lvseg_core", "predict", str(series), "--model", "unet",
               "--out", str(out), "--device", "cpu", *extra]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=str(checkout), env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise LVSegError(f"{checkout}: predict failed: {last}")
    return seconds


def run(data: Path, checkouts: list[tuple[str, Path, list[str]]], repeats: int = 3,
        slices: int = 10, frames: int = 24) -> dict:
    """Median wall seconds of ``predict`` per checkout, run in turns."""
    import nibabel as nib
    import numpy as np

    report: dict = {"kind": "predict_speed", "load_average_before": list(os.getloadavg()),
                    "repeats": repeats, "checkouts": {}}
    with tempfile.TemporaryDirectory(prefix="lvseg-predict-bench-") as tmp:
        series = Path(tmp) / "cine"
        report["series"] = make_cine_series(data, series, slices, frames)
        log(f"series: {report['series']}")
        runs: dict[str, list[float]] = {name: [] for name, _, _ in checkouts}
        masks: dict[str, np.ndarray] = {}
        for i in range(repeats + 1):  # the first turn warms the page cache, untimed
            for name, path, extra in checkouts:
                out = Path(tmp) / f"out-{name}-{i}"
                seconds = predict_once(path, series, out, extra)
                log(f"{name} run {i}: {seconds:.2f} s")
                if i:
                    runs[name].append(seconds)
                else:
                    masks[name] = np.asanyarray(nib.load(next(out.glob("*_seg.nii.gz"))).dataobj)
        first = next(iter(masks.values()))
        for name, path, extra in checkouts:
            report["checkouts"][name] = {
                "path": str(path), "options": extra, "runs": runs[name],
                "median_s": statistics.median(runs[name]),
                "voxels_equal_first": float(np.mean(masks[name] == first))}
    base = report["checkouts"][checkouts[0][0]]["median_s"]
    for entry in report["checkouts"].values():
        entry["speedup_vs_first"] = base / entry["median_s"]
    report["load_average_after"] = list(os.getloadavg())
    return report


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.predict_speed",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", action="append", type=parse_checkout, default=None,
                        metavar="NAME=PATH[::OPTIONS]",
                        help="a checkout to time (repeatable; default: this one)")
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slices", type=int, default=10)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--json", type=Path, default=Path("bench/results/predict_speed.json"))
    args = parser.parse_args(argv)
    args.checkout = args.checkout or [("now", ROOT, [])]
    return args


def _main(args) -> int:
    report = run(args.data, args.checkout, args.repeats, args.slices, args.frames)
    write_json(report, args.json)
    print(f"predict of a {report['series']['images']}-image cine DICOM series "
          f"({'x'.join(map(str, report['series']['shape']))}), median of {args.repeats}:")
    for name, entry in report["checkouts"].items():
        print(f"  {name:<10}{entry['median_s']:8.2f} s  {entry['speedup_vs_first']:5.2f}x  "
              f"voxels equal to the first: {entry['voxels_equal_first']:.4f}  "
              f"{' '.join(entry['options'])}")
    return 0


def main(argv=None) -> int:
    return run_main(_main, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
