"""Cohorts: ``predict`` over many scans with a manifest that makes it resumable,
in this process (``engine="local"``) or on Ray Data (``engine="ray"``).

On Ray, scans are read on CPU worker tasks and segmented by a pool of actors,
each of which loads the model once (``map_batches`` with a callable class and
``ActorPoolStrategy``); masks are written by the actors as they finish and the
summary rows stream back to the driver, which appends each to
``<out>/manifest.jsonl`` at once. An interrupted run continues with
``resume=True``: an input is skipped when the manifest holds it with the same
*input key* (resolved path, size and modification time of its file(s)) and the
same weights sha256, and its mask is still there; a changed input or weights
file is redone. Both engines run the same :func:`segment_item`, so they write
the same masks.

Ray is optional (``pip install "ray[data]"``); ``address`` joins a running
cluster (``ray start --head`` there), none starts a local one with
``workers`` + 1 CPUs (one per actor, one for reading). On a cluster with GPUs
the actors are GPU actors running torch on CUDA (:func:`actor_resources`).
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import LVSegError, one_line
from .files import write_text
from .workflows import (SUMMARY_NAME, Input, PredictReport, _fail, _patient_row, _report,
                        _scan_row, load_input, output_lock, output_names, summary_csv_text)

#: The manifest of a cohort run, one JSON object per finished input.
MANIFEST_NAME = "manifest.jsonl"

ENGINES: tuple[str, ...] = ("local", "ray")


@dataclass(frozen=True)
class SegmenterSpec:
    """How to make the :class:`~lvseg_core.inference.Segmenter` (in each worker)."""

    architecture: str
    weights: str | None = None
    device: str | None = None
    backend: str | None = None
    precision: str = "auto"
    postprocess: bool = True
    tta: bool = False

    def make(self):
        from .inference import Segmenter

        return Segmenter.from_source(self.architecture, self.weights, device=self.device,
                                     backend=self.backend, precision=self.precision,
                                     postprocess=self.postprocess, tta=self.tta)


def input_key(path: Path) -> dict[str, Any]:
    """What identifies an input's content cheaply: resolved path, total size and
    latest modification time (ns) of its file(s) (a folder: every file in it)."""
    path = Path(path).resolve()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    stats = [p.stat() for p in files]
    return {"input": str(path), "files": len(files), "bytes": sum(s.st_size for s in stats),
            "mtime_ns": max((s.st_mtime_ns for s in stats), default=0)}


def read_manifest(out_dir: Path) -> dict[str, dict]:
    """The last manifest entry of each input path (unreadable lines are ignored:
    a run killed mid-write leaves at most one)."""
    entries: dict[str, dict] = {}
    path = out_dir / MANIFEST_NAME
    if not path.is_file():
        return entries
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
            entries[entry["key"]["input"]] = entry
        except (ValueError, KeyError, TypeError):
            continue
    return entries


def segment_item(segmenter, item: Input, target: Path, series_uid: str | None = None,
                 scan=None) -> dict[str, Any]:
    """Read (unless ``scan`` is given), segment and write one input; the manifest
    entry's ``row`` (and, for an ACDC frame, what its patient row needs).
    Raises :class:`LVSegError`."""
    from .io import save_mask
    from .labels import STRUCTURES
    from .pipeline import run_scan

    scan = load_input(item, series_uid) if scan is None else scan
    result = run_scan(scan, segmenter)
    save_mask(result.mask, scan, target, overwrite=True)
    row = _scan_row(item, result, target)
    out: dict[str, Any] = {"row": row}
    if item.kind == "acdc" and item.phase in ("ED", "ES") and not scan.is_cine:
        out["acdc"] = {"patient": item.patient, "phase": item.phase, "group": item.group,
                       "name": item.name, "volumes": {s: row[f"{s}_ml"] for s in STRUCTURES},
                       "shape": list(scan.shape3d), "spacing": list(scan.spacing)}
    return out


def _done(entry: dict | None, key: dict, weights_sha256: str) -> bool:
    return (entry is not None and entry.get("key") == key
            and entry.get("weights_sha256") == weights_sha256
            and Path(entry.get("row", {}).get("output", "")).is_file())


def run_cohort(inputs: Sequence[Input], spec: SegmenterSpec, out_dir: str | os.PathLike,
               engine: str = "local", workers: int = 2, address: str | None = None,
               resume: bool = False, overwrite: bool = False, progress: Any = None,
               series_uid: str | None = None) -> PredictReport:
    """Segment ``inputs`` into ``out_dir`` (masks, ``summary.csv``, manifest).

    Without ``resume`` or ``overwrite`` an existing ``summary.csv`` or mask is
    an error, as in :func:`~lvseg_core.workflows.predict_inputs`.
    """
    if engine not in ENGINES:
        raise LVSegError(f"engine must be one of {ENGINES}, got {engine!r}")
    out_dir = Path(out_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = out_dir / SUMMARY_NAME
    if summary.exists() and not (resume or overwrite):
        raise LVSegError(f"{summary}: already exists; pass --resume to continue that run "
                         "or --overwrite to redo it")
    with output_lock(out_dir):
        return _run_locked(list(inputs), spec, out_dir, engine, workers, address, resume,
                           overwrite, progress, series_uid)


def _run_locked(inputs: list[Input], spec: SegmenterSpec, out_dir: Path, engine: str,
                workers: int, address: str | None, resume: bool, overwrite: bool,
                progress: Any, series_uid: str | None) -> PredictReport:
    from .hub import resolve_weights

    weights = resolve_weights(spec.architecture, spec.weights)
    sha = weights.sha256
    manifest = read_manifest(out_dir) if resume else {}
    if not resume:
        (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    report = PredictReport(out_dir=out_dir)
    entries: list[dict | None] = [None] * len(inputs)
    todo: list[tuple[int, Input, Path, dict]] = []
    for i, (item, name) in enumerate(zip(inputs, output_names(inputs))):
        target = out_dir / name
        try:
            key = input_key(item.path)
        except OSError as err:
            _fail(report, item, f"cannot read ({err.strerror or err})")
            continue
        old = manifest.get(key["input"])
        if resume and _done(old, key, sha):
            entries[i] = old
        elif target.exists() and not (overwrite or resume):
            _fail(report, item, f"{target}: already exists; pass --overwrite to replace it")
        else:
            todo.append((i, item, target, key))
    done = len(inputs) - len(todo)
    run = _run_ray if engine == "ray" else _run_local
    with open(out_dir / MANIFEST_NAME, "a", encoding="utf-8") as log:
        for i, result in run(todo, spec, workers, address, series_uid):
            item, key = inputs[i], next(k for j, _, _, k in todo if j == i)
            done += 1
            if "error" in result:
                _fail(report, item, result["error"])
            else:
                entry = {"key": key, "weights_sha256": sha, **result}
                log.write(json.dumps(entry) + "\n")
                log.flush()
                entries[i] = entry
            _report(progress, done, len(inputs), item.name)
    _summarise(report, entries, weights)
    return report


def _summarise(report: PredictReport, entries: list[dict | None], weights) -> None:
    """Rows in input order, ACDC patient rows, ``summary.csv``."""
    patients: dict[str, dict[str, dict]] = {}
    for entry in entries:
        if entry is None:
            continue
        report.outputs.append(Path(entry["row"]["output"]))
        report.rows.append(entry["row"])
        if "acdc" in entry:
            patients.setdefault(entry["acdc"]["patient"], {})[entry["acdc"]["phase"]] = \
                entry["acdc"]
    for patient, phases in patients.items():
        if "ED" in phases and "ES" in phases:
            report.rows.append(_patient_row(patient, phases["ED"]["group"], phases["ED"],
                                            phases["ES"]))
    for row in report.rows:
        row["weights"] = weights.description
        row["weights_sha256"] = weights.sha256
    if report.rows:
        path = report.out_dir / SUMMARY_NAME
        write_text(path, summary_csv_text(report.rows))
        report.summary_path = path


# ---------------------------------------------------------------- engines


def _run_local(todo, spec: SegmenterSpec, workers, address, series_uid):
    segmenter = spec.make() if todo else None
    for i, item, target, _ in todo:
        try:
            yield i, segment_item(segmenter, item, target, series_uid)
        except LVSegError as err:
            yield i, {"error": one_line(err)}
        except MemoryError:
            yield i, {"error": "out of memory"}


def _read_task(row: dict[str, Any]) -> dict[str, Any]:
    """Ray task: read one input (CPU worker); the scan travels pickled."""
    item = Input(**pickle.loads(row["item"]))
    try:
        row["scan"] = pickle.dumps(load_input(item, row["series_uid"] or None))
        row["error"] = ""
    except LVSegError as err:
        row["scan"], row["error"] = b"", one_line(err)
    return row


class _SegmentActor:
    """Ray actor: one Segmenter (model loaded once), segments and writes masks."""

    def __init__(self, spec: dict[str, Any], threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.segmenter = SegmenterSpec(**spec).make()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        results = []
        for index, item, scan, error, target in zip(batch["index"], batch["item"],
                                                    batch["scan"], batch["error"],
                                                    batch["target"]):
            if error:
                results.append(json.dumps({"error": str(error)}))
                continue
            try:
                result = segment_item(self.segmenter, Input(**pickle.loads(item)), Path(target),
                                      scan=pickle.loads(scan))
            except LVSegError as err:
                result = {"error": one_line(err)}
            results.append(json.dumps(result))
        return {"index": list(batch["index"]), "result": results}


def actor_resources(cluster: dict[str, float], spec: SegmenterSpec, workers: int
                    ) -> tuple[dict[str, float], SegmenterSpec]:
    """Ray resources of one segmenting actor on a cluster with resources ``cluster``
    (``ray.cluster_resources()``), and the spec the actors run.

    GPU actors where the cluster has GPUs and the backend can use one (torch, or
    ``auto``, which is torch on CUDA) and no device was forced: one GPU per
    actor, a share of them when there are more actors than GPUs, the model on
    CUDA. Otherwise (no GPU, ``--backend onnx``, ``--device cpu``) CPU actors.
    """
    from .backends import default_backend

    gpus = float(cluster.get("GPU", 0) or 0)
    backend = spec.backend or default_backend()
    if gpus > 0 and backend in ("torch", "auto") and spec.device in (None, "cuda"):
        share = min(1.0, gpus / max(1, workers))
        return {"num_cpus": 1, "num_gpus": share}, replace(spec, device="cuda")
    return {"num_cpus": 1, "num_gpus": 0}, spec


def _run_ray(todo, spec: SegmenterSpec, workers: int, address: str | None, series_uid):
    if not todo:
        return
    try:
        import ray
        from ray.data import ActorPoolStrategy
    except ImportError:
        raise LVSegError('--engine ray needs Ray Data: pip install "ray[data]"') from None
    started = not ray.is_initialized()
    if started:
        # A local cluster: one CPU per actor, plus one for the read tasks.
        ray.init(address=address, num_cpus=None if address else workers + 1,
                 include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                 configure_logging=False)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.execution_options.preserve_order = False
        rows = [{"index": i, "item": pickle.dumps(_item_dict(item)), "target": str(target),
                 "series_uid": series_uid or ""} for i, item, target, _ in todo]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        ds = ds.map(_read_task, num_cpus=0.5)  # its own operator: reads overlap segmenting
        resources, spec = actor_resources(ray.cluster_resources(), spec, workers)
        ds = ds.map_batches(_SegmentActor, batch_size=1, **resources,
                            compute=ActorPoolStrategy(size=max(1, workers)),
                            fn_constructor_kwargs={"spec": asdict(spec), "threads": 1})
        for out in ds.iter_rows():
            yield int(out["index"]), json.loads(out["result"])
    finally:
        if started:
            ray.shutdown()


def _item_dict(item: Input) -> dict[str, Any]:
    return asdict(item)
