"""PDF pages that already carry text (issue 14, part 2): --skip-text takes a born-digital page's words
from the PDF instead of the model, --redo-ocr replaces an old invisible OCR layer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pymupdf
import pytest

from exporters.conftest import write_text_pdf
from varco_ocr.batch import LOG_NAME, BatchOptions, run
from varco_ocr.document import Document, Word
from varco_ocr.exporters import write_exports
from varco_ocr.layout import build_page
from varco_ocr.pdf_text import TextSpan, covers_page, strip_invisible_text

from test_batch import ENGINE_ARGS, CountingBackend

# tests/conftest.py's fixture: skips naming poppler when pdftotext is missing, fails on CI (CI=true)
needs_pdftotext = pytest.mark.usefixtures("pdftotext")

BORN_DIGITAL = [f"{i + 1}. 서강대학교 백범로 35 Seoul report line {i + 1}" for i in range(12)]
OLD_LAYER = "OLDLAYER stale tesseract words"


def _mixed_pdf(tmp_path: Path) -> Path:
    """Page 1 born-digital (visible text), page 2 a scan (image only), page 3 a scan with an old
    invisible OCR layer (render mode 3), as a previous OCR run leaves it."""
    text_pdf = write_text_pdf(tmp_path / "text.pdf", texts=[BORN_DIGITAL, ["스캔 scanned page"], ["예전 old scan"]], rotations=(0, 0, 0))
    path = tmp_path / "mixed.pdf"
    with pymupdf.open(text_pdf) as src, pymupdf.open() as out:
        out.insert_pdf(src, from_page=0, to_page=0)
        for i in (1, 2):
            pix = src[i].get_pixmap(dpi=60)
            page = out.new_page(width=595, height=842)
            page.insert_image(page.rect, pixmap=pix)
        out[2].insert_text((72, 300), OLD_LAYER, fontsize=30, render_mode=3)
        out.save(path)
    return path


def _pdftotext(path: Path, page: int) -> str:
    run_ = subprocess.run(["pdftotext", "-f", str(page), "-l", str(page), str(path), "-"], check=True, capture_output=True, text=True)
    return run_.stdout


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    import torch

    torch.set_num_threads(1)
    from varco_ocr.engine import OCREngine

    return OCREngine(str(tiny_model_dir), **ENGINE_ARGS)


@needs_pdftotext
def test_skip_text_takes_the_born_digital_page_from_the_pdf(tmp_path, engine):
    pdf = _mixed_pdf(tmp_path)
    backend = CountingBackend(engine)
    out = tmp_path / "out"
    summary = run([pdf], backend, BatchOptions(out_dir=out, formats=("json", "pdf"), dpi=50, progress="none", text_mode="skip-text"))
    assert summary.exit_code == 0
    # the model saw the scan and the page with the old invisible layer, never the born-digital page
    assert sorted(i for call in backend.calls for i, _ in call) == [1, 2]
    doc = Document.load(out / "mixed.json")
    page = doc.pages[0]
    assert page.source == "pdf-text" and [p.source for p in doc.pages[1:]] == [None, None]
    with pymupdf.open(pdf) as src:
        theirs = [(w[4], tuple(w[:4])) for w in src[0].get_text("words", sort=True)]
    ours = sorted(((w.text, w.bbox_pt) for w in page.words), key=lambda t: (t[1][1], t[1][0]))
    theirs = sorted(theirs, key=lambda t: (t[1][1], t[1][0]))
    assert [t for t, _ in ours] == [t for t, _ in theirs]
    for (_, a), (_, b) in zip(ours, theirs):
        assert a == pytest.approx(b, abs=1e-3)
    # reading order by our layout rule: the lines as written
    assert [line for line in page.text.splitlines() if line] == BORN_DIGITAL
    # the summary and the log count the pages by source
    (outcome,) = summary.outcomes
    assert (outcome.pages, outcome.pages_from_pdf) == (3, 1)
    record = [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()][-2]
    assert (record["pages_model"], record["pages_pdf_text"]) == (2, 1)
    # the searchable PDF keeps the born-digital page as it is (no second layer), and the old layer
    # of the third page (which the model read again) is gone
    assert _pdftotext(out / "mixed.pdf", 1) == _pdftotext(pdf, 1)
    assert "OLDLAYER" not in _pdftotext(out / "mixed.pdf", 3)


@needs_pdftotext
def test_redo_ocr_replaces_the_old_layer_and_keeps_visible_text(tmp_path, engine):
    pdf = _mixed_pdf(tmp_path)
    backend = CountingBackend(engine)
    out = tmp_path / "out"
    run([pdf], backend, BatchOptions(out_dir=out, formats=("json", "pdf"), dpi=50, progress="none", text_mode="redo-ocr"))
    assert sorted(i for call in backend.calls for i, _ in call) == [0, 1, 2]  # every page to the model
    doc = Document.load(out / "mixed.json")
    assert "OLDLAYER" not in _pdftotext(out / "mixed.pdf", 3)
    assert all(line in _pdftotext(out / "mixed.pdf", 1) for line in BORN_DIGITAL)  # visible text stays
    # The random-weight model reads nothing, so give page 3 known words (as a perfect OCR would) and
    # export again: pdftotext returns exactly the new text on that page, none of the old.
    new = build_page([Word("새로운", (50, 50, 150, 80), 0.9), Word("layer", (170, 50, 260, 80), 0.9)], index=2,
                     width=doc.pages[2].width, height=doc.pages[2].height, dpi=doc.pages[2].dpi)
    redone = Document(doc.source, (*doc.pages[:2], new), doc.model, doc.metadata)
    assert redone.metadata["text_mode"] == "redo-ocr"
    (exported,) = write_exports(redone, tmp_path / "again", ["pdf"], source=pdf)
    assert _pdftotext(exported, 3).split() == ["새로운", "layer"]
    # without --redo-ocr (the default mode), the old layer would still be there beside ours
    forced = Document(doc.source, redone.pages, doc.model, {})
    (kept,) = write_exports(forced, tmp_path / "forced", ["pdf"], source=pdf)
    assert "OLDLAYER" in _pdftotext(kept, 3)


def test_cli_summary_counts_pages_by_source(tmp_path, tiny_model_dir):
    pdf = _mixed_pdf(tmp_path)
    args = ["--model", str(tiny_model_dir), "--max-new-tokens", "8", "--min-long-side", "0", "--max-grid", "1", "--dpi", "40"]
    run_ = subprocess.run([sys.executable, "-m", "varco_ocr", "ocr", str(pdf), "-o", str(tmp_path / "o"), "--skip-text", *args],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert run_.returncode == 0, run_.stderr
    assert "2 pages read by the model, 1 taken from the PDF's own text" in run_.stdout + run_.stderr
    both = subprocess.run([sys.executable, "-m", "varco_ocr", "ocr", str(pdf), "--skip-text", "--redo-ocr", *args],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert both.returncode == 2 and "exclude each other" in both.stderr and "Traceback" not in both.stderr


def test_covers_page_needs_visible_real_text_over_a_share_of_the_page():
    area = 595 * 842
    body = [TextSpan("Lorem ipsum dolor sit amet " * 3, (72, 100 + 14 * i, 520, 112 + 14 * i), 0) for i in range(20)]
    assert covers_page(body, area)
    assert not covers_page([TextSpan(s.text, s.bbox, 3) for s in body], area)  # invisible: an OCR layer
    assert not covers_page(body[:1], area)  # one line (a stamp, a page number) over a scan
    garbage = [TextSpan("\ufffd\ue000\ue001" * 20, s.bbox, 0) for s in body]  # no usable ToUnicode
    assert not covers_page(garbage, area)


def test_strip_invisible_text_keeps_everything_else_byte_for_byte():
    content = (
        b"q 1 0 0 1 0 0 cm BT /F1 12 Tf 0 Tr 10 10 Td (visible \\(kept\\)) Tj ET Q\n"
        b"BT 3 Tr /F2 9 Tf 1 0 0 1 5 5 Tm <0041> Tj [(a) -20 (b)] TJ q 0 Tr (shown) ' Q (hidden) Tj ET\n"
        b"BI /W 2 /H 1 /CS /G /BPC 8 ID \x00Tj\xff EI\n"
        b"BT (after) Tj ET 0 Tr BT (again) Tj ET"
    )
    new, _, removed = strip_invisible_text(content)
    assert removed
    assert new == (
        b"q 1 0 0 1 0 0 cm BT /F1 12 Tf 0 Tr 10 10 Td (visible \\(kept\\)) Tj ET Q\n"
        b"BT 3 Tr /F2 9 Tf 1 0 0 1 5 5 Tm   q 0 Tr (shown) ' Q  ET\n"
        b"BI /W 2 /H 1 /CS /G /BPC 8 ID \x00Tj\xff EI\n"
        b"BT  ET 0 Tr BT (again) Tj ET"  # the render mode is graphics state: it outlives ET
    )
    assert strip_invisible_text(b"BT (x) Tj ET") == (b"BT (x) Tj ET", 0, False)
