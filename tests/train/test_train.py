"""End-to-end tests of the training pipeline (``python -m train``): real Lightning on the CPU.

No mocks: a tiny synthetic ACDC-layout folder is written once per module and
tiny networks are trained on it for a few steps. Everything goes through
``train.cli.main`` (in-process, returns the exit code), except DDP, which
needs its own processes.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from lvseg_core.hub import load_model
from lvseg_core.inference import Segmenter
from lvseg_core.labels import STRUCTURES
from tests.conftest import make_heart
from train.cli import main
from train.task import SegmentationTask

ROOT = Path(__file__).resolve().parents[2]
LN4 = math.log(4)
SPACING = (1.5625, 1.5625, 10.0)

#: Tiny widths: every architecture trains a step in well under a second here.
ARCH_ARGS = {
    "unet": {"encoder_name": "tu-resnet10t", "encoder_depth": 3, "decoder_channels": [16, 8, 8]},
    "attention_unet": {"channels": [4, 8, 16]},
    "vnet": {"base_channels": 2, "convs_per_level": [1, 1]},
}



def _save(array: np.ndarray, path: Path) -> None:
    nib.Nifti1Image(array, np.diag([*SPACING, 1.0])).to_filename(str(path))


@pytest.fixture(scope="module")
def acdc(tmp_path_factory) -> Path:
    """Four synthetic patients in the ACDC layout (ED frame 1, ES frame 2, with labels)."""
    root = tmp_path_factory.mktemp("acdc")
    for n in range(1, 5):
        patient = root / f"patient{n:03d}"
        patient.mkdir()
        (patient / "Info.cfg").write_text("ED: 1\nES: 2\nGroup: NOR\n")
        for frame in (1, 2):
            scan, labels = make_heart((64, 64, 4), SPACING, seed=10 * n + frame)
            stem = f"patient{n:03d}_frame{frame:02d}"
            _save(scan.array.astype(np.float32), patient / f"{stem}.nii.gz")
            _save(labels.astype(np.uint8), patient / f"{stem}_gt.nii.gz")
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def data_args(model: str, acdc: Path, cache: Path, crop: int = 32, devices: int = 1) -> list[str]:
    """Options shared by fit / initial-loss / lr-find / search."""
    return ["--model", model, "--data", str(acdc), "--arch-args", json.dumps(ARCH_ARGS[model]),
            "--crop", str(crop), str(crop), "--batch-size", "4", "--cache-dir", str(cache),
            "--val-patients", "patient004", "--threads", "1", "--accelerator", "cpu",
            "--devices", str(devices)]


def events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def of_kind(run: Path, kind: str) -> list[dict]:
    return [e for e in events(run) if e["event"] == kind]


def one_error_line(err: str) -> str:
    """The stderr of a failed command: exactly one ``error:`` line, no traceback."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


_fitted: dict[str, Path] = {}


@pytest.fixture(scope="module")
def fitted(acdc, cache, tmp_path_factory):
    """``fitted(model)``: a run folder of a short fit of ``model`` (trained once per module)."""
    root = tmp_path_factory.mktemp("runs")

    def fit(model: str) -> Path:
        if model not in _fitted:
            run = root / model
            code = main(["fit", *data_args(model, acdc, cache), "--epochs", "1",
                         "--limit-train-batches", "2", "--run-dir", str(run)])
            assert code == 0
            _fitted[model] = run
        return _fitted[model]

    yield fit
    _fitted.clear()


# --- 1. a short fit of each architecture leaves a complete run folder -------------------------


