"""Tests of lvseg_core.cohort: the resumable manifest and the Ray Data engine.

Ray runs for real, as a local cluster of 2 CPUs.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from lvseg_core.cohort import MANIFEST_NAME, SegmenterSpec, read_manifest, run_cohort
from lvseg_core.data import VALIDATION_PATIENTS
from lvseg_core.errors import LVSegError
from lvseg_core.models import create_model
from lvseg_core.workflows import collect_inputs
from tests.conftest import acdc_frame


@pytest.fixture()
def scans(acdc_dir, tmp_path):
    """Three real ACDC frames copied into a folder of their own."""
    folder = tmp_path / "scans"
    folder.mkdir()
    for patient in VALIDATION_PATIENTS[:2]:
        shutil.copy(acdc_frame(acdc_dir / patient, "ED"), folder)
    shutil.copy(acdc_frame(acdc_dir / VALIDATION_PATIENTS[0], "ES"), folder)
    return folder


@pytest.fixture()
def small_weights(tmp_path):
    torch.manual_seed(0)
    folder = tmp_path / "weights"
    create_model("unet", decoder_channels=(32, 16, 8, 8)).save_pretrained(folder)
    return folder


def _masks(out):
    return {p.name: np.asanyarray(nib.load(p).dataobj) for p in sorted(out.glob("*_seg.nii.gz"))}


def _mtimes(out):
    return {p.name: p.stat().st_mtime_ns for p in out.glob("*_seg.nii.gz")}


def test_resume_skips_done_and_redoes_changed(scans, small_weights, tmp_path):
    spec = SegmenterSpec("unet", str(small_weights), device="cpu", backend="torch")
    out = tmp_path / "out"
    inputs = collect_inputs([scans])
    first = run_cohort(inputs, spec, out)
    assert len(first.outputs) == 3 and first.ok
    assert len(read_manifest(out)) == 3
    with pytest.raises(LVSegError, match="--resume"):
        run_cohort(inputs, spec, out)
    before = _mtimes(out)
    lines = (out / MANIFEST_NAME).read_text().splitlines()
    again = run_cohort(inputs, spec, out, resume=True)
    assert _mtimes(out) == before  # nothing rewritten
    assert (out / MANIFEST_NAME).read_text().splitlines() == lines
    assert len(again.rows) == len(first.rows) and again.summary_path.is_file()

    changed = sorted(scans.glob("*.nii.gz"))[0]
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    run_cohort(inputs, spec, out, resume=True)
    after = _mtimes(out)
    redone = [n for n in after if after[n] != before[n]]
    assert redone == [changed.name.replace(".nii.gz", "_seg.nii.gz")]

    torch.manual_seed(1)  # new weights: everything is redone
    create_model("unet", decoder_channels=(32, 16, 8, 8)).save_pretrained(small_weights)
    run_cohort(inputs, spec, out, resume=True)
    assert all(_mtimes(out)[n] != after[n] for n in after)
    shas = {e["weights_sha256"] for e in read_manifest(out).values()}
    assert len(shas) == 1


def test_interrupted_manifest_line_is_ignored(scans, small_weights, tmp_path):
    spec = SegmenterSpec("unet", str(small_weights), device="cpu", backend="torch")
    out = tmp_path / "out"
    inputs = collect_inputs([scans])
    run_cohort(inputs, spec, out)
    lines = (out / MANIFEST_NAME).read_text().splitlines()
    (out / MANIFEST_NAME).write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])  # cut short
    before = _mtimes(out)
    run_cohort(inputs, spec, out, resume=True)
    after = _mtimes(out)
    assert sum(after[n] != before[n] for n in after) == 1
    assert all(json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines()[3:])


def test_ray_engine_writes_the_same_masks_as_local(scans, tmp_path, monkeypatch):
    pytest.importorskip("ray.data")
    monkeypatch.setenv("LVSEG_ONNX_CACHE", str(tmp_path / "cache"))
    spec = SegmenterSpec("unet", device="cpu", backend="onnx")  # bundled U-Net
    inputs = collect_inputs([scans])
    local = run_cohort(inputs, spec, tmp_path / "local")
    ray_run = run_cohort(inputs, spec, tmp_path / "ray", engine="ray", workers=2)
    assert local.ok and ray_run.ok
    a, b = _masks(tmp_path / "local"), _masks(tmp_path / "ray")
    assert a.keys() == b.keys() and len(a) == 3
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert [r["name"] for r in local.rows] == [r["name"] for r in ray_run.rows]
    before = _mtimes(tmp_path / "ray")
    run_cohort(inputs, spec, tmp_path / "ray", engine="ray", workers=2, resume=True)
    assert _mtimes(tmp_path / "ray") == before


def test_cli_predict_resume(scans, small_weights, tmp_path, capsys):
    from lvseg_core import cli

    args = ["predict", str(scans), "--model", "unet", "--weights", str(small_weights),
            "--device", "cpu", "--backend", "torch", "--out", str(tmp_path / "out")]
    assert cli.main(args + ["--resume"]) == 0
    assert "segmented 3 of 3" in capsys.readouterr().out
    before = _mtimes(tmp_path / "out")
    assert cli.main(args + ["--resume"]) == 0
    assert _mtimes(tmp_path / "out") == before
    assert cli.main(args + ["--engine", "ray", "--workers", "0"]) == 1
    assert "--workers must be at least 1" in capsys.readouterr().err


def _installed_env(**extra: str) -> dict:
    """This environment with the repository on PYTHONPATH, as where lvseg is installed,
    and Ray kept on loopback: without RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 a head
    started with --node-ip-address 127.0.0.1 still advertises the machine's
    network address."""
    from tests.conftest import ROOT

    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            **extra}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def ray_cluster(tmp_path):
    """A real Ray head on loopback (``ray start --head --block``, 2 CPUs), as a user
    starts one on a cluster's head node; yields its address. The head runs in a
    session of its own and the whole session is ended at teardown (its id only:
    ``ray stop`` would also end other Ray processes of this machine). Yields the
    address and the head's temporary folder (its session logs)."""
    import signal
    import subprocess
    import sys
    import tempfile
    import time

    pytest.importorskip("ray.data")
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="lvray-")  # short: Ray's socket paths must fit 107 bytes
    log = open(tmp_path / "ray-head.log", "w")
    head = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
         "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
         "--num-gpus", "0", "--include-dashboard", "false", "--disable-usage-stats",
         "--temp-dir", temp],
        stdout=log, stderr=subprocess.STDOUT, env=_installed_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in (tmp_path / "ray-head.log").read_text():
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail("ray start --head failed:\n"
                            + (tmp_path / "ray-head.log").read_text()[-2000:])
            time.sleep(0.5)
        yield f"127.0.0.1:{port}", Path(temp)
    finally:
        try:
            os.killpg(head.pid, signal.SIGTERM)  # --block: the head ends what it started
            head.wait(timeout=90)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def test_cli_ray_engine_on_a_running_cluster(scans, tmp_path, ray_cluster):
    """``predict --engine ray --address`` joins the cluster and writes the local
    engine's masks; ``--resume`` there rewrites nothing."""
    import subprocess
    import sys

    # Ray 2.60's heads require a token (made in ~/.ray/auth_token by ray start); a
    # driver joining by address sends it with RAY_AUTH_MODE=token.
    env = _installed_env(LVSEG_ONNX_CACHE=str(tmp_path / "cache"), RAY_AUTH_MODE="token")
    base = [sys.executable, "-m", "lvseg_core", "predict", str(scans), "--model", "unet",
            "--device", "cpu", "--backend", "onnx"]
    local = subprocess.run(base + ["--out", str(tmp_path / "local")], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert local.returncode == 0, local.stderr[-2000:]
    address, head_temp = ray_cluster
    cluster = base + ["--out", str(tmp_path / "cluster"), "--engine", "ray", "--workers", "1",
                      "--address", address]
    run = subprocess.run(cluster, cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "segmented 3 of 3 scan(s) with unet (ray engine)" in run.stdout
    # The actors ran on that head (not on a cluster of the driver's own).
    logs = [p for p in head_temp.glob("session_*/logs/worker-*") if p.is_file()]
    assert any("_SegmentActor" in p.read_text(errors="replace") for p in logs)
    a, b = _masks(tmp_path / "local"), _masks(tmp_path / "cluster")
    assert a.keys() == b.keys() and len(a) == 3
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    before = _mtimes(tmp_path / "cluster")
    again = subprocess.run(cluster + ["--resume"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _mtimes(tmp_path / "cluster") == before


def _cluster_resources(**init) -> dict:
    """``ray.cluster_resources()`` of a real local Ray started with ``init``
    (``num_gpus`` declares logical GPUs: Ray schedules on them as on real ones)."""
    ray = pytest.importorskip("ray")
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **init)
    try:
        return dict(ray.cluster_resources())
    finally:
        ray.shutdown()


def test_actors_ask_for_gpus_only_where_the_cluster_has_them():
    from lvseg_core.cohort import actor_resources

    with_gpus = _cluster_resources(num_cpus=1, num_gpus=2)
    cpu_only = _cluster_resources(num_cpus=1, num_gpus=0)
    assert with_gpus["GPU"] == 2 and "GPU" not in cpu_only
    auto = SegmenterSpec("unet", backend="auto")
    resources, spec = actor_resources(with_gpus, auto, workers=1)
    assert resources == {"num_cpus": 1, "num_gpus": 1.0} and spec.device == "cuda"
    resources, spec = actor_resources(with_gpus, SegmenterSpec("unet", backend="torch"), 4)
    assert resources["num_gpus"] == 0.5 and spec.device == "cuda"   # 4 actors share 2 GPUs
    for cpu_spec in (SegmenterSpec("unet", backend="onnx"),          # ONNX Runtime: CPU only
                     SegmenterSpec("unet", device="cpu", backend="auto")):
        assert actor_resources(with_gpus, cpu_spec, 2) == ({"num_cpus": 1, "num_gpus": 0},
                                                           cpu_spec)
    assert actor_resources(cpu_only, auto, 2) == ({"num_cpus": 1, "num_gpus": 0}, auto)
