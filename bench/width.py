"""Width: what a wider or narrower network costs in speed, and what it buys in Dice.

For each width of each architecture (:data:`WIDTHS`, the bundled one among
them), on the same real volumes (validation patients first) and in the same
run: parameters, network GFLOP per slice (multiply-add counted as 2),
seconds per volume and slices per second of the batched
:class:`~lvseg_core.inference.Segmenter` (torch, the default precision:
bfloat16 autocast on CPUs that compute it natively). Speed does not depend on
the values of the weights, so every width is timed untrained (random init).

Dice comes only from trained weights: each ``--trained`` folder (a weights
folder, or a training run with an exported model) is evaluated on the
validation split and shown beside the width its ``config.json`` has::

    python -m bench.width --models vnet --cases 2 --trained weights/vnet runs/vnet-w16/model
    python -m bench.width --json bench/results/width.json        # every architecture

Timings on a shared machine vary with its load: the JSON records the load
average before and after.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from bench.bench_inference import pick_volumes, timed
from bench.common import (DISPLAY, add_common_options, data_problem, environment, fmt, log,
                          pick_device, run_main, setup_torch, shown_path, split_patients,
                          write_json)
from bench.speed import gflop_per_slice
from lvseg_core.errors import LVSegError

#: The bundled V-Net's through-plane kernel sizes per level (in-plane only at the finest two).
ANISO = [1, 1, 3, 3]

#: Widths per architecture: ``(label, arch_args)``; the one of the bundled weights'
#: ``config.json`` is marked "bundled" when measured (:func:`bundled_args`).
WIDTHS: dict[str, list[tuple[str, dict]]] = {
    "unet": [("decoder 64-8", {"decoder_channels": [64, 32, 16, 8]}),
             ("decoder 128-16", {}),
             ("decoder 256-32", {"decoder_channels": [256, 128, 64, 32]}),
             ("resnet18, decoder 256-32", {"encoder_name": "tu-resnet18",
                                           "decoder_channels": [256, 128, 64, 32]})],
    "attention_unet": [("channels 8-128", {"channels": [8, 16, 32, 64, 128]}),
                       ("channels 16-256", {}),
                       ("channels 32-512", {"channels": [32, 64, 128, 256, 512]})],
    "vnet": [("base 8, 5x5x5 kernels", {}),
             ("base 16, 5x5x5 kernels", {"base_channels": 16}),
             ("base 4, z kernels 1-1-3-3", {"base_channels": 4, "z_kernels": ANISO}),
             ("base 8, z kernels 1-1-3-3", {"z_kernels": ANISO}),
             ("base 16, z kernels 1-1-3-3", {"base_channels": 16, "z_kernels": ANISO}),
             ("base 24, z kernels 1-1-3-3", {"base_channels": 24, "z_kernels": ANISO})],
}


def bundled_args(arch: str) -> dict | None:
    """The ``arch_args`` of ``arch``'s bundled weights, or None without them."""
    from lvseg_core.hub import bundled_folder
    from lvseg_core.models import read_config

    folder = bundled_folder(arch)
    if not (folder / "config.json").is_file():
        return None
    return read_config(folder).get("arch_args") or {}


def time_width(arch: str, arch_args: dict, scans: Sequence, device, repeats: int,
               warmup: int) -> dict[str, Any]:
    """Parameters, GFLOP per slice and batched speed of an untrained ``arch``."""
    import torch

    from lvseg_core.inference import Segmenter
    from lvseg_core.models import LVSegModel

    torch.manual_seed(0)
    model = LVSegModel(arch, arch_args).to(device).eval()
    shape = scans[0].shape3d
    gflop = gflop_per_slice(model, shape)
    segmenter = Segmenter(model, device)
    seconds = slices = 0.0
    for scan in scans:
        median, _, _ = timed(lambda: segmenter.segment(scan), warmup, repeats)
        seconds += median
        slices += scan.shape3d[2]
    return {"arch_args": arch_args, "parameters": model.num_parameters,
            "gflop_per_slice": gflop, "precision": segmenter.precision_label,
            "seconds_per_volume": seconds / len(scans),
            "slices_per_second": slices / seconds if seconds > 0 else None}


def trained_folder(folder: Path) -> Path:
    """The weights folder at ``folder`` (a training run: its exported model)."""
    from lvseg_core.hub import weights_folder

    found = weights_folder(folder) if folder.is_dir() else None
    if found is None:
        raise LVSegError(f"--trained {folder}: no weights folder (model.safetensors) there")
    return found


