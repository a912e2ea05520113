"""Tests of bench.qc: the broken copies, the rank AUC and the summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import qc as bq
from bench.common import ARCHS, EnsembleSpec
from lvseg_core.labels import LABEL_OF
from tests.conftest import make_heart


@pytest.fixture
def heart():
    return make_heart(shape=(160, 150, 4), spacing=(1.5, 1.5, 8.0))


def test_roc_auc_counts_pairs_and_ties():
    assert bq.roc_auc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert bq.roc_auc([0.9, 0.8, 0.2, 0.1], [False, False, True, True]) == 0.0
    assert bq.roc_auc([0.5, 0.5], [False, True]) == 0.5
    # 1 of the 4 (positive, negative) pairs is ranked the wrong way
    assert bq.roc_auc([0.1, 0.6, 0.5, 0.9], [False, False, True, True]) == pytest.approx(0.75)
    assert bq.roc_auc([None, 0.3, 0.1], [True, False, False]) == 1.0   # None = infinite
    assert np.isnan(bq.roc_auc([0.1, 0.2], [True, True]))


def test_inverted_copy_makes_the_blood_dark(heart):
    scan, labels = heart
    inv = bq.inverted(scan)
    lv, myo = labels == LABEL_OF["LV"], labels == LABEL_OF["Myo"]
    assert scan.array[lv].mean() > scan.array[myo].mean()
    assert inv.array[lv].mean() < inv.array[myo].mean()
    assert inv.array.min() == pytest.approx(scan.array.min(), abs=1e-3)
    assert inv.array.max() == pytest.approx(scan.array.max(), abs=1e-3)


def test_photograph_copy_repeats_one_picture(heart):
    scan, _ = heart
    photo = bq.photograph(scan)
    assert photo.array.shape == scan.array.shape
    assert all(np.array_equal(photo.array[..., 0], photo.array[..., k]) for k in range(4))
    assert photo.array.std() > 0


def test_heartless_crop_holds_no_heart(heart):
    scan, labels = heart
    crop = bq.heartless_crop(scan, labels)
    assert crop is not None and crop.shape3d[2] == scan.shape3d[2]
    assert min(crop.shape3d[:2]) >= 48
    # the crop is a corner window of the original: find it and check it has no labels
    x0, y0 = (np.linalg.inv(scan.affine) @ crop.affine[:, 3])[:2].round().astype(int)
    window = labels[x0:x0 + crop.shape3d[0], y0:y0 + crop.shape3d[1]]
    assert np.array_equal(crop.array, scan.array[x0:x0 + crop.shape3d[0],
                                                 y0:y0 + crop.shape3d[1]])
    assert not window.any()
    whole = np.ones_like(labels)
    assert bq.heartless_crop(scan, whole) is None          # no room left outside the heart


def test_summary_shares_and_per_kind_counts():
    def row(kind, status, dice, score):
        return {"kind": kind, "label": kind, "status": status, "score": score,
                "dice": None if dice is None else {"mean": dice}, "signals": {}}

    rows = [row("clean", "ok", 0.9, 0.2), row("clean", "check", 0.85, 1.2),
            row("inverted", "fail", 0.0, 5.0), row("photograph", "fail", None, 1000.0),
            row("noise/mild", "ok", 0.88, 0.3), row("noise/strong", "check", 0.7, 1.5)]
    s = bq.summarise(rows, variants=False)
    assert s["clean_ok_share"] == 0.5
    assert s["broken_flagged_share"] == pytest.approx(3 / 4)
    assert s["destructive_flagged_share"] == 1.0
    assert s["perturbed_flagged_share"] == 0.5
    assert s["perturbed_bad_flagged_share"] == 1.0
    assert s["auc_results"] == 5 and s["auc_bad_results"] == 2
    assert s["auc_bad_dice"] == 1.0
    assert s["by_kind"]["clean"]["ok"] == 1 and s["by_kind"]["clean"]["check"] == 1


def _copy_weights(tmp_path, arch: str = "unet"):
    import shutil

    from lvseg_core.hub import bundled_folder

    root = tmp_path / "weights"
    shutil.copytree(bundled_folder(arch), root / arch)
    config = root / arch / "config.json"
    data = __import__("json").loads(config.read_text())
    data.pop("qc_limits", None)
    config.write_text(__import__("json").dumps(data))
    return root


def test_calibrate_stores_the_models_own_limits(acdc_dir, tmp_path, capsys):
    import json

    from lvseg_core import qc
    from lvseg_core.inference import Segmenter

    root = _copy_weights(tmp_path)
    out = tmp_path / "calibration.json"
    code = bq.main(["--calibrate", "--store", "--models", "unet", "--weights-dir", str(root),
                    "--data", str(acdc_dir), "--cases", "2", "--threads", "1",
                    "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    stored = json.loads((root / "unet" / "config.json").read_text())["qc_limits"]
    assert stored["calibration"]["weights_sha256"] == report["weights_id"]["sha256"]
    assert stored["entropy:high"] == report["limits"]["entropy:high"]
    assert "LV_ml:high" not in stored                      # anatomy limits stay shared
    rules = Segmenter.from_source("unet", str(root / "unet"), "cpu").qc_rules
    assert rules == qc.model_rules(stored) and rules != qc.RULES

    # Limits of other weights are refused, and the folder is left as it was.
    report["weights_id"]["sha256"] = "0" * 64
    with pytest.raises(bq.LVSegError, match="changed since"):
        bq.store_limits(report, root / "unet")
    assert json.loads((root / "unet" / "config.json").read_text())["qc_limits"] == stored


def test_store_needs_calibrate(capsys):
    with pytest.raises(SystemExit) as exit_:
        bq.parse_args(["--store"])
    assert exit_.value.code == 2 and "--store needs --calibrate" in capsys.readouterr().err


def test_rerate_uses_the_rules_given():
    from lvseg_core import qc

    row = {"signals": {"entropy": 0.3, "LV_ml": 120.0, "Myo_ml": 100.0, "RV_ml": 100.0},
           "status": "ok", "reason": "", "score": 0.0}
    assert bq.rerate(row)["status"] != "ok"                               # default: unsure
    lenient = qc.model_rules({"entropy:high": {"typical": 0.25, "check": 0.5, "fail": 0.6}})
    assert bq.rerate(row, rules=lenient)["status"] == "ok"


def test_ensemble_calibrated_stored_and_measured_with_its_own_limits(acdc_dir, tmp_path,
                                                                     monkeypatch, capsys):
    """``--models ensemble``: the three models' mean probabilities are calibrated, the
    limits stored under the members' weights in ensemble_qc.json (where an Ensemble
    of those weights finds them), and measured with them."""
    import json
    import shutil

    from lvseg_core import qc, settings
    from lvseg_core.ensemble import Ensemble
    from lvseg_core.hub import bundled_folder

    root = tmp_path / "weights"
    for arch in ARCHS:
        shutil.copytree(bundled_folder(arch), root / arch)
    monkeypatch.setenv("LVSEG_WEIGHTS_DIR", str(root))
    spec, = bq.resolve_models(["ensemble"])
    assert [m.arch for m in spec.members] == list(ARCHS)
    assert bq.spec_rules(spec) is qc.RULES                     # nothing stored yet
    code = bq.main(["--calibrate", "--store", "--models", "ensemble", "--data", str(acdc_dir),
                    "--cases", "2", "--threads", "1", "--json", str(tmp_path / "cal.json")])
    assert code == 0, capsys.readouterr().err
    entry, = json.loads(settings.ensemble_limits_file().read_text())["ensembles"]
    assert entry["members"] == {a: m["sha256"] for a, m in
                                spec.fingerprint()["members"].items()}
    stored = qc.model_rules(entry["qc_limits"])
    ensemble = Ensemble.from_source("ensemble", device="cpu")
    assert ensemble.qc_rules == stored == bq.spec_rules(spec) and stored != qc.RULES
    assert "not calibrated" not in ensemble.notice
    # Another pair of members has no limits of its own: the default, and a note.
    pair = Ensemble.from_source("unet,vnet", device="cpu")
    assert pair.qc_rules is qc.RULES and "not calibrated for this ensemble" in pair.notice

    out = tmp_path / "qc.json"
    code = bq.main(["--models", "ensemble", "--data", str(acdc_dir), "--cases", "1",
                    "--threads", "1", "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["model"] == "ensemble" and report["qc_limits"] == "the model's own"
    by_kind = report["summary"]["by_kind"]
    assert by_kind["inverted"]["flagged_share"] == 1.0     # dark blood is never "ok"
    assert by_kind["clean"]["results"] == 1 and report["rows"][0]["dice"]["mean"] > 0.8


def test_ensemble_limits_file_is_checked(tmp_path):
    from lvseg_core import qc
    from lvseg_core.ensemble import ensemble_rules
    from lvseg_core.errors import WeightsError

    path = tmp_path / "ensemble_qc.json"
    members = {"unet": "a" * 64, "vnet": "b" * 64}
    lenient = {"entropy:high": {"typical": 0.3, "check": 0.5, "fail": 0.6}}
    path.write_text(__import__("json").dumps({"ensembles": [
        {"members": members, "qc_limits": lenient}]}))
    rules, note = ensemble_rules(members, path)
    assert rules == qc.model_rules(lenient) and note == ""
    rules, note = ensemble_rules({**members, "vnet": "c" * 64}, path)   # other weights
    assert rules is qc.RULES and "not calibrated" in note
    assert ensemble_rules(None, path)[0] is qc.RULES                   # a model in memory
    for bad in ("[1, 2]", '{"ensembles": {"unet": 1}}', "not json"):
        path.write_text(bad)
        with pytest.raises(WeightsError, match="ensemble"):
            ensemble_rules(members, path)


@pytest.mark.parametrize("bad, message", [
    ("unet,resnet", "unknown model 'resnet'"), ("unet,unet", "named twice"),
    ("unet,", "two or more models"), ("resnet", "unknown model")])
def test_models_option_refuses_bad_ensembles_in_one_line(bad, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        bq.parse_args(["--models", bad])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 2 and "argument --models" in err and message in err


def test_named_ensemble_spec_and_its_result_names():
    """``--models attention_unet,unet``: the pair in registry order, named for what it
    is, identified by its two members' weights, with result files of its own."""
    from lvseg_core.hashing import WEIGHTS_FILE, read_sha256
    from lvseg_core.hub import bundled_folder

    args = bq.parse_args(["--models", "attention_unet,unet", "ensemble", "--calibrate"])
    pair, three = bq.resolve_models(args.models)
    assert isinstance(pair, EnsembleSpec) and isinstance(three, EnsembleSpec)
    assert [m.arch for m in pair.members] == ["unet", "attention_unet"]
    assert pair.arch == "unet,attention_unet" and pair.name == "Ensemble (U-Net + Attention U-Net)"
    assert three.arch == "ensemble" and three.name == "Ensemble"
    assert pair.identity() == {a: read_sha256(bundled_folder(a) / WEIGHTS_FILE)
                               for a in ("unet", "attention_unet")}
    assert bq._json_of(args, pair, True).name == "calibration_ensemble_unet_attention_unet.json"
    assert bq._json_of(args, three, True).name == "calibration_ensemble.json"
    args = bq.parse_args(["--models", "unet,attention_unet", "--json", "out/qc.json"])
    assert bq._json_of(args, pair, False) == Path("out/qc.json")
    assert bq._json_of(args, pair, True) == Path("out/qc_ensemble_unet_attention_unet.json")


