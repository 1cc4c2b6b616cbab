import math

import pytest

from varco_ocr.eval import deteval
from varco_ocr.eval.datasets import load_icdar2015
from varco_ocr.eval.regions import TextRegion


def box(x1, y1, x2, y2, text="w", dont_care=False):
    return TextRegion.from_ltrb(x1, y1, x2, y2, text, dont_care)


def test_areas_are_inclusive_pixels():
    assert deteval.rect_area((0, 0, 0, 0)) == 1
    assert deteval.rect_area((0, 0, 9, 19)) == 200
    assert deteval.intersection_area((0, 0, 9, 9), (9, 9, 19, 19)) == 1  # one shared pixel
    assert deteval.intersection_area((0, 0, 9, 9), (10, 0, 19, 9)) == 0


def test_one_to_one_thresholds_are_inclusive():
    g = box(0, 0, 9, 9)  # 100 px
    # D covers G and 150 px more: recall 1, precision exactly 0.4 -> still a match
    m = deteval.match_image([g], [box(0, 0, 24, 9)])
    assert m.pairs == (((0,), (0,), "OO"),) and m.counts.recall_hits == 1
    # D covers 79 of G's 100 px: recall 0.79 < 0.8 -> no one-to-one; it is G's only piece, so the
    # split rule (needs >= 2 overlapping detections) does not apply either
    m = deteval.match_image([box(0, 0, 99, 0)], [box(0, 0, 78, 0)])
    assert m.pairs == () and m.counts.recall_hits == 0
    m = deteval.match_image([box(0, 0, 99, 0)], [box(0, 0, 79, 0)])  # recall exactly 0.8
    assert m.counts.recall_hits == 1


def test_centre_distance_check():
    """The official one-to-one sanity check: centre distance below 1.0 mean diagonal (the real
    CENTER_DIFF_THRESHOLD, not a patched one). G at one end of D, D as long as precision 0.4 allows:
    the farthest apart a one-to-one pair can be, 0.365 diagonals, still a match."""
    g, d = (0, 0, 9, 9), (0, 0, 24, 9)
    # centres (5, 5) and (12.5, 5); diagonals sqrt(200) and sqrt(725)
    expected = 2 * 7.5 / (math.sqrt(200) + math.sqrt(725))
    assert deteval.normalised_centre_distance(g, d) == pytest.approx(expected) and expected < 0.37
    assert deteval.CENTER_DIFF_THRESHOLD == 1.0
    assert deteval.match_image([box(*g)], [box(*d)]).pairs == (((0,), (0,), "OO"),)


def test_split_is_credited_0_8():
    g = box(0, 0, 99, 9)
    halves = [box(0, 0, 49, 9), box(50, 0, 99, 9)]  # each recall 0.5, precision 1
    m = deteval.match_image([g], halves)
    assert m.pairs == (((0,), (0, 1), "OM"),)
    assert m.counts.recall_hits == pytest.approx(0.8)
    assert m.counts.precision_hits == pytest.approx(1.6)
    prh, _ = deteval.evaluate([([g], halves)])
    assert prh.recall == pytest.approx(0.8) and prh.precision == pytest.approx(0.8)


def test_merge_is_credited_in_full():
    gts = [box(0, 0, 49, 9), box(50, 0, 99, 9)]
    m = deteval.match_image(gts, [box(0, 0, 99, 9)])  # recall 1 each, precision 0.5 each
    assert m.pairs == (((0, 1), (0,), "MO"),)
    prh, _ = deteval.evaluate([(gts, [box(0, 0, 99, 9)])])
    assert prh.recall == 1.0 and prh.precision == 1.0


def test_dont_care_ignores_detections_over_0_4_of_their_area():
    gts = [box(0, 0, 9, 9, "###", dont_care=True), box(100, 0, 109, 9)]
    dets = [box(0, 0, 9, 9), box(5, 0, 14, 9), box(100, 0, 109, 9)]  # 100%, 50%, 0% inside
    m = deteval.match_image(gts, dets)
    assert m.ignored_detections == (0, 1)
    assert m.counts.det_care == 1 and m.counts.gt_care == 1 and m.counts.recall_hits == 1


def test_ground_truth_against_itself_when_boxes_do_not_touch():
    gts = [box(0, 0, 40, 9, "alpha"), box(50, 0, 90, 9, "beta"), box(0, 20, 30, 29, "gamma")]
    prh, _ = deteval.evaluate([(gts, gts), (gts[:1], gts[:1])])
    assert (prh.precision, prh.recall, prh.hmean) == (1.0, 1.0, 1.0)