def evaluate_trained(found: Path, data: Path, device, split: str = "validation"
                     ) -> dict[str, Any]:
    """Dice and EF error on ``split`` of the weights folder ``found``, with their width."""
    from lvseg_core.inference import Segmenter
    from lvseg_core.models import read_config
    from lvseg_core.workflows import evaluate_dataset

    config = read_config(found)
    segmenter = Segmenter.from_source(config["architecture"], str(found), device=device,
                                      backend="torch")
    result = evaluate_dataset(data, segmenter, patients=split_patients(data, split))
    return {"folder": shown_path(found), "architecture": config["architecture"],
            "arch_args": config.get("arch_args") or {}, "dice": result["dice"],
            "ef_abs_error": result["ef_abs_error"], "cases": result["cases"]}


def run(data: Path, archs: Sequence[str], cases: int, repeats: int, warmup: int,
        device, trained: Sequence[Path] = (), split: str = "validation") -> dict[str, Any]:
    """Every width of ``archs`` timed on ``cases`` volumes; ``trained`` evaluated on ``split``."""
    problem = data_problem(data)
    if problem:
        raise LVSegError(problem)
    folders = [trained_folder(Path(f)) for f in trained]     # before any timing
    scans = [s.require_3d() for s in pick_volumes(data, cases)]
    load_before = os.getloadavg()
    widths: dict[str, list[dict]] = {}
    for arch in archs:
        bundled = bundled_args(arch)
        for label, arch_args in WIDTHS[arch]:
            log(f"{arch} {label}: timing on {len(scans)} volumes ...")
            widths.setdefault(arch, []).append(
                {"label": label, "bundled": arch_args == bundled,
                 **time_width(arch, arch_args, scans, device, repeats, warmup)})
    unmatched = []
    for folder in folders:
        log(f"evaluating {folder} on the {split} patients ...")
        entry = evaluate_trained(folder, data, device, split)
        width = next((w for w in widths.get(entry["architecture"], [])
                      if w["arch_args"] == entry["arch_args"]), None)
        if width is None:
            unmatched.append(entry)
        else:
            width.setdefault("trained", []).append(entry)
    return {"kind": "width", "environment": environment(), "data": str(data), "split": split,
            "volumes": [s.name for s in scans], "repeats": repeats,
            "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
            "widths": widths, "unmatched": unmatched}


def markdown(report: dict) -> str:
    rows = ["| model | width | parameters | GFLOP/slice | s/volume | slices/s | trained: "
            "Dice mean (RV / Myo / LV) | EF err (pp) |", "|---|---|---:|---:|---:|---:|---|---:|"]
    for arch, widths in report["widths"].items():
        for w in widths:
            trained = w.get("trained") or [None]
            for t in trained:
                dice = (f"{fmt(t['dice']['mean'])} ({fmt(t['dice']['RV'])} / "
                        f"{fmt(t['dice']['Myo'])} / {fmt(t['dice']['LV'])})"
                        if t else "not trained")
                label = w["label"] + (" (bundled)" if w.get("bundled") else "")
                rows.append(f"| {DISPLAY.get(arch, arch)} | {label} | "
                            f"{w['parameters'] / 1e6:.2f} M | {fmt(w['gflop_per_slice'], 2)} | "
                            f"{fmt(w['seconds_per_volume'], 2)} | "
                            f"{fmt(w['slices_per_second'], 1)} | {dice} | "
                            f"{fmt(t['ef_abs_error'], 2) if t else ''} |")
    return "\n".join(rows)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.width",
                                     description=__doc__.split("\n\n")[0])
    add_common_options(parser, cases_default=2, json_default="bench/results/width.json")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--trained", type=Path, nargs="*", default=[], metavar="FOLDER",
                        help="trained weights to evaluate on the validation split, each "
                             "shown beside its width")
    return parser.parse_args(argv)


def _main(args) -> int:
    setup_torch(args.threads)
    report = run(args.data, args.models, args.cases, args.repeats, args.warmup,
                 pick_device(args.device), args.trained, args.split)
    write_json(report, args.json)
    print(markdown(report))
    for entry in report["unmatched"]:
        print(f"note: {entry['folder']} has a width ({entry['arch_args']}) not in WIDTHS")
    log(f"wrote {args.json}")
    return 0


def main(argv=None) -> int:
    return run_main(_main, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
