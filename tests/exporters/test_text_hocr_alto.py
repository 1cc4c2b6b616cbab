"""json / txt / hOCR / ALTO exports of documents with known words (Korean included)."""

from __future__ import annotations


import pytest
from lxml import etree

from varco_ocr.document import Block, Document, Line, Page, Word
from varco_ocr.exporters import EXPORTERS, expected_outputs, output_path, parse_formats, write_exports
from varco_ocr.exporters.alto import alto_string
from varco_ocr.exporters.common import guess_language
from varco_ocr.exporters.hocr import hocr_string

XHTML = "{http://www.w3.org/1999/xhtml}"
ALTO = "{http://www.loc.gov/standards/alto/ns-v4#}"


def _doc() -> Document:
    w = Word
    page1 = Page(
        index=0,
        width=1000,
        height=500,
        dpi=300,
        blocks=(
            Block((Line((w("백범로", (172, 133, 328, 170), 0.91), w("35", (340, 133, 380, 170), None))),
                   Line((w("Apt", (280, 300, 327, 325), 0.5), w("<&\"'>", (330, 300, 400, 325), 1.0))))),
        ),
    )
    page2 = Page(index=3, width=800, height=600, blocks=(Block((Line((w("Hello", (10, 10, 90, 40), 0.25),)),)),))
    bad = Page(index=4, width=0, height=0, error="page 5: over the limit")
    return Document(source="scans/book.pdf", pages=(page1, page2, bad), model="NCSOFT/VARCO-VISION-2.0-1.7B-OCR")


def test_parse_formats():
    assert parse_formats("json, TXT,hocr,json") == ("json", "txt", "hocr")
    with pytest.raises(ValueError, match="unknown format 'docx'"):
        parse_formats("json,docx")
    assert set(EXPORTERS) == {"json", "txt", "hocr", "alto", "pdf", "overlay"}


def test_output_names(tmp_path):
    doc = _doc()
    assert output_path(tmp_path, "sub/book", "alto") == tmp_path / "sub" / "book.alto.xml"
    names = [p.name for p in expected_outputs(doc, tmp_path, "book", ("json", "overlay"))]
    assert names == ["book.json", "book.p0001.overlay.png", "book.p0004.overlay.png"]  # the unreadable page has none


def test_json_round_trips_and_txt_separates_pages_with_form_feeds(tmp_path):
    doc = _doc()
    written = write_exports(doc, tmp_path, ["json", "txt"], stem="book")
    assert [p.name for p in written] == ["book.json", "book.txt"]
    assert Document.load(tmp_path / "book.json") == doc
    assert (tmp_path / "book.txt").read_text(encoding="utf-8") == "백범로 35\nApt <&\"'>\fHello\f\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_language_guess_by_script():
    assert guess_language(["백범로", "Ap"]) == "ko"
    assert guess_language(["Hello", "world", "한"]) == "en"
    assert guess_language(["東京", "です"]) == "ja"
    assert guess_language(["123", "-"]) is None
    assert guess_language(["백범로", "Apt"]) == "ko"  # a tie goes to the non-Latin script


def test_hocr_nesting_and_properties():
    doc = _doc()
    root = etree.fromstring(hocr_string(doc).encode("utf-8"))
    assert root.tag == f"{XHTML}html" and root.get("lang") == "en"  # 8 Latin letters, 3 Hangul
    metas = {m.get("name"): m.get("content") for m in root.iter(f"{XHTML}meta") if m.get("name")}
    assert metas["ocr-system"].startswith("varco-ocr ") and "NCSOFT/VARCO-VISION-2.0-1.7B-OCR" in metas["ocr-system"]
    assert set("ocr_page ocr_carea ocr_par ocr_line ocrx_word ocrp_wconf".split()) <= set(metas["ocr-capabilities"].split())

    def cls(el):
        return el.get("class")

    pages = [el for el in root.iter() if cls(el) == "ocr_page"]
    assert [p.get("title") for p in pages] == [
        'image "scans/book.pdf"; bbox 0 0 1000 500; ppageno 0; scan_res 300 300',
        'image "scans/book.pdf"; bbox 0 0 800 600; ppageno 3',
        'image "scans/book.pdf"; bbox 0 0 0 0; ppageno 4',
    ]
    # strict nesting: every word sits in a line, in a paragraph, in a content area, in a page
    words = [el for el in root.iter() if cls(el) == "ocrx_word"]
    for word in words:
        chain = [cls(a) for a in word.iterancestors() if cls(a)]
        assert chain == ["ocr_line", "ocr_par", "ocr_carea", "ocr_page"]
    assert [w.text for w in words] == ["백범로", "35", "Apt", "<&\"'>", "Hello"]
    assert [w.get("title") for w in words] == [
        "bbox 172 133 328 170; x_wconf 91",
        "bbox 340 133 380 170",
        "bbox 280 300 327 325; x_wconf 50",
        "bbox 330 300 400 325; x_wconf 100",
        "bbox 10 10 90 40; x_wconf 25",
    ]
    lines = [el for el in root.iter() if cls(el) == "ocr_line"]
    assert [l.get("title") for l in lines] == ["bbox 172 133 380 170", "bbox 280 300 400 325", "bbox 10 10 90 40"]
    pars = [el for el in root.iter() if cls(el) == "ocr_par"]
    assert [p.get("lang") for p in pars] == ["ko", "en"]
    assert words[2].get("lang") == "en"  # Latin word inside a Korean paragraph
    assert words[0].get("lang") is None  # same as its paragraph
    # the raw file escapes markup characters in text
    assert "&lt;&amp;" in hocr_string(doc)


def test_alto_structure_and_values():
    doc = _doc()
    root = etree.fromstring(alto_string(doc).encode("utf-8"))
    assert root.findtext(f"{ALTO}Description/{ALTO}MeasurementUnit") == "pixel"
    settings = root.findtext(f".//{ALTO}Processing/{ALTO}processingStepSettings")
    assert settings == "model: NCSOFT/VARCO-VISION-2.0-1.7B-OCR"
    assert root.findtext(f".//{ALTO}processingSoftware/{ALTO}softwareName") == "varco-ocr"
    pages = root.findall(f".//{ALTO}Page")
    assert [(p.get("PHYSICAL_IMG_NR"), p.get("WIDTH"), p.get("HEIGHT")) for p in pages] == [("1", "1000", "500"), ("4", "800", "600"), ("5", "0", "0")]
    assert pages[2].get("QUALITY") == "Missing"
    line = pages[0].find(f"{ALTO}PrintSpace/{ALTO}TextBlock/{ALTO}TextLine")
    assert [(c.tag.replace(ALTO, ""), dict(c.attrib)) for c in line] == [
        ("String", {"ID": "string_1_1", "CONTENT": "백범로", "HPOS": "172", "VPOS": "133", "WIDTH": "156", "HEIGHT": "37", "WC": "0.910"}),
        ("SP", {"HPOS": "328", "VPOS": "133", "WIDTH": "12"}),
        ("String", {"ID": "string_1_2", "CONTENT": "35", "HPOS": "340", "VPOS": "133", "WIDTH": "40", "HEIGHT": "37"}),
    ]


def test_alto_validates_against_the_official_schema(tmp_path, alto_xsd):
    schema = etree.XMLSchema(etree.parse(str(alto_xsd)))
    write_exports(_doc(), tmp_path, ["alto"], stem="book")
    schema.assertValid(etree.parse(str(tmp_path / "book.alto.xml")))
    empty = Document(source="x.png", pages=(Page(index=0, width=10, height=10),))
    schema.assertValid(etree.fromstring(alto_string(empty).encode("utf-8")))