def test_inclusive_pixel_rectangle_geometry_exactly():
    # (found by the mutation run) DetEval's rectangles include both end pixels; asymmetric boxes so
    # that mixing up a coordinate changes the figure
    a = (10, 20, 29, 24)  # 20 x 5 pixels
    assert deteval.rect_area(a) == 100
    assert deteval._center(a) == (20.0, 22.5)
    assert deteval.intersection_area(a, (15, 22, 40, 26)) == 15 * 3
    assert deteval.intersection_area(a, (30, 20, 40, 24)) == 0  # touching: no shared pixel column
    assert deteval.intersection_area(a, (31, 0, 40, 40)) == 0  # apart in x, overlapping in y
    assert deteval.intersection_area(a, (0, 30, 40, 40)) == 0  # apart in y, overlapping in x
    assert deteval._diag(a) == math.hypot(20, 5)
    # centres 3 px apart in x and 4 px in y: distance 5 over the mean diagonal
    assert deteval.normalised_centre_distance(a, (13, 24, 32, 28)) == pytest.approx(5 / math.hypot(20, 5), rel=1e-12)


def test_boxes_apart_in_one_axis_share_nothing_and_each_word_matches_once():
    # (found by the mutation run) two words on one row and one below; detections exactly on them plus a
    # stray one beside the row (apart in x, overlapping in y) and one below it (apart in y)
    gt = [box(0, 0, 39, 9), box(60, 0, 99, 9), box(0, 30, 39, 39)]
    dets = [box(0, 0, 39, 9), box(60, 0, 99, 9), box(0, 30, 39, 39), box(200, 0, 239, 9), box(0, 100, 39, 109)]
    c = deteval.match_image(gt, dets).counts
    assert (c.recall_hits, c.gt_care, c.precision_hits, c.det_care) == (3, 3, 3, 5)


# --- The matching loop, case by case (issue 18: found by the mutation run). Every expected figure below
# is worked out by hand from the ICDAR2013 DetEval rules as the official RRC script applies them (Wolf &
# Jolion, with the script's do-not-care handling), not read back from this implementation.


def scores(gts, dets):
    """(recall credit, cared-for GT, precision credit, cared-for detections, pairs, ignored detections)."""
    m = deteval.match_image(gts, dets)
    c = m.counts
    return (round(c.recall_hits, 9), c.gt_care, round(c.precision_hits, 9), c.det_care, m.pairs, m.ignored_detections)


def test_two_detections_competing_for_one_word_are_a_split_not_a_match():
    word = box(0, 0, 99, 9)  # 1000 px
    # Two copies of the word's box both pass with it, so neither is its only partner: no one-to-one. The
    # split rule then collects both (each has precision >= 0.4, their recalls sum to 2 >= 0.8, the word
    # overlaps two detections): recall credit 0.8, precision credit 0.8 per piece.
    assert scores([word], [box(0, 0, 99, 9), box(0, 0, 99, 9)]) == (0.8, 1, 1.6, 2, (((0,), (0, 1), "OM"),), ())
    # An exact detection plus a sliver inside the word: the sliver does not pass (recall 0.05), but the word
    # now overlaps two detections, so the one-to-one rule refuses the exact one and the split takes both.
    assert scores([word], [box(0, 0, 99, 9), box(95, 0, 99, 9)]) == (0.8, 1, 1.6, 2, (((0,), (0, 1), "OM"),), ())
    # The sliver just outside the word instead: no overlap, a clean one-to-one and a false alarm.
    assert scores([word], [box(0, 0, 99, 9), box(100, 0, 104, 9)]) == (1.0, 1, 1.0, 2, (((0,), (0,), "OO"),), ())


def test_a_detection_passing_with_one_word_and_touching_another_is_a_merge_of_one():
    # D passes with A (recall 1, precision 0.5) and covers 10 of B's 100 px: D overlaps two words, so no
    # one-to-one; A's split needs two overlapping detections; the merge rule takes D with A alone (B's
    # recall 0.1 < 0.8), credited as a one-to-one (1 and 1); B is missed.
    a, b = box(0, 0, 9, 9), box(19, 0, 28, 9)
    assert scores([a, b], [box(0, 0, 19, 9)]) == (1.0, 2, 1.0, 1, (((0,), (0,), "OO"),), ())


