"""CLEval rules on hand-computed cases. Every expected figure below was worked out by hand from the
reference's rules and, once, checked with NAVER's ``cleval`` CLI on the same boxes (see
benchmarks/RESULTS.md)."""

import numpy as np
import pytest

from varco_ocr.eval import cleval
from varco_ocr.eval.datasets import load_funsd, load_icdar2015
from varco_ocr.eval.geometry import points_in_polygon
from varco_ocr.eval.regions import TextRegion


def box(x1, y1, x2, y2, text, dont_care=False):
    return TextRegion.from_ltrb(x1, y1, x2, y2, text, dont_care)


def test_pseudo_character_centres_horizontal_and_vertical():
    assert cleval.pseudo_character_centres(box(0, 0, 40, 10, "").points, 4) == [(5, 5), (15, 5), (25, 5), (35, 5)]
    # aspect ratio 0.25 < 0.5: vertical text, the reference walks from the bottom side to the top
    assert cleval.pseudo_character_centres(box(0, 0, 10, 40, "").points, 2) == [(5, 30), (5, 10)]


def test_pseudo_lengths_use_half_to_even_rounding():
    wide = box(0, 0, 40, 10, "").points  # aspect ratio 4
    tall = box(0, 0, 10, 40, "").points
    assert cleval.pseudo_transcription_length(wide) == 4  # round(4.5) == 4
    assert cleval.false_positive_chars(wide) == 1  # round(0.5 + 1/4)
    assert cleval.false_positive_chars(tall) == 4  # round(0.5 + 4) == 4


def test_point_in_box_is_half_open_like_polygon3():
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float)
    xs = np.array([0, 10, 5, 5, 5])
    ys = np.array([5, 5, 0, 10, 5])
    assert points_in_polygon(square, xs, ys).tolist() == [True, False, True, False, True]


def test_line_box_over_two_words_pays_one_granularity_character():
    gt = [box(0, 0, 50, 10, "HELLO"), box(60, 0, 110, 10, "WORLD")]
    r = cleval.evaluate_image(gt, [box(0, 0, 110, 10, "HELLO WORLD")])
    assert r.matches == (((0, 1), (0,), "many-to-one"),)
    assert r.det == cleval.CharCounts(10, 10, 10, 0.0, 1.0)
    assert (r.det.recall, r.det.precision) == (1.0, pytest.approx(0.9))
    # end to end: both words read in full; the space is a detected character that matches nothing
    assert r.e2e == cleval.CharCounts(10, 11, 10, 0.0, 1.0)
    assert r.e2e.precision == pytest.approx(9 / 11)
    # the RRC word protocol would give this line box nothing; CLEval's H-mean stays high
    assert r.e2e.hmean == pytest.approx(2 * (9 / 11) / (1 + 9 / 11))


def test_word_split_in_two_pays_one_granularity_character_on_recall():
    r = cleval.evaluate_image([box(0, 0, 50, 10, "HELLO")], [box(0, 0, 20, 10, "HE"), box(20, 0, 50, 10, "LLO")])
    assert r.matches == (((0,), (0, 1), "one-to-many"),)
    assert r.det == cleval.CharCounts(5, 5, 5, 1.0, 0.0)
    assert r.e2e == cleval.CharCounts(5, 5, 5, 1.0, 0.0)
    assert (r.e2e.recall, r.e2e.precision) == (pytest.approx(0.8), 1.0)


def test_dont_care_case_and_false_positives():
    gt = [box(0, 0, 40, 10, "###", dont_care=True), box(100, 0, 150, 10, "Hello")]
    dets = [
        box(0, 0, 30, 10, "xx"),  # inside the do-not-care region: ignored
        box(100, 0, 150, 10, "HELLO"),  # right box; case-sensitive text shares only "H"
        box(200, 0, 240, 10, "a"),  # false alarm, wide: 1 character
        box(300, 0, 310, 40, "b"),  # false alarm, tall: 4 characters
    ]
    r = cleval.evaluate_image(gt, dets)
    assert r.det == cleval.CharCounts(5, 10, 5, 0.0, 0.0)
    assert r.e2e == cleval.CharCounts(5, 7, 1, 0.0, 0.0)
    r = cleval.evaluate_image(gt, dets, case_sensitive=False)
    assert r.e2e.tp == 5


def test_longest_common_subsequence():
    assert cleval.longest_common_subsequence("HELLO", "HELLO WORLD") == "HELLO"
    assert cleval.longest_common_subsequence("ABC", "") == ""
    assert len(cleval.longest_common_subsequence("AXBYC", "ABC")) == 3


def test_dataset_figures_sum_characters():
    a = ([box(0, 0, 50, 10, "HELLO")], [box(0, 0, 50, 10, "HELLO")])
    b = ([box(0, 0, 50, 10, "ABCDEFGHIJ")], [])
    result, _ = cleval.evaluate([a, b])
    assert result.e2e.recall == pytest.approx(5 / 15) and result.e2e.precision == 1.0


def test_ground_truth_against_itself(icdar2015_sample, funsd_test):
    samples = load_icdar2015(icdar2015_sample)
    result, _ = cleval.evaluate([(s.regions, [r for r in s.regions if not r.dont_care]) for s in samples])
    assert result.e2e.hmean == 1.0 and result.det.hmean == 1.0
    # FUNSD's adjacent word boxes share edges: a character centre on a shared edge makes a merge,
    # so the reference itself scores FUNSD's ground truth slightly below 1 (see benchmarks/RESULTS.md).
    samples = load_funsd(funsd_test)
    result, _ = cleval.evaluate([(s.regions, [r for r in s.regions if not r.dont_care]) for s in samples])
    assert 0.998 < result.det.hmean < 1.0


def test_longest_common_subsequence_tie_break_prefers_the_left_cell():
    """When several subsequences are equally long, the reference keeps the one its matrix reaches by
    preferring the cell to the left (strictly longer upper cell wins): that decides which characters
    are consumed. Preferring the upper cell on ties gives "A", "C" and "ABA" here."""
    assert cleval.longest_common_subsequence("AB", "BA") == "B"
    assert cleval.longest_common_subsequence("ABC", "CBA") == "C"
    assert cleval.longest_common_subsequence("ABAB", "BABA") == "BAB"
