"""Inference speed: seconds per volume for each architecture, on real ACDC volumes.

For every architecture with weights (bundled, ``--weights``, or random-init
weights with ``--random-init``), each volume is segmented with
:class:`lvseg_core.inference.Segmenter` (preprocessing, batched network,
restore to the input grid, largest-component post-processing); model loading
and file reading are excluded. After ``--warmup`` untimed runs per volume the
median of ``--repeats`` timed runs is taken.

Baseline: the same pipeline and the same network, but called slice by slice in
a Python loop (batch of 1) instead of one batched pass; its masks are checked
against the batched ones. The baseline does not apply to V-Net (one
volumetric pass).

    python -m bench.bench_inference --random-init --models unet --volumes 3 \
        --json bench/results/inference.json

Timings vary with machine load; the JSON records device, threads and versions.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

from bench.common import ARCHS, default_data
from lvseg_core.errors import LVSegError


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=ARCHS, default=list(ARCHS),
                        help="architectures to time (default: all)")
    parser.add_argument("--weights", default=None, metavar="SOURCE",
                        help="weights source (folder or Hub repo) for a single --models entry")
    parser.add_argument("--random-init", action="store_true",
                        help="use randomly initialised weights when none are available "
                             "(same speed as trained weights of the same widths)")
    parser.add_argument("--data", type=Path, default=default_data(),
                        help="ACDC-layout folder (default: $LVSEG_DATA or ../shared/data/acdc)")
    parser.add_argument("--volumes", type=int, default=3, help="number of volumes (default 3)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per volume")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per volume first")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--no-baseline", action="store_true", help="skip the slice-loop baseline")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.weights and len(args.models) != 1:
        parser.error("--weights needs exactly one --models entry")
    if args.volumes < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("--volumes and --repeats must be >= 1, --warmup >= 0")
    return args


def pick_volumes(root: Path, count: int):
    """The first ``count`` frames, validation patients first (stable choice)."""
    from lvseg_core.data import VALIDATION_PATIENTS, find_cases
    from lvseg_core.io import load_nifti

    cases = find_cases(root)
    val = set(VALIDATION_PATIENTS)
    cases.sort(key=lambda c: (c.patient not in val, c.patient, c.frame))
    scans = []
    for case in cases[:count]:
        scan = load_nifti(case.image)
        scan.name = case.name
        scans.append(scan)
    return scans


def get_model(arch: str, args, device):
    """(model, weights description) or (None, reason)."""
    import torch

    from lvseg_core.hub import available_bundled, load_model
    from lvseg_core.models import create_model

    if args.weights:
        model, info = load_model(arch, args.weights, device)
        return model, info.description
    if arch in available_bundled():
        model, info = load_model(arch, None, device)
        return model, info.description
    if args.random_init:
        torch.manual_seed(0)
        return create_model(arch).to(device).eval(), "random-init"
    return None, "no bundled weights (pass --weights or --random-init)"


def slice_loop(segmenter, scan):
    """The baseline: the Segmenter pipeline with the network called one slice at a time."""
    import numpy as np
    import torch

    from lvseg_core.postprocess import keep_largest_components
    from lvseg_core.preprocess import prepare, restore

    prepared = prepare(scan.array, scan.spacing, segmenter.plan)
    logits = []
    for i in range(prepared.image.shape[0]):  # one forward pass per slice
        logits.append(segmenter._logits(prepared.image[i:i + 1]).cpu())
    probs = restore(torch.softmax(torch.cat(logits), dim=1), prepared)
    labels = probs.argmax(0).numpy().astype(np.uint8)
    if segmenter.postprocess:
        labels = keep_largest_components(labels)
    if segmenter.device.type == "cuda":
        torch.cuda.synchronize(segmenter.device)
    return labels


def timed(fn, warmup: int, repeats: int):
    """(median seconds, all timed runs, last result)."""
    result = None
    for _ in range(warmup):
        result = fn()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs), runs, result


def bench(args) -> dict:
    import numpy as np
    import torch

    from lvseg_core.inference import Segmenter, default_device, device_name
    from lvseg_core.workflows import write_json

    if args.device == "cuda" and not torch.cuda.is_available():
        raise LVSegError("--device cuda: CUDA is not available here; use --device cpu")
    device = default_device() if args.device == "auto" else torch.device(args.device)
    scans = pick_volumes(args.data, args.volumes)
    report = {
        "device": device_name(device), "torch": torch.__version__,
        "python": platform.python_version(), "threads": torch.get_num_threads(),
        "data": str(args.data), "repeats": args.repeats, "warmup": args.warmup,
        "timing": "wall seconds per volume of Segmenter.segment (preprocess, network, "
                  "restore, post-process); model load and file reading excluded; "
                  "median of repeats",
        "volumes": [{"name": s.name, "shape": list(s.shape3d)} for s in scans],
        "results": {}, "skipped": {},
    }
    for arch in args.models:
        model, source = get_model(arch, args, device)
        if model is None:
            report["skipped"][arch] = source
            print(f"{arch}: skipped, {source}", file=sys.stderr)
            continue
        segmenter = Segmenter(model, device)
        rows = []
        for scan in scans:
            print(f"{arch}: {scan.name} ...", file=sys.stderr, flush=True)
            median, runs, seg = timed(lambda: segmenter.segment(scan), args.warmup, args.repeats)
            row = {"name": scan.name, "shape": list(scan.shape3d), "batched_s": median,
                   "batched_runs": runs}
            if not args.no_baseline and model.spatial_dims == 2:
                base, base_runs, labels = timed(lambda: slice_loop(segmenter, scan),
                                                args.warmup, args.repeats)
                row.update({"slice_loop_s": base, "slice_loop_runs": base_runs,
                            "speedup": base / median,
                            "mask_agreement": float(np.mean(labels == seg.mask))})
            rows.append(row)
        result = {"weights": source, "parameters": model.num_parameters,
                  "batch_size": segmenter.batch_size, "per_volume": rows,
                  "seconds_per_volume": float(np.mean([r["batched_s"] for r in rows]))}
        if all("slice_loop_s" in r for r in rows):
            result["slice_loop_seconds_per_volume"] = float(
                np.mean([r["slice_loop_s"] for r in rows]))
            result["speedup"] = result["slice_loop_seconds_per_volume"] / \
                result["seconds_per_volume"]
        report["results"][arch] = result
    if args.json:
        write_json(report, args.json)
    return report


def print_table(report: dict) -> None:
    print(f"device {report['device']}, torch {report['torch']}, median of "
          f"{report['repeats']} runs after {report['warmup']} warm-up")
    head = f"{'model':<15} {'volume':<20} {'shape':<12} {'batched s':>10} " \
           f"{'slice-loop s':>13} {'speed-up':>9}"
    print(head)
    print("-" * len(head))
    for arch, result in report["results"].items():
        for row in result["per_volume"]:
            shape = "x".join(map(str, row["shape"]))
            loop = f"{row['slice_loop_s']:.3f}" if "slice_loop_s" in row else "n/a"
            speed = f"{row['speedup']:.2f}x" if "speedup" in row else "n/a"
            print(f"{arch:<15} {row['name']:<20} {shape:<12} {row['batched_s']:>10.3f} "
                  f"{loop:>13} {speed:>9}")
        loop = result.get("slice_loop_seconds_per_volume")
        speed = result.get("speedup")
        print(f"{arch + ' mean':<15} {'(' + result['weights'] + ')':<33.33} "
              f"{result['seconds_per_volume']:>10.3f} "
              f"{(f'{loop:.3f}' if loop else 'n/a'):>13} "
              f"{(f'{speed:.2f}x' if speed else 'n/a'):>9}")
    for arch, reason in report["skipped"].items():
        print(f"{arch:<15} skipped: {reason}")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        report = bench(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 1
    except (LVSegError, OSError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    print_table(report)
    if args.json:
        print(f"results: {args.json.resolve()}")
    return 0 if report["results"] else 1


if __name__ == "__main__":
    sys.exit(main())