@pytest.mark.parametrize("model", list(ARCH_ARGS))
def test_fit_writes_run_folder(model, fitted):
    run = fitted(model)
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == model and config["arch_args"] == ARCH_ARGS[model]
    assert config["run_dir"] == str(run) and config["crop"] == [32, 32]

    (init,) = of_kind(run, "initial_loss")
    assert abs(init["initial_ce"] - LN4) < 0.25, init
    assert init["expected_ce"] == pytest.approx(LN4)
    kinds = [e["event"] for e in events(run)]
    assert kinds == ["initial_loss", "start", "epoch", "end"], kinds
    (start,) = of_kind(run, "start")
    # V-Net batches are stacks, one per volume: 6 training volumes make 1 batch of 4.
    steps = 1 if model == "vnet" else 2
    assert start["max_epochs"] == 1 and start["steps_per_epoch"] == steps
    (epoch,) = of_kind(run, "epoch")
    assert epoch["epoch"] == 0 and epoch["step"] == steps
    assert epoch["train_loss"] > 0 and epoch["val_loss"] > 0
    for name in STRUCTURES:
        assert f"val_dice_{name}" in epoch
        assert epoch[f"val_dice_{name}"] is None or 0 <= epoch[f"val_dice_{name}"] <= 1
    assert 0 <= epoch["val_dice"] <= 1
    (end,) = of_kind(run, "end")
    assert end["interrupted"] is False

    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    model_dir = run / "model"
    assert (model_dir / "model.safetensors").stat().st_size > 0
    exported = json.loads((model_dir / "config.json").read_text())
    assert exported["architecture"] == model and exported["arch_args"] == ARCH_ARGS[model]
    assert exported["metrics"]["val_dice"] == pytest.approx(epoch["val_dice"])
    card = (model_dir / "README.md").read_text()
    front = card.split("---\n")[1]
    assert card.startswith("---\n") and "model-index:" in front and "library_name: lvseg" in front


# --- 2. the overfit check: one fixed batch is learnt ----------------------------------------


def test_overfit_one_batch(acdc, cache, tmp_path):
    run = tmp_path / "overfit"
    # A 64x64 crop of a 64x64 slice is the whole slice, so the batch is the same every epoch.
    # With the default one-cycle schedule, lr 3e-3 anneals away at a loss of ~0.33 in 60
    # steps; 1e-2 gets to ~0.03.
    code = main(["fit", *data_args("unet", acdc, cache, crop=64), "--overfit-batches", "1",
                 "--epochs", "60", "--lr", "1e-2", "--run-dir", str(run)])
    assert code == 0
    epochs = of_kind(run, "epoch")
    assert len(epochs) == 60
    first, last = epochs[0]["train_loss"], epochs[-1]["train_loss"]
    assert last < 0.25 and last < first / 3, (first, last)
    assert (run / "checkpoints" / "best.ckpt").is_file()


def test_one_cycle_schedule_of_ten_steps(acdc, cache, tmp_path):
    # torch's OneCycleLR divides by zero when pct_start * total_steps == 1 (0.1 x 10).
    run = tmp_path / "ten"
    assert main(["fit", *data_args("attention_unet", acdc, cache), "--epochs", "5",
                 "--limit-train-batches", "2", "--run-dir", str(run)]) == 0
    epochs = of_kind(run, "epoch")
    assert [e["step"] for e in epochs] == [2, 4, 6, 8, 10]
    assert epochs[-1]["lr"] < epochs[0]["lr"]  # annealed


def test_max_steps_mid_epoch_still_validates(acdc, cache, tmp_path):
    # Lightning stops at max_steps without validating: no val_dice for early stopping
    # (which raised) or for the checkpoint (none was written).
    run = tmp_path / "steps"
    assert main(["fit", *data_args("unet", acdc, cache), "--max-steps", "1",
                 "--run-dir", str(run)]) == 0
    (epoch,) = of_kind(run, "epoch")
    assert epoch["step"] == 1 and epoch["val_dice"] is not None
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert (run / "model" / "model.safetensors").is_file()


def test_val_every_leaves_unvalidated_epochs_blank(acdc, cache, tmp_path):
    # Validating every 2nd epoch: the epochs in between carry no (stale) val figures,
    # and the best checkpoint still comes from a validated epoch.
    run = tmp_path / "every2"
    assert main(["fit", *data_args("vnet", acdc, cache), "--epochs", "4", "--val-every", "2",
                 "--limit-train-batches", "1", "--run-dir", str(run)]) == 0
    epochs = of_kind(run, "epoch")
    assert [e["epoch"] for e in epochs] == [0, 1, 2, 3]
    assert [e["val_dice"] is not None for e in epochs] == [False, True, False, True]
    assert json.loads((run / "config.json").read_text())["val_every"] == 2
    assert (run / "checkpoints" / "best.ckpt").is_file()


