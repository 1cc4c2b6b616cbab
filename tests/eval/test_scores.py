"""P/R/H bookkeeping shared by the RRC and DetEval protocols: the empty cases and the per-image rule."""

import pytest

from varco_ocr.eval.scores import PRH, Counts, dataset_prh, hmean


def test_hmean_of_nothing_is_zero_and_otherwise_the_harmonic_mean():
    assert hmean(0.0, 0.0) == 0.0
    assert hmean(1.0, 0.0) == 0.0
    assert hmean(0.5, 1.0) == pytest.approx(2 / 3)


def test_a_data_set_with_nothing_to_find_and_nothing_found_scores_zero_not_one():
    # the scripts' method-level rule: a zero denominator gives 0 (unlike the per-image rule below)
    assert dataset_prh([]) == PRH(0.0, 0.0, 0.0)
    assert dataset_prh([Counts(0.0, 0, 0.0, 0)] * 2) == PRH(0.0, 0.0, 0.0)
    # detections but no ground truth: recall 0 (not a division by zero), precision 0 / 2
    assert dataset_prh([Counts(0.0, 0, 0.0, 2)]) == PRH(0.0, 0.0, 0.0)
    # ground truth but no detections: precision 0, recall 0 / 3
    assert dataset_prh([Counts(0.0, 3, 0.0, 0)]) == PRH(0.0, 0.0, 0.0)


def test_dataset_figures_sum_over_images_before_dividing():
    # image 1: 1 of 1 word, 1 of 4 detections; image 2: 1.6 precision credit (a DetEval split) of 2, 0 of 3 words
    prh = dataset_prh([Counts(1.0, 1, 1.0, 4), Counts(0.0, 3, 1.6, 2)])
    assert prh.recall == pytest.approx(1 / 4) and prh.precision == pytest.approx(2.6 / 6)
    assert prh.hmean == pytest.approx(hmean(2.6 / 6, 1 / 4))
    assert prh.to_dict() == {"precision": prh.precision, "recall": prh.recall, "hmean": prh.hmean}
    assert list(PRH(0.1, 0.2, 0.3).to_dict().items()) == [("precision", 0.1), ("recall", 0.2), ("hmean", 0.3)]


def test_per_image_rule_for_images_without_ground_truth():
    assert (Counts(0.0, 0, 0.0, 0).image_recall, Counts(0.0, 0, 0.0, 0).image_precision) == (1.0, 1.0)
    assert Counts(0.0, 0, 0.0, 0).image_hmean == 1.0
    assert (Counts(0.0, 0, 0.0, 1).image_recall, Counts(0.0, 0, 0.0, 1).image_precision) == (1.0, 0.0)
    assert Counts(0.0, 2, 0.0, 0).image_precision == 0.0 and Counts(0.0, 2, 0.0, 0).image_recall == 0.0
    c = Counts(1.0, 2, 0.8, 1)
    assert (c.image_recall, c.image_precision) == (0.5, 0.8)
    assert c + Counts(1.0, 1, 1.0, 3) == Counts(2.0, 3, 1.8, 4)
