"""The slide deck ``docs/LVSeg.pptx`` (python-pptx), from the report's facts and figures.

Slides: title, problem, data, method, comparison table, example
segmentations, clinical agreement, failures and robustness, the app, next
steps. A slide whose figure is missing says so instead of failing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from pptx import Presentation
from pptx.util import Emu, Inches, Pt

from bench.common import ROOT
from bench.document import SECTIONS, Report
from lvseg_core.registry import display_name

WIDTH, HEIGHT = Inches(13.333), Inches(7.5)


def _title(slide, text: str) -> None:
    box = slide.shapes.add_textbox(Inches(0.5), Inches(0.3), WIDTH - Inches(1.0), Inches(0.9))
    frame = box.text_frame
    frame.word_wrap = True
    frame.text = text
    frame.paragraphs[0].runs[0].font.size = Pt(30)
    frame.paragraphs[0].runs[0].font.bold = True


def _bullets(slide, items: Sequence[str], left, top, width, height, size: int = 16) -> None:
    box = slide.shapes.add_textbox(left, top, width, height)
    frame = box.text_frame
    frame.word_wrap = True
    for i, item in enumerate(items):
        p = frame.paragraphs[0] if i == 0 else frame.add_paragraph()
        p.text = f"• {item}"
        p.space_after = Pt(6)
        for run in p.runs:
            run.font.size = Pt(size)


def _picture(slide, path: Path | None, left, top, max_width, max_height) -> bool:
    """Add ``path`` scaled to fit the box (aspect kept); False when it is missing."""
    if path is None or not Path(path).is_file():
        return False
    from PIL import Image

    with Image.open(path) as img:
        w, h = img.size
    scale = min(max_width / w, max_height / h)
    width, height = int(w * scale), int(h * scale)
    slide.shapes.add_picture(str(path), left + (max_width - width) // 2, top, Emu(width),
                             Emu(height))
    return True


def _slide(prs, title: str):
    slide = prs.slides.add_slide(prs.slide_layouts[6])   # blank
    _title(slide, title)
    return slide


def _missing(slide, text: str) -> None:
    _bullets(slide, [text], Inches(0.7), Inches(1.6), WIDTH - Inches(1.4), Inches(1.0), 18)


def _table(slide, header: Sequence[str], rows: Sequence[Sequence[Any]], left, top, width,
           height) -> None:
    shape = slide.shapes.add_table(len(rows) + 1, len(header), left, top, width, height)
    table = shape.table
    for j, h in enumerate(header):
        table.cell(0, j).text = str(h)
    for i, row in enumerate(rows, start=1):
        for j, value in enumerate(row):
            table.cell(i, j).text = str(value)
    for i in range(len(rows) + 1):
        for j in range(len(header)):
            for p in table.cell(i, j).text_frame.paragraphs:
                for run in p.runs:
                    run.font.size = Pt(14)


def app_screenshot() -> Path | None:
    """A screenshot of the app from the browser tests (test-output/), if any."""
    folder = ROOT / "test-output"
    for name in ("segment.png", "page_segment.png"):
        if (folder / name).is_file():
            return folder / name
    shots = sorted(folder.glob("*.png")) if folder.is_dir() else []
    return shots[0] if shots else None


def build_deck(rep: Report, results: dict, args, path: Path) -> Path:
    """Write the deck from the report's facts (``rep.facts``) and figures."""

    prs = Presentation()
    prs.slide_width, prs.slide_height = WIDTH, HEIGHT
    figs = rep.facts.get("figures", {})
    body_w = WIDTH - Inches(1.0)

    slide = prs.slides.add_slide(prs.slide_layouts[6])
    box = slide.shapes.add_textbox(Inches(0.8), Inches(2.4), body_w, Inches(2.5))
    frame = box.text_frame
    frame.word_wrap = True
    frame.text = "LVSeg"
    frame.paragraphs[0].runs[0].font.size = Pt(54)
    frame.paragraphs[0].runs[0].font.bold = True
    p = frame.add_paragraph()
    p.text = ("Heart segmentation in short-axis cine MRI: RV, LV myocardium, LV cavity. "
              "U-Net, Attention U-Net and V-Net compared on ACDC.")
    p.runs[0].font.size = Pt(22)

    slide = _slide(prs, "Problem")
    _bullets(slide, [
        "Cine MRI is the reference for ventricular volumes and function.",
        "Outlining RV, myocardium and LV on every slice of the ED and ES frames is slow and "
        "varies between readers.",
        "LVSeg segments them automatically and derives EDV, ESV, EF and myocardial mass.",
        "Questions: how accurate, how close to manual indices, how fast, how robust, where "
        "does it fail?",
    ], Inches(0.7), Inches(1.5), body_w - Inches(0.4), Inches(5))

    slide = _slide(prs, "Data: ACDC")
    data = rep.facts.get("data")
    if data:
        groups = ", ".join(f"{g} {n}" for g, n in data["groups"].items())
        _bullets(slide, [f"{data['patients']} patients, {data['labelled']} labelled frames "
                         f"(ED + ES)", f"groups: {groups}",
                         f"{data['validation']} validation patients (standard split)"],
                 Inches(0.5), Inches(1.3), Inches(5.0), Inches(3), 16)
        _picture(slide, figs.get("eda_examples") or figs.get("eda_groups"), Inches(5.6),
                 Inches(1.3), Inches(7.4), Inches(3.0))
        _picture(slide, figs.get("eda_class_balance"), Inches(0.5), Inches(4.4),
                 Inches(8.0), Inches(2.9))
    else:
        _missing(slide, "The data folder was not found when the report was generated.")

    slide = _slide(prs, "Method: three architectures")
    arch = rep.facts.get("architectures", [])
    _picture(slide, figs.get("architectures"), Inches(0.4), Inches(1.3), WIDTH - Inches(0.8),
             Inches(3.8))
    _bullets(slide, [", ".join(f"{display_name(f['arch'])} {f['parameters'] / 1e6:.2f} M parameters"
                               for f in arch),
                     rep.facts.get("recipe", "Dice + cross-entropy loss, AdamW"),
                     "Inference: normalise, resample to the training spacing, pad; restore "
                     "to the input grid; keep the largest components"],
             Inches(0.6), Inches(5.2), body_w, Inches(2.0), 15)

    slide = _slide(prs, "Results: comparison on the validation patients")
    comparison = rep.facts.get("comparison")
    if comparison:
        _table(slide, comparison["header"], comparison["rows"], Inches(0.5), Inches(1.4),
               body_w, Inches(0.5) * (len(comparison["rows"]) + 1))
        _picture(slide, figs.get("results_dice"), Inches(1.5), Inches(3.6), Inches(10.3),
                 Inches(3.6))
    else:
        _missing(slide, "No measurement: no trained weights or no data when the report was "
                        "generated.")

    examples = rep.facts.get("examples", [])
    for start in (0, 2):
        chunk = examples[start:start + 2]
        if not chunk and start:
            break
        slide = _slide(prs, "Example segmentations" + (" (worst cases)" if start == 0 else ""))
        if not chunk:
            _missing(slide, "No example segmentation (no model was evaluated).")
        for i, figure in enumerate(chunk):
            _picture(slide, figure, Inches(0.4), Inches(1.3) + i * Inches(3.05),
                     WIDTH - Inches(0.8), Inches(2.95))

    slide = _slide(prs, "Clinical agreement")
    ba = [p for k, p in figs.items() if k.startswith("bland_altman_")]
    if ba:
        _picture(slide, ba[0], Inches(0.4), Inches(1.3), Inches(6.6), Inches(5.8))
        _picture(slide, figs.get("clinical_scatter"), Inches(7.1), Inches(2.5), Inches(6.0),
                 Inches(3.0))
    else:
        _missing(slide, "No clinical agreement measured.")

    slide = _slide(prs, "Where it fails, and robustness")
    shown = _picture(slide, figs.get("failure_position"), Inches(0.4), Inches(1.3),
                     WIDTH - Inches(0.8), Inches(2.8))
    shown |= _picture(slide, figs.get("robustness"), Inches(1.5), Inches(4.2), Inches(10.3),
                      Inches(3.1))
    if not shown:
        _missing(slide, "No failure analysis or robustness measured.")

    slide = _slide(prs, "The app: streamlit run app.py")
    _bullets(slide, ["Upload NIfTI, DICOM (folder or zip) or pictures; pick a model and "
                     "weights (bundled, Hub, training run)",
                     "Overlay, 3D surface, volumes, EF and mass; compare models; train and "
                     "explore the data"], Inches(0.5), Inches(1.3), Inches(4.6), Inches(5), 16)
    if not _picture(slide, app_screenshot(), Inches(5.2), Inches(1.3), Inches(7.8),
                    Inches(5.9)):
        _bullets(slide, ["(no screenshot: run the browser tests to create test-output/)"],
                 Inches(5.2), Inches(3.0), Inches(7.5), Inches(1), 14)

    slide = _slide(prs, "What to try next")
    _bullets(slide, _next_items(rep), Inches(0.6), Inches(1.4), body_w, Inches(5.8), 14)

    path.parent.mkdir(parents=True, exist_ok=True)
    prs.save(str(path))
    return path


def _next_items(rep: Report) -> list[str]:
    """The bullets of the report's 'What to try next' section, without markdown."""
    return rep.bullets(SECTIONS[6])[:6]
