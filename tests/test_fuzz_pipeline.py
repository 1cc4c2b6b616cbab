"""Fuzz: random and mutated model answers through the whole pure pipeline and every reader.

answer -> ``engine.page_from_generation`` (parse, pixels, layout: the page assembly every backend
uses) -> Document -> json, txt, hOCR, ALTO (and the searchable PDF on small pages, through the
public ``write_exports``) -> the readers: ``Document.load`` (round trip), the JSON schema
(jsonschema), lxml for hOCR, lxml + the ALTO 4.4 XSD, UTF-8 for the text, pymupdf for the PDF.
Asserted: no exception anywhere, every box inside its page, the JSON reads back equal.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from lxml import etree

from varco_ocr.document import Document
from varco_ocr.engine import Generation, page_from_generation
from varco_ocr.exporters import write_exports
from varco_ocr.parsing import parse_ocr_answer

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((REPO / "varco_ocr" / "schemas" / "document.schema.json").read_text(encoding="utf-8"))

VALID = (
    "<char>백범로</char><bbox>0.172, 0.266, 0.328, 0.341</bbox>\n"
    "<char>Apt</char><bbox>0.28, 0.601, 0.327, 0.651</bbox>\n"
    "<char>21,300원</char><bbox>0.5, 0.5, 0.62, 0.5</bbox>\n"
)
PIECES = [
    "<char>", "</char>", "<bbox>", "</bbox>", "<obj>", "</obj>", "<delim>", "<ocr>", ", ", ",", "\n", " ",
    "0.5", "0.1", "1", "0", "-0.2", "1.7", "1e308", "-1e309", "1e-320", "9" * 40, "nan", "NaN", "inf", "-Infinity",
    "가", "TOTAL", "&amp;", "&#0;", "&#x1b;", "&lt;", "<", ">", '"', "'", "\\",
    "\x00", "\x01", "\x0b", "\x1b", "\x7f", "\ufffe", "\uffff", "\ud800", "\udfff", "\u2028", "\U0001F600",
]
# A well-formed entry with any box: inverted corners, out of range on any side, flat, huge.
coordinate = st.one_of(st.floats(-2, 3, allow_nan=False), st.sampled_from(["nan", "inf", "1e308", "-0", "0.0"]))
entry = st.builds(
    lambda text, box: f"<char>{text}</char><bbox>{', '.join(map(str, box))}</bbox>",
    st.one_of(st.text(max_size=6), st.sampled_from(PIECES)),
    st.tuples(coordinate, coordinate, coordinate, coordinate),
)


@st.composite
def answers(draw) -> str:
    kind = draw(st.sampled_from(["random", "entries", "mutated", "loop", "truncated"]))
    if kind == "random":
        return "".join(draw(st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=5)), max_size=60)))
    if kind == "entries":
        return draw(st.sampled_from(["", "\n", " "])).join(draw(st.lists(entry, max_size=25)))
    if kind == "loop":  # a model stuck repeating a block, cut anywhere
        block = "".join(draw(st.lists(entry, min_size=1, max_size=3)))
        text = draw(st.text(max_size=10)) + block * draw(st.integers(2, 60))
        return text[: draw(st.integers(0, len(text)))]
    text = VALID * draw(st.integers(1, 3))
    if kind == "truncated":
        return text[: draw(st.integers(0, len(text)))]
    for _ in range(draw(st.integers(1, 8))):  # replace a stretch by a piece
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 15)))
        text = text[:i] + draw(st.sampled_from(["", *PIECES])) + text[j:]
    return text


generations = st.builds(
    Generation,
    answers(),
    st.booleans(),
    st.booleans(),
    st.lists(st.one_of(st.none(), st.floats(0, 1)), max_size=30).map(tuple),
)
names = st.one_of(st.sampled_from(["scan.png", "폴더/영수증 1.png", "a\x1bb\x00.png", "x\ud800.tif", "[1,  2].pdf"]),
                  st.text(min_size=1, max_size=12))


def _inside(box, page) -> bool:
    x1, y1, x2, y2 = box
    return 0 <= x1 <= x2 <= page.width and 0 <= y1 <= y2 <= page.height


def _check(doc: Document, out: Path, alto_schema, with_pdf_source: Path | None = None) -> None:
    for page in doc.pages:
        assert all(_inside(w.bbox, page) for w in page.words)
        assert all(_inside(line.bbox, page) for line in page.lines)
        assert all(_inside(block.bbox, page) for block in page.blocks)
    formats = ["json", "txt", "hocr", "alto"] + (["pdf"] if with_pdf_source else [])
    opts = {"source": with_pdf_source} if with_pdf_source else {}
    write_exports(doc, out, formats, stem="doc", **opts)
    assert Document.load(out / "doc.json") == doc
    import jsonschema

    jsonschema.validate(json.loads((out / "doc.json").read_text(encoding="utf-8")), SCHEMA)
    (out / "doc.txt").read_text(encoding="utf-8")
    etree.parse(str(out / "doc.hocr"))
    alto = etree.parse(str(out / "doc.alto.xml"))
    if alto_schema is not None:
        alto_schema.assertValid(alto)
    if with_pdf_source:
        import pymupdf

        with pymupdf.open(out / "doc.pdf") as pdf:
            assert pdf.page_count == len(doc.pages)
            for p in pdf:
                p.get_text()


@pytest.fixture(scope="module")
def alto_schema(shared):
    return etree.XMLSchema(etree.parse(str(shared / "schemas" / "alto-4-4-local.xsd")))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(gen=generations, width=st.integers(1, 5000), height=st.integers(1, 5000), name=names,
       model=st.one_of(st.none(), names), keep_raw=st.booleans())
def test_any_answer_survives_the_pipeline_and_every_reader(alto_schema, gen, width, height, name, model, keep_raw):
    page = page_from_generation(gen, width=width, height=height, index=0, keep_raw=keep_raw)
    # the page holds what the answer says, no more, no less: every word with text (in reading order,
    # so compared as a multiset), the parser's count of boxes dropped, the cut-short flag, the raw text
    answer = parse_ocr_answer(gen.text)
    assert sorted(w.text for w in page.words) == sorted(pw.text for pw in answer.words if pw.text)
    assert page.dropped_boxes == answer.dropped_boxes
    assert page.truncated == (answer.truncated or gen.hit_token_limit or gen.looped)
    assert page.raw == (gen.text if keep_raw else None)
    doc = Document(source=name, pages=(page,), model=model)
    with tempfile.TemporaryDirectory() as tmp:
        _check(doc, Path(tmp), alto_schema)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(gen=generations, width=st.integers(8, 300), height=st.integers(8, 300))
def test_any_answer_gives_a_searchable_pdf_that_pymupdf_reads(alto_schema, gen, width, height):
    from PIL import Image

    page = page_from_generation(gen, width=width, height=height, index=0)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "page.png"
        Image.new("RGB", (width, height), "white").save(source)
        doc = Document(source=str(source), pages=(page,), model="fuzz")
        out = Path(tmp) / "out"
        _check(doc, out, alto_schema, with_pdf_source=source)
