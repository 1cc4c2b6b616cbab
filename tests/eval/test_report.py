"""score_dataset / report_json / render_report on a tiny hand-made data set, every figure worked out by hand.

Four images (ltrb boxes, one word each unless said):
- img_1: HELLO read exactly; a do-not-care ``###`` region nobody reads.
- img_2: WORLD found at its place but read WORLB (detection right, transcription one character off).
- img_3: ABC, no prediction file at all (missing: scored as empty).
- img_4: only a do-not-care region, an empty prediction (nothing to find, nothing found).
And a prediction img_9 that matches no image.
"""

from __future__ import annotations

import io
import math

import pytest
from rich.console import Console

from varco_ocr.eval.predictions import Prediction
from varco_ocr.eval.regions import Sample, TextRegion
from varco_ocr.eval.report import (
    DEFAULT_METRICS,
    METRICS,
    EvalReport,
    parse_metric_option,
    render_report,
    report_json,
    score_dataset,
)

A, B, C, D = (10, 10, 60, 30), (10, 50, 60, 70), (10, 90, 40, 110), (70, 10, 90, 30)


def _word(box, text, dont_care=False):
    return TextRegion.from_ltrb(*box, text, dont_care)


SAMPLES = [
    Sample("img_1", None, (_word(A, "HELLO"), _word(D, "###", True)), "HELLO"),
    Sample("img_2", None, (_word(B, "WORLD"),), "WORLD"),
    Sample("img_3", None, (_word(C, "ABC"),), "ABC"),
    Sample("img_4", None, (_word(D, "###", True),), ""),
]
PREDICTIONS = {
    "img_1": Prediction((_word(A, "HELLO"),), "HELLO"),
    "img_2": Prediction((_word(B, "WORLB"),), "WORLB"),
    "img_4": Prediction((), ""),
    "img_9": Prediction((_word(A, "X"),), "X"),
}


def _h(p, r):
    return 2 * p * r / (p + r)


def _assert_same(actual, expected, where="report"):
    """Equal keys (in the same order) and values; floats to 1e-12 (the figures are ratios of small integers)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), where
        assert list(actual) == list(expected), where
        for k in expected:
            _assert_same(actual[k], expected[k], f"{where}[{k!r}]")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            _assert_same(a, e, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert isinstance(actual, float) and math.isclose(actual, expected, rel_tol=1e-12, abs_tol=1e-12), (where, actual)
    else:
        assert type(actual) is type(expected) and actual == expected, (where, actual)


def _per_image(image, cleval_det, cleval_e2e, chars, det, e2e, deteval, cer, one_minus_ned):
    return {
        "image": image,
        "cleval det hmean": cleval_det,
        "cleval e2e hmean": cleval_e2e,
        "cleval e2e chars": dict(zip(("gt", "det", "tp"), chars)),
        "det hmean": det,
        "e2e hmean": e2e,
        "deteval hmean": deteval,
        "cer": cer,
        "1-ned": one_minus_ned,
    }


def test_report_json_of_every_metric_exactly():
    report = score_dataset("icdar2015", SAMPLES, PREDICTIONS, METRICS)
    # CLEval: 13 ground-truth characters (5 + 5 + 3; do-not-care ones never count), 10 detected. Detection finds
    # all 10; end to end WORLB reads 4 of WORLD's 5 (W, O, R, L), so 9.
    # RRC detection and DetEval: 3 cared-for words, 2 detections, both one-to-one matches. End to end (generic):
    # only HELLO matches, WORLB is a wrong transcription: 1 of 2 detections, 1 of 3 words.
    # Text: edits 0 + 1 + 3 over 13 characters; NED per image 0, 1/5, 3/3, 0 (empty against empty), mean 0.3.
    expected = {
        "dataset": "icdar2015",
        "images": 4,
        "headline": {"name": "CLEval end-to-end H-mean x 100", "value": 100 * _h(9 / 10, 9 / 13)},
        "metrics": {
            "cleval det": {"precision": 1.0, "recall": 10 / 13, "hmean": _h(1, 10 / 13)},
            "cleval e2e": {"precision": 9 / 10, "recall": 9 / 13, "hmean": _h(9 / 10, 9 / 13)},
            "det": {"precision": 1.0, "recall": 2 / 3, "hmean": 0.8},
            "e2e generic": {"precision": 0.5, "recall": 1 / 3, "hmean": 0.4},
            "deteval": {"precision": 1.0, "recall": 2 / 3, "hmean": 0.8},
            "text": {"cer": 4 / 13, "ned": 0.3, "1-ned": 0.7},
        },
        "table11_reference": {},
        "table11_not_shown": "Table 11 figures are for the full icdar2015 test set (500 images); not shown beside"
        " this run (4 images scored, 496 of the official 500 test images missing)",
        "missing_predictions": ["img_3"],
        "unmatched_predictions": ["img_9"],
        "per_image": [
            _per_image("img_1", 1.0, 1.0, (5, 5, 5), 1.0, 1.0, 1.0, 0.0, 1.0),
            _per_image("img_2", 1.0, 0.8, (5, 5, 4), 1.0, 0.0, 1.0, 0.2, 0.8),
            # Nothing found of 3 characters / 1 word: every H-mean 0, CER 1.
            _per_image("img_3", 0.0, 0.0, (3, 0, 0), 0.0, 0.0, 0.0, 1.0, 0.0),
            # Nothing to find and nothing found is a perfect image (the RRC per-sample rule), for CLEval too.
            _per_image("img_4", 1.0, 1.0, (0, 0, 0), 1.0, 1.0, 1.0, 0.0, 1.0),
        ],
    }
    _assert_same(report_json(report), expected)
    assert report.n_images == 4 and report.word_spotting is False


RENDERED = """\
icdar2015: 4 images
1 images have no prediction (scored as empty)
1 predictions match no image and were ignored
         Precision / recall / H-mean
