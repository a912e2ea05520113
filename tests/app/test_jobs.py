"""Tests of lvseg_app.jobs: background training runs as the Train page sees them.

No real training here: fake runs are folders with a hand-written
``metrics.jsonl``, and the background process is a short Python loop that
writes epoch lines, so that starting, watching and stopping are tested in a
second or two. The command lines given to ``python -m train`` are checked
against its real argument parser.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from lvseg_app import jobs
from lvseg_core import records
from lvseg_core.records import TrainConfig
from lvseg_core.errors import LVSegError


def write_events(run: Path, events: list[dict], config: dict | None = None) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(config or {"model": "unet", "epochs": 10}))
    with open(run / "metrics.jsonl", "w") as handle:
        handle.writelines(json.dumps(event) + "\n" for event in events)


def epoch(n: int, dice: float | None, loss: float = 1.0, elapsed: float = 0.0) -> dict:
    return {"event": "epoch", "epoch": n, "max_epochs": 10, "train_loss": loss,
            "val_loss": loss + 0.1, "val_dice": dice, "val_dice_RV": dice, "val_dice_Myo": dice,
            "val_dice_LV": dice, "lr": 1e-3, "seconds": 60.0, "elapsed": elapsed}


def test_finished_run_reports_best_epoch_and_weights(tmp_path):
    run = tmp_path / "unet-a"
    write_events(run, [{"event": "initial_loss", "initial_ce": 1.39},
                       {"event": "start", "time": 1000.0, "max_epochs": 10},
                       epoch(0, 0.5, elapsed=60), epoch(1, 0.8, elapsed=120),
                       epoch(2, 0.7, elapsed=180),
                       {"event": "end", "time": 1200.0, "epochs": 3, "interrupted": False}])
    (run / "model").mkdir()
    (run / "model" / "model.safetensors").write_bytes(b"x")
    (run / "metrics.jsonl").open("a").write('{"event": "epo')    # half-written line
    info = jobs.run_info(run)
    assert info.status == "finished" and info.model == "unet" and info.kind == "fit"
    assert info.epochs_done == 3 and info.best["epoch"] == 1 and info.best_dice == 0.8
    assert info.has_model and not info.started_here
    row = info.summary()
    assert row["best val Dice"] == 0.8 and row["Dice LV"] == 0.8 and row["weights"] == "model/"
    assert [r.name for r in jobs.weights_runs("unet", tmp_path)] == ["unet-a"]
    assert jobs.weights_runs("vnet", tmp_path) == []


def test_resumed_run_adds_up_its_parts(tmp_path):
    # Stopped after 2 epochs, resumed for 12: time is the sum of epoch times (the
    # elapsed clock restarted), the planned epochs are those of the last start.
    run = tmp_path / "unet-resumed"
    write_events(run, [{"event": "start", "time": 1000.0, "max_epochs": 10},
                       epoch(0, 0.5, elapsed=60), epoch(1, 0.6, elapsed=120),
                       {"event": "error", "message": "SIGTERMException"},
                       {"event": "start", "time": 5000.0, "max_epochs": 12},
                       {**epoch(2, 0.7, elapsed=60), "max_epochs": 12},
                       {"event": "end", "time": 5100.0, "epochs": 12, "interrupted": False}])
    info = jobs.run_info(run)
    assert info.status == "finished" and info.epochs_done == 3 and info.max_epochs == 12
    assert info.elapsed == pytest.approx(180.0)
    assert records.since_last_start(records.read_events(run))[0]["time"] == 5000.0


def test_repeated_epochs_replace_the_lost_ones(tmp_path):
    # Resumed from the checkpoint of epoch 0: epoch 1 ran twice. The curve keeps
    # the second one (its weights went on), the time counts both.
    run = tmp_path / "unet-repeated"
    write_events(run, [{"event": "start", "time": 1000.0, "max_epochs": 3},
                       epoch(0, 0.5, elapsed=60), epoch(1, 0.9, elapsed=120),
                       {"event": "start", "time": 5000.0, "max_epochs": 3},
                       epoch(1, 0.6, elapsed=60), epoch(2, 0.7, elapsed=120)])
    events = records.read_events(run)
    assert [(e["epoch"], e["val_dice"]) for e in records.epoch_events(events)] == \
        [(0, 0.5), (1, 0.6), (2, 0.7)]
    info = jobs.run_info(run)
    assert info.epochs_done == 3 and info.best["epoch"] == 2
    assert info.elapsed == pytest.approx(240.0)


def test_failed_and_lr_find_runs(tmp_path):
    failed = tmp_path / "bad"
    write_events(failed, [{"event": "start", "time": 1.0, "max_epochs": 10},
                          {"event": "error", "message": "CUDA out of memory"}])
    lr = tmp_path / "lr"
    lr.mkdir()
    (lr / "lr_find.json").write_text(json.dumps(
        {"model": "vnet", "suggestion": 3e-4, "lr": [1e-5, 1e-4], "loss": [2.0, 1.5]}))
    (tmp_path / "cache").mkdir()                              # not a run
    listed = {r.name: r for r in jobs.list_runs(tmp_path)}
    assert set(listed) == {"bad", "lr"}
    assert listed["bad"].status == "failed" and listed["bad"].error == "CUDA out of memory"
    assert listed["lr"].kind == "lr-find" and listed["lr"].status == "finished"
    assert listed["lr"].model == "vnet"
    assert records.read_lr_find(lr)["suggestion"] == 3e-4


def test_progress_and_eta_from_epochs(tmp_path, monkeypatch):
    run = tmp_path / "live"
    write_events(run, [{"event": "start", "time": 1000.0, "max_epochs": 10},
                       epoch(0, 0.3), epoch(1, 0.5)],
                 config={"model": "unet", "epochs": 10, "max_time": "00:00:30:00"})
    (run / "train.log").write_text("Epoch 2:  50%|#####     | 41/82 [00:40<00:40]")
    monkeypatch.setattr(jobs, "find_external_pid", lambda _run: 4242)
    monkeypatch.setattr(jobs, "pid_alive", lambda pid, expect="train": True)
    info = jobs.run_info(run, now=1000.0 + 250.0)
    assert info.status == "running" and info.pid == 4242
    assert info.fraction == pytest.approx(2.5 / 10)
    assert info.elapsed == pytest.approx(250.0)
    assert info.eta_seconds == pytest.approx(750.0)          # 250 s for 25 %
    # The max-time limit caps the estimate.
    info = jobs.run_info(run, now=1000.0 + 1700.0)
    assert info.eta_seconds == pytest.approx(100.0)


def test_helpers():
    assert jobs.parse_max_time("01:02:03:04") == 93784
    assert jobs.parse_max_time("bad") is None and jobs.parse_max_time(None) is None
    assert jobs.format_seconds(3725) == "1 h 02 min"
    assert jobs.format_seconds(250) == "4 min 10 s"
    assert jobs.format_seconds(None) == "?"
    assert jobs.check_run_name("unet_run-1.b") == "unet_run-1.b"
    for bad in ("", "../x", "a/b", "-x", "x" * 81, "a b"):
        with pytest.raises(LVSegError):
            jobs.check_run_name(bad)


def test_commands_parse_with_the_trainer(tmp_path):
    from train.cli import build_parser

    options = TrainConfig(model="vnet", data=str(tmp_path), epochs=3, lr=2e-3,
                          batch_size=2, crop=(128, 96), depth=8, augment=False,
                          max_time="00:01:00:00", threads=1,
                          limit_train_batches=0.25, arch_args={"base_channels": 4})
    parser = build_parser()
    args = parser.parse_args(["fit", *options.cli_args("fit"), "--overfit-batches", "2",
                              "--run-dir", str(tmp_path / "r")])
    assert (args.model, args.epochs, args.lr, args.batch_size) == ("vnet", 3, 2e-3, 2)
    assert tuple(args.crop) == (128, 96) and args.no_augment and args.threads == 1
    assert args.arch_args == {"base_channels": 4} and args.overfit_batches == 2
    assert args.limit_train_batches == 0.25 and args.max_time == "00:01:00:00"
    args = parser.parse_args(["lr-find", *options.cli_args("lr-find"), "--out", str(tmp_path)])
    assert args.command == "lr-find" and args.model == "vnet"


FAKE_TRAINER = r"""
import json, sys, time
run = sys.argv[1]
with open(run + "/metrics.jsonl", "a") as f:
    f.write(json.dumps({"event": "start", "time": time.time(), "max_epochs": 100}) + "\n")
    for n in range(100):
        time.sleep(0.05)
        f.write(json.dumps({"event": "epoch", "epoch": n, "max_epochs": 100,
                            "train_loss": 1.0 / (n + 1), "val_dice": n / 100}) + "\n")
        f.flush()
        print(f"epoch {n}", flush=True)
