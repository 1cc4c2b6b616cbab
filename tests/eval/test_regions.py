"""The shared eval shapes (varco_ocr.eval.regions), exactly: escaping of untrusted names, the error
message form, the RRC corner order and the annotation-order text."""

from pathlib import Path

from varco_ocr.eval.regions import EvalDataError, TextRegion, printable, reading_order_text


def test_printable_escapes_only_what_cannot_be_shown():
    assert printable("res_img_1.txt") == "res_img_1.txt"
    assert printable("영수증 ü") == "영수증 ü"
    assert printable("a\nb\x1b[31m\u200bc\t") == "a\\nb\\x1b[31m\\u200bc\\t"
    assert printable("C:\\it's\n") == "C:\\it's\\n"  # a backslash or quote beside an escape is kept as it is


def test_eval_data_error_names_the_file_and_the_line():
    e = EvalDataError(Path("gt/gt_img_1.txt"), "bad line", 3)
    assert str(e) == "gt/gt_img_1.txt:3: bad line" and (e.path, e.line) == ("gt/gt_img_1.txt", 3)
    e = EvalDataError("preds.zip", "not a zip")
    assert str(e) == "preds.zip: not a zip" and e.line is None
    assert str(EvalDataError("x.txt", "m", 0)) == "x.txt:0: m"  # line 0 is a line, not "no line"
    assert str(EvalDataError("evil\n.txt", "m", 2)) == "evil\\n.txt:2: m"


def test_ltrb_regions_go_clockwise_from_the_top_left():
    r = TextRegion.from_ltrb(1, 2, 30, 40, "word", True)
    assert r.points == ((1, 2), (30, 2), (30, 40), (1, 40)) and (r.text, r.dont_care) == ("word", True)
    assert TextRegion.from_ltrb(1, 2, 30, 40).text == "" and not TextRegion.from_ltrb(1, 2, 30, 40).dont_care
    assert r.flat_points() == [1, 2, 30, 2, 30, 40, 1, 40]
    assert TextRegion(((5, 9), (1, 7), (3, 2), (8, 4))).ltrb == (1, 2, 8, 9)


def test_reading_order_text_leaves_out_do_not_care_and_empty_regions():
    regions = [TextRegion.from_ltrb(0, 0, 1, 1, "a"), TextRegion.from_ltrb(0, 0, 1, 1, "###", True),
               TextRegion.from_ltrb(0, 0, 1, 1, ""), TextRegion.from_ltrb(0, 0, 1, 1, "b c")]
    assert reading_order_text(regions) == "a b c"
    assert reading_order_text([]) == ""
