"""The command line: ``python -m lvseg_core {predict,evaluate,info}``.

Every user error (an unreadable scan, missing weights, a bad path) ends with a
single ``error: <message>`` line on stderr and exit code 1; argparse usage
errors exit with 2. Progress bars (tqdm) go to stderr and only show on a
terminal. Heavy modules (torch, MONAI) are imported after the arguments are
parsed, so ``--help`` and usage errors are instant.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

from . import settings
from .data.split import SPLITS
from .errors import LVSegError, one_line
from .registry import ARCHITECTURES, ENSEMBLE, model_argument

#: Architectures offered by ``--model`` (the torch-free registry).
MODEL_CHOICES: tuple[str, ...] = tuple(ARCHITECTURES)

#: Label maps and layouts (kept equal to ``data.layouts.LABEL_MAPS`` and
#: ``LAYOUTS`` by the tests).
LABEL_MAP_CHOICES: tuple[str, ...] = ("acdc", "mnms")
LAYOUT_CHOICES: tuple[str, ...] = ("acdc", "mnms", "mnms1")

#: Packages reported by ``info``.
_PACKAGES = ("torch", "monai", "segmentation-models-pytorch", "numpy", "scipy", "nibabel",
             "pydicom", "huggingface_hub", "safetensors", "tqdm")

_EPILOG = """\
examples:
  python -m lvseg_core predict scan.nii.gz dicom_folder/ --model unet --out out/
  python -m lvseg_core predict ../shared/data/acdc/patient002 --model unet \\
      --weights owner/lvseg-unet --out out/
  python -m lvseg_core evaluate --data ../shared/data/acdc --model unet --json eval.json
  python -m lvseg_core info