def _calibration(spec, check: float) -> dict:
    """A :func:`bench.qc.calibrate` result of ``spec`` whose entropy check limit is ``check``."""
    from lvseg_core import qc

    limits = {r.key: {"typical": r.typical, "check": r.check, "fail": r.fail}
              for r in qc.RULES}
    limits["entropy:high"] = {"typical": check / 2, "check": check, "fail": 2 * check}
    return {"weights_id": spec.fingerprint(), "limits": limits, "volumes": 2,
            "patients": ["patient001"], "environment": {"time_utc": "2024-01-01 00:00:00"}}


def test_storing_a_pairs_limits_keeps_the_three_models_entry(tmp_path, monkeypatch):
    import json

    from lvseg_core import qc, settings
    from lvseg_core.ensemble import ensemble_rules

    pair, three = bq.resolve_models(["unet,attention_unet", "ensemble"])
    monkeypatch.setenv("LVSEG_WEIGHTS_DIR", str(tmp_path))      # a temporary limits file
    path = settings.ensemble_limits_file()
    assert path == tmp_path / "ensemble_qc.json"
    bq.store_ensemble_limits(_calibration(three, 0.2), three)
    assert ensemble_rules(pair.identity(), path)[0] is qc.RULES    # the pair: not yet
    bq.store_ensemble_limits(_calibration(pair, 0.3), pair)
    bq.store_ensemble_limits(_calibration(pair, 0.4), pair)     # replaces its own entry
    entries = json.loads(path.read_text())["ensembles"]
    assert [e["members"] for e in entries] == [three.identity(), pair.identity()]
    assert entries[0]["qc_limits"]["entropy:high"]["check"] == 0.2
    assert entries[1]["qc_limits"]["entropy:high"]["check"] == 0.4
    rules, note = ensemble_rules(pair.identity(), path)
    assert rules == qc.model_rules(entries[1]["qc_limits"]) == bq.spec_rules(pair)
    assert note == "" and rules != bq.spec_rules(three) != qc.RULES