# --- 3. export, and the exported weights through lvseg_core -------------------------------


def test_export_reload_and_segment(fitted, tmp_path, capsys):
    run = fitted("unet")
    out = tmp_path / "w"
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json",
                                                    "model.safetensors"]

    model, weights = load_model("unet", str(out))
    assert weights.kind == "local" and weights.folder == out
    task = SegmentationTask.load_from_checkpoint(run / "checkpoints" / "best.ckpt",
                                                 map_location="cpu", weights_only=False)
    task.eval()
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(x), task.model(x)
    assert a.shape == (2, 4, 32, 32)
    assert torch.equal(a, b)
    # A fresh model differs, so the equality above is a real check.
    assert not torch.equal(a, SegmentationTask("unet", ARCH_ARGS["unet"]).eval().model(x))

    scan, _ = make_heart((70, 60, 3), (1.4, 1.4, 8.0), seed=99)
    segmenter = Segmenter.from_source("unet", str(out), device="cpu")
    result = segmenter.segment(scan)
    assert result.mask.shape == scan.array.shape == (70, 60, 3)
    assert result.mask.dtype == np.uint8 and set(np.unique(result.mask)) <= {0, 1, 2, 3}

    capsys.readouterr()
    assert main(["export", str(run), "--out", str(out)]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "--overwrite" in line and str(out) in line
    assert main(["export", str(run), "--out", str(out), "--overwrite"]) == 0
    assert (out / "model.safetensors").is_file()

    assert main(["export", str(tmp_path / "no-run"), "--out", str(tmp_path / "x")]) == 1
    assert "no such run folder" in one_error_line(capsys.readouterr().err)


def test_export_with_half_kernels(fitted, tmp_path):
    run = fitted("unet")
    assert main(["export", str(run), "--out", str(tmp_path / "full")]) == 0
    assert main(["export", str(run), "--out", str(tmp_path / "half"), "--half"]) == 0
    full, half = (tmp_path / n / "model.safetensors" for n in ("full", "half"))
    assert half.stat().st_size < 0.6 * full.stat().st_size
    a, _ = load_model("unet", str(tmp_path / "full"))
    b, _ = load_model("unet", str(tmp_path / "half"))
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ya, yb = a(x), b(x)
    assert not torch.equal(ya, yb) and torch.allclose(ya, yb, atol=1e-2 * float(ya.abs().max()))
    assert (tmp_path / "half" / "config.json").read_text() == \
        (tmp_path / "full" / "config.json").read_text()


def test_export_stores_an_evaluation_report(fitted, tmp_path, capsys):
    run = fitted("unet")
    report = tmp_path / "eval.json"
    report.write_text(json.dumps({
        "model": "unet", "cases": 4, "split": "validation", "ef_abs_error": 3.25,
        "rv_ef_abs_error": 9.5, "seconds_per_volume": 0.4,
        "dice": {"RV": 0.81, "Myo": 0.82, "LV": 0.93, "mean": 0.853},
        "hd95_mm": {"RV": 9.0, "Myo": 3.0, "LV": 2.5, "mean": 4.83}}))
    out = tmp_path / "w"
    assert main(["export", str(run), "--out", str(out), "--evaluation", str(report)]) == 0
    metrics = json.loads((out / "config.json").read_text())["metrics"]
    assert metrics["eval_dice_LV"] == 0.93 and metrics["eval_hd95_mm_mean"] == 4.83
    assert metrics["eval_ef_abs_error"] == 3.25 and metrics["eval_split"] == "validation"
    assert metrics["eval_rv_ef_abs_error"] == 9.5
    assert "val_dice" in metrics                       # the run's own figures stay
    card = (out / "README.md").read_text()
    assert "name: Dice LV (lvseg_core evaluate, validation)" in card
    assert "value: 0.9300" in card and "value: 0.8530" in card

    report.write_text("[1, 2]")
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(tmp_path / "w2"),
                 "--evaluation", str(report)]) == 1
    assert "not an evaluation report" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "w2").exists()


