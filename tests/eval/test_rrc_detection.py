import pytest

from varco_ocr.eval import rrc_detection
from varco_ocr.eval.datasets import load_icdar2015
from varco_ocr.eval.regions import TextRegion


def box(x1, y1, x2, y2, text="w", dont_care=False):
    return TextRegion.from_ltrb(x1, y1, x2, y2, text, dont_care)


def test_iou_must_be_strictly_above_half():
    gt = [box(0, 0, 10, 10)]
    # intersection 50, union 100: IoU exactly 0.5 -> no match
    m = rrc_detection.match_image(gt, [box(0, 0, 10, 5)])
    assert m.pairs == () and m.counts.det_care == 1
    # intersection 60, union 100: IoU 0.6 -> match
    m = rrc_detection.match_image(gt, [box(0, 0, 10, 6)])
    assert m.pairs == ((0, 0),)


def test_detection_inside_dont_care_is_ignored_only_above_half_its_area():
    gt = [box(0, 0, 10, 10, "###", dont_care=True), box(100, 100, 110, 110)]
    inside = box(0, 0, 10, 6)  # all of its area in the do-not-care region
    half = box(5, 0, 15, 10)  # exactly half of its area in it: still counts (a false alarm)
    m = rrc_detection.match_image(gt, [inside, half])
    assert m.ignored_detections == (0,)
    assert m.counts.det_care == 1 and m.counts.gt_care == 1 and m.counts.recall_hits == 0


def test_greedy_matching_in_ground_truth_order_takes_first_passing_detection():
    # GT A overlaps det 0 (IoU 2/3) and det 1 (IoU 1); GT B overlaps only det 0 (IoU 2/3) well enough.
    # The official greedy rule gives A the first passing detection (det 0), leaving B unmatched,
    # although a best assignment would match both.
    a, b = box(0, 0, 10, 10), box(4, 0, 14, 10)
    dets = [box(2, 0, 12, 10), box(0, 0, 10, 10)]
    m = rrc_detection.match_image([a, b], dets)
    assert m.pairs == ((0, 0),)
    prh, _ = rrc_detection.evaluate([([a, b], dets)])
    assert prh.precision == pytest.approx(0.5) and prh.recall == pytest.approx(0.5)


def test_figures_are_summed_over_the_data_set_not_averaged():
    img1 = ([box(0, 0, 10, 10)], [box(0, 0, 10, 10)])  # 1/1
    img2 = ([box(0, 0, 10, 10), box(20, 0, 30, 10), box(40, 0, 50, 10)], [box(0, 0, 10, 10)])  # 1 of 3
    prh, per_image = rrc_detection.evaluate([img1, img2])
    assert prh.recall == pytest.approx(2 / 4)  # an average of per-image recalls would be 2/3
    assert prh.precision == pytest.approx(1.0)
    assert prh.hmean == pytest.approx(2 * 0.5 / 1.5)
    assert per_image[1].image_recall == pytest.approx(1 / 3)


def test_fractional_coordinates_are_truncated_like_the_official_script():
    gt = [box(0, 0, 10, 10)]
    # 0,0,10,5.9 truncates to 0,0,10,5: IoU 0.5 -> no match (shapely on the raw floats would say 0.59).
    assert rrc_detection.match_image(gt, [box(0, 0, 10, 5.9)]).pairs == ()


def test_image_without_ground_truth_counts_false_alarms():
    prh, per_image = rrc_detection.evaluate([([], [box(0, 0, 5, 5)]), ([box(0, 0, 10, 10)], [box(0, 0, 10, 10)])])
    assert prh.precision == pytest.approx(0.5) and prh.recall == pytest.approx(1.0)
    assert per_image[0].image_recall == 1.0 and per_image[0].image_precision == 0.0


def test_ground_truth_against_itself_is_perfect(icdar2015_sample):
    samples = load_icdar2015(icdar2015_sample)
    prh, _ = rrc_detection.evaluate([(s.regions, [r for r in s.regions if not r.dont_care]) for s in samples])
    assert (prh.precision, prh.recall, prh.hmean) == (1.0, 1.0, 1.0)
    # do-not-care regions submitted as detections are ignored, not false alarms
    prh, _ = rrc_detection.evaluate([(s.regions, s.regions) for s in samples])
    assert prh.hmean == 1.0
