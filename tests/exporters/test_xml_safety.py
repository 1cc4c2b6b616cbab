"""hOCR and ALTO stay well-formed XML (and ALTO valid) whatever characters a document holds."""

from __future__ import annotations

import pytest
from lxml import etree

from varco_ocr.document import Block, Document, Line, Page, Word
from varco_ocr.exporters import write_exports
from varco_ocr.exporters.alto import alto_string
from varco_ocr.exporters.common import xml_safe, xml_unsafe_count
from varco_ocr.exporters.hocr import hocr_string

XHTML = "{http://www.w3.org/1999/xhtml}"
ALTO = "{http://www.loc.gov/standards/alto/ns-v4#}"
# Every kind XML 1.0 forbids: NUL, C0 controls, vertical tab, escape, U+FFFE/U+FFFF, lone surrogates.
FORBIDDEN = ["\x00", "\x01", "\x0b", "\x1b", "\x1f", "\ufffe", "\uffff", "\ud800", "\udfff"]


def _doc() -> Document:
    words = tuple(Word(f"a{ch}b", (10 + 40 * i, 10, 40 + 40 * i, 30), 0.5) for i, ch in enumerate(FORBIDDEN))
    kept = Word("tab\tok \u2028 \U0001F600 \ufffd", (10, 50, 200, 70))  # allowed, however odd: unchanged
    page = Page(index=0, width=500, height=100, blocks=(Block((Line(words), Line((kept,)))),), error="bad\x00page")
    return Document(source="scans/x\x07y.png", pages=(page,), model="m\x1bodel")


def test_xml_safe_replaces_only_what_xml_forbids():
    assert xml_safe("".join(FORBIDDEN)) == ("\ufffd" * len(FORBIDDEN), len(FORBIDDEN))
    allowed = "\t\n\r a\u007f\u0085\ud7ff\ue000\ufffd\U00010000\U0010ffff한"
    assert xml_safe(allowed) == (allowed, 0)


def test_hocr_with_control_characters_is_well_formed():
    doc = _doc()
    root = etree.fromstring(hocr_string(doc).encode("utf-8"))
    words = root.findall(f".//{XHTML}span[@class='ocrx_word']")
    assert [w.text for w in words[: len(FORBIDDEN)]] == ["a\ufffdb"] * len(FORBIDDEN)
    assert words[-1].text == "tab\tok \u2028 \U0001F600 \ufffd"
    assert root.find(f"{XHTML}head/{XHTML}title").text == "x\ufffdy.png"
    page = root.find(f".//{XHTML}div[@class='ocr_page']")
    assert 'image "scans/x\ufffdy.png"' in page.get("title") and page.get("data-error") == "bad\ufffdpage"
    assert "m\ufffdodel" in root.find(f"{XHTML}head/{XHTML}meta[@name='ocr-system']").get("content")


def test_alto_with_control_characters_is_well_formed_and_valid(shared):
    schema = etree.XMLSchema(etree.parse(str(shared / "schemas" / "alto-4-4-local.xsd")))
    root = etree.fromstring(alto_string(_doc()).encode("utf-8"))
    schema.assertValid(root)
    strings = root.findall(f".//{ALTO}String")
    assert [s.get("CONTENT") for s in strings[: len(FORBIDDEN)]] == ["a\ufffdb"] * len(FORBIDDEN)
    assert root.find(f".//{ALTO}fileName").text == "scans/x\ufffdy.png"
    assert root.find(f".//{ALTO}Page").get("QUALITY_DETAIL") == "bad\ufffdpage"


def test_replacements_are_counted_for_the_run_notes():
    # 9 in words, 1 in the file name, 1 in the model name, 1 in the page error.
    assert xml_unsafe_count(_doc()) == len(FORBIDDEN) + 3
    assert xml_unsafe_count(Document("ok.png", (Page(index=0, width=1, height=1),))) == 0


def test_every_text_format_writes_such_a_document(tmp_path):
    # txt keeps control characters (a text file may hold them) and writes surrogates as U+FFFD;
    # the JSON keeps every character exactly.
    written = write_exports(_doc(), tmp_path, ["json", "txt", "hocr", "alto"], stem="x")
    assert len(written) == 4
    assert Document.load(tmp_path / "x.json") == _doc()
    text = (tmp_path / "x.txt").read_text(encoding="utf-8")
    assert "a\x00b" in text and "a\x1bb" in text and "a\ufffdb" in text
    for name in ("x.hocr", "x.alto.xml"):
        etree.parse(str(tmp_path / name))
