import json
import os
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


# -- exact members and defaults (mutation testing, benchmarks/RESULTS.md) ---------------------------


def test_page_source_round_trips_and_is_absent_for_model_pages():
    from dataclasses import replace

    pdf_text = replace(build_page([Word("a", (0, 0, 5, 5))], index=0, width=10, height=10), source="pdf-text")
    model = build_page([Word("b", (0, 0, 5, 5))], index=1, width=10, height=10)
    doc = Document("x.pdf", (pdf_text, model))
    d = json.loads(doc.dumps())
    assert d["pages"][0]["source"] == "pdf-text" and "source" not in d["pages"][1]
    for indent in (2, None):
        assert [p.source for p in Document.loads(doc.dumps(indent=indent)).pages] == ["pdf-text", None]


def test_members_a_reader_may_omit_take_their_documented_defaults():
    page = Page.from_dict({"index": 4, "width": 10, "height": 20})
    assert page == Page(4, 10, 20) and page.blocks == () and page.truncated is False and page.source is None
    doc = Document.from_dict({"version": SCHEMA_VERSION})
    assert doc == Document("") and doc.pages == () and doc.metadata == {}
    with pytest.raises(ValueError) as info:
        Document.from_dict({"pages": []})
    assert str(info.value) == f"unsupported document schema version '' (expected {SCHEMA_VERSION})"


def test_default_layout_is_two_space_indent_and_one_line_keeps_non_ascii_text():
    doc = make_document()
    assert doc.dumps() == doc.dumps(indent=2)
    assert '\n  "version": ' in doc.dumps() and '\n        {"text": "영수증", ' in doc.dumps()
    one_line = doc.dumps(indent=None)
    assert "\n" not in one_line and '"text": "영수증"' in one_line  # UTF-8 text, not \uc601 escapes


def test_union_of_no_boxes_is_refused():
    from varco_ocr.document import union_bbox

    with pytest.raises(ValueError, match="^union of no boxes$"):
        union_bbox([])
    assert union_bbox([(5, 1, 9, 4), (2.7, 3, 6, 8.9)]) == (2, 1, 9, 8)


def test_indented_layout_of_two_pages_and_of_no_page_exactly():
    """The whole file, as documented in Document.dumps: json's indent=2 layout, except that each word,
    line and block is one line (a page without words keeps ``[]``)."""
    first = build_page([Word("a", (0, 0, 5, 5), 0.5)], index=0, width=10, height=10)
    doc = Document("x.png", (first, Page(1, 10, 10)), model="m")
    item_lines = {'{"text": "a", "bbox": [0, 0, 5, 5], "confidence": 0.5}',
                  '{"text": "a", "bbox": [0, 0, 5, 5], "word_ids": [0]}', '{"bbox": [0, 0, 5, 5], "line_ids": [0]}'}
    # json's own indent=2 text, with each word/line/block object folded back onto one line
    expected = json.dumps(json.loads(doc.dumps()), indent=2, ensure_ascii=False)
    for item in item_lines:
        expected = expected.replace(json.dumps(json.loads(item), indent=2).replace("\n", "\n        "), item)
    assert doc.dumps() == expected
    assert expected.count("\n        {") == 3 and '\n      "words": [],\n' in expected  # the folding happened
    assert Document("x").dumps() == '{\n  "version": "1.0",\n  "source": "x",\n  "model": null,\n  "metadata": {},\n  "pages": []\n}'


def test_atomic_writes_create_files_with_a_plain_open_mode(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "out.json", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == 0o644  # 0666 minus the umask, not 0600 or 0755


def test_atomic_write_takes_another_temporary_name_when_one_is_in_use(tmp_path, monkeypatch):
    import secrets

    taken = tmp_path / ".out.json.aaaaaaaa.tmp"
    taken.write_text("another writer's")
    names = iter(["aaaaaaaa", "bbbbbbbb"])
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(names))
    write_atomic(tmp_path / "out.json", "mine")
    assert (tmp_path / "out.json").read_text() == "mine" and taken.read_text() == "another writer's"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.json.aaaaaaaa.tmp", "out.json"]