def test_export_of_the_last_checkpoint(fitted, tmp_path, capsys):
    """``--checkpoint last`` exports the final epoch's weights and records that epoch."""
    from lvseg_core.records import epoch_events, read_events

    run = fitted("unet")
    out = tmp_path / "last"
    assert main(["export", str(run), "--out", str(out), "--checkpoint", "last"]) == 0
    info = json.loads((out / "config.json").read_text())["training"]
    last_epoch = epoch_events(read_events(run))[-1]
    assert info["checkpoint"] == "last" and info["best_epoch"] == last_epoch["epoch"]
    model, _ = load_model("unet", str(out))
    task = SegmentationTask.load_from_checkpoint(run / "checkpoints" / "last.ckpt",
                                                 map_location="cpu", weights_only=False)
    for name, value in task.model.state_dict().items():
        assert torch.equal(value, model.state_dict()[name]), name
    assert json.loads((run / "config.json").read_text())  # the run itself is untouched
    capsys.readouterr()
    empty = tmp_path / "empty-run"
    (empty / "checkpoints").mkdir(parents=True)
    assert main(["export", str(empty), "--out", str(tmp_path / "x"), "--checkpoint",
                 "last"]) == 1
    assert "no last checkpoint" in one_error_line(capsys.readouterr().err)


# --- 4. resume ---------------------------------------------------------------------------


def test_resume_continues_the_run(acdc, cache, tmp_path, capsys):
    run = tmp_path / "resume"
    common = [*data_args("unet", acdc, cache), "--limit-train-batches", "2", "--run-dir",
              str(run)]
    assert main(["fit", *common, "--epochs", "1"]) == 0
    assert main(["fit", *common, "--resume", "--epochs", "2"]) == 0
    epochs = of_kind(run, "epoch")
    assert [e["epoch"] for e in epochs] == [0, 1]
    assert epochs[1]["step"] > epochs[0]["step"]
    assert len(of_kind(run, "initial_loss")) == 1  # not repeated on resume
    assert [e["epochs"] for e in of_kind(run, "end")] == [1, 2]
    assert json.loads((run / "config.json").read_text())["epochs"] == 1  # config kept
    # The precision may change on resume: metrics.jsonl says so, config.json keeps the start.
    assert main(["fit", *common, "--resume", "--epochs", "3", "--precision", "bf16-mixed"]) == 0
    change, = of_kind(run, "resume")
    assert change["precision"] == "bf16-mixed" and change["was"] != "bf16-mixed"
    assert json.loads((run / "config.json").read_text())["precision"] == change["was"]
    assert [e["epoch"] for e in of_kind(run, "epoch")] == [0, 1, 2]

    capsys.readouterr()
    assert main(["fit", *common, "--epochs", "1"]) == 1
    assert "--resume" in one_error_line(capsys.readouterr().err)

    # last.ckpt follows every epoch, also those without validation or a better Dice:
    # the resumed run goes on from epoch 2, it does not repeat it.
    later = [*common[:-1], str(tmp_path / "resume-later"), "--val-every", "2"]
    assert main(["fit", *later, "--epochs", "3"]) == 0
    assert main(["fit", *later, "--resume", "--epochs", "4"]) == 0
    assert [e["epoch"] for e in of_kind(tmp_path / "resume-later", "epoch")] == [0, 1, 2, 3]
    # The exported model counts the epochs and the time of both parts.
    training = json.loads((tmp_path / "resume-later" / "model" / "config.json").read_text())[
        "training"]
    seconds = sum(e["seconds"] for e in of_kind(tmp_path / "resume-later", "epoch"))
    assert training["epochs_run"] == 4 and training["seconds"] == pytest.approx(seconds, abs=0.1)
    assert main(["fit", *data_args("unet", acdc, cache), "--resume",
                 "--run-dir", str(tmp_path / "empty")]) == 1
    assert "nothing to resume" in one_error_line(capsys.readouterr().err)


# --- 5. DDP on the CPU: two processes, one writer ---------------------------------------------


