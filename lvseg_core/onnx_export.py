"""ONNX builds of a model: export, int8 static quantisation, the Dice check, the cache.

A *build* is a folder holding ``model.onnx`` and ``onnx.json``. It is made
once per weights file:

1. ``torch.onnx.export`` of the network in float32, batch and in-plane size
   dynamic (V-Net: slices and in-plane size);
2. with the ACDC training data at hand (:func:`calibration_data`), static
   QDQ int8 quantisation (``onnxruntime.quantization.quantize_static``, int8
   per-channel weights, uint8 activations) calibrated on the preprocessed
   slices of a few *training* patients (never a validation patient of
   :data:`lvseg_core.data.VALIDATION_PATIENTS`);
3. the check: mean Dice against the expert labels of other, held-out training
   volumes, int8 against torch float32. The int8 model is kept when it loses at
   most :data:`DICE_TOLERANCE`, else the float32 ONNX model is; without
   calibration data the float32 model is shipped and the record says why;
4. the batch size that runs fastest on this CPU, measured on one volume, and
   the seconds per slice of the build against the torch model (``speed``).

``onnx.json`` records the decision, the Dice figures and the *key*: sha256 of
``model.safetensors``, the preprocessing and export plan, and the ONNX Runtime
version. A build is used only when its key matches and ``model.onnx`` still
has the recorded sha256, so a retrained, replaced or corrupted file is rebuilt,
never trusted. Builds are looked up beside the weights (a build shipped with
them) and then in :func:`cache_dir`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .errors import LVSegError
from .hashing import WEIGHTS_FILE
from .hashing import read_sha256 as file_sha256

#: Files of a build.
ONNX_FILE = "model.onnx"
RECORD_FILE = "onnx.json"

#: Export and quantisation choices; part of the cache key (change it and every
#: build is redone).
BUILD_PLAN: dict[str, Any] = {
    "format": 1, "opset": 17, "quantisation": "static QDQ, QInt8 per-channel weights, "
    "QUInt8 activations, MinMax calibration", "calibration_patients": 5, "check_patients": 3,
}

#: Largest loss of mean Dice (int8 against torch float32) accepted for int8.
DICE_TOLERANCE = 0.003

#: Batch sizes tried when a build measures the fastest one.
BATCH_CANDIDATES: tuple[int, ...] = (1, 4, 8)

Report = Callable[[str], None]


def cache_dir() -> Path:
    """Where builds are cached (:func:`lvseg_core.settings.onnx_cache_dir`)."""
    from . import settings

    return settings.onnx_cache_dir()


def calibration_data() -> Path:
    """The labelled ACDC folder used to calibrate and check
    (:func:`lvseg_core.settings.data_dir`)."""
    from . import settings

    return settings.data_dir()


def onnxruntime_version() -> str:
    """The installed ONNX Runtime version; raises ImportError when it is absent."""
    import onnxruntime

    return onnxruntime.__version__


def build_key(architecture: str, weights_sha256: str, preprocess: dict) -> dict[str, Any]:
    """What a build depends on: the weights, the plans and the ONNX Runtime version."""
    return {"architecture": architecture, "weights_sha256": weights_sha256,
            "preprocess": json.loads(json.dumps(preprocess)), "plan": BUILD_PLAN,
            "onnxruntime": onnxruntime_version()}


def key_digest(key: dict[str, Any]) -> str:
    """Short hex digest of a key (names the cache folder)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class OnnxBuild:
    """A validated build: ``path`` is the ONNX file, ``record`` its ``onnx.json``."""

    path: Path
    record: dict[str, Any]

    @property
    def precision(self) -> str:
        """``"int8"`` or ``"fp32"``."""
        return str(self.record["precision"])

    @property
    def batch_size(self) -> int:
        """Slices per ONNX Runtime call measured fastest when the build was made."""
        return int(self.record.get("batch_size") or 1)


