"""Tests of lvseg_core.records: the run-record format (events, best epoch, fine-tuning chains)."""

from __future__ import annotations

import json

from lvseg_core.records import run_chain


def test_run_chain_follows_fine_tuning(tmp_path):
    runs = tmp_path / "runs"
    for name, init in (("attention_unet-main", None),
                       ("attention_unet-ft", "runs/attention_unet-main/model"),
                       ("attention_unet-ft2", "elsewhere/attention_unet-ft/model"),
                       ("attention_unet-ft3", "runs/attention_unet-ft/model")):
        (runs / name).mkdir(parents=True)
        (runs / name / "config.json").write_text(json.dumps({"init_weights": init}))
    weights = tmp_path / "w"
    weights.mkdir()
    (weights / "config.json").write_text(json.dumps({"training": {"run": "attention_unet-ft3"}}))
    assert [p.name for p in run_chain(runs, "attention_unet", weights)] == [
        "attention_unet-main", "attention_unet-ft", "attention_unet-ft3"]
    # Not from runs/: the chain stops there.
    (weights / "config.json").write_text(json.dumps({"training": {"run": "attention_unet-ft2"}}))
    assert [p.name for p in run_chain(runs, "attention_unet", weights)] == ["attention_unet-ft2"]
    # Weights without a run name: the <arch>-main run; none at all: empty.
    assert [p.name for p in run_chain(runs, "attention_unet")] == [
        "attention_unet-main"]
    assert run_chain(runs, "vnet") == []
    # A fine-tune of the bundled weights names its parent run in init_run.
    (runs / "vnet-main").mkdir()
    (runs / "vnet-main" / "config.json").write_text(json.dumps({"init_weights": None}))
    (runs / "vnet-ft").mkdir()
    (runs / "vnet-ft" / "config.json").write_text(
        json.dumps({"init_weights": "bundled", "init_run": "vnet-main"}))
    (weights / "config.json").write_text(json.dumps({"training": {"run": "vnet-ft"}}))
    assert [p.name for p in run_chain(runs, "vnet", weights)] == [
        "vnet-main", "vnet-ft"]


def test_run_chain_reads_kept_records(tmp_path):
    runs, records = tmp_path / "runs", tmp_path / "docs" / "runs"
    for root, name, init in ((records, "unet-main", None),
                             (runs, "unet-ft", "runs/unet-main/model")):
        (root / name).mkdir(parents=True)
        (root / name / "config.json").write_text(json.dumps({"init_weights": init}))
    weights = tmp_path / "w"
    weights.mkdir()
    (weights / "config.json").write_text(json.dumps({"training": {"run": "unet-ft"}}))
    chain = run_chain([runs, records], "unet", weights)
    assert chain == [records / "unet-main", runs / "unet-ft"]
    assert run_chain(runs, "unet", weights) == [runs / "unet-ft"]
