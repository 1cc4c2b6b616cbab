import pytest

from varco_ocr.eval import text_metrics
from varco_ocr.eval.datasets import load_funsd, load_icdar2015


def test_cer_and_ned_hand_computed():
    s = text_metrics.score_text("abcd", "abed")  # one substitution
    assert s.cer == pytest.approx(0.25) and s.ned == pytest.approx(0.25)
    s = text_metrics.score_text("abc", "abcdef")  # three insertions
    assert s.cer == pytest.approx(1.0) and s.ned == pytest.approx(0.5)
    assert text_metrics.score_text("", "").cer == 0.0
    assert text_metrics.score_text("", "x").cer == 1.0


def test_whitespace_is_normalised():
    assert text_metrics.score_text("one two\nthree", "one  two three ").edits == 0


def test_dataset_cer_sums_edits_over_characters():
    metrics, _ = text_metrics.evaluate([("abcd", "abed"), ("abcdefgh", "abcdefgh")])
    assert metrics.cer == pytest.approx(1 / 12)  # not the mean of 0.25 and 0
    assert metrics.ned == pytest.approx((0.25 + 0) / 2)
    assert metrics.one_minus_ned == pytest.approx(0.875)


def test_ground_truth_against_itself(icdar2015_sample, funsd_test):
    for samples in (load_icdar2015(icdar2015_sample), load_funsd(funsd_test)):
        metrics, _ = text_metrics.evaluate([(s.text, s.text) for s in samples])
        assert metrics.cer == 0.0 and metrics.one_minus_ned == 1.0


def test_a_data_set_without_ground_truth_characters_and_an_empty_one():
    # no ground-truth characters: CER is 0 when nothing was predicted either, 1 when something was
    assert text_metrics.evaluate([("", ""), (" ", "\n")])[0].cer == 0.0
    assert text_metrics.evaluate([("", ""), ("", "x")])[0].cer == 1.0
    metrics, per_image = text_metrics.evaluate([])
    assert (metrics.cer, metrics.ned, per_image) == (0.0, 0.0, [])


def test_report_keys_of_the_text_metrics():
    metrics, _ = text_metrics.evaluate([("abcd", "abed")])
    assert metrics.to_dict() == {"cer": 0.25, "ned": 0.25, "1-ned": 0.75}