def read_build(folder: Path, key: dict[str, Any]) -> tuple[OnnxBuild | None, str]:
    """The build in ``folder`` if it is valid for ``key``; else (None, why not)."""
    record_path, onnx_path = folder / RECORD_FILE, folder / ONNX_FILE
    if not record_path.is_file() and not onnx_path.exists():
        return None, "no build"
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError) as err:
        return None, f"unreadable {RECORD_FILE} ({type(err).__name__})"
    if not isinstance(record, dict) or record.get("key") != key:
        return None, "built for other weights, plan or ONNX Runtime version"
    if not onnx_path.is_file():
        return None, f"{ONNX_FILE} is missing"
    if file_sha256(onnx_path) != record.get("onnx_sha256"):
        return None, f"{ONNX_FILE} does not match its recorded sha256 (changed or corrupted)"
    return OnnxBuild(onnx_path, record), ""


def build_folders(weights_folder: Path | None, key: dict[str, Any]) -> list[Path]:
    """Where a build for ``key`` may be: beside the weights (shipped), then the cache."""
    cached = cache_dir() / f"{key['architecture']}-{key_digest(key)}"
    return ([weights_folder] if weights_folder is not None else []) + [cached]


def find_build(weights_folder: Path | None, key: dict[str, Any]) -> OnnxBuild | None:
    """A valid build for ``key`` beside the weights or in the cache, else None."""
    for folder in build_folders(weights_folder, key):
        found, _ = read_build(folder, key)
        if found is not None:
            return found
    return None


def default_threads() -> int:
    """Intra-op threads for ONNX Runtime: torch's setting when torch is loaded, so
    both backends use the same share of the CPU; else the CPUs this process may
    use (torch is not imported for that: seconds at start-up)."""
    import sys

    if "torch" in sys.modules:
        return max(1, sys.modules["torch"].get_num_threads())
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class OnnxNetwork:
    """An ONNX model in an ONNX Runtime CPU session.

    ``run`` maps float32 ``(n, 1, X, Y)`` slices (or a ``(1, 1, z, X, Y)``
    stack) to float32 logits with the class channel second.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None,
                 batch_size: int = 1, precision: str = "fp32",
                 record: dict[str, Any] | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # Idle threads sleep instead of spinning: on a shared CPU (a laptop, a
        # free Space, this 2-core machine) spinning cost 1.5x in wall time.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.batch_size = max(1, int(batch_size))
        self.precision = precision
        self.record = dict(record or {})

    def run(self, image: np.ndarray) -> np.ndarray:
        """Logits of one batch, float32."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(
            image, dtype=np.float32)})[0]



# ---------------------------------------------------------------- export


def export_fp32(model, path: Path) -> None:
    """Export ``model`` (an :class:`~lvseg_core.models.LVSegModel`) to float32 ONNX.

    Input ``image``: ``(n, 1, X, Y)`` for 2D models, ``(1, 1, z, X, Y)`` for
    V-Net; output ``logits`` with the class channel second. Batch (2D) or z
    (3D) and the in-plane size are dynamic.
    """
    import warnings

    import torch

    from .preprocess import PreprocessPlan

    plan = PreprocessPlan.from_dict(model.preprocess)
    side = 7 * plan.divisor if plan.size is None else None
    size = tuple(plan.size) if plan.size is not None else (side, side)
    if model.spatial_dims == 3:
        example = torch.zeros(1, 1, 2 * plan.z_divisor, *size)
        axes = {2: "z", 3: "x", 4: "y"}
    else:
        example = torch.zeros(1, 1, *size)
        axes = {0: "n", 2: "x", 3: "y"}
    if plan.size is not None:  # fixed in-plane size: only batch / z vary
        axes = {k: v for k, v in axes.items() if v in ("n", "z")}
    model = model.float().eval()
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=False,
                          opset_version=BUILD_PLAN["opset"], input_names=["image"],
                          output_names=["logits"],
                          dynamic_axes={"image": axes, "logits": axes})


# ---------------------------------------------------------------- data


def _training_patients(data: Path) -> list[list]:
    """Labelled training cases of ``data`` grouped by patient (validation excluded)."""
    from .data import find_cases, split_cases

    train, _ = split_cases(find_cases(data, require_labels=True))
    patients: dict[str, list] = {}
    for case in train:
        patients.setdefault(case.patient, []).append(case)
    return [patients[p] for p in sorted(patients)]


