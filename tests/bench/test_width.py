"""Tests of bench.width: every width timed, trained weights scored beside their width."""

from __future__ import annotations

import json

from bench import width as bw

TINY = {"encoder_name": "tu-mobilenetv3_small_050", "decoder_channels": [16, 8, 8, 8]}
WIDER = {"encoder_name": "tu-mobilenetv3_small_050", "decoder_channels": [64, 32, 16, 8]}


def test_widths_are_timed_and_trained_weights_scored_beside_theirs(acdc_dir, tmp_path,
                                                                   monkeypatch, capsys):
    import torch

    from lvseg_core import create_model

    monkeypatch.setattr(bw, "WIDTHS", {"unet": [("tiny", TINY), ("wider", WIDER)]})
    torch.manual_seed(0)
    create_model("unet", **TINY).save_pretrained(tmp_path / "tiny")
    # bundled weights of the wider width: that row is marked, from their config
    create_model("unet", **WIDER).save_pretrained(tmp_path / "bundled" / "unet")
    monkeypatch.setenv("LVSEG_WEIGHTS_DIR", str(tmp_path / "bundled"))
    out = tmp_path / "width.json"
    code = bw.main(["--models", "unet", "--data", str(acdc_dir), "--cases", "1",
                    "--repeats", "1", "--warmup", "0", "--threads", "1",
                    "--trained", str(tmp_path / "tiny"), "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    tiny, wider = report["widths"]["unet"]
    assert wider["parameters"] > tiny["parameters"]
    assert wider["gflop_per_slice"] > tiny["gflop_per_slice"] > 0
    assert tiny["seconds_per_volume"] > 0 and tiny["slices_per_second"] > 0
    # The trained folder is scored on the validation patients, beside its own width only.
    scored, = tiny["trained"]
    assert scored["cases"] == 20 and 0 <= scored["dice"]["mean"] <= 1
    assert "trained" not in wider and report["unmatched"] == []
    table = capsys.readouterr().out
    assert wider["bundled"] and not tiny["bundled"]
    assert "| U-Net | wider (bundled) |" in table and "| U-Net | tiny |" in table
    assert "not trained" in table
    # The report's section 5.10 shows the same table.
    from argparse import Namespace

    from bench.document import Report
    from bench.report import section_width

    rep = Report(tmp_path)
    section_width(rep, Namespace(width_json=out))
    text = "\n".join(rep.lines)
    assert "### 5.10" in text and bw.markdown(report) in text


def test_trained_folder_without_weights_is_a_one_line_error(acdc_dir, tmp_path, capsys,
                                                            monkeypatch):
    monkeypatch.setattr(bw, "WIDTHS", {"unet": [("tiny", TINY)]})
    code = bw.main(["--models", "unet", "--data", str(acdc_dir), "--cases", "1",
                    "--repeats", "1", "--warmup", "0", "--trained", str(tmp_path),
                    "--json", str(tmp_path / "w.json")])
    err = capsys.readouterr().err
    assert code == 1 and "no weights folder" in err and "Traceback" not in err