def test_a_word_skipped_by_the_one_to_one_rule_does_not_stop_the_words_after_it():
    last_gt, last_det = box(200, 0, 209, 9), box(200, 0, 209, 9)  # an exact one-to-one, last in file order
    # skipped as do-not-care
    dc = box(100, 0, 109, 9, "###", dont_care=True)
    assert scores([dc, last_gt], [last_det]) == (1.0, 1, 1.0, 1, (((1,), (0,), "OO"),), ())
    # skipped with no detection at all
    assert scores([box(100, 0, 109, 9), last_gt], [last_det]) == (1.0, 2, 1.0, 1, (((1,), (0,), "OO"),), ())
    # skipped because its only passing detection also passes with another word (then a merge of both)
    merged = [box(0, 0, 49, 9), box(50, 0, 99, 9)]
    assert scores(merged + [last_gt], [box(0, 0, 99, 9), last_det]) == (
        3.0, 3, 2.0, 2, (((2,), (1,), "OO"), ((0, 1), (0,), "MO")), ())
    # skipped because it overlaps a second detection (then a split of its two pieces)
    assert scores([box(0, 0, 99, 9), last_gt], [box(0, 0, 99, 9), box(95, 0, 99, 9), last_det]) == (
        1.8, 2, 2.6, 3, (((1,), (2,), "OO"), ((0,), (0, 1), "OM")), ())


def test_do_not_care_ignores_a_detection_strictly_over_0_4_inside_it():
    # The official script ignores a detection when more than 0.4 of its area lies in a do-not-care
    # region; exactly 0.4 stays a cared-for detection. Here D has 250 px, 100 inside the region and 10 on
    # the word beside it: a cared-for false alarm. D also passes with the region itself (recall 1,
    # precision 0.4) and overlaps only that one word, but a do-not-care region is never matched.
    dc, word = box(0, 0, 9, 9, "###", dont_care=True), box(24, 0, 33, 9)
    assert scores([dc, word], [box(0, 0, 24, 9)]) == (0.0, 1, 0.0, 1, (), ())
    # One pixel column more of the region (110 px, 0.44 of D inside it): ignored.
    assert scores([box(0, 0, 10, 9, "###", dont_care=True), box(25, 0, 34, 9)], [box(0, 0, 24, 9)]) == (
        0.0, 1, 0.0, 0, (), (0,))


def test_an_ignored_detection_never_matches_the_word_beside_its_do_not_care_region():
    # D covers word W (recall 1, precision 0.5) and lies half in the do-not-care region beside it: D is
    # ignored, so W is missed even though W overlaps exactly one other (cared-for) detection, the pixel S.
    word, dc = box(0, 0, 9, 9), box(10, 0, 29, 9, "###", dont_care=True)
    assert scores([word, dc], [box(0, 0, 19, 9), box(9, 9, 9, 9)]) == (0.0, 1, 0.0, 1, (), (0,))


def test_overlaps_with_do_not_care_items_do_not_count_against_a_one_to_one_match():
    # D lies on word W and reaches into the do-not-care region beside it by 0.25 of its area: cared for,
    # and its overlap with the region does not count as a second overlap, so W-D is a one-to-one match.
    # (Were it counted, the split or merge rule would credit the same single pair 1 and 1, labelled "OO":
    # what this pins is that D is cared for and matched, and the region is no word.)
    word, dc = box(0, 0, 29, 9), box(30, 0, 49, 9, "###", dont_care=True)
    assert scores([word, dc], [box(0, 0, 39, 9)]) == (1.0, 1, 1.0, 1, (((0,), (0,), "OO"),), ())
    # Nor does an ignored detection inside the region that touches the word count against it.
    assert scores([word, dc], [box(0, 0, 39, 9), box(29, 0, 49, 9)]) == (
        1.0, 1, 1.0, 1, (((0,), (0,), "OO"),), (1,))


def test_split_thresholds_are_met_exactly():
    word = box(0, 0, 99, 9)  # 1000 px
    # a piece with precision exactly 0.4 (1250 px, 500 on the word) still counts as a piece
    assert scores([word], [box(0, 0, 49, 9), box(50, 0, 99, 24)]) == (0.8, 1, 1.6, 2, (((0,), (0, 1), "OM"),), ())
    # pieces covering exactly 0.8 of the word (0.4 + 0.4), then 0.79
    assert scores([word], [box(0, 0, 39, 9), box(60, 0, 99, 9)])[:4] == (0.8, 1, 1.6, 2)
    assert scores([word], [box(0, 0, 39, 9), box(61, 0, 99, 9)])[:4] == (0.0, 1, 0.0, 2)


def test_split_coverage_is_rounded_to_4_decimals():
    # A one-pixel-tall word of 50,000 px: pieces of 20,000 + 19,998 px cover 0.79996, which the official
    # script rounds to 0.8 (a split); 20,000 + 19,997 px cover 0.79994, rounded to 0.7999 (missed).
    word = box(0, 0, 49999, 0)
    assert scores([word], [box(0, 0, 19999, 0), box(20000, 0, 39997, 0)])[:4] == (0.8, 1, 1.6, 2)
    assert scores([word], [box(0, 0, 19999, 0), box(20000, 0, 39996, 0)])[:4] == (0.0, 1, 0.0, 2)


