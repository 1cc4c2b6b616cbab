"""Truncation recovery: band planning and the de-duplicating merge (pure), hand-computed."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from varco_ocr.bands import Band, band_count, merge_band_words, plan_bands, reread_in_bands
from varco_ocr.document import Word
from varco_ocr.layout import build_page


def test_bands_cover_the_page_with_the_overlap_between_neighbours():
    assert plan_bands(1000, 2, 100) == [Band(0, 550), Band(450, 1000)]
    assert plan_bands(1000, 3, 100) == [Band(0, 400), Band(300, 700), Band(600, 1000)]
    assert plan_bands(1000, 1, 100) == [Band(0, 1000)]
    # an overlap larger than half the page is capped, so bands still advance
    assert plan_bands(100, 2, 80) == [Band(0, 75), Band(25, 100)]
    with pytest.raises(ValueError):
        plan_bands(0, 2, 10)


@given(height=st.integers(10, 20000), count=st.integers(1, 8), overlap=st.integers(0, 400))
@settings(max_examples=200, deadline=None)
def test_band_plans_always_tile_the_page(height, count, overlap):
    bands = plan_bands(height, count, overlap)
    assert bands[0].top == 0 and bands[-1].bottom == height
    assert len(bands) == min(count, height - min(overlap, height // 2))
    for a, b in zip(bands, bands[1:]):
        assert a.top < b.top <= a.bottom  # consecutive bands touch or overlap, and advance


def test_band_count_follows_how_far_the_answer_got():
    assert band_count(3000, 1000) == 4  # 1.25 * 3000 / 1000 = 3.75
    assert band_count(3000, 2900) == 2  # nearly read: at least two bands
    assert band_count(3000, 100) == 8  # capped
    assert band_count(3000, 0) == 8  # nothing read (a loop from the start)


def test_merge_keeps_each_place_once_preferring_readings_away_from_cuts():
    bands = [Band(0, 550), Band(450, 1000)]
    first = [
        Word("A", (10, 100, 60, 130)),
        Word("B", (10, 480, 60, 510), 0.9),  # whole, inside the overlap: 40 px from the cut at 550
        Word("Cu", (10, 530, 60, 550)),  # cut by the band's bottom edge
    ]
    second = [  # band coordinates: add 450
        Word("B", (11, 31, 60, 61), 0.8),  # the same word, 31 px below the cut at 450
        Word("Cut", (10, 80, 70, 115)),  # the whole reading of the cut word
        Word("D", (10, 300, 60, 330)),
    ]
    merged = merge_band_words(bands, [first, second], 1000)
    assert sorted((w.text, w.bbox, w.confidence) for w in merged) == [
        ("A", (10, 100, 60, 130), None),
        ("B", (10, 480, 60, 510), 0.9),
        ("Cut", (10, 530, 70, 565), None),
        ("D", (10, 750, 60, 780), None),
    ]


def test_reread_of_a_simulated_reader_recovers_every_word():
    """A reader that sees only what a crop shows: words wholly inside are read exactly, words cut by
    the crop edge are read as their visible part (shorter text, clipped box). The merge must give
    back every word of the page exactly once."""
    page_words = [Word(f"w{row}-{col}", (20 + 150 * col, 30 + 70 * row, 140 + 150 * col, 70 + 70 * row))
                  for row in range(28) for col in range(3)]
    image = Image.new("RGB", (500, 2000), "white")

    def read(crops_and_bands):
        out = []
        for crop, band in crops_and_bands:
            seen = []
            for w in page_words:
                top, bottom = max(w.bbox[1], band.top), min(w.bbox[3], band.bottom)
                if bottom - top <= 0:
                    continue
                whole = (top, bottom) == (w.bbox[1], w.bbox[3])
                seen.append(Word(w.text if whole else w.text[:-1], (w.bbox[0], top - band.top, w.bbox[2], bottom - band.top)))
            out.append((seen, False, 0))
        return out

    # The first answer stopped a third of the way down.
    first = build_page(page_words[:27], index=0, width=500, height=2000, truncated=True)
    state = {}

    def ocr_images(crops):
        bands = plan_bands(2000, band_count(2000, max(w.bbox[3] for w in first.words)), 120)
        state["bands"] = bands
        assert [c.size for c in crops] == [(500, b.height) for b in bands]
        return read(list(zip(crops, bands)))

    page = reread_in_bands(image, first, ocr_images, overlap=120)
    assert len(state["bands"]) == 4
    assert sorted((w.text, w.bbox) for w in page.words) == sorted((w.text, w.bbox) for w in page_words)
    assert not page.truncated and (page.width, page.height) == (500, 2000)


def test_reread_sums_the_bands_dropped_boxes_and_replaces_the_first_count():
    """Boxes the parser dropped (wholly outside the image) are counted per band answer; the page read
    in bands carries their sum, not the truncated first reading's count, nor zero."""
    image = Image.new("RGB", (400, 1000), "white")
    first = build_page([Word("a", (10, 10, 60, 40))], index=3, width=400, height=1000, truncated=True, dropped_boxes=7)
    dropped = [2, 0, 5, 1, 0, 0, 0, 0]

    def ocr_images(crops):
        return [([Word(f"b{k}", (10, 10, 80, 40))], False, dropped[k]) for k in range(len(crops))]

    page = reread_in_bands(image, first, ocr_images)
    assert page.dropped_boxes == 8
    assert page.index == 3 and not page.truncated


