"""Cohort engines side by side: local, and Ray Data with 1 and 2 workers, on N ACDC volumes.

Checks that every engine writes the same masks as the local one (and the
share of voxels that agree, when they differ) and that a
rerun with ``resume`` rewrites nothing; wall seconds per engine (Ray start-up
included).

    python -m bench.cohort_speed --volumes 40 --json bench/results/cohort_speed.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.common import default_data, log, run_main, write_json
from lvseg_core.errors import LVSegError


def _masks(out: Path) -> dict:
    import nibabel as nib
    import numpy as np

    return {p.name: np.asanyarray(nib.load(p).dataobj) for p in sorted(out.glob("*_seg.nii.gz"))}


def _equal_share(masks: dict, reference: dict) -> float:
    """Share of voxels equal to ``reference`` over all its masks (0 for a mask missing
    or of another shape): bf16 kernels may round differently in another process, so
    near-tied voxels of a weak model can flip although both engines are correct."""
    import numpy as np

    total = sum(m.size for m in reference.values())
    equal = sum(int(np.sum(masks[k] == m)) for k, m in reference.items()
                if k in masks and masks[k].shape == m.shape)
    return equal / total if total else 1.0


def run(data: Path, volumes: int, workers: list[int], backend: str | None,
        weights: str | None = None) -> dict:
    """Seconds and mask agreement of each engine on the first ``volumes`` frames
    (U-Net, ``weights`` a source of :func:`lvseg_core.hub.resolve_weights`,
    default the bundled ones)."""
    from lvseg_core.cohort import SegmenterSpec, run_cohort
    from lvseg_core.data import find_cases
    from lvseg_core.workflows import collect_inputs

    cases = find_cases(data)[:volumes]
    if not cases:
        raise LVSegError(f"{data}: no volumes for the cohort engines")
    spec = SegmenterSpec("unet", weights, device="cpu", backend=backend)
    report: dict = {"kind": "cohort_speed", "volumes": len(cases), "architecture": "unet",
                    "backend": backend or "default",
                    "load_average_before": list(os.getloadavg()), "engines": {}}
    with tempfile.TemporaryDirectory(prefix="lvseg-cohort-bench-") as tmp:
        inputs = collect_inputs([c.image for c in cases])
        runs = [("local", 1)] + [("ray", n) for n in workers]
        reference = None
        for engine, n in runs:
            out = Path(tmp) / f"{engine}-{n}"
            start = time.perf_counter()
            result = run_cohort(inputs, spec, out, engine=engine, workers=n)
            seconds = time.perf_counter() - start
            masks = _masks(out)
            reference = reference or masks
            equal = _equal_share(masks, reference)
            stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*_seg.nii.gz")}
            start = time.perf_counter()
            run_cohort(inputs, spec, out, engine=engine, workers=n, resume=True)
            resume_s = time.perf_counter() - start
            rewritten = sum(p.stat().st_mtime_ns != stamps[p.name]
                            for p in out.glob("*_seg.nii.gz"))
            name = engine if engine == "local" else f"ray-{n}"
            local_s = report["engines"].get("local", {}).get("seconds", seconds)
            report["engines"][name] = {
                "engine": engine, "workers": n,
                "seconds": seconds, "seconds_per_volume": seconds / len(cases),
                "speedup_vs_local": local_s / seconds if seconds > 0 else None,
                "written": len(result.outputs), "failed": len(result.failures),
                "masks_identical_to_local": masks.keys() == reference.keys() and equal == 1.0,
                "voxels_equal_to_local": equal,
                "resume_seconds": resume_s, "resume_rewrote": rewritten}
            log(f"{name}: {seconds:.1f} s, resume rewrote {rewritten}")
    report["load_average_after"] = list(os.getloadavg())
    return report


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.cohort_speed",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument("--volumes", type=int, default=40)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--backend", choices=("auto", "torch", "onnx"), default=None)
    parser.add_argument("--json", type=Path, default=Path("bench/results/cohort_speed.json"))
    return parser.parse_args(argv)


def _main(args) -> int:
    report = run(args.data, args.volumes, args.workers, args.backend)
    write_json(report, args.json)
    print_table(report)
    return 0


def print_table(report: dict) -> None:
    """One line per engine: seconds, per volume, mask identity, resume."""
    print(f"cohort engines, {report['volumes']} volumes (Ray start-up included):")
    for name, e in report["engines"].items():
        print(f"  {name:<8}{e['seconds']:8.1f} s  {e['seconds_per_volume']:6.2f} s/volume  "
              f"same masks as local: {e['masks_identical_to_local']}  "
              f"resume rewrote {e['resume_rewrote']} in {e['resume_seconds']:.1f} s")


def main(argv=None) -> int:
    return run_main(_main, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
