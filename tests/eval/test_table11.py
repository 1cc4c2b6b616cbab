"""The paper's Table 11 cells appear beside a run only when the run covers the full official test set
(issue 13 part 3); otherwise the report says why they are not shown."""

import io
import json

from rich.console import Console

from varco_ocr.eval.predictions import Prediction
from varco_ocr.eval.regions import Sample, TextRegion
from varco_ocr.eval.report import render_report, report_json, score_dataset, table11_cells

OFFICIAL = [f"img_{i}" for i in range(1, 501)]


def _samples(keys):
    word = TextRegion.from_ltrb(10, 10, 60, 30, "HELLO")
    return [Sample(k, None, (word,), "HELLO") for k in keys]


def _rendered(report):
    buf = io.StringIO()
    render_report(report, Console(file=buf, width=200, color_system=None))
    return buf.getvalue()


def test_cells_shown_for_the_full_official_test_set():
    samples = _samples(OFFICIAL)
    preds = {s.key: Prediction(s.regions, s.text) for s in samples}
    report = score_dataset("icdar2015", samples, preds, ("cleval",))
    assert report.table11 == {"PaddleOCR (PP-OCRv4)": 73.7} and report.table11_not_shown is None
    out = _rendered(report)
    assert "Table 11" in out and "PaddleOCR (PP-OCRv4)" in out and "73.7" in out
    assert json.loads(json.dumps(report_json(report)))["table11_reference"] == {"PaddleOCR (PP-OCRv4)": 73.7}


def test_cells_not_shown_for_a_subset_and_the_report_says_why():
    samples = _samples(OFFICIAL[:3])  # what --max-images 3 gives
    report = score_dataset("icdar2015", samples, {}, ("cleval",))
    assert report.table11 == {}
    out = _rendered(report)
    assert "PaddleOCR" not in out and "73.7" not in out
    assert "not shown beside this run (3 images scored, 497 of the official 500 test images missing)" in out
    js = report_json(report)
    assert js["table11_reference"] == {} and "497 of the official 500" in js["table11_not_shown"]


def test_500_images_that_are_not_the_test_set_do_not_count():
    _, why = table11_cells("icdar2015", [f"synth_{i}" for i in range(500)])
    assert "500 of the official 500 test images missing, 500 not in the official test set" in why
    _, why = table11_cells("icdar2015", OFFICIAL[:-1] + ["img_1"])
    assert "1 of the official 500 test images missing" in why
    cells, why = table11_cells("icdar2015", OFFICIAL[::-1])  # order does not matter
    assert cells and why is None
    assert table11_cells("funsd", ["a"]) == ({}, None)  # no verified cells: nothing to explain


def test_the_full_test_set_with_an_image_scored_twice_is_not_comparable():
    cells, why = table11_cells("icdar2015", OFFICIAL + ["img_7"])
    assert cells == {}
    assert why == (
        "Table 11 figures are for the full icdar2015 test set (500 images); not shown beside this run"
        " (501 images scored, some more than once)"
    )


def test_the_table_beside_a_full_run_exactly():
    # 499 of the 500 images read exactly, one without a prediction: CLEval recall 499/500, H-mean 0.998999 -> 99.9
    samples = _samples(OFFICIAL)
    preds = {s.key: Prediction(s.regions, s.text) for s in samples[:-1]}
    buf = io.StringIO()
    render_report(score_dataset("icdar2015", samples, preds, ("cleval",)), Console(file=buf, width=120, color_system=None))
    lines = [line.rstrip() for line in buf.getvalue().splitlines()]
    assert lines[lines.index("CLEval end-to-end H-mean x 100: 99.9"):] == [
        "CLEval end-to-end H-mean x 100: 99.9",
        " VARCO-VISION-2.0 report, Table 11",
        "(CLEval E2E H-mean x 100), verified",
        "             cells only",
        "┏━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━┓",
        "┃ engine               ┃ icdar2015 ┃",
        "┡━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━┩",
        "│ this run             │      99.9 │",
        "│ PaddleOCR (PP-OCRv4) │      73.7 │",
        "└──────────────────────┴───────────┘",
    ]