--weights: 'bundled' (default: weights/<model>/ in the repository), a local
folder with config.json + model.safetensors (or a training run folder), or a
Hugging Face Hub repo id owner/name[@revision] (HF_HUB_OFFLINE=1: cache only).
"""


def _error(message: str) -> None:
    print(f"error: {one_line(message)}", file=sys.stderr)


def _warn(message: str) -> None:
    print(f"warning: {one_line(message)}", file=sys.stderr)


def _note(message: str) -> None:
    print(f"note: {one_line(message)}", file=sys.stderr)


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=model_argument,
                        metavar="{" + ",".join((*MODEL_CHOICES, ENSEMBLE)) + "}",
                        help="architecture; 'ensemble' averages the class probabilities of "
                             "all of them, a comma list (unet,attention_unet) of those named")
    parser.add_argument("--weights", default=None, metavar="SOURCE",
                        help="weights: 'bundled' (default), a folder, or a Hub repo "
                             "owner/name[@revision]")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to run (default: CUDA when available, else CPU)")
    parser.add_argument("--no-postprocess", action="store_true",
                        help="keep every connected component (default: keep the largest "
                             "one per structure)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="auto: float16 on CUDA, bfloat16 on CPUs that compute it "
                             "natively (AVX-512 BF16, AMX), else float32; fp32 or bf16 run "
                             "the torch backend (under --backend auto)")
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation: average the image and its in-plane "
                             "flips (4x slower)")
    parser.add_argument("--no-qc-flip", action="store_true",
                        help="quality control without its flipped second pass (half the "
                             "time; no agreement signal)")
    parser.add_argument("--backend", choices=("auto", "torch", "onnx"), default=None,
                        help="what runs the network: auto (default, or $LVSEG_BACKEND): ONNX "
                             "Runtime (int8 where it keeps Dice) on a CPU where the weights "
                             "have a checked build (every bundled model), torch otherwise; "
                             "torch; onnx (CPU; the ONNX model is built once per weights file "
                             "and cached)")
    parser.add_argument("--fallback-bundled", action="store_true",
                        help="when Hub weights cannot be fetched, use the bundled weights "
                             "(with a warning) instead of failing")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m lvseg_core``."""
    parser = argparse.ArgumentParser(
        prog="python -m lvseg_core",
        description="Segment the heart (RV, myocardium, LV) in short-axis cardiac MRI.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    predict = sub.add_parser(
        "predict", help="segment scans and write masks + summary.csv",
        description="Segment scans (NIfTI, DICOM folder or .dcm, .zip of a DICOM series, "
                    "PNG/JPEG, or an ACDC-layout folder) and write <name>_seg.nii.gz masks "
                    "(same grid as the scan) and summary.csv (volumes, EF) into --out.")
    predict.add_argument("inputs", nargs="+", metavar="INPUT",
                         help="scan files or folders")
    _add_model_args(predict)
    predict.add_argument("--out", required=True, metavar="DIR", help="output folder")
    predict.add_argument("--series-uid", default=None, metavar="UID",
                         help="SeriesInstanceUID to read from DICOM folders or zips that "
                              "hold several series (default: the one with the most images)")
    predict.add_argument("--overwrite", action="store_true",
                         help="replace existing masks and summary.csv (input files are "
                              "never replaced)")
    predict.add_argument("--engine", choices=("local", "ray"), default="local",
                         help="local: this process; ray: Ray Data (pip install 'ray[data]'), "
                              "reading on CPU tasks and one model per worker")
    predict.add_argument("--workers", type=int, default=2, metavar="N",
                         help="--engine ray: segmenting workers (default 2)")
    predict.add_argument("--address", default=None, metavar="ADDRESS",
                         help="--engine ray: a running Ray cluster (e.g. ray://head:10001); "
                              "default: a local one")
    predict.add_argument("--resume", action="store_true",
                         help="continue a run into --out: skip inputs its manifest.jsonl "
                              "records as done with the same file size/time and weights")
    predict.add_argument("--dicom-seg", action="store_true",
                         help="also write a DICOM Segmentation object beside the mask of "
                              "each DICOM input (one per cardiac phase and frame of "
                              "reference)")
    predict.add_argument("--report", action="store_true",
                         help="write <study>_report.html for each study with ED and ES (an "
                              "ACDC patient, a cine scan)")
    predict.add_argument("--label-map", choices=LABEL_MAP_CHOICES, default="acdc",
                         help="label convention of the written masks: acdc (1 RV, 2 Myo, "
                              "3 LV, default) or mnms (1 LV, 2 Myo, 3 RV)")
    predict.set_defaults(func=cmd_predict)

    evaluate = sub.add_parser(
        "evaluate", help="score a model on a labelled ACDC-, M&Ms-2- or M&Ms-1-layout folder",
        description="Segment every labelled frame of an ACDC-, M&Ms-2- or M&Ms-1-layout "
                    "folder and write Dice/IoU/precision/recall/F1/HD95/ASSD, EF errors and "
                    "timings as JSON (M&Ms labels are converted to ACDC labels before "
                    "scoring).")
    evaluate.add_argument("--data", required=True, metavar="DIR",
                          help="ACDC-layout folder (patientNNN/Info.cfg, *_gt.nii.gz), "
                               "M&Ms-2-layout folder (<id>/<id>_SA_ED[_gt].nii.gz) or "
                               "M&Ms-1 release (<id>/<id>_sa[_gt].nii.gz 4D cines, ED/ES "
                               "from its *M&Ms*.csv or else from the labelled frames)")
    evaluate.add_argument("--layout", choices=LAYOUT_CHOICES, default=None,
                          help="dataset layout of --data: acdc, mnms (M&Ms-2) or mnms1 "
                               "(M&Ms-1) (default: detected)")
    _add_model_args(evaluate)
    evaluate.add_argument("--json", required=True, metavar="OUT",
                          help="JSON report path (parent folders are created)")
    evaluate.add_argument("--overwrite", action="store_true",
                          help="replace an existing --json report (refused otherwise)")
    evaluate.add_argument("--split", choices=SPLITS, default="all",
                          help="patients to score: all, or one side of the standard split "
                               "(validation: 002, 019, 028, 030, 039, 045, 078, 082, 085, 087)")
    evaluate.set_defaults(func=cmd_evaluate)

    build_onnx = sub.add_parser(
        "build-onnx", help="build (or find) the ONNX Runtime model of a weights folder",
        description="Export the model to ONNX, quantise it to int8 where that keeps Dice "
                    "(calibrated on ACDC training patients, $LVSEG_DATA) and cache it; "
                    "--beside-weights also copies it into the weights folder to ship it.")
    build_onnx.add_argument("--model", required=True, choices=MODEL_CHOICES)
    build_onnx.add_argument("--weights", default=None, metavar="SOURCE")
    build_onnx.add_argument("--beside-weights", action="store_true",
                            help="copy the build into the weights folder")
    build_onnx.set_defaults(func=cmd_build_onnx)

    info = sub.add_parser("info", help="versions, device and available weights")
    info.set_defaults(func=cmd_info)
    return parser


