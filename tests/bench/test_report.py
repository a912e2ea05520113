"""End to end: ``python -m bench.report --quick`` on two real validation patients with tiny
random-init models, and on missing inputs."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from bench import report
from bench.common import result_stem
from bench.document import SECTIONS

PNG = b"\x89PNG\r\n\x1a\n"


def fake_runs(root):
    """A runs folder with one main run, an LR range test and a search table."""
    run = root / "unet-main"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({
        "model": "unet", "epochs": 3, "max_time": None, "lr": 2e-3, "weight_decay": 1e-4,
        "batch_size": 16, "crop": [128, 128], "depth": 8, "patience": 5,
        "schedule": "onecycle", "precision": "bf16-mixed"}))
    events = [{"event": "initial_loss", "initial_ce": 1.39}]
    for epoch, (loss, dice) in enumerate([(1.2, 0.3), (0.8, 0.6), (0.6, 0.7)]):
        events.append({"event": "epoch", "epoch": epoch, "train_loss": loss,
                       "val_loss": loss + 0.1, "val_dice": dice, "elapsed": 60.0 * (epoch + 1)})
    events.append({"event": "end", "epochs": 3})
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(e) for e in events) + "\n")
    lr = root / "lr_find_unet"
    lr.mkdir()
    (lr / "lr_find.json").write_text(json.dumps({
        "model": "unet", "suggestion": 1e-3, "lr": [1e-5, 1e-4, 1e-3, 1e-2, 1e-1],
        "loss": [1.4, 1.3, 1.0, 0.9, 3.0]}))
    search = root / "search_unet"
    search.mkdir()
    (search / "results.md").write_text("| lr | weight decay | best val Dice |\n|---|---|---|\n"
                                       "| 0.002 | 0.0001 | 0.7000 |\n")
    return root


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory, acdc_dir):
    """The report of two validation patients (symlinked), U-Net and Attention U-Net tiny
    random-init weights through the bundled-weights folder, V-Net without weights."""
    import torch

    from lvseg_core import create_model
    from lvseg_app.analysis import make_subset

    tmp = tmp_path_factory.mktemp("report")
    data = make_subset(acdc_dir, ["patient002", "patient019"], tmp / "data")
    weights = tmp / "weights"
    torch.manual_seed(0)
    create_model("unet", encoder_name="tu-mobilenetv3_small_050",
                 decoder_channels=(16, 8, 8, 8)).save_pretrained(weights / "unet")
    create_model("attention_unet", channels=(4, 8, 16, 32, 64)).save_pretrained(
        weights / "attention_unet")
    runs = fake_runs(tmp / "runs")
    # The search is read from the kept records (python -m train archive), not runs/.
    from lvseg_core.records import keep_record

    keep_record(runs / "search_unet", tmp / "records")
    shutil.rmtree(runs / "search_unet")
    readme = tmp / "README.md"
    readme.write_text(f"# LVSeg\n\n## Results\n\n{report.README_START}\nold\n"
                      f"{report.README_END}\n")
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("LVSEG_WEIGHTS_DIR", str(weights))
    try:
        code = report.main(["--quick", "--data", str(data), "--out", str(tmp / "docs"),
                            "--results", str(tmp / "results"), "--runs", str(runs),
                            "--records", str(tmp / "records"),
                            "--readme", str(readme), "--examples", "5"])
    finally:
        monkeypatch.undo()
    return {"code": code, "docs": tmp / "docs", "readme": readme, "results": tmp / "results"}


def test_report_has_every_section(quick_report):
    assert quick_report["code"] == 0
    text = (quick_report["docs"] / "REPORT.md").read_text()
    positions = [text.index(heading) for heading in SECTIONS]
    assert positions == sorted(positions)
    for sub in ("### 3.1 Architectures", "### 4.1 Hyper-parameter search",
                "### 4.2 Learning curves", "### 5.1 Comparison", "### 5.3 Clinical agreement",
                "### 5.4 Speed", "### 5.5 Robustness", "### 5.6 Simulated other scanners",
                "### 5.7 Quality control", "### 5.8 Example segmentations",
                "### 5.9 Regional wall thickness",
                "### 6.1 Slice position", "### 6.2 RV at end-systole"):
        assert sub in text
    assert "| **U-Net** | 4 |" in text and "| **Attention U-Net** | 4 |" in text
    assert "| V-Net | **skipped** | no trained weights found" in text
    assert "| 0.002 | 0.0001 | 0.7000 |" in text                # the search table
    # bench.speed's backends and cohort engines (local, Ray with 1 and 2 workers)
    assert "| torch bf16 |" in text and "| ONNX fp32 |" in text
    # The same masks as the local engine: identical, or (bf16 rounding of near-tied
    # voxels of these random-init weights in another process) all but a few voxels.
    same = r"(yes|\*\*no\*\*: 99\.9\d\d % of voxels equal)"
    for engine in ("local", "ray-1", "ray-2"):
        assert re.search(rf"\| {engine} \| [\d.]+ \| [\d.]+ \| [\d.]+x \| {same} \| 0 ", text)
    assert report.FAILED_PART not in text
    assert "Traceback" not in text and not re.search(r"\bnan\b", text, re.IGNORECASE)
    # The experts' basal ES slices, measured in section 2 and recalled in 6.2.
    assert re.search(r"drew the RV in \d+ % of the \d+ ED frames but in \d+ % of the \d+ ES", text)
    assert re.search(r"drew an RV on the most basal labelled slice of \d+ % of the ES", text)
    assert re.search(r"U-Net [\d.]+ -> [\d.]+ points \(bias -?[\d.]+ -> -?[\d.]+\)", text)


def test_report_shows_domain_shift_and_qc_with_their_weights(quick_report):
    """Sections 5.6 and 5.7 come from the versioned docs/ results, and say when those were
    measured with other weights (here: the test's random-init ones are evaluated)."""
    text = (quick_report["docs"] / "REPORT.md").read_text()
    shift = text[text.index("### 5.6"):text.index("### 5.7")]
    assert "| 1-slice stack |" in shift and "| Condition | U-Net before | U-Net now |" in shift
    assert "**Measured with earlier weights of U-Net, Attention U-Net**" in shift
    assert "V-Net" not in shift.split("**Measured")[1].split("**")[0]  # no V-Net weights here
    qc = text[text.index("### 5.7"):text.index("### 5.8")]
    assert re.search(r"\| clean volumes rated ok \| [\d.]+ % \| >= 90 % \|", qc)
    assert "| photograph |" in qc and "**Measured with earlier weights of U-Net**" in qc
    # One headline row per model measured, each with the limits it was rated with.
    assert re.search(r"\| U-Net \(earlier weights\) \| [^|]+ \| [\d.]+ % \|", qc)


def test_missing_or_foreign_domain_shift_and_qc_results_are_named(tmp_path):
    from argparse import Namespace

    from bench.document import Report

    (tmp_path / "speed.json").write_text(json.dumps({"kind": "speed"}))
    args = Namespace(domain_shift_json=tmp_path / "speed.json", domain_shift_compare=None,
                     qc_json=[tmp_path / "absent.json"], width_json=tmp_path / "speed.json")
    rep = Report(tmp_path)
    report.section_domain_shift(rep, args, [])
    report.section_qc(rep, args, [])
    report.section_width(rep, args)
    text = "\n".join(rep.lines)
    assert f"no `python -m bench.width` result at `{tmp_path / 'speed.json'}`" in text
    assert f"no `python -m bench.domain_shift` result at `{tmp_path / 'speed.json'}`" in text
    assert f"no `python -m bench.qc` result at `{tmp_path / 'absent.json'}`" in text
    assert "qc" not in rep.facts and "ensemble" not in rep.facts


def test_an_ensembles_qc_result_is_stale_when_a_members_weights_changed():
    from pathlib import Path

    from bench.common import ModelSpec

    class Spec(ModelSpec):
        def fingerprint(self) -> dict:             # the source stands for the weights' SHA
            return {"sha256": self.source}

    specs = [Spec("unet", Path("."), "a"), Spec("vnet", Path("."), "b")]
    one = {"model": "unet", "weights_id": {"sha256": "a"}}
    both = {"model": "ensemble", "weights_id": {"members": {"unet": {"sha256": "a"},
                                                            "vnet": {"sha256": "old"}}}}
    assert report.qc_stale(one, specs) == []
    assert report.qc_stale(both, specs) == ["vnet"]
    assert report.qc_stale({**one, "weights_id": {"sha256": "old"}}, specs) == ["unet"]


def test_a_named_ensembles_qc_result_is_a_row_of_its_own(tmp_path):
    """docs/qc/qc_ensemble_unet_attention_unet.json is read by default beside the three
    models' file, shown as its own row, and its rerun command names the pair."""
    from argparse import Namespace
    from pathlib import Path

    from bench import qc
    from bench.common import ModelSpec
    from bench.document import Report

    class Spec(ModelSpec):
        def fingerprint(self) -> dict:             # the source stands for the weights' SHA
            return {"sha256": self.source}

    rows = [{"kind": "clean", "label": "clean", "status": "ok", "score": 0.1,
             "dice": {"mean": 0.9}, "signals": {}},
            {"kind": "inverted", "label": "inverted", "status": "fail", "score": 3.0,
             "dice": {"mean": 0.1}, "signals": {}}]
    summary = qc.summarise(rows, variants=False)
    members = {"unet": {"sha256": "a"}, "attention_unet": {"sha256": "old"}}
    for model, ident in (("ensemble", {"members": {**members, "vnet": {"sha256": "c"}}}),
                         ("unet,attention_unet", {"members": members})):
        (tmp_path / f"qc_{result_stem(model)}.json").write_text(json.dumps({
            "kind": "qc", "model": model, "split": "validation", "bad_dice": 0.8,
            "qc_limits": "the model's own", "weights_id": ident, "summary": summary}))
    paths = report.default_qc_json(tmp_path)
    assert [p.name for p in paths if p.exists()] == [
        "qc_ensemble.json", "qc_ensemble_unet_attention_unet.json"]
    rep = Report(tmp_path)
    specs = [Spec("unet", Path("."), "a"), Spec("attention_unet", Path("."), "b")]
    report.section_qc(rep, Namespace(qc_json=paths), specs)
    text = "\n".join(rep.lines)
    assert re.search(r"\| Ensemble \(earlier weights\) \| the model's own \| 100\.0 % \|", text)
    assert "| Ensemble (U-Net + Attention U-Net) (earlier weights) |" in text
    assert "`python -m bench.qc --models unet,attention_unet`" in text


def test_report_figures_are_png(quick_report):
    docs = quick_report["docs"]
    text = (docs / "REPORT.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", text)
    assert len(linked) >= 15
    for rel in linked:
        assert (docs / rel).read_bytes()[:8] == PNG, rel
    names = {p.name for p in (docs / "figures").glob("*.png")}
    assert len([n for n in names if re.fullmatch(r"seg_\d\d\.png", n)]) >= 5
    for name in ("eda_groups.png", "eda_class_balance.png", "eda_intensity.png",
                 "eda_examples.png", "architectures.png", "lr_find.png", "learning_curves.png",
                 "bland_altman_unet.png", "failure_position.png", "robustness.png",
                 "speed.png", "speed_backends.png"):
        assert name in names


def test_report_slides_open(quick_report):
    from pptx import Presentation

    deck = Presentation(str(quick_report["docs"] / "LVSeg.pptx"))
    slides = list(deck.slides)
    assert len(slides) >= 5
    pictures = sum(1 for s in slides for shape in s.shapes if shape.shape_type == 13)
    assert pictures >= 5
    tables = [shape for s in slides for shape in s.shapes if shape.has_table]
    assert tables and tables[0].table.cell(1, 0).text == "U-Net"


def test_report_refreshes_readme_and_keeps_measurements(quick_report):
    text = quick_report["readme"].read_text()
    assert "old" not in text and "| U-Net |" in text and "python -m bench.report" in text
    assert text.index(report.README_START) < text.index(report.README_END)
    for name in ("accuracy", "clinical", "speed", "robustness"):
        data = json.loads((quick_report["results"] / f"{name}.json").read_text())
        assert set(data["models"]) == {"unet", "attention_unet"}
    acc = json.loads((quick_report["results"] / "accuracy.json").read_text())
    unet = acc["models"]["unet"]
    assert set(unet["summary_by_phase"]) == {"ED", "ES"}
    assert set(unet["summary_by_phase"]["ES"]) >= {"dice", "iou", "precision", "recall", "f1",
                                                   "hd95_mm"}
    assert unet["per_slice"] and set(unet["by_position"]) >= {"basal", "mid", "apical"}


def test_report_without_data_weights_or_runs_says_so(tmp_path):
    code = report.main(["--quick", "--data", str(tmp_path / "absent"),
                        "--out", str(tmp_path / "docs"), "--results", str(tmp_path / "res"),
                        "--runs", str(tmp_path / "no-runs"), "--records",
                        str(tmp_path / "no-records"), "--weights-dir",
                        str(tmp_path / "no-weights"), "--no-readme"])
    assert code == 0
    text = (tmp_path / "docs" / "REPORT.md").read_text()
    for heading in SECTIONS:
        assert heading in text
    assert "The data could not be read" in text
    assert "No measurement was made" in text
    assert "No search results found" in text and "No LR range test found" in text
    assert "no trained weights found" in text
    assert report.FAILED_PART not in text
    from pptx import Presentation

    assert len(list(Presentation(str(tmp_path / "docs" / "LVSeg.pptx")).slides)) >= 5


def test_keep_record_copies_the_small_files_only(tmp_path, capsys):
    from lvseg_core.errors import LVSegError
    from lvseg_core.records import keep_record
    from train.cli import main as train_main

    run = fake_runs(tmp_path / "runs") / "unet-main"
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "best.ckpt").write_bytes(b"x" * 10)
    kept = keep_record(run, tmp_path / "records")
    assert sorted(p.name for p in kept.iterdir()) == ["config.json", "metrics.jsonl"]
    assert (kept / "metrics.jsonl").read_text() == (run / "metrics.jsonl").read_text()
    with pytest.raises(LVSegError, match="already holds a record"):
        keep_record(run, tmp_path / "records")
    with pytest.raises(LVSegError, match="not a run folder"):
        keep_record(tmp_path / "runs" / "absent", tmp_path / "records")
    # The command line: one line per run, a one-line error for a second copy.
    assert train_main(["archive", str(run), "--out", str(tmp_path / "r2")]) == 0
    assert "kept" in capsys.readouterr().out
    assert train_main(["archive", str(run), "--out", str(tmp_path / "r2")]) == 1
    assert capsys.readouterr().err.startswith("error: ")


def test_weights_without_a_run_record_use_their_training_block(tmp_path):
    from bench.common import ModelSpec
    from bench.report import _planned_epochs, _weights_training

    weights = tmp_path / "w"
    weights.mkdir()
    (weights / "config.json").write_text(json.dumps({
        "training": {"epochs_run": 40, "best_epoch": 34, "seconds": 5400.0},
        "metrics": {"val_dice": 0.873}}))
    cells = _weights_training(ModelSpec("unet", weights))
    assert cells[:4] == ["40", "35", "0.8730", "1.50"]
    assert "run record not kept" in cells[4]
    assert _weights_training(ModelSpec("unet", None))[0] == "no `metrics.jsonl` epochs"
    # A run resumed for more epochs than its config says.
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(e) for e in (
        {"event": "start", "max_epochs": 70}, {"event": "error", "message": "stopped"},
        {"event": "start", "max_epochs": 76})) + "\n")
    assert _planned_epochs(run, {"epochs": 70}).startswith("76 (resumed")
    assert _planned_epochs(run, {"epochs": 76}) == "76"
