import zipfile

import pytest

from varco_ocr.document import Block, Document, Line, Page, Word
from varco_ocr.eval.predictions import (
    parse_rrc_result,
    read_predictions,
    rrc_lines,
    write_documents_jsonl,
    write_rrc_zip,
)
from varco_ocr.eval.regions import EvalDataError, TextRegion


def make_doc(source, words):
    blocks = (Block((Line(tuple(Word(t, b) for t, b in words)),)),) if words else ()
    return Document(source=source, pages=(Page(index=0, width=100, height=50, blocks=blocks),))


def test_parse_quads_ltrb_and_transcriptions_with_commas():
    regions = parse_rrc_result(
        "1,2,3,2,3,4,1,4,Hi, there\n"
        '1,1,5,1,5,5,1,5,"quoted \\"x\\""\n'
        "0,0,8,0,8,8,0,8\n"
    )
    assert regions[0].text == "Hi, there" and regions[0].points[2] == (3, 4)
    assert regions[1].text == 'quoted "x"'
    assert len(regions[2].points) == 4 and regions[2].text == ""
    regions = parse_rrc_result("10,20,30,40,LTRB word\n10,20,30,40\n", box_format="ltrb")
    assert regions[0].ltrb == (10, 20, 30, 40) and regions[0].text == "LTRB word"
    assert regions[1].text == ""


def test_parse_errors_name_the_line():
    with pytest.raises(EvalDataError, match=r"res_img_1.txt:2:"):
        parse_rrc_result("1,2,3,4\nfoo,bar\n", "res_img_1.txt", box_format="ltrb")
    with pytest.raises(EvalDataError, match=r":1: LTRB"):
        parse_rrc_result("30,2,3,4,x\n", "r.txt", box_format="ltrb")


def test_rrc_zip_round_trip(tmp_path):
    regions = {"img_1": [TextRegion.from_ltrb(1, 2, 30, 40, "a,b")], "img_2": []}
    write_rrc_zip(tmp_path / "sub.zip", regions)
    with zipfile.ZipFile(tmp_path / "sub.zip") as zf:
        assert sorted(zf.namelist()) == ["res_img_1.txt", "res_img_2.txt"]
        assert zf.read("res_img_1.txt").decode() == "1,2,30,2,30,40,1,40,a,b\n"
    preds = read_predictions(tmp_path / "sub.zip")
    assert preds["img_1"].regions[0].text == "a,b" and preds["img_2"].regions == ()


def test_dont_care_is_written_as_hashes():
    assert rrc_lines([TextRegion.from_ltrb(0, 0, 1, 1, "", dont_care=True)]) == "0,0,1,0,1,1,0,1,###\n"


def test_documents_json_folder_and_jsonl(tmp_path):
    doc = make_doc("/data/images/img_3.jpg", [("Hello", (1, 2, 20, 10)), ("world", (25, 2, 50, 10))])
    (tmp_path / "docs").mkdir()
    doc.save(tmp_path / "docs" / "img_3.json")
    preds = read_predictions(tmp_path / "docs")
    assert list(preds) == ["img_3"]
    assert preds["img_3"].regions[1].ltrb == (25, 2, 50, 10)
    assert preds["img_3"].text == "Hello world"
    write_documents_jsonl(tmp_path / "run.jsonl", [doc, make_doc("img_4.png", [])])
    preds = read_predictions(tmp_path / "run.jsonl")
    assert set(preds) == {"img_3", "img_4"} and preds["img_4"].regions == ()


def test_bad_jsonl_line_is_reported(tmp_path):
    p = tmp_path / "run.jsonl"
    p.write_text(make_doc("a.jpg", []).dumps(indent=None) + "\n{oops\n")
    with pytest.raises(EvalDataError, match=r"run.jsonl:2: invalid JSON"):
        read_predictions(p)
    with pytest.raises(EvalDataError, match="predictions not found"):
        read_predictions(tmp_path / "missing")


def test_rrc_zip_round_trip_property(tmp_path_factory):
    """Any integer quads and any transcription without line breaks come back unchanged through the
    streamed reader, including commas, quotes, a leading BOM-like character and non-ASCII text."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    coord = st.integers(-1_000_000, 1_000_000)
    text = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=30)
    region = st.builds(lambda xs, t: TextRegion(tuple(zip(xs[::2], xs[1::2])), t), st.lists(coord, min_size=8, max_size=8), text)
    images = st.dictionaries(st.from_regex(r"img_[0-9]{1,3}", fullmatch=True), st.lists(region, max_size=5), min_size=1, max_size=4)

    @settings(max_examples=30, deadline=None)
    @given(images)
    def check(per_image):
        path = tmp_path_factory.mktemp("rt") / "sub.zip"
        write_rrc_zip(path, per_image)
        preds = read_predictions(path)
        assert set(preds) == set(per_image)
        for key, regions in per_image.items():
            # whitespace-only lines are blank lines to every RRC reader; an empty text is still a region
            assert [(r.points, r.text) for r in preds[key].regions] == [(tuple((float(x), float(y)) for x, y in r.points), r.text) for r in regions]

    check()