# ---------------------------------------------------------------- helpers


def _device(choice: str):
    if choice in ("auto", "cpu"):  # the CPU needs no torch import (the ONNX path)
        return None if choice == "auto" else "cpu"
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise LVSegError(f"--device cuda: CUDA is not available here (torch "
                         f"{torch.__version__}, no usable GPU); use --device cpu")
    return torch.device(choice)


def _segmenter(args):
    from .ensemble import load_segmenter

    segmenter = load_segmenter(args.model, args.weights, _device(args.device),
                               fallback=args.fallback_bundled,
                               postprocess=not args.no_postprocess,
                               precision=args.precision, tta=args.tta,
                               backend=args.backend, report=_note)
    if segmenter.weights is not None and segmenter.weights.notice:
        _warn(segmenter.weights.notice)
    if segmenter.notice:
        _note(segmenter.notice)
    return segmenter


def _cohort(args, inputs) -> int:
    """``predict --engine ray`` or ``--resume``: :func:`lvseg_core.cohort.run_cohort`."""
    from .cohort import SegmenterSpec, run_cohort

    if args.workers < 1:
        raise LVSegError("--workers must be at least 1")
    if args.dicom_seg or args.report or args.label_map != "acdc":
        raise LVSegError("--engine ray and --resume write ACDC-label masks and summary.csv "
                         "only; drop --dicom-seg, --report and --label-map")
    spec = SegmenterSpec(args.model, args.weights, args.device if args.device != "auto"
                         else None, args.backend, args.precision, not args.no_postprocess,
                         args.tta)
    with _bar(len(inputs), "segmenting") as bar:
        report = run_cohort(inputs, spec, args.out, engine=args.engine, workers=args.workers,
                            address=args.address, resume=args.resume,
                            overwrite=args.overwrite, progress=bar, series_uid=args.series_uid)
    for failure in report.failures:
        print(f"skipped {failure.name}: {failure.message}", file=sys.stderr)
    print(f"segmented {len(report.outputs)} of {len(inputs)} scan(s) with {args.model} "
          f"({args.engine} engine{', resumed' if args.resume else ''})")
    print(f"masks: {report.out_dir.resolve()}")
    if report.summary_path is not None:
        print(f"summary: {report.summary_path.resolve()}")
    return 1 if report.failures else 0


def _bar(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="scan", file=sys.stderr, disable=None,
                dynamic_ncols=True)


def _fmt(value, digits: int = 3) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if value != value else f"{value:.{digits}f}"


# ---------------------------------------------------------------- commands


def _qc_flips(args) -> tuple:
    from .qc import QC_FLIPS

    return () if args.no_qc_flip else QC_FLIPS


