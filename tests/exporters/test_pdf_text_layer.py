"""The glyphless text layer gives back every character the model read (issue 14, part 1).

A scanned page (an image, no text of its own) gets words in many scripts; pdftotext, pdftotext -bbox
and pymupdf must return them as written, in their boxes. Before the glyphless font the layer used a
CJK font subset and lost everything it had no glyph for (emoji, Arabic, Hebrew, decomposed Hangul,
Extension B ideographs, tabs).
"""

from __future__ import annotations

import subprocess
import unicodedata
from pathlib import Path

import pymupdf
import pytest
from hypothesis import given, settings, strategies as st
from lxml import etree

from varco_ocr.document import Document, Word
from varco_ocr.exporters import write_exports
from varco_ocr.exporters.glyphless import ClusterCodes, glyphless_truetype, to_unicode_cmap, visual_order, grapheme_clusters
from varco_ocr.inputs import pdf_page_geometry
from varco_ocr.layout import build_page

# tests/conftest.py's fixture: skips naming poppler when pdftotext is missing, fails on CI (CI=true)
needs_pdftotext = pytest.mark.usefixtures("pdftotext")

DPI = 150
# One line per row; each word is (text, width in pixels). Rows far apart so no extractor joins them.
ROWS = [
    [("한국어", 150), ("\u1112\u1161\u11ab\u1100\u1173\u11af", 120), ("𠀀𠀁𪜀", 150)],  # composed, decomposed Hangul, Ext. B
    [("👍🏽", 60), ("👨\u200d👩\u200d👧", 90), ("🇰🇷", 60)],  # skin tone, ZWJ family, flag
    [("مرحبا", 150), ("שלום", 120)],  # Arabic, Hebrew
    [("e\u0301te\u0301", 120), ("Åström", 180), ("ä\u0308\u0301", 60)],  # combining marks
    [('<>&"\'', 150), ("New York", 240), ("a\tb", 90)],  # XML specials, inner space, tab
    [("zero\u200bwidth", 270), ("soft\u00adhyphen", 330)],  # format characters (Cf) kept
]
RTL = {"مرحبا", "שלום"}


def _word_pdf(tmp_path: Path) -> tuple[Path, Document]:
    """An image-only PDF page and a document of ROWS placed on it, with bbox_pt as the batch runner
    records it."""
    scan = tmp_path / "scan.pdf"
    with pymupdf.open() as pdf:
        page = pdf.new_page(width=595, height=842)
        pix = pymupdf.Pixmap(pymupdf.csRGB, pymupdf.IRect(0, 0, 200, 280), 0)
        pix.clear_with(255)
        page.insert_image(page.rect, pixmap=pix)
        pdf.save(scan)
    with pymupdf.open(scan) as pdf:
        page = pdf[0]
        width, height = round(595 * DPI / 72), round(842 * DPI / 72)
        geometry = pdf_page_geometry(page, width, height)
    words = []
    for r, row in enumerate(ROWS):
        x, y = 100, 100 + 150 * r
        for text, w in row:
            box = (x, y, x + w, y + 50)
            words.append(Word(text, box, 0.9, bbox_pt=geometry.bbox_pt(box)))
            x += w + 40
    page = build_page(words, index=0, width=width, height=height, dpi=DPI)
    return scan, Document(source=str(scan), pages=(page,), model="hand-built")


def _poppler_bbox_words(path: Path) -> list[tuple[str, tuple[float, ...]]]:
    run = subprocess.run(["pdftotext", "-bbox", str(path), "-"], check=True, capture_output=True)
    assert run.stderr == b""
    ns = "{http://www.w3.org/1999/xhtml}"
    root = etree.fromstring(run.stdout)
    return [(w.text, tuple(float(w.get(k)) for k in ("xMin", "yMin", "xMax", "yMax"))) for w in root.iter(f"{ns}word")]


def _as_poppler_reads(text: str) -> list[str]:
    """What poppler's word list holds for one of our words: the tab is carried as a space (see
    layer_clusters), a space splits words, and a right-to-left word comes in drawing (display) order:
    pdftotext -bbox keeps the order glyphs are drawn in and does no bidi reordering."""
    text = text.replace("\t", " ")
    if text in RTL:
        text = text[::-1]
    return text.split(" ")