"""


def test_launch_watch_and_stop_a_background_process(tmp_path):
    run = tmp_path / "fake-train"
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAINER)
    info = jobs.launch([sys.executable, str(script), str(run)], run, "fit")
    try:
        assert info.started_here and jobs.read_process(run)["pid"] > 0
        deadline = time.time() + 20
        while time.time() < deadline and jobs.run_info(run).epochs_done < 2:
            time.sleep(0.1)
        live = jobs.run_info(run)
        assert live.status == "running" and live.epochs_done >= 2
        assert jobs.is_running(run)
        assert "epoch" in jobs.log_tail(run)
        # Same name again is refused.
        with pytest.raises(LVSegError, match="exists"):
            jobs.launch([sys.executable, "-c", "pass"], run, "fit")
    finally:
        assert jobs.stop_run(run, timeout=5)
    assert not jobs.is_running(run)
    stopped = jobs.run_info(run)
    assert stopped.status == "stopped" and stopped.pid is None


def test_stop_refuses_runs_started_elsewhere(tmp_path):
    run = tmp_path / "unet-main"
    write_events(run, [{"event": "start", "time": 1.0, "max_epochs": 10}])
    with pytest.raises(LVSegError, match="not started from the app"):
        jobs.stop_run(run)


def test_start_fit_checks_data_folder(tmp_path):
    with pytest.raises(LVSegError, match="data folder not found"):
        jobs.start_fit(TrainConfig(data=str(tmp_path / "missing")), "x", tmp_path)
    assert not (tmp_path / "x").exists()


def test_real_training_run_started_like_the_train_page(tmp_path):
    """``python -m train fit`` really runs in the background and its exported
    weights become selectable (2 epochs of a narrow U-Net on synthetic hearts)."""
    from tests.app.test_app import make_sample_folder

    make_sample_folder(tmp_path / "samples")
    options = TrainConfig(model="unet", data=str(tmp_path / "samples"), epochs=2,
                          batch_size=4, crop=(64, 64), threads=1, patience=0,
                          arch_args={"encoder_depth": 3, "decoder_channels": [16, 8, 8]})
    info = jobs.start_fit(options, "tiny", tmp_path / "runs")
    try:
        deadline = time.time() + 300
        while time.time() < deadline and jobs.run_info(info.path).running:
            time.sleep(1)
        done = jobs.run_info(info.path)
        assert done.status == "finished", (done.error, jobs.log_tail(info.path))
    finally:
        if jobs.is_running(info.path):
            jobs.stop_run(info.path, timeout=5)
    assert done.epochs_done == 2 and done.best is not None and done.has_model
    assert "\x1b[" not in jobs.log_tail(info.path)
    assert [r.name for r in jobs.weights_runs("unet", tmp_path / "runs")] == ["tiny"]
    from lvseg_core.hub import resolve_weights

    assert resolve_weights("unet", str(info.path)).folder == info.path / "model"


def test_bf16_volumetric_training_on_the_cpu_is_not_started(tmp_path, monkeypatch):
    """The Train page refuses at once what the trainer would refuse (it diverges),
    instead of starting a process that fails."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    data = tmp_path / "data"
    data.mkdir()
    vnet = TrainConfig(model="vnet", data=str(data), precision="bf16-mixed")
    for start in (jobs.start_fit, jobs.start_overfit, jobs.start_lr_find):
        with pytest.raises(LVSegError, match="32-true"):
            start(vnet, name="refused", runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()
    TrainConfig(model="unet", precision="bf16-mixed").check_precision()    # 2D: fine
    TrainConfig(model="vnet", precision="bf16-mixed", accelerator="gpu").check_precision()