def pick_patients(data: Path) -> tuple[list, list]:
    """(calibration cases, check cases): both frames of a few training patients
    spread over the sorted list (so over the pathology groups), disjoint."""
    patients = _training_patients(data)
    n_cal, n_check = BUILD_PLAN["calibration_patients"], BUILD_PLAN["check_patients"]
    if len(patients) < n_cal + n_check:
        raise LVSegError(f"{data}: {len(patients)} labelled training patients, "
                         f"calibration needs {n_cal + n_check}")
    step = len(patients) / n_cal
    cal_idx = [int(i * step) for i in range(n_cal)]
    rest = [i for i in range(len(patients)) if i not in cal_idx]
    check_idx = [rest[int((i + 0.5) * len(rest) / n_check)] for i in range(n_check)]
    flat = lambda idx: [case for i in idx for case in patients[i]]  # noqa: E731
    return flat(cal_idx), flat(check_idx)


def network_inputs(volume: np.ndarray, spacing, plan, spatial_dims: int) -> list[np.ndarray]:
    """What the network sees of one frame: one ``(1, 1, X, Y)`` array per slice
    (2D) or one ``(1, 1, z, X, Y)`` stack (3D), float32."""
    from .preprocess import prepare

    image = prepare(volume, spacing, plan).array  # (z, 1, X, Y)
    if spatial_dims == 3:
        return [np.ascontiguousarray(image.transpose(1, 0, 2, 3)[None])]
    return [image[i:i + 1] for i in range(image.shape[0])]


def _calibration_reader(cases: Sequence, plan, spatial_dims: int):
    from onnxruntime.quantization import CalibrationDataReader

    from .io import load_nifti

    class Reader(CalibrationDataReader):
        """Feeds preprocessed slices of the calibration cases, one at a time."""

        def __init__(self) -> None:
            self.count = 0
            self._items = self._generate()

        def _generate(self) -> Iterator[dict[str, np.ndarray]]:
            for case in cases:
                scan = load_nifti(case.image)
                for item in network_inputs(scan.array, scan.spacing, plan, spatial_dims):
                    self.count += 1
                    yield {"image": item}

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._items, None)

    return Reader()