┏━━━━━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━━┳━━━━━━━━┓
┃ metric      ┃ precision ┃ recall ┃ H-mean ┃
┡━━━━━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━╇━━━━━━━━┩
│ cleval det  │    1.0000 │ 0.7692 │ 0.8696 │
│ cleval e2e  │    0.9000 │ 0.6923 │ 0.7826 │
│ det         │    1.0000 │ 0.6667 │ 0.8000 │
│ e2e generic │    0.5000 │ 0.3333 │ 0.4000 │
│ deteval     │    1.0000 │ 0.6667 │ 0.8000 │
└─────────────┴───────────┴────────┴────────┘
        Text accuracy
┏━━━━━━━━┳━━━━━━━━┳━━━━━━━━━┓
┃    CER ┃    NED ┃ 1 - NED ┃
┡━━━━━━━━╇━━━━━━━━╇━━━━━━━━━┩
│ 0.3077 │ 0.3000 │  0.7000 │
└────────┴────────┴─────────┘
CLEval end-to-end H-mean x 100: 78.3
Table 11 figures are for the full icdar2015 test set (500 images); not shown beside this run (4 images scored, 496 of the official 500 test images missing)
                                             3 worst images
┏━━━━━━━┳━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━━━━━━━━━┳━━━━━━━━┳━━━━━━━━┓
┃ image ┃ cleval det hmean ┃ cleval e2e hmean ┃ det hmean ┃ e2e hmean ┃ deteval hmean ┃    cer ┃  1-ned ┃
┡━━━━━━━╇━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━━━━━━━━╇━━━━━━━━╇━━━━━━━━┩
│ img_3 │           0.0000 │           0.0000 │    0.0000 │    0.0000 │        0.0000 │ 1.0000 │ 0.0000 │
│ img_2 │           1.0000 │           0.8000 │    1.0000 │    0.0000 │        1.0000 │ 0.2000 │ 0.8000 │
│ img_1 │           1.0000 │           1.0000 │    1.0000 │    1.0000 │        1.0000 │ 0.0000 │ 1.0000 │
└───────┴──────────────────┴──────────────────┴───────────┴───────────┴───────────────┴────────┴────────┘
"""


def _rendered(report, per_image=0):
    buf = io.StringIO()
    render_report(report, Console(file=buf, width=120, color_system=None), per_image=per_image)
    # rich pads centred titles with spaces on the right; those are not the report's content
    return "".join(line.rstrip() + "\n" for line in buf.getvalue().splitlines())


def test_rendered_report_exactly():
    report = score_dataset("icdar2015", SAMPLES, PREDICTIONS, METRICS)
    # The 3 worst by per-image CLEval end-to-end H-mean, ties (img_1, img_4 at 1.0) in image-name order; the
    # nested character counts are not a column.
    assert _rendered(report, per_image=3) == RENDERED
    # Without --per-image no table of worst images; a full match of predictions prints no warning.
    plain = _rendered(report)
    assert plain == RENDERED[: RENDERED.index("                                             3 worst images")]
    complete = {k: v for k, v in PREDICTIONS.items() if k != "img_9"} | {"img_3": Prediction((), "")}
    out = _rendered(score_dataset("icdar2015", SAMPLES, complete, ("det",)))
    assert out.splitlines()[:2] == ["icdar2015: 4 images", "      Precision / recall / H-mean"]
    assert "prediction" not in out and "Text accuracy" not in out and "Table 11" not in out
    assert out.endswith("det H-mean x 100: 80.0\n")


def test_text_only_report_has_no_headline_and_ranks_images_by_one_minus_ned():
    report = score_dataset("cord", SAMPLES, PREDICTIONS, ("text",))
    assert report.headline is None and report_json(report)["headline"] is None
    assert list(report.metrics) == ["text"]
    assert [r["image"] for r in report.worst_images(4)] == ["img_3", "img_2", "img_1", "img_4"]
    out = _rendered(report, per_image=2)
    assert "H-mean x 100" not in out and "Precision / recall / H-mean" not in out
    assert "│ img_3 │ 1.0000 │ 0.0000 │\n│ img_2 │ 0.2000 │ 0.8000 │\n" in out


def test_headline_falls_back_to_end_to_end_then_detection():
    def headline(metrics, word_spotting=False):
        return score_dataset("funsd", SAMPLES, PREDICTIONS, metrics, word_spotting).headline

    assert headline(("det", "e2e")) == ("e2e generic H-mean x 100", pytest.approx(40.0))
    assert headline(("det", "deteval")) == ("det H-mean x 100", pytest.approx(80.0))
    assert headline(("deteval",)) == ("deteval H-mean x 100", pytest.approx(80.0))
    assert headline(("e2e", "deteval"), word_spotting=True) == ("e2e word spotting H-mean x 100", pytest.approx(40.0))


def test_worst_images_follow_the_first_headline_figure_present():
    # end to end before detection: img_2 (e2e 0, det 1) ranks with img_3 (both 0), by name
    both = score_dataset("funsd", SAMPLES, PREDICTIONS, ("det", "e2e"))
    assert [r["image"] for r in both.worst_images(2)] == ["img_2", "img_3"]
    det = score_dataset("funsd", SAMPLES, PREDICTIONS, ("det",))
    assert [r["image"] for r in det.worst_images(2)] == ["img_3", "img_1"]
    assert [r["image"] for r in det.worst_images(0)] == []
    # DetEval before the text figures: img_1 (DetEval 1.0, 1-NED 1.0) before img_2 (DetEval 1.0, 1-NED 0.8)
    deteval = score_dataset("icdar2013", SAMPLES, PREDICTIONS, ("deteval", "text"))
    assert [r["image"] for r in deteval.worst_images(2)] == ["img_3", "img_1"]
    assert EvalReport("funsd", 0, {}, [], None).worst_images(3) == []
    one = score_dataset("funsd", SAMPLES[1:2], PREDICTIONS, ("e2e",))
    assert one.worst_images(5) == [{"image": "img_2", "e2e hmean": 0.0}]
    assert _rendered(one, per_image=1).endswith(
        "  1 worst images\n┏━━━━━━━┳━━━━━━━━━━━┓\n┃ image ┃ e2e hmean ┃\n┡━━━━━━━╇━━━━━━━━━━━┩\n"
        "│ img_2 │    0.0000 │\n└───────┴───────────┘\n"
    )


def test_the_table_11_note_is_plain_yellow_without_highlighted_numbers():
    # rich would otherwise colour the numbers inside the sentence (its repr highlighter)
    report = score_dataset("icdar2015", SAMPLES, PREDICTIONS, ("cleval",))
    buf = io.StringIO()
    render_report(report, Console(file=buf, width=300, color_system="standard", force_terminal=True))
    [line] = [line for line in buf.getvalue().splitlines() if "Table 11 figures" in line]
    assert line == f"\x1b[33m{report.table11_not_shown}\x1b[0m"


def test_word_spotting_is_passed_to_the_end_to_end_protocol():
    # "AB" is shorter than word spotting's 3 letters: do not care there, a word to read in generic mode.
    samples = [Sample("a", None, (_word(A, "AB"),), "AB")]
    preds = {"a": Prediction((_word(A, "AB"),), "AB")}
    generic = score_dataset("funsd", samples, preds, ("e2e",))
    spotting = score_dataset("funsd", samples, preds, ("e2e",), word_spotting=True)
    assert generic.metrics == {"e2e generic": {"precision": 1.0, "recall": 1.0, "hmean": 1.0}}
    assert spotting.metrics == {"e2e word spotting": {"precision": 0.0, "recall": 0.0, "hmean": 0.0}}
    assert spotting.word_spotting is True and spotting.per_image == [{"image": "a", "e2e hmean": 1.0}]


def test_metric_option():
    assert parse_metric_option("", "cord") == DEFAULT_METRICS["cord"] == ("cleval", "text")
    assert parse_metric_option(" Default ", "icdar2013") == ("cleval", "deteval", "e2e", "text")
    assert parse_metric_option("ALL", "cord") == METRICS == ("cleval", "det", "e2e", "deteval", "text")
    assert parse_metric_option(" det , E2E,,", "cord") == ("det", "e2e")
    with pytest.raises(ValueError) as e:
        parse_metric_option("det,iou,foo", "cord")
    assert str(e.value) == "unknown metric 'iou' (choose from cleval, det, e2e, deteval, text, default, all)"
