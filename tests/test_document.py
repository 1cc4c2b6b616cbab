import json
from pathlib import Path

import pytest

from varco_ocr.document import SCHEMA_VERSION, Document, Word, write_atomic
from varco_ocr.layout import build_page

SCHEMA = Path(__file__).resolve().parents[1] / "varco_ocr" / "schemas" / "document.schema.json"


def make_document():
    words = [
        Word("영수증", (10, 10, 80, 30), 0.91),
        Word("TOTAL", (10, 40, 80, 60), None),
        Word("21,300", (200, 40, 260, 60), 0.5, bbox_pt=(48.0, 12.0, 62.4, 16.8)),
    ]
    page = build_page(words, index=2, width=300, height=100, truncated=True, raw="<char>…", dpi=300.0)
    return Document(source="scan.pdf", pages=(page,), model="tiny", metadata={"dpi": 300})


def test_json_round_trip_is_exact():
    doc = make_document()
    assert Document.loads(doc.dumps()) == doc
    assert Document.loads(doc.dumps(indent=None)) == doc


def test_json_has_the_documented_fields():
    d = json.loads(make_document().dumps())
    assert d["version"] == SCHEMA_VERSION
    page = d["pages"][0]
    for key in ("index", "width", "height", "words", "lines", "blocks", "text", "truncated", "raw", "dpi"):
        assert key in page
    assert page["words"][0] == {"text": "영수증", "bbox": [10, 10, 80, 30], "confidence": 0.91}
    assert page["lines"][1] == {"text": "TOTAL 21,300", "bbox": [10, 40, 260, 60], "word_ids": [1, 2]}
    assert page["text"] == "영수증\nTOTAL 21,300"


def test_json_validates_against_shipped_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.validate(json.loads(make_document().dumps()), schema)


def test_schema_file_ships_with_the_package():
    from importlib.resources import files

    assert json.loads(files("varco_ocr").joinpath("schemas/document.schema.json").read_text(encoding="utf-8"))["title"]


def test_unknown_major_version_is_refused():
    d = json.loads(make_document().dumps())
    d["version"] = "9.0"
    with pytest.raises(ValueError, match="version"):
        Document.from_dict(d)


def test_document_text_separates_pages_with_form_feeds():
    p1 = build_page([Word("a", (0, 0, 1, 1))], index=0, width=10, height=10)
    p2 = build_page([Word("b", (0, 0, 1, 1))], index=1, width=10, height=10)
    assert Document("x", (p1, p2)).text == "a\fb"


def test_write_atomic_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "sub" / "out.json"
    write_atomic(target, "first")
    write_atomic(target, "second")
    assert target.read_text() == "second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]