def test_merge_thresholds_are_met_exactly():
    det = box(0, 0, 99, 9)  # 1000 px
    # B has recall exactly 0.8 in D (40 of its 50 columns); A and B each make 0.4 of D: a merge of both.
    # (Each passes with D, but D passes with two words, so neither is a one-to-one match.)
    a, b = box(0, 0, 39, 9), box(60, 0, 109, 9)
    assert scores([a, b], [det]) == (2.0, 2, 1.0, 1, (((0, 1), (0,), "MO"),), ())
    # Two words inside D making exactly 0.4 of it together (0.2 each): a merge; 0.39 together: missed.
    assert scores([box(0, 0, 19, 9), box(50, 0, 69, 9)], [det]) == (2.0, 2, 1.0, 1, (((0, 1), (0,), "MO"),), ())
    assert scores([box(0, 0, 19, 9), box(50, 0, 68, 9)], [det])[:4] == (0.0, 2, 0.0, 1)


def test_merge_coverage_is_rounded_to_4_decimals():
    # A one-pixel-tall detection of 50,000 px over words of 10,000 + 9,999 px (0.39998, rounded to 0.4:
    # a merge) or 10,000 + 9,997 px (0.39994, rounded to 0.3999: both words missed).
    det = box(0, 0, 49999, 0)
    assert scores([box(0, 0, 9999, 0), box(20000, 0, 29998, 0)], [det])[:4] == (2.0, 2, 1.0, 1)
    assert scores([box(0, 0, 9999, 0), box(20000, 0, 29996, 0)], [det])[:4] == (0.0, 2, 0.0, 1)


def test_an_image_without_ground_truth_counts_its_detections_as_false_alarms():
    assert scores([], [box(0, 0, 9, 9), box(20, 0, 29, 9)]) == (0.0, 0, 0.0, 2, (), ())
    assert scores([], []) == (0.0, 0, 0.0, 0, (), ())
    prh, _ = deteval.evaluate([([], [box(0, 0, 9, 9)]), ([box(0, 0, 9, 9)], [box(0, 0, 9, 9)])])
    assert (prh.recall, prh.precision) == (1.0, 0.5)


def test_one_pixel_boxes_have_area_one():
    # a box truncated to a single pixel (x1 == x2, y1 == y2) covers one pixel, not none
    assert scores([box(5, 5, 5, 5)], [box(5.2, 5.7, 5.9, 5.4)]) == (1.0, 1, 1.0, 1, (((0,), (0,), "OO"),), ())
    # a one-pixel detection on a 2-pixel word: recall 0.5, precision 1; with a second one, a split
    assert scores([box(5, 5, 6, 5)], [box(5, 5, 5, 5), box(6, 5, 6, 5)]) == (0.8, 1, 1.6, 2, (((0,), (0, 1), "OM"),), ())


def test_a_split_with_one_qualifying_piece_is_credited_and_labelled_one_to_one():
    # D0 is exactly on the word; D1 overlaps it by 50 px but only 0.05 of D1's area lies on it. The word
    # overlaps two detections (no one-to-one); the split rule finds one piece with precision >= 0.4
    # covering it fully: the official script credits that as a one-to-one (1 and 1, type "OO").
    word = box(0, 0, 99, 9)
    assert scores([word], [box(0, 0, 99, 9), box(95, 0, 194, 9)]) == (1.0, 1, 1.0, 2, (((0,), (0,), "OO"),), ())


def test_do_not_care_regions_are_never_split_over_detections():
    # Two detections each exactly 0.4 inside a do-not-care region (not ignored) cover it together: the
    # region is not a word, so nothing is credited and both detections are false alarms.
    dc = box(0, 0, 99, 9, "###", dont_care=True)
    assert scores([dc], [box(0, 0, 49, 24), box(50, 0, 99, 24)]) == (0.0, 0, 0.0, 2, (), ())


def test_a_split_word_is_not_merged_again():
    # W is split over D0 and D1. D2 contains W and word K (recall 1 each, precision 1/3 each): only
    # K is still free, 1/3 < 0.4, so D2 is no merge; K is missed and D2 a false alarm.
    w, k = box(0, 0, 99, 9), box(0, 20, 99, 29)
    dets = [box(0, 0, 49, 9), box(50, 0, 99, 9), box(0, 0, 99, 29)]
    assert scores([w, k], dets) == (0.8, 2, 1.6, 3, (((0,), (0, 1), "OM"),), ())


def test_merged_words_are_not_merged_again_into_a_duplicate_detection():
    # Two words each 0.3 of D (no split: precision < 0.4 each) merge into D; the duplicate D' finds no
    # free words left.
    words = [box(0, 0, 29, 9), box(40, 0, 69, 9)]
    assert scores(words, [box(0, 0, 99, 9), box(0, 0, 99, 9)]) == (2.0, 2, 1.0, 2, (((0, 1), (0,), "MO"),), ())
