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


# --- issue 13: the package's order of visiting ground truths ------------------------------------------
# Expected figures below were computed once with NAVER's `cleval` 0.1.1 (PyPI; NumPy 2.4, CPython 3.11)
# in its own venv, by parsing these very lines with `cleval.main.parse_single_file` and scoring them with
# `cleval.eval_functions.evaluation` (E2E, case-sensitive, default constraints), then written in by hand.
# The package is not a test dependency.


def _quad_line(l, t, r, b, text):
    return f"{l},{t},{r},{t},{r},{b},{l},{b},{text}"


_DC = _quad_line(200, 200, 210, 210, "###")


def _order_cases():
    from varco_ocr.eval.datasets import parse_icdar2015_gt

    def lines(n, words):
        out = [_DC] * n
        for i, line in words.items():
            out[i] = line
        return out

    # (ground-truth lines, detection lines, package's (det counts), package's (e2e counts), e2e H-mean)
    cases = {
        # the case: valid indices {1, 8} of 9 iterate [8, 1]: 'A' takes the first A of 'ABA'
        "issue": (lines(9, {1: _quad_line(10, 10, 50, 30, "AB"), 8: _quad_line(50, 10, 90, 30, "A")}),
                  [_quad_line(10, 10, 90, 30, "ABA")], (3, 3, 3, 0.0, 1.0), (3, 3, 2, 0.0, 1.0), 0.4444444444444444),
        "issue, word lines swapped": (
            lines(9, {1: _quad_line(50, 10, 90, 30, "A"), 8: _quad_line(10, 10, 50, 30, "AB")}),
            [_quad_line(10, 10, 90, 30, "ABA")], (3, 3, 3, 0.0, 1.0), (3, 3, 3, 0.0, 1.0), 0.8),
        "valid {3, 17} of 18": (
            lines(18, {3: _quad_line(10, 10, 50, 30, "AB"), 17: _quad_line(50, 10, 90, 30, "A")}),
            [_quad_line(10, 10, 90, 30, "ABA")], (3, 3, 3, 0.0, 1.0), (3, 3, 2, 0.0, 1.0), 0.4444444444444444),
        "valid {2, 9, 10} of 11": (
            lines(11, {2: _quad_line(10, 10, 40, 30, "AB"), 9: _quad_line(40, 10, 70, 30, "A"), 10: _quad_line(70, 10, 100, 30, "C")}),
            [_quad_line(10, 10, 100, 30, "ABAC")], (4, 4, 4, 0.0, 2.0), (4, 4, 3, 0.0, 2.0), 0.375),
        "dense (one do-not-care)": (
            [_quad_line(10, 10, 50, 30, "AB"), _DC, _quad_line(50, 10, 90, 30, "A")],
            [_quad_line(10, 10, 90, 30, "ABA")], (3, 3, 3, 0.0, 1.0), (3, 3, 3, 0.0, 1.0), 0.8),
    }
    for name, (gt, det, det_counts, e2e_counts, e2e_h) in cases.items():
        yield name, parse_icdar2015_gt("\n".join(gt)), parse_icdar2015_gt("\n".join(det)), det_counts, e2e_counts, e2e_h


@pytest.mark.parametrize("case", list(_order_cases()), ids=lambda c: c[0])
def test_many_to_one_follows_the_packages_ground_truth_order(case):
    _, gt, det, det_counts, e2e_counts, e2e_h = case
    r = cleval.evaluate_image(gt, det)
    assert r.det == cleval.CharCounts(*det_counts)
    assert r.e2e == cleval.CharCounts(*e2e_counts)
    assert r.e2e.hmean == e2e_h
    assert round(cleval.evaluate([(gt, det)])[0].e2e.hmean, 4) == round(e2e_h, 4)


def test_visit_order_is_the_packages_set_not_ascending():
    dc, valid = cleval._package_index_sets([i not in (1, 8) for i in range(9)])
    assert list(valid) == [8, 1]  # CPython's order of that set, which the package iterates
    assert sorted(dc) == [0, 2, 3, 4, 5, 6, 7]
    _, valid = cleval._package_index_sets([i == 1 for i in range(9)])
    assert list(valid) == [0, 2, 3, 4, 5, 6, 7, 8]