@needs_pdftotext
def test_every_word_comes_back_from_pdftotext_in_its_box(tmp_path):
    scan, doc = _word_pdf(tmp_path)
    (out,) = write_exports(doc, tmp_path / "out", ["pdf"], stem="scan")
    got = _poppler_bbox_words(out)
    expected = [t for w in doc.pages[0].words for t in _as_poppler_reads(w.text)]
    assert [t for t, _ in got] == expected
    boxes = dict(got)
    for w in doc.pages[0].words:
        if " " not in w.text and "\t" not in w.text:  # whole words: their box within 1 pt
            assert boxes[_as_poppler_reads(w.text)[0]] == pytest.approx(w.bbox_pt, abs=1.0), w.text
    # Plain pdftotext: each row is its words joined by spaces, the inner space kept, RTL words in
    # logical order between the embedding marks poppler adds (U+202B ... U+202C); a line of
    # right-to-left words is read right to left, so its rightmost word comes first.
    text = subprocess.run(["pdftotext", str(out), "-"], check=True, capture_output=True, text=True).stdout
    lines = [line for line in text.replace("\u202b", "").replace("\u202c", "").splitlines() if line.strip()]
    rows = [[t for t, _ in row] for row in ROWS]
    assert lines == [" ".join(t.replace("\t", " ") for t in (row[::-1] if set(row) <= RTL else row)) for row in rows]


def test_pymupdf_gives_back_every_word_rtl_included(tmp_path):
    scan, doc = _word_pdf(tmp_path)
    pymupdf.TOOLS.mupdf_warnings()  # clear
    (out,) = write_exports(doc, tmp_path / "out", ["pdf"], stem="scan")
    with pymupdf.open(out) as pdf:
        page = pdf[0]
        words = {w[4]: w[:4] for w in page.get_text("words")}
        text = page.get_text()
    assert pymupdf.TOOLS.mupdf_warnings() == ""
    for w in doc.pages[0].words:
        if w.text in RTL:  # MuPDF reorders right-to-left runs: the word and its box exactly
            assert words[w.text] == pytest.approx(w.bbox_pt, abs=1.0)
        for part in w.text.replace("\t", " ").split(" "):
            assert part in text, w.text


def test_output_has_no_cjk_font_and_one_small_glyphless_font(tmp_path):
    scan, doc = _word_pdf(tmp_path)
    (out,) = write_exports(doc, tmp_path / "out", ["pdf"], stem="scan")
    assert out.stat().st_size - scan.stat().st_size < 4_000  # the whole layer, font and CMap included
    ttf = glyphless_truetype()
    font = pymupdf.Font(fontbuffer=ttf)  # FreeType loads it
    assert (font.glyph_count, font.ascender, font.descender) == (2, pytest.approx(0.8), pytest.approx(-0.2))
    assert len(ttf) < 1_000


@pytest.mark.parametrize(
    "word, shown",
    [
        ("abc", "abc"),
        ("مرحبا", "ابحرم"),
        ("سلام123", "123مالس"),  # the number stays left to right, on the left of the Arabic
        ("abc שלום", "abc םולש"),
        ("بَاب", "باَب"),  # a mark is reversed with its base, so the run reverses back exactly
        ("12 ab", "12 ab"),
    ],
)
def test_visual_order(word, shown):
    assert "".join(visual_order(grapheme_clusters(word))) == shown


def _parse_cmap(cmap: bytes) -> dict[int, str]:
    import re

    return {
        int(src, 16): bytes.fromhex(dst.decode()).decode("utf-16-be")
        for src, dst in re.findall(rb"<([0-9A-F]{4})> <([0-9A-F]+)>", cmap.split(b"endcodespacerange")[1])
    }


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=4), min_size=1, max_size=250, unique=True))
def test_to_unicode_cmap_round_trips(strings):
    codes = ClusterCodes()
    for s in strings:
        codes.code(s)
    cmap = to_unicode_cmap(codes.mapping)
    assert _parse_cmap(cmap) == codes.mapping
    assert all(int(line.split()[0]) <= 100 for line in cmap.split(b"\n") if line.endswith(b"beginbfchar"))


def _plain(ch: str) -> bool:
    cat = unicodedata.category(ch)
    return not (cat.startswith(("C", "Z", "M")) or unicodedata.bidirectional(ch) in ("R", "AL"))


@needs_pdftotext
@settings(max_examples=10, deadline=None)
@given(st.lists(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x2FFFF).filter(_plain), min_size=1, max_size=6), min_size=1, max_size=4))
def test_any_left_to_right_word_round_trips_through_pdftotext(tmp_path_factory, texts):
    tmp = tmp_path_factory.mktemp("rt")
    scan, doc = _word_pdf(tmp)
    words = [Word(t, (100 + 300 * i, 100, 340 + 300 * i, 150), 0.9, bbox_pt=None) for i, t in enumerate(texts)]
    page = build_page(words, index=0, width=doc.pages[0].width, height=doc.pages[0].height, dpi=DPI)
    (out,) = write_exports(Document(source=str(scan), pages=(page,)), tmp, ["pdf"], stem="o")
    assert [t for t, _ in _poppler_bbox_words(out)] == [w.text for w in page.words]