def cmd_predict(args) -> int:
    from .workflows import StudyOptions, collect_inputs, predict_inputs

    notes: list[str] = []
    inputs = collect_inputs(args.inputs, notes)  # fail fast, before the model is loaded
    for note in notes:  # inputs skipped (links leading outside, special files)
        _warn(note)
    if args.engine == "ray" or args.resume:
        return _cohort(args, inputs)
    segmenter = _segmenter(args)
    with _bar(len(inputs), "segmenting") as bar:
        options = StudyOptions(dicom_seg=args.dicom_seg, report=args.report,
                               label_map=args.label_map)
        report = predict_inputs(inputs, segmenter, args.out, overwrite=args.overwrite,
                                progress=bar, series_uid=args.series_uid, options=options,
                                qc_flips=_qc_flips(args))
    for failure in report.failures:
        print(f"skipped {failure.name}: {failure.message}", file=sys.stderr)
    for row in report.rows:
        if row.get("kind") in ("frame", "cine", "patient") and row.get("notes"):
            _note(f"{row['name']}: {row['notes']}")
    done = len(report.outputs)
    seconds = [r["seconds"] for r in report.rows if r.get("kind") in ("frame", "cine")]
    weights = segmenter.weights.description if segmenter.weights else "in-memory"
    print(f"segmented {done} of {len(inputs)} scan(s) with {segmenter.architecture} "
          f"({weights}) on {segmenter.device_label}"
          + (f", {sum(seconds) / len(seconds):.2f} s per scan" if seconds else ""))
    for row in report.rows:
        if row.get("kind") == "patient":
            print(f"  {row['name']}: LV EF {_fmt(row['LV_EF_pct'], 1)}%, "
                  f"EDV {_fmt(row['LV_EDV_ml'], 1)} mL, ESV {_fmt(row['LV_ESV_ml'], 1)} mL"
                  + _study_text(row))
        elif row.get("kind") == "cine":
            print(f"  {row['name']}: ED frame {row.get('ED_frame', 'n/a')}, ES frame "
                  f"{row.get('ES_frame', 'n/a')}, LV EF {_fmt(row.get('LV_EF_pct'), 1)}%"
                  + _study_text(row))
        for key in ("aha_csv", "report"):
            if row.get(key):
                print(f"    {key.replace('_', ' ')}: {row[key]}")
    for row in report.rows:
        if row.get("qc") in ("check", "fail"):
            print(f"  {row['name']}: QC {row['qc']}: {row['qc_reason']}")
    print(f"masks: {report.out_dir.resolve()}")
    if report.summary_path is not None:
        print(f"summary: {report.summary_path.resolve()}")
    return 1 if report.failures else 0


def _study_text(row: dict) -> str:
    """BSA-indexed EDV and mass with their flags, and the thickest wall, if known."""
    parts = []
    for key, label, unit in (("LV_EDV_index_ml_m2", "EDV/BSA", "mL/m²"),
                             ("LV_mass_index_g_m2", "mass/BSA", "g/m²")):
        if _fmt(row.get(key), 1) != "n/a":
            flag = row.get(f"{key}_flag")
            parts.append(f"{label} {_fmt(row[key], 1)} {unit}"
                         + (f" ({flag})" if flag and flag != "normal" else ""))
    if _fmt(row.get("wall_max_ed_mm"), 1) != "n/a":
        parts.append(f"thickest wall {_fmt(row['wall_max_ed_mm'], 1)} mm")
    return (", " + ", ".join(parts)) if parts else ""


