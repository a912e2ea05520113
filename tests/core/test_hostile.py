"""Hostile input to the command line, written as an attacker would (issue 13).

Real files and real sockets only: NIfTI headers with hostile voxel sizes, a
gzip bomb built here (a few MB on disk, gigabytes by its header), weights
whose config.json lies, a FIFO and a symbolic link out of a DICOM folder, a
fake Hub on 127.0.0.1 that logs request headers, a tarpit socket that accepts
and never answers, a second run holding the output folder. Each case must end
with one ``error:``/``skipped`` line, no traceback, and a non-zero exit when
nothing was made. Most cases run ``cli.main`` in-process (importing torch
costs ~10 s per subprocess); one subprocess measures peak memory
(``os.wait4``) of the memory-hungry cases together.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bench.hostile import (HUGE_REPO, OWNER_TOKEN, dicom_series, fake_hub, finish, gzip_bomb,
                           hostile_weights, nifti, raw_nifti, start, tarpit, tiny_weights,
                           two_series_folder, volume, child_env)
from lvseg_core import cli
from lvseg_core.errors import LVSegError, ScanReadError
from lvseg_core.io import load_dicom_series, load_nifti
from tests.conftest import ROOT, make_heart



@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return tiny_weights(tmp_path_factory.mktemp("weights") / "unet")


def heart_nifti(path: Path, zooms=(1.5, 1.5, 8.0), shape=(64, 56, 4)) -> Path:
    return nifti(path, zooms, shape)


def raw_pixdim_nifti(path: Path, pixdim) -> Path:
    return raw_nifti(path, volume((32, 32, 2)), pixdim)


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def assert_one_line_error(code: int, err: str, *needles: str) -> str:
    """Exit 1, exactly one ``error:`` line on stderr, no traceback; returns it."""
    assert code == 1, err
    assert "Traceback" not in err
    errors = [line for line in lines(err) if line.startswith("error: ")]
    assert len(errors) == 1, err
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def predict(*args: str) -> int:
    return cli.main(["predict", *args, "--model", "unet", "--device", "cpu"])


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------ memory bounded by the header


def test_gzip_bomb_refused_as_too_large_before_reading(tmp_path):
    bomb = gzip_bomb(tmp_path / "bomb.nii.gz")
    assert bomb.stat().st_size < 4 << 20
    with pytest.raises(ScanReadError, match="too large") as info:
        load_nifti(bomb)
    assert "corrupt" not in str(info.value) and "LVSEG_MAX_DATA_MB" in str(info.value)


def test_limits_are_settings(tmp_path, monkeypatch):
    path = heart_nifti(tmp_path / "heart.nii.gz")
    assert load_nifti(path).shape3d == (64, 56, 4)
    monkeypatch.setenv("LVSEG_MAX_VOXELS", "10000")
    with pytest.raises(ScanReadError, match="LVSEG_MAX_VOXELS"):
        load_nifti(path)
    monkeypatch.setenv("LVSEG_MAX_VOXELS", "lots")
    with pytest.raises(LVSegError, match="LVSEG_MAX_VOXELS"):
        load_nifti(path)
    monkeypatch.delenv("LVSEG_MAX_VOXELS")
    cine = tmp_path / "cine.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([volume((16, 16, 2))] * 45, -1), np.eye(4)), str(cine))
    assert load_nifti(cine).n_frames == 45
    monkeypatch.setenv("LVSEG_PUBLIC", "1")          # public mode: 40 frames at most
    with pytest.raises(ScanReadError, match="LVSEG_MAX_FRAMES"):
        load_nifti(cine)


def test_decompression_stops_at_the_header_size(tmp_path):
    # A small header followed by 2 GiB of gzip zeros: only the declared bytes are read.
    path = heart_nifti(tmp_path / "small.nii.gz", shape=(16, 16, 2))
    with open(path, "ab") as fh:
        fh.write(gzip_bomb(tmp_path / "tail.gz").read_bytes())
    assert load_nifti(path).shape3d == (16, 16, 2)


@pytest.mark.parametrize("zooms, needle", [
    ((1e30, 1e30, 8.0), "voxel size"),
    ((20.0, 20.0, 10.0), "LVSEG_MAX_GRID_VOXELS"),
])
def test_hostile_voxel_sizes_one_line(tmp_path, weights, capsys, zooms, needle):
    scan = heart_nifti(tmp_path / "scan.nii.gz", zooms, shape=(256, 256, 3))
    code = predict(str(scan), "--weights", str(weights), "--out", str(tmp_path / "out"))
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    skipped = [line for line in lines(err) if line.startswith("skipped scan: ")]
    assert len(skipped) == 1 and needle in skipped[0], err


@pytest.mark.parametrize("pixdim, needle", [
    ((np.nan, 1.0, 8.0), "zero or not finite"),
    ((0.0, 1.0, 8.0), "zero or not finite"),     # nibabel alone would take 1 mm
    ((np.inf, 1.0, 8.0), "zero or not finite"),
])
def test_non_finite_or_zero_pixdim(tmp_path, pixdim, needle):
    path = raw_pixdim_nifti(tmp_path / "bad.nii", pixdim)
    with pytest.raises(ScanReadError, match=needle):
        load_nifti(path)


# ------------------------------------------------------------------ weights configs that lie


@pytest.mark.parametrize("edit, needle", [
    (lambda c: c["arch_args"].update(depth_charge=3), "depth_charge"),
    (lambda c: c["arch_args"].update(encoder_depth="deep"), "arch_args"),
    (lambda c: c["preprocess"].update(divisor=0), "divisor"),
    (lambda c: c["preprocess"].update(spacing_mm=[0, 0]), "spacing_mm"),
    (lambda c: c["preprocess"].update(spacing_mm=[1.5]), "spacing_mm"),
    (lambda c: c["preprocess"].update(clip_percentiles=[90, 10]), "clip_percentiles"),
    (lambda c: c.update(labels=["background"]), "labels"),
    (lambda c: c.update(arch_args=[1, 2]), "arch_args"),
    (lambda c: c["arch_args"].update(decoder_channels=[100000, 8, 8]), "M parameters"),
    (lambda c: c.update(architecture=["unet"]), "unknown architecture"),
])
def test_lying_weights_config_one_line(tmp_path, weights, capsys, edit, needle):
    bad = hostile_weights(weights, tmp_path / "bad", edit)
    scan = heart_nifti(tmp_path / "scan.nii.gz")
    code = predict(str(scan), "--weights", str(bad), "--out", str(tmp_path / "out"))
    assert_one_line_error(code, capsys.readouterr().err, needle)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ DICOM folders that trap


def test_fifo_and_links_out_of_a_dicom_folder_are_skipped(tmp_path):
    folder = tmp_path / "study" / "series"
    dicom_series(folder)
    outside = tmp_path / "outside"
    dicom_series(outside, seed=1, description="someone else's")
    os.mkfifo(folder / "trap")                 # dcmread would block on it for ever
    (folder / "IM9999.dcm").symlink_to(next(outside.iterdir()))
    (folder / "up").symlink_to("..", target_is_directory=True)
    done = {}
    reader = threading.Thread(target=lambda: done.update(scan=load_dicom_series(folder)),
                              daemon=True)
    reader.start()
    reader.join(60)
    assert not reader.is_alive(), "reading a folder with a FIFO hung"
    scan = done["scan"]
    assert scan.shape3d == (48, 40, 3) and scan.meta["series_description"] == "cine"
    skipped = dict(scan.meta["skipped_files"])
    assert set(skipped) == {"trap", "IM9999.dcm"}
    assert "not a regular file" in skipped["trap"]
    assert "outside" in skipped["IM9999.dcm"]


def test_link_to_the_parent_is_not_read_as_a_series(tmp_path, weights, capsys):
    parent = tmp_path / "parent"
    dicom_series(parent, description="the parent's")   # loose DICOM files one level up
    folder = parent / "inbox"
    folder.mkdir()
    heart_nifti(folder / "scan.nii.gz")
    (folder / "up").symlink_to("..", target_is_directory=True)
    out = tmp_path / "out"
    code = predict(str(folder), "--weights", str(weights), "--out", str(out))
    err = capsys.readouterr().err
    assert code == 0, err
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["scan_seg.nii.gz"]
    assert any(line.startswith("warning: ") and "up" in line and "outside" in line
               for line in lines(err)), err


def test_two_equal_series_need_series_uid(tmp_path, weights, capsys):
    folder = tmp_path / "two"
    two_series_folder(folder)
    code = predict(str(folder), "--weights", str(weights), "--out", str(tmp_path / "o1"))
    err = capsys.readouterr().err
    assert code == 1 and "--series-uid" in err and "Traceback" not in err
    import pydicom

    uid = str(pydicom.dcmread(str(next(folder.glob("b_*"))), stop_before_pixels=True)
              .SeriesInstanceUID)
    code = predict(str(folder), "--weights", str(weights), "--out", str(tmp_path / "o2"),
                   "--series-uid", uid)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert any(line.startswith("note: ") and "series a" in line for line in lines(err)), err
    row = read_rows(tmp_path / "o2" / "summary.csv")[0]
    assert "series a" in row["notes"]


def test_skipped_localizer_is_printed(tmp_path, weights, capsys):
    folder = tmp_path / "study"
    two_series_folder(folder, second=1)        # "series b": a one-slice localizer
    code = predict(str(folder), "--weights", str(weights), "--out", str(tmp_path / "out"))
    err = capsys.readouterr().err
    assert code == 0, err
    assert any(line.startswith("note: ") and "series b" in line and "1 image" in line
               for line in lines(err)), err


# ------------------------------------------------------------------ the Hub: tokens, timeouts, fallbacks


@pytest.fixture
def hub_log(monkeypatch):
    """The fake Hub of :func:`bench.hostile.fake_hub` as HF_ENDPOINT, with an owner token set."""
    with fake_hub() as (url, seen):
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_TOKEN", OWNER_TOKEN)
        yield seen


def test_hub_fetch_is_anonymous_unless_the_owner_opts_in(tmp_path, hub_log, monkeypatch,
                                                          capsys):
    fake_hub = hub_log
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    scan = heart_nifti(tmp_path / "scan.nii.gz")
    code = predict(str(scan), "--weights", "victim-org/private-weights",
                   "--out", str(tmp_path / "out"))
    assert_one_line_error(code, capsys.readouterr().err, "victim-org/private-weights")
    assert fake_hub, "the fake Hub was never asked"
    assert all("authorization" not in request for request in fake_hub)

    fake_hub.clear()
    monkeypatch.setenv("LVSEG_HUB_USE_TOKEN", "1")
    predict(str(scan), "--weights", "victim-org/private-weights", "--out", str(tmp_path / "o2"))
    capsys.readouterr()
    assert any(r.get("authorization") == f"Bearer {OWNER_TOKEN}" for r in fake_hub)

    fake_hub.clear()
    monkeypatch.setenv("LVSEG_PUBLIC", "1")          # public mode wins over the opt-in
    predict(str(scan), "--weights", "victim-org/private-weights", "--out", str(tmp_path / "o3"))
    capsys.readouterr()
    assert fake_hub and all("authorization" not in request for request in fake_hub)


def test_huge_hub_weights_refused_before_download(tmp_path, hub_log, monkeypatch):
    from lvseg_core.errors import WeightsError
    from lvseg_core.hub import fetch_from_hub

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(WeightsError, match="LVSEG_MAX_WEIGHTS_MB"):
        fetch_from_hub(HUGE_REPO)
    assert hub_log and not any("/resolve/" in r["path"] for r in hub_log)
    assert not any("authorization" in r for r in hub_log)


@pytest.fixture
def hub_tarpit(monkeypatch):
    with tarpit() as (url, held):
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        yield held


def test_tarpit_hub_gives_a_clear_error_in_time(tmp_path, hub_tarpit, weights, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("LVSEG_HUB_TIMEOUT", "2")
    scan = heart_nifti(tmp_path / "scan.nii.gz")
    result = {}

    def run():
        import contextlib
        import io

        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            result["code"] = predict(str(scan), "--weights", "owner/slow-weights",
                                     "--out", str(tmp_path / "out"))
        result["err"] = err.getvalue()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the Hub fetch hung on a server that never answers"
    assert hub_tarpit, "the tarpit was never connected to"
    assert_one_line_error(result["code"], result["err"], "owner/slow-weights")
    assert not (tmp_path / "out").exists()


def test_named_weights_unreachable_fail_unless_fallback(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    scan = heart_nifti(tmp_path / "scan.nii.gz")
    code = predict(str(scan), "--weights", "owner/uncached", "--out", str(tmp_path / "out"))
    assert_one_line_error(code, capsys.readouterr().err, "owner/uncached")
    assert not (tmp_path / "out").exists()
    if not (ROOT / "weights" / "unet" / "model.safetensors").is_file():
        pytest.skip("no bundled U-Net weights to fall back to")
    code = predict(str(scan), "--weights", "owner/uncached", "--out", str(tmp_path / "out"),
                   "--fallback-bundled")
    err = capsys.readouterr().err
    assert code == 0, err
    assert any(line.startswith("warning: ") and "bundled" in line for line in lines(err))
    row = read_rows(tmp_path / "out" / "summary.csv")[0]
    assert row["weights"] == "bundled:unet"


def test_every_summary_row_names_the_weights(tmp_path, weights, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    heart_nifti(folder / "good.nii.gz")
    (folder / "broken.nii.gz").write_bytes(b"not a nifti")
    out = tmp_path / "out"
    predict(str(folder), "--weights", str(weights), "--out", str(out))
    capsys.readouterr()
    rows = read_rows(out / "summary.csv")
    assert {r["kind"] for r in rows} == {"frame", "failed"}
    digest = hashlib.sha256((weights / "model.safetensors").read_bytes()).hexdigest()
    for row in rows:
        assert row["weights"] == f"local:{weights}"
        assert row["weights_sha256"] == digest


# ------------------------------------------------------------------ nothing lost


def test_second_run_into_a_busy_output_folder_refuses(tmp_path, weights, capsys):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, sys, time\n"
         f"fh = open({str(out / '.lvseg-predict.lock')!r}, 'a')\n"
         "fcntl.flock(fh, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(120)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        scan = heart_nifti(tmp_path / "scan.nii.gz")
        code = predict(str(scan), "--weights", str(weights), "--out", str(out))
        assert_one_line_error(code, capsys.readouterr().err, "output folder in use")
    finally:
        holder.kill()
        holder.wait()
    code = predict(str(scan), "--weights", str(weights), "--out", str(out))
    assert code == 0, capsys.readouterr().err


def acdc_patient(folder: Path, info: str | None, seed: int = 0) -> None:
    folder.mkdir(parents=True)
    scan, labels = make_heart((48, 40, 3), seed=seed)
    for frame in (1, 5):
        name = f"{folder.name}_frame{frame:02d}"
        nib.save(nib.Nifti1Image(scan.array, scan.affine), str(folder / f"{name}.nii.gz"))
        nib.save(nib.Nifti1Image(labels, scan.affine), str(folder / f"{name}_gt.nii.gz"))
    if info is not None:
        (folder / "Info.cfg").write_text(info)


def test_evaluate_reports_patients_it_cannot_use(tmp_path, weights, capsys):
    data = tmp_path / "acdc"
    acdc_patient(data / "patient001", "ED: 1\nES: 5\nGroup: NOR\n")
    acdc_patient(data / "patient002", None, seed=1)
    acdc_patient(data / "patient003", "ED: 1\nES: 5\nGroup: NOR<script>\n", seed=2)
    report = tmp_path / "eval.json"
    code = cli.main(["evaluate", "--data", str(data), "--model", "unet", "--weights",
                     str(weights), "--json", str(report), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    result = json.loads(report.read_text())
    failed = {f["name"]: f["error"] for f in result["failed"]}
    assert "Info.cfg" in failed["patient002"]
    assert "Group" in failed["patient003"]
    assert {c["group"] for c in result["per_case"]} <= {"NOR", ""}
    assert set(result["by_group"]) == {"NOR"}
    assert any("patient002" in line for line in lines(err))


# ------------------------------------------------------------------ peak memory, in a subprocess


def test_memory_bounded_in_a_real_process(tmp_path, weights):
    """The hostile files of the issue in one ``predict`` run: each is skipped with
    one line, and the process's peak memory (``os.wait4``) stays under 3 GB."""
    folder = tmp_path / "hostile"
    folder.mkdir()
    gzip_bomb(folder / "bomb.nii.gz")
    heart_nifti(folder / "pixdim.nii.gz", (1e30, 1e30, 8.0), shape=(64, 56, 4))
    heart_nifti(folder / "coarse.nii.gz", (20.0, 20.0, 10.0), shape=(256, 256, 3))
    assert (folder / "coarse.nii.gz").stat().st_size < 1 << 20
    argv = ["predict", str(folder), "--model", "unet", "--weights", str(weights),
            "--out", str(tmp_path / "out"), "--device", "cpu"]
    with open(tmp_path / "stderr", "w+") as err:
        code, _seconds, peak_mb = finish(start(argv, child_env(), err), time.perf_counter())
        err.seek(0)
        text = err.read()
    peak_gb = peak_mb / 1024
    assert code == 1 and "Traceback" not in text, text
    skipped = {line.split(":")[0] for line in lines(text) if line.startswith("skipped ")}
    assert skipped == {"skipped bomb", "skipped pixdim", "skipped coarse"}, text
    assert peak_gb < 3.0, f"peak memory {peak_gb:.2f} GB"
