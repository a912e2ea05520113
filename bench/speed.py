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
- ``backends`` (CPU): the same volumes through each way of running the
  network, side by side: the slice loop, torch float32, torch bfloat16
  autocast, ONNX Runtime float32 and ONNX Runtime int8 (static QDQ, calibrated
  as :mod:`lvseg_core.onnx_export` does), each in seconds per volume and
  slices per second, with the share of voxels equal to torch float32;
- ``ceiling``: what this CPU allows: peak GFLOP/s of a large float32,
  bfloat16 and int8 matrix product (measured here, with torch), against the
  network's FLOPs per slice (``torch.utils.flop_counter.FlopCounterMode``,
  a multiply-add counted as 2), as slices per second of the network alone;
- ``ray``: the cohort engines on ``--ray-volumes`` U-Net volumes
  (:func:`bench.cohort_speed.run`): the local engine and Ray Data with 1 and
  2 workers, wall seconds (Ray start-up included), masks identical to the
  local engine, and what a rerun with ``resume`` rewrote;
- ``peak_rss_mb``: peak resident memory of the process
  (``resource.getrusage``), and ``cuda_peak_mb``
  (``torch.cuda.max_memory_allocated``) on a GPU. With ``--isolate`` (the
  default of this command) each model runs in its own process, so the peak
  belongs to that model alone.

    python -m bench.speed --models unet --cases 2 --repeats 3 --ray-volumes 8 \
        --json bench/results/speed.json

Timings on a shared machine vary with its load: the JSON records the load
average before and after.
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
from bench.common import (ROOT, ModelSpec, add_common_options, data_problem, default_data,
                          environment, finish, fmt, log, pick_device, reason, resolve_models,
                          run_main, setup_torch)
from lvseg_core.errors import LVSegError

#: Ray Data actor pool sizes timed against the local engine.
RAY_WORKERS: tuple[int, ...] = (1, 2)


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


def matmul_peak(dtype: str, size: int = 2048, repeats: int = 3) -> float:
    """Best GFLOP/s (int8: GOP/s) of a ``size`` x ``size`` matrix product with torch
    on the CPU (``torch._int_mm`` for int8)."""
    import torch

    if dtype == "int8":
        a = torch.randint(-128, 127, (size, size), dtype=torch.int8)
        b = torch.randint(-128, 127, (size, size), dtype=torch.int8)
        product = lambda: torch._int_mm(a, b)  # noqa: E731
    else:
        kind = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
        a, b = torch.randn(size, size, dtype=kind), torch.randn(size, size, dtype=kind)
        product = lambda: a @ b  # noqa: E731
    product()
    best = min(timed(product, 0, repeats)[1])
    return 2 * size ** 3 / best / 1e9


def cpu_ceiling() -> dict[str, Any]:
    """Measured matrix-product peaks of this CPU and the ISA extensions it has."""
    from lvseg_core.inference import cpu_flags

    flags = cpu_flags()
    out: dict[str, Any] = {"isa": sorted(f for f in flags if f.startswith(("avx512", "amx",
                                                                          "avx_vnni")))}
    for dtype in ("fp32", "bf16", "int8"):
        try:
            out[f"{dtype}_gflops"] = matmul_peak(dtype)
        except (RuntimeError, NotImplementedError) as err:
            out[f"{dtype}_gflops"] = None
            out[f"{dtype}_note"] = reason(err)
    return out