def cmd_evaluate(args) -> int:
    from .data import select
    from .data.layouts import find_layout_cases
    from .workflows import evaluate_dataset, write_json

    layout, cases = find_layout_cases(args.data, args.layout, require_labels=True)
    cases = select(cases, args.split)  # fail fast
    patients = None
    if args.split != "all":
        patients = {c.patient for c in cases}
        if not cases:
            raise LVSegError(f"{args.data}: no labelled {args.split} patients")
    out = Path(args.json).expanduser()
    if out.is_dir():
        raise LVSegError(f"{out}: is a folder; give a file name for --json")
    if out.exists() and not args.overwrite:      # before any work, as predict does
        raise LVSegError(f"{out} exists; pass --overwrite to replace it or give another --json")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LVSegError(f"{out.parent}: cannot create folder ({err.strerror or err})") from None
    segmenter = _segmenter(args)
    with _bar(len(cases), "evaluating") as bar:
        result = evaluate_dataset(args.data, segmenter, progress=bar, patients=patients,
                                  layout=layout, qc_flips=_qc_flips(args))
    result["split"] = args.split
    path = write_json(result, out)
    for failure in result["failed"]:
        print(f"skipped {failure['name']}: {failure['error']}", file=sys.stderr)
    for warning in result["warnings"]:
        _warn(warning)
    for note in result["notes"]:
        _note(note)
    dice, hd = result["dice"], result["hd95_mm"]
    print(f"evaluated {result['cases']} volume(s) ({layout} layout) with {result['model']} "
          f"({result['weights']}) on {result['device']}")
    print(f"  Dice   RV {_fmt(dice['RV'])}  Myo {_fmt(dice['Myo'])}  LV {_fmt(dice['LV'])}  "
          f"mean {_fmt(dice['mean'])}")
    print(f"  HD95   RV {_fmt(hd['RV'], 1)}  Myo {_fmt(hd['Myo'], 1)}  LV {_fmt(hd['LV'], 1)}  "
          f"mean {_fmt(hd['mean'], 1)} mm")
    print(f"  EF mean absolute error LV {_fmt(result['ef_abs_error'], 1)}  RV "
          f"{_fmt(result['rv_ef_abs_error'], 1)} points over {result['ef_patients']} "
          f"patient(s); {_fmt(result['seconds_per_volume'], 2)} s per volume")
    print("  QC " + ", ".join(f"{n} {status}" for status, n in result["qc"].items()))
    print(f"report: {path.resolve()}")
    return 1 if result["failed"] else 0


def cmd_build_onnx(args) -> int:
    from .backends import ensure_build
    from .inference import Segmenter
    from .onnx_export import check_result

    found = ensure_build(args.model, Segmenter, args.weights, args.beside_weights, report=_note)
    print(f"{found.path} ({found.precision}, {found.record['onnx_bytes'] / 1e6:.1f} MB): "
          f"{found.record.get('reason', '')}")
    speed = found.record.get("speed") or {}
    if speed:
        print(f"network alone: ONNX {speed['onnx_seconds_per_slice']:.3f} s per slice, torch "
              f"{speed['torch_precision']} {speed['torch_seconds_per_slice']:.3f}")
    passed, why = check_result(found.record)
    print("--backend auto uses it on a CPU" if passed
          else f"--backend auto will not use it: {why}")
    return 0


def cmd_info(args) -> int:
    from importlib import metadata

    import torch

    from .hub import available_bundled
    from .inference import default_device, device_name

    print(f"python {platform.python_version()} ({platform.platform()})")
    for package in _PACKAGES:
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            version = "not installed"
        print(f"{package} {version}")
    cuda = torch.cuda.is_available()
    print(f"cuda available: {'yes' if cuda else 'no'}"
          + (f" (CUDA {torch.version.cuda})" if cuda else ""))
    print(f"default device: {device_name(default_device())}")
    bundled = available_bundled()
    print(f"bundled weights ({settings.weights_dir()}): "
          f"{', '.join(bundled) if bundled else 'none'}")
    print(f"architectures: {', '.join(MODEL_CHOICES)}")
    offline = settings.hub_offline()
    print(f"hugging face hub: {'offline (cache only)' if offline else 'online'}; cache "
          f"{settings.hub_home()}")
    return 0


# ---------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (argparse exits with 2 itself)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        _error("interrupted")
    except LVSegError as err:
        _error(str(err) or type(err).__name__)
    except OSError as err:  # FileNotFoundError, PermissionError, disk full...
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        _error(f"{err.strerror or err}{where}")
    return 1