@pytest.mark.slow
def test_local_engine_rereads_a_truncated_page_as_the_planned_bands(taught, samples):
    """The real engine on the taught model: a 70-token budget cuts the dense sample after its first word;
    with split_truncated the engine generates once more per band planned from how far the
    first answer got (records what generate was given, runs it for real), and the page holds exactly
    the merge of the bands' words."""
    import torch

    from varco_ocr import OCREngine
    from varco_ocr.bands import default_overlap, merge_band_words
    from varco_ocr.engine import read_words

    torch.set_num_threads(1)
    image = Image.open(samples / "dense-page.png").convert("RGB")
    engine = OCREngine(str(taught.path), **{**taught.engine_args, "max_new_tokens": 70})
    first = engine.ocr(image)
    assert first.truncated
    assert [(w.text, w.bbox) for w in first.words] == list(taught.page("dense-page").words[:1])
    engine.split_truncated = True
    calls = []
    real_generate = engine.generate

    def recording_generate(images, task_text, max_new_tokens=None, **kwargs):
        gens = real_generate(images, task_text, max_new_tokens, **kwargs)
        calls.append([(im.size, gen) for im, gen in zip(images, gens)])
        return gens

    engine.generate = recording_generate
    page = engine.ocr_batch([image], batch_size=8)[0]
    bands = plan_bands(184, band_count(184, max(w.bbox[3] for w in first.words)), default_overlap(184))
    assert len(bands) >= 2
    # the first reading goes through model_inputs/generate_inputs (prefetched); the bands through generate
    assert len(calls) == 1 and [size for size, _ in calls[0]] == [(910, b.height) for b in bands]
    readings = [read_words(gen, *size) for size, gen in calls[0]]
    band_words = [r[0] for r in readings]
    expected = merge_band_words(bands, band_words, 184)
    assert sorted((w.text, w.bbox) for w in page.words) == sorted((w.text, w.bbox) for w in expected)
    assert page.truncated == any(r[1] for r in readings)
    assert page.dropped_boxes == sum(r[2] for r in readings)
    assert (page.width, page.height) == (910, 184)


# -- exact boundaries (mutation testing, benchmarks/RESULTS.md) -----------------------------------


def test_default_overlap_and_band_count_boundaries():
    from varco_ocr.bands import default_overlap

    assert [default_overlap(h) for h in (500, 1000, 2000, 3000)] == [64, 64, 120, 180]  # 6 % of the page, >= 64
    assert band_count(0, 100) == 8  # no height: the most bands
    assert band_count(1, 1) == 2  # one row read of a one-row page: still two bands
    assert band_count(100, 1, max_bands=200) == 125  # ceil(1.25 * 100 / 1), under a raised cap


