"""Speed: seconds per volume, slices per second, cold model load, peak memory.

For each model with weights, on the same real volumes (validation patients
first) and in the same run:

- ``load_s``: cold model load (``LVSegModel.from_pretrained`` + move to the
  device; the weights file may be in the OS page cache), and
  ``first_inference_s``: the first segmentation after loading (lazy kernel
  set-up included);
- ``seconds_per_volume`` / ``slices_per_second``: the batched
  :class:`~lvseg_core.inference.Segmenter` (median of ``--repeats`` runs after
  ``--warmup``), preprocessing, network, restore and post-processing included;
- the baseline a user would otherwise write, the same network called slice by
  slice in a Python loop (``bench.bench_inference.slice_loop``), and the
  ratio ``speedup`` = baseline / batched. V-Net sees whole volumes, so it has
  no slice loop;
- ``peak_rss_mb``: peak resident memory of the process
  (``resource.getrusage``), and ``cuda_peak_mb``
  (``torch.cuda.max_memory_allocated``) on a GPU. With ``--isolate`` (the
  default of this command) each model runs in its own process, so the peak
  belongs to that model alone.

    python -m bench.speed --models unet --cases 2 --repeats 3 --json bench/results/speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.bench_inference import pick_volumes, slice_loop, timed
from bench.common import (ROOT, ModelSpec, add_common_options, data_problem, environment,
                          finish, fmt, log, pick_device, reason, resolve_models, run_main,
                          setup_torch)
from lvseg_core.errors import LVSegError


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB.

    Linux: ``VmHWM`` of ``/proc/self/status`` (it starts afresh in a new
    program, unlike ``ru_maxrss``, which a child started by a bigger parent
    inherits); elsewhere ``resource.getrusage``.
    """
    import resource

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 1024.0 / 1024.0


def measure_model(spec: ModelSpec, scans: Sequence, device, repeats: int = 3,
                  warmup: int = 1, baseline: bool = True) -> dict:
    """Timings and memory of one model on ``scans`` (see the module docstring)."""
    import torch

    from lvseg_core.inference import Segmenter
    from lvseg_core.models import LVSegModel

    if spec.folder is None:
        raise LVSegError(f"{spec.arch}: {spec.note}")
    cuda = torch.device(device).type == "cuda"
    rss_before = peak_rss_mb()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    model = LVSegModel.from_pretrained(str(spec.folder)).to(device).eval()
    if cuda:
        torch.cuda.synchronize()
    load_s = time.perf_counter() - start
    segmenter = Segmenter(model, device)
    first_s = segmenter.segment(scans[0]).seconds
    rows = []
    for scan in scans:
        log(f"{spec.arch}: timing {scan.name} ...")
        median, runs, seg = timed(lambda: segmenter.segment(scan), warmup, repeats)
        row: dict[str, Any] = {"name": scan.name, "shape": list(scan.shape3d),
                               "batched_s": median, "batched_runs": runs}
        if baseline and model.spatial_dims == 2:
            base, base_runs, labels = timed(lambda: slice_loop(segmenter, scan), warmup, repeats)
            row.update({"slice_loop_s": base, "slice_loop_runs": base_runs,
                        "speedup": base / median if median > 0 else None,
                        "mask_agreement": float(np.mean(labels == seg.mask))})
        rows.append(row)
    slices = sum(r["shape"][2] for r in rows)
    batched = sum(r["batched_s"] for r in rows)
    result: dict[str, Any] = {
        "weights_id": spec.fingerprint(), "weights_source": spec.source,
        "parameters": model.num_parameters, "spatial_dims": model.spatial_dims,
        "batch_size": segmenter.batch_size, "device": segmenter.device_label,
        "precision": getattr(segmenter, "precision", "auto"),
        "load_s": load_s, "first_inference_s": first_s,
        "seconds_per_volume": batched / len(rows),
        "slices_per_second": slices / batched if batched > 0 else None,
        "per_volume": rows,
        "rss_before_load_mb": rss_before, "peak_rss_mb": peak_rss_mb(),
    }
    if all("slice_loop_s" in r for r in rows):
        loop = sum(r["slice_loop_s"] for r in rows)
        result["slice_loop_seconds_per_volume"] = loop / len(rows)
        result["slice_loop_slices_per_second"] = slices / loop if loop > 0 else None
        result["speedup"] = loop / batched if batched > 0 else None
    elif model.spatial_dims == 3:
        result["baseline_note"] = "V-Net segments whole volumes in one pass: no slice loop"
    if cuda:
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def _isolated(spec: ModelSpec, data: Path, cases: int, repeats: int, warmup: int,
              device: str, baseline: bool, threads: int | None) -> dict:
    """:func:`measure_model` in a fresh Python process (clean peak memory, cold load)."""
    with tempfile.TemporaryDirectory(prefix="lvseg-speed-") as tmp:
        out = Path(tmp) / "result.json"
        # The worker finds weights as <weights-dir>/<arch>: link them there (a
        # training run's model/ folder is not named after its architecture).
        link_root = Path(tmp) / "weights"
        link_root.mkdir()
        os.symlink(spec.folder.resolve(), link_root / spec.arch, target_is_directory=True)
        command = [sys.executable, "-m", "bench.speed", "--worker", "--models", spec.arch,
                   "--weights-dir", str(link_root), "--data", str(data),
                   "--cases", str(cases), "--repeats", str(repeats),
                   "--warmup", str(warmup), "--device", device, "--json", str(out)]
        if threads:
            command += ["--threads", str(threads)]
        if not baseline:
            command.append("--no-baseline")
        proc = subprocess.run(command, cwd=str(ROOT), capture_output=True, text=True)
        if proc.returncode != 0 or not out.is_file():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise LVSegError(f"speed worker failed: {last}")
        report = json.loads(out.read_text())
    result = report["models"].get(spec.arch)
    if result is None:
        raise LVSegError(report["skipped"].get(spec.arch, "speed worker gave no result"))
    result["weights_id"] = spec.fingerprint()
    result["weights_source"] = spec.source
    result["isolated"] = True
    return result