def test_do_not_care_area_precision_is_summed_in_float32_as_the_package():
    # A detection (area 400) holding two do-not-care boxes (areas 50 and 70): area precisions 0.125 and
    # 0.175 as float32. Summed in float64 they make 0.29999999702 < 0.3; the package sums them in float32
    # (0.30000001192 >= float32(0.3)), so the detection is do-not-care and not a false positive.
    # Package figures (cleval 0.1.1, computed once as above): det and e2e counts (5, 5, 5, 0, 0), H 1.0.
    from varco_ocr.eval.datasets import parse_icdar2015_gt

    gt = parse_icdar2015_gt("\n".join([_quad_line(0, 0, 5, 10, "###"), _quad_line(10, 0, 17, 10, "###"), _quad_line(100, 0, 150, 10, "HELLO")]))
    det = parse_icdar2015_gt("\n".join([_quad_line(0, 0, 40, 10, "x"), _quad_line(100, 0, 150, 10, "HELLO")]))
    r = cleval.evaluate_image(gt, det)
    assert r.det == cleval.CharCounts(5, 5, 5, 0.0, 0.0)
    assert r.e2e == cleval.CharCounts(5, 5, 5, 0.0, 0.0)

def test_longest_common_subsequence_tie_break_prefers_the_left_cell():
    """When several subsequences are equally long, the reference keeps the one its matrix reaches by
    preferring the cell to the left (strictly longer upper cell wins): that decides which characters
    are consumed. Preferring the upper cell on ties gives "A", "C" and "ABA" here."""
    assert cleval.longest_common_subsequence("AB", "BA") == "B"
    assert cleval.longest_common_subsequence("ABC", "CBA") == "C"
    assert cleval.longest_common_subsequence("ABAB", "BABA") == "BAB"


# --- boundaries found by the mutation run (benchmarks/mutation.sh, RESULTS.md "Mutation testing") ---


def test_pseudo_length_of_a_tall_box_uses_the_inverse_ratio():
    assert cleval.pseudo_transcription_length(box(0, 0, 10, 40, "").points) == 4  # round(0.5 + 1/0.25) == 4
    assert cleval.pseudo_transcription_length(box(0, 0, 10, 60, "").points) == 6  # round(6.5) == 6


def test_evaluate_sums_the_counts_and_passes_case_sensitivity_on():
    images = [([box(0, 0, 40, 10, "Word")], [box(0, 0, 40, 10, "WORD")]),
              ([box(0, 0, 30, 10, "abc")], [box(0, 0, 30, 10, "abc")])]
    result, per_image = cleval.evaluate(images)
    assert result.det_counts == per_image[0].det + per_image[1].det
    assert result.e2e_counts == per_image[0].e2e + per_image[1].e2e
    assert result.e2e.hmean < 1.0
    assert cleval.evaluate(images, case_sensitive=False)[0].e2e.hmean == 1.0


def test_a_non_quad_region_is_refused_with_the_exact_message():
    tri = TextRegion(((0, 0), (10, 0), (10, 10)), "x")
    with pytest.raises(ValueError, match=r"^CLEval scores quadrilaterals: every region needs exactly 4 points$"):
        cleval.evaluate_image([tri], [])


def test_ground_truth_written_as_hash_marks_is_do_not_care_without_the_flag():
    # '###' with dont_care=False (as some loaders leave it) is still do-not-care: nothing to find
    gt = [box(0, 0, 40, 10, "word"), box(100, 0, 140, 10, "###", dont_care=False)]
    result, _ = cleval.evaluate([(gt, [box(0, 0, 40, 10, "word")])])
    assert result.det.recall == 1.0 and result.e2e.recall == 1.0


def test_case_insensitive_compares_upper_case_as_the_reference_does():
    # str.upper, not str.lower: 'ß'.upper() is 'SS', so 'straße' matches 'STRASSE' only when upper-cased
    images = [([box(0, 0, 70, 10, "STRASSE")], [box(0, 0, 70, 10, "straße")])]
    assert cleval.evaluate(images, case_sensitive=False)[0].e2e.hmean == 1.0


def test_a_word_split_over_detections_is_read_in_its_character_order():
    # one ground truth, three detections listed right to left: they are joined in the order of the
    # ground truth's pseudo characters (A, B, C), and nothing is inserted between them
    gt = [box(0, 0, 30, 10, "ABC")]
    dets = [box(20, 0, 30, 10, "C"), box(10, 0, 20, 10, "B"), box(0, 0, 10, 10, "A")]
    image = cleval.evaluate_image(gt, dets)
    assert image.e2e.tp == 3 and image.det.tp == 3
    gt = [box(0, 0, 30, 10, "AXB")]
    image = cleval.evaluate_image(gt, [box(20, 0, 30, 10, "B"), box(0, 0, 10, 10, "A")])
    assert image.e2e.tp == 2  # no 'X' from a joint