def test_ddp_two_processes(acdc, cache, tmp_path):
    # Lightning's "ddp" re-runs ``python -m train ...`` for rank 1; no --run-dir, so the
    # run folder is named by time and rank 1 must find rank 0's (not make its own).
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "NODE_RANK",
                                                            "LVSEG_RUN_DIR")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT),
               LVSEG_RUNS_DIR=str(tmp_path / "runs"))
    cmd = [sys.executable, "-m", "train", "fit", *data_args("unet", acdc, cache, devices=2),
           "--strategy", "ddp", "--max-steps", "2", "--epochs", "1"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=150, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "error:" not in proc.stderr
    assert "GLOBAL_RANK: 1" in proc.stderr  # two processes really ran
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("unet-"), runs
    run = runs[0]
    assert [p.name for p in (run / "checkpoints").glob("last*.ckpt")] == ["last.ckpt"]
    assert len(of_kind(run, "end")) == 1
    assert len(of_kind(run, "start")) == 1 and len(of_kind(run, "initial_loss")) == 1
    (epoch,) = of_kind(run, "epoch")
    assert epoch["step"] == 2 and epoch["val_dice"] is not None
    assert (run / "model" / "model.safetensors").is_file()


# --- 6. LR range test and grid search --------------------------------------------------------


def test_lr_find(acdc, cache, tmp_path, capsys):
    out = tmp_path / "lr"
    # 8 steps are more than one epoch here (24 training slices in batches of 4).
    assert main(["lr-find", *data_args("unet", acdc, cache), "--out", str(out),
                 "--num-training", "8"]) == 0
    assert (out / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((out / "lr_find.json").read_text())
    assert isinstance(result["suggestion"], float) and 1e-6 <= result["suggestion"] <= 1.0
    assert len(result["lr"]) == len(result["loss"]) == 8
    assert result["lr"] == sorted(result["lr"])
    assert not list(out.glob(".lr_find*.ckpt"))
    assert "suggested learning rate" in capsys.readouterr().out

    # Too few points for a suggestion: a one-line error, not a traceback.
    assert main(["lr-find", *data_args("unet", acdc, cache), "--out", str(tmp_path / "lr2"),
                 "--num-training", "2"]) == 1
    assert "--num-training" in one_error_line(capsys.readouterr().err)


def test_steepest_descent_on_the_log_axis():
    from train.runner import steepest_descent

    lrs = np.logspace(-6, 0, 61)                     # 10 points per decade
    x = np.log10(lrs)
    # An early bump of the smoothed loss, then a fall that is steepest at 1e-3
    # (on the log axis), then divergence at the largest rates.
    losses = 2.0 + 0.3 * np.exp(-((x + 5.4) ** 2) / 0.05) - np.tanh(2 * (x + 3)) \
        + np.where(x > -0.5, 20 * (x + 0.5) ** 2, 0)
    best = steepest_descent(lrs, losses)
    assert lrs[best] == pytest.approx(1e-3, rel=0.3)
    assert steepest_descent(lrs[:3], losses[:3]) is None
    losses[12:] = np.nan                             # diverged early: too few finite points
    assert steepest_descent(lrs, losses) is None


def test_search(acdc, cache, tmp_path, capsys):
    out = tmp_path / "search"
    assert main(["search", *data_args("unet", acdc, cache), "--out", str(out),
                 "--lrs", "1e-3", "3e-3", "--epochs", "1", "--limit-train-batches", "1"]) == 0
    table = (out / "results.md").read_text().strip().splitlines()
    rows = [line for line in table[2:] if line.startswith("|")]
    assert table[0].startswith("| lr |") and len(rows) == 2
    assert {row.split("|")[1].strip() for row in rows} == {"0.001", "0.003"}
    csv_lines = (out / "results.csv").read_text().strip().splitlines()
    assert csv_lines[0].startswith("lr,weight_decay,val_dice") and len(csv_lines) == 3
    assert "best: lr" in capsys.readouterr().out
    for lr in ("0.001", "0.003"):
        assert not (out / f"lr{lr}-wd0.0001" / "model").exists()  # trials are not exported


# --- 7. bad arguments give one-line errors -------------------------------------------------


def test_missing_data_folder(tmp_path, capsys, cache):
    code = main(["fit", "--model", "unet", "--data", str(tmp_path / "nope"), "--cache-dir",
                 str(cache), "--run-dir", str(tmp_path / "run")])
    assert code == 1
    assert "nope" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_unknown_model_is_a_usage_error(acdc, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--model", "resnet", "--data", str(acdc)])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_folder_without_labels(acdc, tmp_path, capsys, cache):
    data = tmp_path / "unlabelled"
    for patient in ("patient001", "patient002"):
        (data / patient).mkdir(parents=True)
        for src in (acdc / patient).iterdir():
            if "_gt" not in src.name:
                (data / patient / src.name).write_bytes(src.read_bytes())
    code = main(["fit", *data_args("unet", data, cache), "--run-dir", str(tmp_path / "run")])
    assert code == 1
    assert "labelled frames" in one_error_line(capsys.readouterr().err)


def test_initial_loss_command(acdc, cache, capsys):
    assert main(["initial-loss", *data_args("attention_unet", acdc, cache)]) == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{"):])
    assert abs(result["initial_ce"] - LN4) < 0.25
    assert result["expected_ce"] == pytest.approx(LN4)
    assert result["initial_dice_ce"] > 0


# --- fine-tuning from existing weights ----------------------------------------------------------


def test_init_weights_starts_from_the_exported_model(fitted, acdc, cache, tmp_path):
    from lvseg_core.records import TrainConfig
    from train.datamodule import model_plan
    from train.runner import make_task

    out = tmp_path / "w"
    assert main(["export", str(fitted("unet")), "--out", str(out)]) == 0
    start, _ = load_model("unet", str(out))
    cfg = TrainConfig(model="unet", data=str(acdc), init_weights=str(out))
    task = make_task(cfg, model_plan(cfg))
    state = task.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in start.state_dict().items())
    assert task.model.arch_args == start.arch_args
    fresh = make_task(TrainConfig(model="unet", data=str(acdc), arch_args=start.arch_args),
                      model_plan(TrainConfig(model="unet")))
    assert not all(torch.equal(fresh.model.state_dict()[k], v) for k, v in state.items())
    # A short fine-tuning run from those weights goes through.
    run = tmp_path / "tuned"
    assert main(["fit", *data_args("unet", acdc, cache), "--epochs", "1",
                 "--limit-train-batches", "1", "--init-weights", str(out),
                 "--run-dir", str(run)]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["init_weights"] == str(out)
    # The run that trained the starting weights is recorded, for the report's chain.
    assert saved["init_run"] == fitted("unet").name


def test_init_weights_may_change_only_a_vnets_z_kernels_and_widen_it(acdc, tmp_path):
    from lvseg_core.errors import LVSegError
    from lvseg_core.models import create_model
    from lvseg_core.records import TrainConfig
    from train.datamodule import model_plan
    from train.runner import make_task

    start = create_model("vnet", base_channels=4)
    start.save_pretrained(tmp_path / "w")
    cfg = TrainConfig(model="vnet", data=str(acdc), init_weights=str(tmp_path / "w"),
                      arch_args={"base_channels": 4, "z_kernels": [1, 1, 3, 3]})
    task = make_task(cfg, model_plan(cfg))
    assert task.model.arch_args == {"base_channels": 4, "z_kernels": [1, 1, 3, 3]}
    first = task.model.net.input.conv_block.conv.weight
    assert first.shape[2:] == (1, 5, 5)
    assert torch.allclose(first, start.net.input.conv_block.conv.weight.sum(2, keepdim=True))
    # Twice as wide, kernels cut too: the warm start answers as the narrow cut net.
    wide = make_task(replace(cfg, arch_args={"base_channels": 8, "z_kernels": [1, 1, 3, 3]}),
                     model_plan(cfg)).model.eval()
    assert wide.net.input.conv_block.conv.out_channels == 8
    x = torch.randn(1, 1, 8, 32, 32)
    with torch.no_grad():
        assert torch.allclose(wide(x), task.model.eval()(x), atol=1e-4)
    # Keys not named are kept from the weights; naming the same value changes nothing.
    same = make_task(replace(cfg, arch_args={"base_channels": 4}), model_plan(cfg))
    assert same.model.arch_args == start.arch_args
    for arch_args in ({"base_channels": 6}, {"base_channels": 2}, {"dropout": 0.2}):
        with pytest.raises(LVSegError, match="multiply its base_channels"):
            make_task(replace(cfg, arch_args=arch_args), model_plan(cfg))
    unet = create_model("unet")
    unet.save_pretrained(tmp_path / "u")
    with pytest.raises(LVSegError, match="V-Net"):
        make_task(TrainConfig(model="unet", data=str(acdc), init_weights=str(tmp_path / "u"),
                              arch_args={"decoder_channels": [64, 32, 16, 8]}),
                  model_plan(cfg))


def test_bf16_volumetric_training_on_the_cpu_is_refused(acdc, cache, tmp_path, capsys):
    from train import runner
    from lvseg_core.records import TrainConfig

    run = tmp_path / "bf16"
    assert main(["fit", *data_args("vnet", acdc, cache), "--precision", "bf16-mixed",
                 "--run-dir", str(run)]) == 1
    assert "--precision 32-true" in one_error_line(capsys.readouterr().err)
    assert not run.exists()                                 # refused before any folder
    with pytest.raises(runner.LVSegError, match="32-true"):
        runner._trainer(TrainConfig(model="vnet", precision="bf16-mixed", accelerator="cpu"),
                        tmp_path, [])
    # 2D models in bf16, and the V-Net in float32, train.
    runner._trainer(TrainConfig(model="unet", precision="bf16-mixed", accelerator="cpu"),
                    tmp_path, [])
    runner._trainer(TrainConfig(model="vnet", precision="32-true", accelerator="cpu"),
                    tmp_path, [])


@pytest.mark.parametrize("model,augment,overfit,min_depth", [
    ("vnet", False, 0, 6), ("vnet", True, 2, 6),   # fixed 6-slice patches
    ("vnet", True, 0, 1),                          # stack-depth augmentation: 1-20 slices
    ("unet", False, 0, 1),
])
def test_plan_of_fixed_depth_vnet_pads_thin_stacks_to_its_depth(model, augment, overfit,
                                                                 min_depth):
    from lvseg_core.records import TrainConfig
    from train.datamodule import model_plan

    cfg = TrainConfig(model=model, depth=6, augment=augment, overfit_batches=overfit)
    assert model_plan(cfg).min_depth == min_depth


# --- deep supervision: the coarser decoder stages are scored in training only -----------------


@pytest.mark.parametrize("model", list(ARCH_ARGS))
def test_deep_supervision_trains_heads_that_are_not_exported(model, acdc, cache, tmp_path):
    run = tmp_path / "ds"
    code = main(["fit", *data_args(model, acdc, cache), "--epochs", "1", "--deep-supervision",
                 "--limit-train-batches", "2", "--run-dir", str(run)])
    assert code == 0
    assert json.loads((run / "config.json").read_text())["deep_supervision"] is True
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    heads = [k for k in ckpt["state_dict"] if k.startswith("aux_heads.")]
    assert heads, "no deep-supervision head was saved with the run"
    exported = json.loads((run / "model" / "config.json").read_text())
    assert exported["training"]["deep_supervision"] is True
    # The weights folder holds the plain network: it loads strictly into a model
    # built without heads, and segments with the default pipeline.
    loaded, _ = load_model(model, str(run / "model"))
    assert not any("aux" in k for k in loaded.state_dict())

    task = SegmentationTask.load_from_checkpoint(run / "checkpoints" / "last.ckpt",
                                                 map_location="cpu", weights_only=False)
    task.train()
    shape = (1, 1, 4, 32, 32) if model == "vnet" else (2, 1, 32, 32)
    image = torch.randn(*shape)
    label = torch.randint(0, 4, (shape[0], 1, *shape[2:]))
    loss = task.training_step((image, label), 0)
    loss.backward()
    for head in task.aux_heads:
        assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    # The coarser stages change the loss: it is not the full-resolution loss alone.
    with torch.no_grad():
        plain = task.loss(task.model(image), label)
    assert abs(float(loss) - float(plain)) > 1e-4