def gflop_per_slice(model, shape: Sequence[int]) -> float:
    """Network GFLOP per slice of a frame of in-plane ``shape[:2]`` (mm grid of the
    plan) and ``shape[2]`` slices, multiply-add counted as 2."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from lvseg_core.preprocess import prepare

    image = prepare(np.zeros(shape, np.float32) + np.arange(shape[0])[:, None, None],
                    (1.5625, 1.5625, 10.0), model_plan(model)).image
    x = image.permute(1, 0, 2, 3)[None] if model.spatial_dims == 3 else image[:1]
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model.float()(x)
    per = counter.get_total_flops() / 1e9
    return per / image.shape[0] if model.spatial_dims == 3 else per


def model_plan(model):
    from lvseg_core.preprocess import PreprocessPlan

    return PreprocessPlan.from_dict(model.preprocess)


def onnx_variants(model, folder: Path, data: Path) -> dict[str, Path]:
    """Float32 and int8 ONNX files of ``model`` in ``folder`` (int8 calibrated on
    training patients as :func:`lvseg_core.onnx_export.build` does; absent
    without the data)."""
    from lvseg_core import onnx_export

    paths = {"onnx_fp32": folder / "fp32.onnx"}
    onnx_export.export_fp32(model, paths["onnx_fp32"])
    try:
        calib, _ = onnx_export.pick_patients(data)
    except LVSegError as err:
        log(f"no int8 variant: {err}")
        return paths
    reader = onnx_export._calibration_reader(calib, model_plan(model), model.spatial_dims)
    paths["onnx_int8"] = folder / "int8.onnx"
    onnx_export.quantize_int8(paths["onnx_fp32"], paths["onnx_int8"], reader)
    return paths


class TorchRun:
    """A torch :class:`~lvseg_core.inference.Segmenter`'s network behind the
    ``run(array)`` of an ONNX network (for :func:`lvseg_core.onnx_export.fastest_batch`)."""

    def __init__(self, segmenter) -> None:
        self.segmenter = segmenter

    def run(self, image: np.ndarray):
        import torch

        return self.segmenter._logits(torch.from_numpy(image))


def measure_backends(model, scans: Sequence, repeats: int, warmup: int, data: Path,
                     slice_loop_s: float | None = None) -> dict[str, Any]:
    """Seconds per volume of each backend variant on ``scans`` (CPU), mask
    agreement with torch float32, network FLOPs and the CPU ceiling."""
    from lvseg_core import onnx_export
    from lvseg_core.onnx_export import OnnxNetwork
    from lvseg_core.inference import Segmenter

    slices = sum(s.shape3d[2] for s in scans)
    variants: dict[str, Any] = {}
    if slice_loop_s is not None:
        variants["slice_loop"] = {"seconds_per_volume": slice_loop_s / len(scans),
                                  "slices_per_second": slices / slice_loop_s,
                                  "note": "torch, default precision, batch of 1"}
    segmenters = {"torch_fp32": Segmenter(model, "cpu", precision="fp32", backend="torch"),
                  "torch_bf16": Segmenter(model, "cpu", precision="bf16", backend="torch")}
    batches: dict[str, dict] = {}
    probe = onnx_export.network_inputs(scans[0].array, scans[0].spacing, model_plan(model),
                                       model.spatial_dims)
    if model.spatial_dims == 2:  # torch's batch on this device: measured, not assumed
        sizes = sorted({1, 2, 4, 8, len(probe)} - {n for n in (2, 4, 8) if n >= len(probe)})
        for name, segmenter in segmenters.items():
            segmenter.batch_size, batches[name] = onnx_export.fastest_batch(
                TorchRun(segmenter), probe, candidates=sizes)
    with tempfile.TemporaryDirectory(prefix="lvseg-onnx-bench-") as tmp:
        for name, path in onnx_variants(model, Path(tmp), data).items():
            network = OnnxNetwork(path)
            if model.spatial_dims == 2:
                network.batch_size, batches[name] = onnx_export.fastest_batch(network, probe[:8])
            segmenters[name] = Segmenter(model, "cpu", onnx=network)
        reference = None
        for name, segmenter in segmenters.items():
            log(f"{model.architecture}: {name} ...")
            total, masks = 0.0, []
            for scan in scans:
                median, _, seg = timed(lambda: segmenter.segment(scan), warmup, repeats)
                total += median
                masks.append(seg.mask)
            reference = reference or masks
            variants[name] = {
                "seconds_per_volume": total / len(scans), "slices_per_second": slices / total,
                "batch_size": segmenter.onnx.batch_size if segmenter.onnx else
                segmenter.batch_size,
                "batch_seconds_per_slice": batches.get(name),
                "voxels_equal_torch_fp32": float(np.mean([np.mean(a == b) for a, b in
                                                          zip(masks, reference)]))}
    ceiling = cpu_ceiling()
    flops = gflop_per_slice(model, scans[0].shape3d)
    for name, dtype in (("torch_fp32", "fp32"), ("onnx_fp32", "fp32"), ("torch_bf16", "bf16"),
                        ("onnx_int8", "int8")):
        peak = ceiling.get(f"{dtype}_gflops")
        if name in variants and peak:
            variants[name]["ceiling_slices_per_second"] = peak / flops
            variants[name]["share_of_ceiling"] = variants[name]["slices_per_second"] / (
                peak / flops)
    return {"variants": variants, "gflop_per_slice": flops, "ceiling": ceiling}


def measure_model(spec: ModelSpec, scans: Sequence, device, repeats: int = 3,
                  warmup: int = 1, baseline: bool = True, backends: bool = True,
                  data: Path | None = None) -> dict:
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
    elif backends:
        loop = sum(r["slice_loop_s"] for r in rows) if "slice_loop_seconds_per_volume" in \
            result else None
        result["backends"] = measure_backends(model, scans, repeats, warmup,
                                              data or default_data(), loop)
    return result


def _isolated(spec: ModelSpec, data: Path, cases: int, repeats: int, warmup: int,
              device: str, baseline: bool, threads: int | None, backends: bool = True) -> dict:
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
        if not backends:
            command.append("--no-backends")
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
        threads: int | None = None, backends: bool = False, ray_volumes: int = 0,
        ray_workers: Sequence[int] = RAY_WORKERS) -> dict:
    """Speed of every available model, and with ``ray_volumes`` the cohort
    engines on that many U-Net volumes; the JSON-ready report."""
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
        "load_average_before": list(os.getloadavg()), "models": {}, "skipped": {}}
    for spec in specs:
        if not spec.available:
            report["skipped"][spec.arch] = spec.note
            log(f"{spec.arch}: skipped, {spec.note}")
            continue
        try:
            if isolate:
                report["models"][spec.arch] = _isolated(spec, data, cases, repeats, warmup,
                                                        device, baseline, threads, backends)
            else:
                report["models"][spec.arch] = measure_model(spec, scans, dev, repeats, warmup,
                                                            baseline, backends, data)
                report["models"][spec.arch]["isolated"] = False
        except Exception as err:  # one model failing must not stop the others
            report["skipped"][spec.arch] = f"timing failed: {reason(err)}"
            log(f"{spec.arch}: {report['skipped'][spec.arch]}")
    if ray_volumes:
        report["ray"] = measure_ray(data, specs, ray_volumes, ray_workers)
    report["load_average_after"] = list(os.getloadavg())
    return report


def measure_ray(data: Path, specs: Sequence[ModelSpec], volumes: int,
                workers: Sequence[int] = RAY_WORKERS) -> dict[str, Any]:
    """:func:`bench.cohort_speed.run` with the U-Net weights of ``specs``; a
    ``skipped`` note instead when Ray or those weights are missing."""
    from importlib.util import find_spec

    from bench import cohort_speed

    unet = next((s for s in specs if s.arch == "unet" and s.available), None)
    if unet is None:
        return {"skipped": "no U-Net weights"}
    if find_spec("ray") is None:
        return {"skipped": 'Ray is not installed (pip install "ray[data]")'}
    log(f"cohort engines: local and Ray {', '.join(map(str, workers))} worker(s) on "
        f"{volumes} volumes ...")
    try:
        return cohort_speed.run(data, volumes, list(workers), None, str(unet.folder))
    except Exception as err:  # the model timings above stay valid
        return {"skipped": f"cohort run failed: {reason(err)}"}


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
    for arch, r in report["models"].items():
        if "backends" in r:
            print_backends(arch, r["backends"])
    ray = report.get("ray")
    if ray:
        from bench.cohort_speed import print_table as print_engines

        print()
        if "skipped" in ray:
            print(f"cohort engines skipped: {ray['skipped']}")
        else:
            print_engines(ray)


def print_backends(arch: str, backends: dict) -> None:
    """The side-by-side table of one model's backend variants."""
    ceiling = backends["ceiling"]
    print(f"\n{arch}: {backends['gflop_per_slice']:.2f} GFLOP per slice; matmul peak "
          f"fp32 {fmt(ceiling.get('fp32_gflops'), 0)}, bf16 {fmt(ceiling.get('bf16_gflops'), 0)}"
          f" GFLOP/s, int8 {fmt(ceiling.get('int8_gflops'), 0)} GOP/s")
    print(f"{'variant':<14}{'s/volume':>10}{'slices/s':>10}{'batch':>7}{'ceiling/s':>11}"
          f"{'of ceiling':>11}{'= fp32':>9}")
    for name, v in backends["variants"].items():
        share = v.get("share_of_ceiling")
        print(f"{name:<14}{fmt(v['seconds_per_volume'], 3):>10}"
              f"{fmt(v['slices_per_second'], 1):>10}{fmt(v.get('batch_size'), 0):>7}"
              f"{fmt(v.get('ceiling_slices_per_second'), 0):>11}"
              f"{(f'{100 * share:.0f} %' if share else 'n/a'):>11}"
              f"{fmt(v.get('voxels_equal_torch_fp32'), 4):>9}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.speed",
                                     description=__doc__.split("\n\n")[0])
    add_common_options(parser, cases_default=3, json_default="bench/results/speed.json")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per volume")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per volume first")
    parser.add_argument("--no-baseline", action="store_true", help="skip the slice loop")
    parser.add_argument("--no-backends", action="store_true",
                        help="skip the side-by-side backends (torch fp32/bf16, ONNX fp32/int8) "
                             "and the CPU ceiling")
    parser.add_argument("--no-isolate", action="store_true",
                        help="time every model in this process (faster; the peak memory "
                             "is then that of the whole run)")
    parser.add_argument("--ray-volumes", type=int, default=8, metavar="N",
                        help="volumes segmented by the local engine and by Ray with 1 and 2 "
                             "workers (0: skip; the issue's figure used 40)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cases is None or args.cases < 1 or args.repeats < 1 or args.warmup < 0 or \
            args.ray_volumes < 0:
        parser.error("--cases and --repeats must be >= 1, --warmup and --ray-volumes >= 0")
    return args


def _main(args) -> int:
    setup_torch(args.threads)
    specs = resolve_models(args.models, args.weights_dir, None if args.worker else args.runs)
    isolate = not args.no_isolate and not args.worker
    report = run(args.data, specs, args.cases, args.repeats, args.warmup, args.device,
                 not args.no_baseline, isolate, args.threads, not args.no_backends,
                 0 if args.worker else args.ray_volumes)
    return finish(report, args.json, None if args.worker else print_table)


def main(argv=None) -> int:
    return run_main(_main, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
