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


def test_json_validates_against_shipped_schema(require_module):
    jsonschema = require_module("jsonschema")
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


# -- serialisation never touches string content ---------------------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

from varco_ocr.document import Block, Line, Page  # noqa: E402

# Text that used to be rewritten (number lists, whitespace runs), JSON's own syntax, control
# characters, and any other Unicode text (hypothesis' text() excludes surrogates: see below).
_tricky = st.one_of(
    st.text(),
    st.lists(st.sampled_from(["[", "]", "1", "-2.5e3", ",", " ", "   ", "\n", "\t", '"', "\\", "{", "}", ": ",
                              "\x00", "\x1b", "\u2028", "\uffff", "가"]), max_size=12).map("".join),
)
_box = st.tuples(*[st.integers(-(2**40), 2**40)] * 4)
_word = st.builds(Word, _tricky, _box, st.one_of(st.none(), st.floats(0, 1)),
                  st.one_of(st.none(), st.tuples(*[st.floats(allow_nan=False)] * 4)))
_line = st.lists(_word, min_size=1, max_size=4).map(lambda ws: Line(tuple(ws)))
_block = st.lists(_line, min_size=1, max_size=3).map(lambda ls: Block(tuple(ls)))
_page = st.builds(Page, st.integers(0, 10**6), st.integers(1, 10**6), st.integers(1, 10**6),
                  st.lists(_block, max_size=3).map(tuple), st.booleans(), st.one_of(st.none(), _tricky),
                  st.one_of(st.none(), st.floats(1, 2400)), st.one_of(st.none(), _tricky), st.integers(0, 10**6))
_document = st.builds(Document, _tricky, st.lists(_page, max_size=3).map(tuple), st.one_of(st.none(), _tricky),
                      st.dictionaries(_tricky, st.one_of(_tricky, st.integers(), st.lists(st.integers(), max_size=4)), max_size=3))


@settings(max_examples=150, deadline=None)
@given(_document)
def test_json_round_trip_with_arbitrary_text(doc):
    for indent in (2, None):
        text = doc.dumps(indent=indent)
        text.encode("utf-8")  # writable as UTF-8
        assert Document.loads(text) == doc


def test_number_lists_inside_text_are_kept_as_written():
    # The indented layout used to compact every number list in the file, strings included.
    doc = Document("[1,    2].png", (build_page([Word("[1,    2]", (0, 0, 5, 5)), Word("[ 7 ]", (9, 0, 15, 5))],
                                                 index=0, width=20, height=10, raw="<bbox>[ 0.1,  0.2 ]"),),
                   metadata={"note": "[3,\n 4]"})
    assert Document.loads(doc.dumps()) == doc
    assert '"[1,    2]"' in doc.dumps() and '"[ 7 ]"' in doc.dumps()


def test_layout_is_one_line_per_word_line_and_block():
    text = make_document().dumps()
    assert '        {"text": "영수증", "bbox": [10, 10, 80, 30], "confidence": 0.91},\n' in text
    assert '        {"text": "TOTAL 21,300", "bbox": [10, 40, 260, 60], "word_ids": [1, 2]}\n' in text
    assert text == make_document().dumps()  # stable


def test_lone_surrogates_are_escaped_and_read_back(tmp_path):
    # A server's JSON can carry "\ud800"; such a code point cannot be UTF-8. The writer escapes it
    # (\ud800 in the file) and json reads the same code point back. Only a high surrogate followed by
    # a low one reads back as their pair's character (JSON's rule for escapes).
    doc = Document("s.png", (build_page([Word("a\ud800b", (0, 0, 5, 5)), Word("\udfff", (9, 0, 15, 5))],
                                        index=0, width=20, height=10, raw="x\udc80"),))
    doc.save(tmp_path / "s.json")
    assert "\\ud800" in (tmp_path / "s.json").read_text(encoding="utf-8")
    assert Document.load(tmp_path / "s.json") == doc
    pair = Document("\ud83d\ude00")
    assert Document.loads(pair.dumps()).source == "\U0001F600"


def test_dropped_boxes_round_trip_and_default():
    page = build_page([Word("a", (0, 0, 5, 5))], index=0, width=10, height=10, dropped_boxes=3)
    d = json.loads(Document("x", (page,)).dumps())
    assert d["pages"][0]["dropped_boxes"] == 3
    assert Document.loads(Document("x", (page,)).dumps()).pages[0].dropped_boxes == 3
    del d["pages"][0]["dropped_boxes"]  # files written before the field existed
    assert Document.from_dict(d).pages[0].dropped_boxes == 0