def test_pair_calibrated_and_stored_end_to_end(acdc_dir, tmp_path, monkeypatch, capsys):
    """``--calibrate --store --models unet,attention_unet`` writes
    docs/qc/calibration_ensemble_unet_attention_unet.json and the pair's entry beside the
    three models' one, where the CLI's ensemble of the pair (in any order) finds it."""
    import json
    import shutil

    from lvseg_core import qc, settings
    from lvseg_core.ensemble import Ensemble
    from lvseg_core.hub import bundled_folder

    root = tmp_path / "weights"
    for arch in ("unet", "attention_unet"):
        shutil.copytree(bundled_folder(arch), root / arch)
    # The stored limits without the pair's own entry (the three models' entry stays).
    stored = json.loads(settings.ensemble_limits_file().read_text())["ensembles"]
    three = [e for e in stored if set(e["members"]) != {"unet", "attention_unet"}]
    (root / "ensemble_qc.json").write_text(json.dumps({"ensembles": three}))
    monkeypatch.setenv("LVSEG_WEIGHTS_DIR", str(root))
    monkeypatch.chdir(tmp_path)
    before = Ensemble.from_source("unet,attention_unet", device="cpu")
    assert before.qc_rules is qc.RULES
    assert "--calibrate --models unet,attention_unet --store" in before.notice
    code = bq.main(["--calibrate", "--store", "--models", "unet,attention_unet", "--data",
                    str(acdc_dir), "--cases", "2", "--threads", "1"])
    assert code == 0, capsys.readouterr().err
    report = json.loads(
        (tmp_path / "docs/qc/calibration_ensemble_unet_attention_unet.json").read_text())
    assert report["model"] == "unet,attention_unet"
    entries = json.loads((root / "ensemble_qc.json").read_text())["ensembles"]
    assert entries[:-1] == three and set(entries[-1]["members"]) == {"unet", "attention_unet"}
    for order in ("unet,attention_unet", "attention_unet,unet"):
        pair = Ensemble.from_source(order, device="cpu")
        assert pair.qc_rules == qc.model_rules(entries[-1]["qc_limits"]) != qc.RULES
        assert "not calibrated" not in pair.notice