def run(data: Path, specs: Sequence[ModelSpec], cases: int = 3, repeats: int = 3,
        warmup: int = 1, device: str = "auto", baseline: bool = True, isolate: bool = False,
        threads: int | None = None) -> dict:
    """Speed of every available model; the JSON-ready report."""
    problem = data_problem(data)
    if problem:
        raise LVSegError(problem)
    dev = pick_device(device)
    scans = pick_volumes(data, max(1, cases))
    report: dict[str, Any] = {
        "kind": "speed", "environment": environment(), "data": str(data),
        "repeats": repeats, "warmup": warmup, "isolated": isolate,
        "timing": "wall seconds per volume of Segmenter.segment (preprocess, network, restore, "
                  "post-process), median of repeats; file reading excluded",
        "volumes": [{"name": s.name, "shape": list(s.shape3d)} for s in scans],
        "models": {}, "skipped": {}}
    for spec in specs:
        if not spec.available:
            report["skipped"][spec.arch] = spec.note
            log(f"{spec.arch}: skipped, {spec.note}")
            continue
        try:
            if isolate:
                report["models"][spec.arch] = _isolated(spec, data, cases, repeats, warmup,
                                                        device, baseline, threads)
            else:
                report["models"][spec.arch] = measure_model(spec, scans, dev, repeats, warmup,
                                                            baseline)
                report["models"][spec.arch]["isolated"] = False
        except Exception as err:  # one model failing must not stop the others
            report["skipped"][spec.arch] = f"timing failed: {reason(err)}"
            log(f"{spec.arch}: {report['skipped'][spec.arch]}")
    return report


def print_table(report: dict) -> None:
    print(f"{report['environment']['device']}, torch {report['environment']['torch']}, "
          f"median of {report['repeats']} runs after {report['warmup']} warm-up")
    print(f"{'model':<16}{'load s':>8}{'s/volume':>10}{'slices/s':>10}{'loop s/vol':>12}"
          f"{'speed-up':>10}{'peak MB':>9}")
    for arch, r in report["models"].items():
        print(f"{arch:<16}{fmt(r['load_s'], 2):>8}{fmt(r['seconds_per_volume'], 3):>10}"
              f"{fmt(r['slices_per_second'], 1):>10}"
              f"{fmt(r.get('slice_loop_seconds_per_volume'), 3):>12}"
              f"{fmt(r.get('speedup'), 2, 'x'):>10}{fmt(r['peak_rss_mb'], 0):>9}")
    for arch, note in report["skipped"].items():
        print(f"{arch:<16}skipped: {note}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.speed",
                                     description=__doc__.split("\n\n")[0])
    add_common_options(parser, cases_default=3, json_default="bench/results/speed.json")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per volume")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per volume first")
    parser.add_argument("--no-baseline", action="store_true", help="skip the slice loop")
    parser.add_argument("--no-isolate", action="store_true",
                        help="time every model in this process (faster; the peak memory "
                             "is then that of the whole run)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cases is None or args.cases < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("--cases and --repeats must be >= 1, --warmup >= 0")
    return args


def _main(args) -> int:
    setup_torch(args.threads)
    specs = resolve_models(args.models, args.weights_dir, None if args.worker else args.runs)
    isolate = not args.no_isolate and not args.worker
    report = run(args.data, specs, args.cases, args.repeats, args.warmup, args.device,
                 not args.no_baseline, isolate, args.threads)
    return finish(report, args.json, None if args.worker else print_table)


def main(argv=None) -> int:
    return run_main(_main, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
