"""Hostile input for the command line (issue 13): builders, and a measurement of each case.

``python -m bench.hostile`` builds every hostile case of the issue in a
temporary folder, runs ``python -m lvseg_core`` on it in a fresh process and
prints, per case, the exit code, the wall time, the process's peak resident
memory (``os.wait4``: the child's own ``ru_maxrss``) and the one line the user
saw. The builders are shared with ``tests/test_hostile.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: A narrow U-Net: the cases do not depend on the network's width.
TINY_UNET = {"encoder_depth": 3, "decoder_channels": (16, 8, 8)}

#: The fake owner token the Hub must never see unless the owner opts in.
OWNER_TOKEN = "hf_OWNERSECRETTOKEN0000000000000000"


# ---------------------------------------------------------------- builders


def volume(shape=(64, 56, 4), seed: int = 0) -> np.ndarray:
    """A float32 ``(x, y, z)`` volume: noise with a bright disc (a ventricle)."""
    rng = np.random.default_rng(seed)
    x, y = np.mgrid[: shape[0], : shape[1]]
    disc = np.hypot(x - shape[0] / 2, y - shape[1] / 2) < min(shape[:2]) / 6
    out = rng.normal(200, 20, shape).astype(np.float32)
    out[disc] += 800
    return out


def nifti(path: Path, zooms=(1.5, 1.5, 8.0), shape=(64, 56, 4), seed: int = 0) -> Path:
    """A scan whose header states voxel sizes ``zooms`` (mm)."""
    nib.save(nib.Nifti1Image(volume(shape, seed), np.diag([*zooms, 1.0])), str(path))
    return path


def raw_nifti(path: Path, array: np.ndarray, pixdim, offset: int = 352) -> Path:
    """Header bytes written as given (nibabel's save would repair them): no
    qform/sform, so ``pixdim`` alone gives the voxel size; data at ``offset``."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(array.shape)
    hdr.set_data_dtype(array.dtype)
    hdr["pixdim"][1:4] = pixdim
    hdr["qform_code"] = hdr["sform_code"] = 0
    hdr["vox_offset"] = offset
    head = hdr.binaryblock
    path.write_bytes(head + b"\x00" * (offset - len(head)) + array.tobytes(order="F"))
    return path


def gzip_bomb(path: Path, shape=(2048, 2048, 256), members: int = 32) -> Path:
    """A real gzip bomb: an int16 NIfTI header declaring ``shape`` (2 GiB), then
    ``members`` gzip members of 64 MiB of zeros each (~2 MB on disk)."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(np.int16)
    hdr.set_zooms((1.5, 1.5, 8.0))
    hdr["vox_offset"] = 352
    zeros = zlib.compressobj(9, zlib.DEFLATED, 31)
    member = zeros.compress(bytes(64 << 20)) + zeros.flush()
    with open(path, "wb") as fh:
        fh.write(gzip.compress(hdr.binaryblock + b"\x00" * 4))
        for _ in range(members):
            fh.write(member)
    return path


def tiny_weights(folder: Path) -> Path:
    """Random-init narrow U-Net weights saved in the Hub layout."""
    import torch

    from lvseg_core.models import create_model

    torch.manual_seed(0)
    create_model("unet", **TINY_UNET).save_pretrained(folder)
    return folder


def hostile_weights(weights: Path, dest: Path, edit) -> Path:
    """A copy of ``weights`` whose config.json was changed by ``edit(config)``."""
    shutil.copytree(weights, dest)
    config = json.loads((dest / "config.json").read_text())
    edit(config)
    (dest / "config.json").write_text(json.dumps(config))
    return dest


def dicom_series(folder: Path, shape=(48, 40, 3), seed: int = 0,
                 description: str = "cine") -> list[Path]:
    """A DICOM MR series of ``shape`` written into the new ``folder``."""
    from lvseg_core.io import save_dicom_series
    from lvseg_core.scan import Scan

    scan = Scan(volume(shape, seed), np.diag([1.5, 1.5, 8.0, 1.0]), name="heart")
    return save_dicom_series(scan, folder, series_description=description)


def two_series_folder(folder: Path, second: int = 3) -> None:
    """Loose files of two DICOM series in one folder ("series a": 3 slices,
    "series b": ``second`` slices)."""
    for tag, n, seed in (("a", 3, 0), ("b", second, 1)):
        staging = folder.parent / f".{tag}"
        dicom_series(staging, shape=(48, 40, n), seed=seed, description=f"series {tag}")
        folder.mkdir(exist_ok=True)
        for f in staging.iterdir():
            f.rename(folder / f"{tag}_{f.name}")
        staging.rmdir()


#: The repo the fake Hub knows: its model.safetensors declares 10 GB.
HUGE_REPO = "owner/huge-weights"


class _HubLog(http.server.BaseHTTPRequestHandler):
    """Logs each request's headers in ``server.seen``; describes :data:`HUGE_REPO`
    and answers 404 "repo not found" to everything else."""

    def do_GET(self):  # noqa: N802 - http.server API
        self.server.seen.append({"path": self.path,
                                 **{k.lower(): v for k, v in self.headers.items()}})
        if self.path.startswith(f"/api/models/{HUGE_REPO}"):
            body = json.dumps({"id": HUGE_REPO, "sha": "0" * 40, "siblings": [
                {"rfilename": "config.json", "size": 900},
                {"rfilename": "model.safetensors", "size": 10 * 10**9}]}).encode()
            self.send_response(200)
        else:
            body = b'{"error": "Repository not found"}'
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def fake_hub():
    """A fake Hub on 127.0.0.1; yields ``(url, seen)``, ``seen`` the logged headers."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HubLog)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", server.seen
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def tarpit():
    """A socket on 127.0.0.1 that accepts connections and never answers;
    yields ``(url, held)``, ``held`` the accepted connections."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", held
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        sock.close()


# ---------------------------------------------------------------- measuring


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a measured ``python -m lvseg_core`` process."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env


def start(argv: list[str], env: dict, stderr) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lvseg_core", *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=stderr)


def finish(proc: subprocess.Popen, started: float) -> tuple[int, float, float]:
    """Wait for ``proc``: exit code, seconds, peak resident memory (MB) of that child."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - started, usage.ru_maxrss / 1024


def measure(argv: list[str], env: dict, log: Path) -> dict:
    """Run one case; its exit code, seconds, peak MB and last stderr lines."""
    with open(log, "w+") as err:
        started = time.perf_counter()
        code, seconds, peak = finish(start(argv, env, err), started)
        err.seek(0)
        text = err.read()
    shown = [line for line in text.splitlines()
             if line.startswith(("error:", "skipped ", "note:", "warning:"))]
    return {"code": code, "seconds": seconds, "peak_mb": peak, "traceback": "Traceback" in text,
            "message": " | ".join(shown) or text.strip().splitlines()[-1:]}


def cases(tmp: Path, weights: Path) -> dict:
    """Each hostile case: name -> (argv, extra environment, context manager or None)."""
    def model(*args: str) -> list[str]:
        return [*args, "--model", "unet", "--device", "cpu"]

    def predict(inputs, out: str, weights_source=str(weights), *more: str) -> list[str]:
        return model("predict", *map(str, inputs), "--weights", weights_source,
                     "--out", str(tmp / out), *more)

    scan = nifti(tmp / "scan.nii.gz")
    built = {
        "gzip bomb (2 MB file, 2 GiB header)": (predict([gzip_bomb(tmp / "bomb.nii.gz")], "o1"),),
        "pixdim 1e30": (predict([nifti(tmp / "pixdim.nii.gz", (1e30, 1e30, 8.0))], "o2"),),
        "20 mm pixels (0.8 MB)": (predict([nifti(tmp / "coarse.nii.gz", (20.0, 20.0, 10.0),
                                                 (256, 256, 3))], "o3"),),
        "zero pixdim, no qform/sform": (predict([raw_nifti(tmp / "zero.nii", volume(),
                                                           (0.0, 1.5, 8.0))], "o4"),),
    }
    for label, edit in (("unknown arch_args", lambda c: c["arch_args"].update(depth_charge=3)),
                        ("divisor: 0", lambda c: c["preprocess"].update(divisor=0)),
                        ("spacing_mm: [0, 0]", lambda c: c["preprocess"].update(spacing_mm=[0, 0])),
                        ("decoder_channels 100000", lambda c: c["arch_args"].update(
                            decoder_channels=[100000, 8, 8]))):
        bad = hostile_weights(weights, tmp / f"w-{len(built)}", edit)
        built[f"weights config: {label}"] = (predict([scan], f"o{len(built)}", str(bad)),)

    fifo_dir = tmp / "fifo" / "series"
    dicom_series(fifo_dir)
    os.mkfifo(fifo_dir / "trap")
    built["FIFO in a DICOM folder"] = (predict([fifo_dir], "o-fifo"),)

    inbox = tmp / "parent" / "inbox"
    dicom_series(tmp / "parent", description="the parent's")
    inbox.mkdir()
    nifti(inbox / "scan.nii.gz")
    (inbox / "up").symlink_to("..", target_is_directory=True)
    built["folder holding up -> .."] = (predict([inbox], "o-up"),)

    two = tmp / "two"
    two_series_folder(two)
    built["two equal DICOM series"] = (predict([two], "o-two"),)

    built["Hub tarpit"] = (predict([scan], "o-tarpit", "owner/slow-weights"),
                           {"HF_HUB_OFFLINE": "0"}, tarpit)
    built["fake Hub, HF_TOKEN set"] = (predict([scan], "o-hub", "victim-org/private-weights"),
                                       {"HF_HUB_OFFLINE": "0", "HF_TOKEN": OWNER_TOKEN}, fake_hub)
    built["named weights not fetchable"] = (predict([scan], "o-named", "owner/uncached"),)

    acdc = tmp / "acdc"
    for name, info in (("patient001", "ED: 1\nES: 5\nGroup: NOR\n"), ("patient002", None),
                       ("patient003", "ED: 1\nES: 5\nGroup: NOR<script>\n")):
        folder = acdc / name
        folder.mkdir(parents=True)
        for frame in (1, 5):
            image = volume((48, 40, 3), frame)
            nib.save(nib.Nifti1Image(image, np.diag([1.5, 1.5, 8.0, 1.0])),
                     str(folder / f"{name}_frame{frame:02d}.nii.gz"))
            nib.save(nib.Nifti1Image((image > 600).astype(np.uint8) * 3,
                                     np.diag([1.5, 1.5, 8.0, 1.0])),
                     str(folder / f"{name}_frame{frame:02d}_gt.nii.gz"))
        if info is not None:
            (folder / "Info.cfg").write_text(info)
    built["evaluate: no Info.cfg, garbled Group"] = (
        model("evaluate", "--data", str(acdc), "--weights", str(weights),
              "--json", str(tmp / "eval.json")),)
    return built


def run_all(tmp: Path) -> list[dict]:
    """Measure every case of :func:`cases`, then two concurrent runs into one folder."""
    weights = tiny_weights(tmp / "weights")
    rows = []
    for name, (argv, *rest) in cases(tmp, weights).items():
        extra = rest[0] if rest else {}
        server = rest[1] if len(rest) > 1 else None
        with server() if server else contextlib.nullcontext((None, [])) as (url, seen):
            env = child_env(**extra, **({"HF_ENDPOINT": url} if url else {}))
            row = measure(argv, env, tmp / "stderr.log")
            if server is fake_hub:
                row["message"] += (f" | {len(seen)} Hub request(s), "
                                   f"{sum('authorization' in r for r in seen)} with Authorization")
        rows.append({"case": name, **row})
    rows.append({"case": "two concurrent predict runs, one --out", **concurrent(tmp, weights)})
    return rows


def concurrent(tmp: Path, weights: Path) -> dict:
    """Two ``predict`` processes started together into one output folder."""
    inputs = [nifti(tmp / f"c{i}.nii.gz", seed=i) for i in range(4)]
    procs = []
    started = time.perf_counter()
    for i in range(2):
        err = open(tmp / f"concurrent{i}.log", "w+")
        argv = ["predict", *map(str, inputs[2 * i:2 * i + 2]), "--model", "unet", "--device",
                "cpu", "--weights", str(weights), "--out", str(tmp / "shared-out")]
        procs.append((start(argv, child_env(), err), err))
    results = []
    for proc, err in procs:
        code, seconds, peak = finish(proc, started)
        err.seek(0)
        lines = [l for l in err.read().splitlines() if l.startswith("error:")]
        err.close()
        results.append((code, seconds, peak, lines))
    import csv

    with open(tmp / "shared-out" / "summary.csv", newline="") as fh:
        kept = sorted(r["name"] for r in csv.DictReader(fh))
    return {"code": "/".join(str(r[0]) for r in results),
            "seconds": max(r[1] for r in results), "peak_mb": max(r[2] for r in results),
            "traceback": False,
            "message": " | ".join(l for r in results for l in r[3]) + f" | summary rows {kept}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lvseg-hostile-") as tmp:
        rows = run_all(Path(tmp))
    print("| case | exit | s | peak MB | traceback | what the user saw |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        message = str(r["message"]).replace(tmp, "<tmp>").replace("|", "/")
        print(f"| {r['case']} | {r['code']} | {r['seconds']:.1f} | {r['peak_mb']:.0f} | "
              f"{'yes' if r['traceback'] else 'no'} | {message} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
