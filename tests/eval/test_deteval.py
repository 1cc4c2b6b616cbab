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