def test_band_plan_edges():
    assert plan_bands(1, 1, 0) == [Band(0, 1)]  # a one-row page is a valid plan
    assert plan_bands(10, 2, 0) == [Band(0, 5), Band(5, 10)]  # no overlap: bands only touch
    assert plan_bands(2, 3, 1) == [Band(0, 2)]  # one row left to advance: a single band
    for height, count in ((0, 1), (10, 0)):
        with pytest.raises(ValueError, match="^a band plan needs a positive height and count$"):
            plan_bands(height, count, 0)


def test_distance_to_cut_counts_only_cuts_through_the_page():
    from varco_ocr.bands import distance_to_cut

    assert distance_to_cut((0, 10, 5, 20), Band(0, 100), 300) == 80  # the page top is no cut
    assert distance_to_cut((0, 5, 5, 20), Band(1, 100), 300) == 4  # a band from row 1 is cut at its top
    assert distance_to_cut((0, 290, 5, 299), Band(200, 300), 300) == 90  # the page bottom is no cut
    assert distance_to_cut((0, 10, 5, 20), Band(0, 300), 300) == 300  # a band of the whole page: no cut


def test_covered_is_the_intersection_over_the_smaller_box():
    from varco_ocr.bands import _covered

    small, big = (2, 1, 6, 4), (1, 0, 11, 40)  # 4 x 3 inside 10 x 40
    assert _covered(small, big) == _covered(big, small) == 1.0
    a, b = (1, 0, 11, 4), (2, 1, 6, 30)  # overlap 4 x 3 = 12; smaller area 10 x 4 = 40
    assert _covered(a, b) == _covered(b, a) == 0.3
    assert _covered((0, 0, 10, 10), (9, 0, 20, 10)) == 0.1  # one column in common
    assert _covered((0, 0, 10, 10), (0, 9, 10, 20)) == 0.1  # one row in common
    assert _covered((0, 0, 10, 10), (20, 0, 30, 10)) == 0.0  # apart in x only
    assert _covered((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching
    assert _covered((5, 5, 6, 6), (0, 0, 10, 10)) == 1.0  # a one-pixel box inside


def test_a_word_covering_exactly_half_of_a_kept_word_is_a_duplicate():
    bands = [Band(0, 550), Band(450, 1000)]
    first = [Word("A", (10, 480, 60, 510))]  # 40 px from the cut at 550
    second = [Word("A'", (35, 30, 85, 60))]  # page (35, 480, 85, 510): 30 px from the cut at 450, half of A
    assert [w.text for w in merge_band_words(bands, [first, second], 1000)] == ["A"]
    second = [Word("B", (36, 30, 86, 60))]  # 24 of 50 columns in common: under half, a word of its own
    assert sorted(w.text for w in merge_band_words(bands, [first, second], 1000)) == ["A", "B"]


@pytest.mark.parametrize("truncated_band", [None, 1])
def test_reread_plans_from_its_arguments_and_keeps_the_page_fields(truncated_band):
    """Nothing read the first time: the most bands (here max_bands=3) with the overlap given; the page
    keeps its raw answer and dpi, and is truncated exactly when a band's answer was."""
    image = Image.new("RGB", (400, 1000), "white")
    first = build_page([], index=5, width=400, height=1000, truncated=True, raw="first answer", dpi=300.0)
    heights = []

    def ocr_images(crops):
        heights.extend(c.size[1] for c in crops)
        return [([], k == truncated_band, 0) for k in range(len(crops))]

    page = reread_in_bands(image, first, ocr_images, max_bands=3, overlap=100)
    assert heights == [b.height for b in plan_bands(1000, 3, 100)] == [400, 400, 400]
    assert page.truncated is (truncated_band is not None)
    assert (page.raw, page.dpi, page.index) == ("first answer", 300.0, 5)