def quantize_int8(fp32_path: Path, out_path: Path, reader) -> None:
    """Static QDQ int8 quantisation of ``fp32_path`` calibrated with ``reader``."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out_path.with_name("pre.onnx")
    quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(out_path), reader, quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=True)
    pre.unlink(missing_ok=True)


# ---------------------------------------------------------------- check


def mean_dice(segmenter, cases: Sequence) -> tuple[float, list[np.ndarray]]:
    """Mean Dice (RV, Myo, LV, over ``cases``) of ``segmenter`` against the labels,
    and the masks."""
    from .io import load_label, load_nifti
    from .labels import STRUCTURES
    from .metrics import dice

    scores, masks = [], []
    for case in cases:
        scan = load_nifti(case.image)
        mask = segmenter.segment(scan).mask
        gt = load_label(case.label, scan)
        scores.append(np.mean([dice(mask, gt, s) for s in STRUCTURES]))
        masks.append(mask)
    return float(np.mean(scores)), masks


def fastest_batch(network, inputs: list[np.ndarray], repeats: int = 2,
                  candidates: Sequence[int] = BATCH_CANDIDATES) -> tuple[int, dict]:
    """The batch size of ``candidates`` with the least seconds per slice on
    ``inputs`` (slices ``(1, 1, X, Y)``) through ``network.run``, and every timing."""
    stack = np.concatenate(inputs)
    seconds: dict[str, float] = {}
    network.run(stack[:1])  # warm-up
    for size in candidates:
        if size > len(stack):
            break
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            for i in range(0, len(stack), size):
                network.run(stack[i:i + size])
            runs.append((time.perf_counter() - start) / len(stack))
        seconds[str(size)] = statistics.median(runs)
    best = min(seconds, key=seconds.get)
    return int(best), seconds


def speed_probe(plan, spatial_dims: int, slices: int = 8) -> np.ndarray:
    """Seeded noise slices ``(z, 1, X, Y)`` float32 of the plan's network grid
    (fixed ``size``, else 7 x ``divisor`` square); a 3D model's stack is as deep as
    its plan needs (``min_depth``, a multiple of ``z_divisor``)."""
    side = (7 * plan.divisor,) * 2 if plan.size is None else tuple(plan.size)
    depth = slices
    if spatial_dims == 3:
        depth = max(slices, getattr(plan, "min_depth", 1))
        depth = int(np.ceil(depth / plan.z_divisor) * plan.z_divisor)
    return np.random.default_rng(0).standard_normal((depth, 1, *side), dtype=np.float32)


def measure_speed(model, onnx_path: Path, batch_size: int, segmenter_class,
                  repeats: int = 3) -> dict[str, Any]:
    """Seconds per slice of the network alone on :func:`speed_probe`, the ONNX
    build (at ``batch_size``) against the torch model at this CPU's default
    precision, both through ``segmenter_class`` (the
    :class:`~lvseg_core.inference.Segmenter`), median of ``repeats`` after a
    warm-up; what ``auto`` compares (:func:`check_result`)."""
    import torch

    from .preprocess import PreprocessPlan

    probe = torch.from_numpy(speed_probe(PreprocessPlan.from_dict(model.preprocess),
                                         model.spatial_dims))
    runs = {"torch": segmenter_class(model, "cpu", backend="torch"),
            "onnx": segmenter_class(model, "cpu", onnx=OnnxNetwork(onnx_path,
                                                                    batch_size=batch_size))}
    out: dict[str, Any] = {"probe": list(probe.shape),
                           "torch_precision": runs["torch"].precision_label,
                           "threads": default_threads()}
    for name, segmenter in runs.items():
        segmenter._logits(probe)
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            segmenter._logits(probe)
            seconds.append((time.perf_counter() - start) / probe.shape[0])
        out[f"{name}_seconds_per_slice"] = statistics.median(seconds)
    out["measured"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return out


def check_result(record: dict[str, Any]) -> tuple[bool, str]:
    """Whether a build's recorded check lets ``auto`` use it, and why not: the
    Dice check of its precision passed (within its tolerance of torch float32,
    on labelled held-out volumes) and it was measured faster than torch."""
    try:
        precision = record["precision"]
        check, speed = record.get("check") or {}, record.get("speed") or {}
        ref, got = check.get("dice_torch_fp32"), check.get(f"dice_onnx_{precision}")
        tolerance = float(record.get("tolerance", DICE_TOLERANCE))
        if ref is None or got is None:
            return False, "no Dice check recorded (built without labelled data)"
        loss = float(ref) - float(got)
        if not loss <= tolerance:
            return False, f"{precision} loses {loss:.4f} mean Dice (> {tolerance})"
        onnx_s, torch_s = speed.get("onnx_seconds_per_slice"), speed.get(
            "torch_seconds_per_slice")
        if onnx_s is None or torch_s is None:
            return False, "no speed against torch recorded"
        if not float(onnx_s) < float(torch_s):
            return False, (f"measured slower than torch ({float(onnx_s):.3f} against "
                           f"{float(torch_s):.3f} s per slice)")
    except (KeyError, TypeError, ValueError, AttributeError):
        return False, f"unreadable check in {RECORD_FILE}"
    return True, ""


def add_speed(found: OnnxBuild, model, segmenter_class) -> OnnxBuild:
    """``found`` with :func:`measure_speed` in its record, written atomically
    beside its ONNX file (a build made before speeds were recorded)."""
    record = dict(found.record)
    record["speed"] = measure_speed(model, found.path, found.batch_size, segmenter_class)
    path = found.path.parent / RECORD_FILE
    tmp = path.with_name(f".{RECORD_FILE}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)
    return OnnxBuild(found.path, record)


def _check(model, segmenter_class, fp32_path: Path, int8_path: Path | None,
           check_cases: Sequence, report: Report) -> dict[str, Any]:
    """Dice of torch float32, ONNX float32 and ONNX int8 on ``check_cases``, each
    through ``segmenter_class`` (the :class:`~lvseg_core.inference.Segmenter`)."""
    Segmenter = segmenter_class  # noqa: N806

    out: dict[str, Any] = {"cases": [c.name for c in check_cases]}
    report(f"checking on {len(check_cases)} held-out training volumes")
    ref_dice, ref_masks = mean_dice(Segmenter(model, "cpu", precision="fp32",
                                              backend="torch"), check_cases)
    out["dice_torch_fp32"] = ref_dice
    for name, path in (("fp32", fp32_path), ("int8", int8_path)):
        if path is None:
            continue
        seg = Segmenter(model, "cpu", onnx=OnnxNetwork(path))
        dice_value, masks = mean_dice(seg, check_cases)
        agree = np.mean([np.mean(a == b) for a, b in zip(masks, ref_masks)])
        out[f"dice_onnx_{name}"] = dice_value
        out[f"voxels_equal_onnx_{name}"] = float(agree)
    return out


# ---------------------------------------------------------------- build


def build(model, key: dict[str, Any], folder: Path, segmenter_class,
          data: Path | None = None, report: Report | None = None) -> OnnxBuild:
    """Make the build of ``model`` for ``key`` in ``folder`` (see the module docstring).

    ``segmenter_class`` is :class:`~lvseg_core.inference.Segmenter` (the check
    segments through the real pipeline; passed in, as the engine's inference
    module imports this one). ``data`` is the labelled ACDC folder (default
    :func:`calibration_data`);
    when it is absent the float32 model is built. The folder is written
    atomically: a reader sees the old build, no build, or the whole new one.
    """
    from .preprocess import PreprocessPlan

    report = report or (lambda message: None)
    data = calibration_data() if data is None else Path(data)
    started = time.perf_counter()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        fp32 = tmp / "fp32.onnx"
        report(f"exporting {key['architecture']} to ONNX")
        export_fp32(model, fp32)
        plan = PreprocessPlan.from_dict(model.preprocess)
        record: dict[str, Any] = {"key": key, "tolerance": DICE_TOLERANCE}
        try:
            calib, check_cases = pick_patients(data)
        except LVSegError as err:
            calib, check_cases = [], []
            record["reason"] = (f"float32 ONNX: no calibration data ({err}); "
                                "int8 needs labelled ACDC training patients (LVSEG_DATA)")
        chosen = fp32
        if calib:
            report(f"calibrating int8 on {len(calib)} training volumes")
            reader = _calibration_reader(calib, plan, model.spatial_dims)
            int8 = tmp / "int8.onnx"
            quantize_int8(fp32, int8, reader)
            record["calibration"] = {"cases": [c.name for c in calib],
                                     "inputs": reader.count}
            check = _check(model, segmenter_class, fp32, int8, check_cases, report)
            record["check"] = check
            loss = check["dice_torch_fp32"] - check["dice_onnx_int8"]
            if loss <= DICE_TOLERANCE:
                chosen = int8
                record["reason"] = (f"int8 keeps Dice: {check['dice_onnx_int8']:.4f} against "
                                    f"torch float32 {check['dice_torch_fp32']:.4f}")
            else:
                record["reason"] = (f"float32 ONNX: int8 loses {loss:.4f} mean Dice "
                                    f"(> {DICE_TOLERANCE})")
        record["precision"] = "int8" if chosen.name == "int8.onnx" else "fp32"
        if model.spatial_dims == 2:
            record["batch_size"], record["seconds_per_slice"] = fastest_batch(
                OnnxNetwork(chosen), list(speed_probe(plan, 2)[:, None]))
        else:
            record["batch_size"] = 1
        report("timing the build against torch")
        record["speed"] = measure_speed(model, chosen, record["batch_size"], segmenter_class)
        os.replace(chosen, tmp / ONNX_FILE)
        for stray in tmp.glob("*.onnx"):
            if stray.name != ONNX_FILE:
                stray.unlink()
        record["onnx_sha256"] = file_sha256(tmp / ONNX_FILE)
        record["onnx_bytes"] = (tmp / ONNX_FILE).stat().st_size
        record["build_seconds"] = round(time.perf_counter() - started, 1)
        record["built"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
        install(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    found, why = read_build(folder, key)
    if found is None:
        raise LVSegError(f"{folder}: the ONNX build just made is not valid ({why})")
    report(f"ONNX build ready: {found.precision} ({found.record.get('reason', '')})")
    return found


def install(tmp: Path, folder: Path) -> None:
    """Put the finished build ``tmp`` at ``folder``: its two files replace those
    there one by one (record last, so a reader never trusts a half-made pair:
    the sha256 in the record must match the file)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RECORD_FILE).unlink(missing_ok=True)
    os.replace(tmp / ONNX_FILE, folder / ONNX_FILE)
    os.replace(tmp / RECORD_FILE, folder / RECORD_FILE)
