import math

from hypothesis import given, settings, strategies as st

from varco_ocr.parsing import (
    format_coordinate,
    format_ocr_answer,
    parse_box,
    parse_grounding_answer,
    parse_ocr_answer,
    to_normalised,
    to_pixels,
)

CARD_ANSWER = (
    "<char>백범로</char><bbox>0.172, 0.266, 0.328, 0.341</bbox>\n"
    "<char>Apt</char><bbox>0.28, 0.601, 0.327, 0.651</bbox>"
)


def test_issue_example_maps_to_pixels_of_original():
    answer = parse_ocr_answer(CARD_ANSWER)
    assert [w.text for w in answer.words] == ["백범로", "Apt"]
    assert not answer.truncated and answer.dropped == 0
    boxes = [to_pixels(w.box, 1000, 500) for w in answer.words]
    for got, want in zip(boxes, [(172, 133, 328, 170), (280, 300, 327, 325)]):
        assert all(abs(g - w) <= 1 for g, w in zip(got, want)), (got, want)


def test_whitespace_and_newlines_between_entries_and_inside_box():
    raw = "  <char>A</char>\n\n <bbox> 0.1 ,0.2,\n0.3 , 0.4 </bbox>\r\n<char>B</char><bbox>0.5, 0.5, 0.6, 0.6</bbox>  "
    answer = parse_ocr_answer(raw)
    assert [(w.text, w.box) for w in answer.words] == [("A", (0.1, 0.2, 0.3, 0.4)), ("B", (0.5, 0.5, 0.6, 0.6))]


def test_truncated_last_entry_is_dropped_and_flagged():
    for tail in ("<char>C</char><bbox>0.1, 0.", "<char>C</ch", "<char>Cd", "<cha", "<char>C</char>"):
        answer = parse_ocr_answer(CARD_ANSWER + "\n" + tail)
        assert [w.text for w in answer.words] == ["백범로", "Apt"], tail
        assert answer.truncated, tail


def test_clamps_out_of_range_and_reorders_inverted_corners():
    answer = parse_ocr_answer("<char>X</char><bbox>1.2, 0.9, -0.1, 0.3</bbox>")
    assert answer.words[0].box == (0.0, 0.3, 1.0, 0.9)


def test_drops_bad_coordinates_and_empty_text():
    raw = (
        "<char>a</char><bbox>0.1, 0.2, 0.3</bbox>"  # three numbers
        "<char>b</char><bbox>0.1, x, 0.3, 0.4</bbox>"  # not a number
        "<char>c</char><bbox>nan, 0.1, 0.3, 0.4</bbox>"  # not finite
        "<char> </char><bbox>0.1, 0.1, 0.3, 0.4</bbox>"  # empty text
        "<char>ok</char><bbox>0.1, 0.1, 0.3, 0.4</bbox>"
    )
    answer = parse_ocr_answer(raw)
    assert [w.text for w in answer.words] == ["ok"]
    assert answer.dropped == 4
    assert answer.words[0].entry == 4  # ordinal of its <char> tag, for confidence lookup


def test_missing_close_tag_does_not_swallow_next_entry():
    answer = parse_ocr_answer("<char>broken<bbox>0.1,0.1,0.2,0.2</bbox><char>good</char><bbox>0.3, 0.3, 0.4, 0.4</bbox>")
    assert [w.text for w in answer.words] == ["good"]


def test_html_entities_are_unescaped():
    answer = parse_ocr_answer("<char>AT&amp;T</char><bbox>0.1, 0.1, 0.2, 0.2</bbox><char>&lt;tag&gt;</char><bbox>0.3, 0.1, 0.4, 0.2</bbox>")
    assert [w.text for w in answer.words] == ["AT&T", "<tag>"]


def test_verbatim_repeats_from_a_loop_are_dropped():
    entry = "<char>같은</char><bbox>0.1, 0.1, 0.2, 0.2</bbox>\n"
    answer = parse_ocr_answer(entry * 50)
    assert len(answer.words) == 1 and answer.dropped == 49


def test_grounding_with_several_boxes():
    raw = "<obj>the red sign</obj><bbox>0.1, 0.2, 0.3, 0.4<delim>0.5, 0.6, 0.7, 0.8</bbox> and <obj>cat</obj><bbox>0.9,0.9,0.1,0.1</bbox>"
    answer = parse_grounding_answer(raw)
    assert [(p.text, p.boxes) for p in answer.phrases] == [
        ("the red sign", ((0.1, 0.2, 0.3, 0.4), (0.5, 0.6, 0.7, 0.8))),
        ("cat", ((0.1, 0.1, 0.9, 0.9),)),
    ]
    assert not answer.truncated
    assert parse_grounding_answer("<obj>cut</obj><bbox>0.1, 0.2").truncated


def test_format_round_trips_through_parser():
    words = [("합계", (0.0, 0.1234, 0.5, 1.0)), ("TOTAL", (0.28, 0.3, 0.4, 0.35))]
    raw = format_ocr_answer(words)
    assert "0.28," in raw and "0.123," in raw and "<bbox>0.0, " in raw
    parsed = parse_ocr_answer(raw)
    assert [(w.text, w.box) for w in parsed.words] == [("합계", (0.0, 0.123, 0.5, 1.0)), ("TOTAL", (0.28, 0.3, 0.4, 0.35))]


def test_coordinate_format_drops_trailing_zeros():
    assert [format_coordinate(v) for v in (0.28, 0.5, 0.0, 1.0, 0.1239, 0.0004)] == ["0.28", "0.5", "0.0", "1.0", "0.124", "0.0"]


def test_pixel_normalised_round_trip():
    for box in [(0, 0, 1000, 500), (172, 133, 328, 170), (999, 1, 1000, 2)]:
        assert to_pixels(to_normalised(box, 1000, 500), 1000, 500) == box


def test_parse_box_edge_cases():
    assert parse_box("") is None and parse_box("1,2,3,4,5") is None and parse_box("inf,0,0,0") is None
    assert parse_box("0,0,0,0") == (0.0, 0.0, 0.0, 0.0)


# -- never raises -----------------------------------------------------------------------------

_TAGS = ["<char>", "</char>", "<bbox>", "</bbox>", "<obj>", "</obj>", "<delim>", ", ", "\n", "0.5", "1e9", "-3", "nan", "가", "&amp;", "<"]
fragments = st.lists(st.one_of(st.sampled_from(_TAGS), st.text(max_size=6)), max_size=60).map("".join)


def _check_invariants(raw: str) -> None:
    answer = parse_ocr_answer(raw)
    for w in answer.words:
        x1, y1, x2, y2 = w.box
        assert 0.0 <= x1 <= x2 <= 1.0 and 0.0 <= y1 <= y2 <= 1.0 and all(map(math.isfinite, w.box))
        assert w.text and w.text == w.text.strip()
        assert raw.count("<char>") > w.entry >= 0
    for p in parse_grounding_answer(raw).phrases:
        assert p.boxes


@settings(max_examples=1500, deadline=None)
@given(fragments)
def test_parser_never_raises_on_random_answers(raw):
    _check_invariants(raw)


@settings(max_examples=1000, deadline=None)
@given(st.data())
def test_parser_never_raises_on_mutated_real_answers(data):
    raw = CARD_ANSWER * 3
    for _ in range(data.draw(st.integers(0, 6))):
        i = data.draw(st.integers(0, len(raw)))
        j = data.draw(st.integers(i, min(len(raw), i + 12)))
        raw = raw[:i] + data.draw(st.sampled_from(["", *_TAGS])) + raw[j:]
    _check_invariants(raw)


# -- one pass; boxes off the image ------------------------------------------------------------

class _CountingStr(str):
    """A str that adds up how many characters its ``count`` calls scan."""

    scanned = 0

    def count(self, sub, start=0, end=None):  # type: ignore[override]
        end = len(self) if end is None else end
        type(self).scanned += max(0, end - start)
        return super().count(sub, start, end)


def test_parser_scans_the_answer_once():
    # Counting tags from the start of the answer for every entry made parsing quadratic (50k words:
    # about a minute). The tag counts must advance with the matches: a bounded multiple of the length.
    raw = _CountingStr(format_ocr_answer((f"w{i}", (i % 100 / 100, i // 100 / 100, 0.5, 0.5)) for i in range(3000)))
    _CountingStr.scanned = 0
    answer = parse_ocr_answer(raw)
    assert len(answer.words) == 3000 and [w.entry for w in answer.words] == list(range(3000))
    assert _CountingStr.scanned <= 2 * len(raw)


def test_entry_ordinals_count_broken_entries():
    raw = "<char>a<bbox>0.1,0.1,0.2,0.2</bbox><char>b</char><bbox>0.3,0.3,0.4,0.4</bbox><char>c</char>x<char>d</char><bbox>0.5,0.5,0.6,0.6</bbox>"
    assert [(w.text, w.entry) for w in parse_ocr_answer(raw).words] == [("b", 1), ("d", 3)]


def test_box_wholly_outside_the_image_is_dropped_and_counted():
    raw = (
        "<char>right</char><bbox>1.2, 0.1, 1.5, 0.2</bbox>"  # beyond the right edge
        "<char>above</char><bbox>0.1, -0.5, 0.2, -0.1</bbox>"  # above the top
        "<char>edge</char><bbox>1.0, 0.1, 1.3, 0.2</bbox>"  # touches the right edge from outside
        "<char>below</char><bbox>0.1, 1.0, 0.2, 1.0001</bbox>"  # touches the bottom edge from outside
        "<char>part</char><bbox>0.9, 0.1, 1.3, 0.2</bbox>"  # partly on the image: clamped, kept
        "<char>flat</char><bbox>0.1, 0.5, 0.3, 0.5</bbox>"  # zero height drawn on the image: kept
        "<char>rim</char><bbox>1.0, 0.5, 1.0, 0.6</bbox>"  # zero width on the edge itself: kept
    )
    answer = parse_ocr_answer(raw)
    assert [(w.text, w.box) for w in answer.words] == [
        ("part", (0.9, 0.1, 1.0, 0.2)), ("flat", (0.1, 0.5, 0.3, 0.5)), ("rim", (1.0, 0.5, 1.0, 0.6))]
    assert answer.dropped_boxes == 4 and answer.dropped == 0
    assert [w.entry for w in answer.words] == [4, 5, 6]


def test_pages_carry_the_count_of_dropped_boxes():
    # The engine's (and the server backend's) page assembly and the `parse` command both record it.
    import json

    from typer.testing import CliRunner

    from varco_ocr.cli import app
    from varco_ocr.engine import Generation, page_from_generation

    raw = CARD_ANSWER + "\n<char>off</char><bbox>1.1, 0.2, 1.3, 0.3</bbox><char>off2</char><bbox>0.1, -0.3, 0.2, -0.1</bbox>"
    page = page_from_generation(Generation(raw, False, False), width=1000, height=500)
    assert page.dropped_boxes == 2 and [w.text for w in page.words] == ["백범로", "Apt"]
    result = CliRunner().invoke(app, ["parse", "-", "--size", "1000x500", "--json"], input=raw)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["pages"][0]["dropped_boxes"] == 2


# --- boundaries found by the mutation run (benchmarks/mutation.sh, RESULTS.md "Mutation testing") ---


def test_a_tail_cut_inside_a_tag_or_entry_is_truncated_wherever_the_cut_starts():
    box = "<bbox>0.1, 0.1, 0.2, 0.2</bbox>"
    # the cut-off tag starts the tail (no newline before it)
    assert parse_ocr_answer(f"<char>a</char>{box}<cha").truncated
    assert parse_grounding_answer("<ob").truncated
    # trailing whitespace after the cut does not hide it
    assert parse_ocr_answer(f"<char>a</char>{box}\n</cha \n").truncated
    assert parse_grounding_answer(f"<obj>a</obj>{box}\n<ob \n").truncated
    # the last '<' decides, not the first
    assert parse_ocr_answer(f"<char>a</char>{box}\n1 < 2 <cha").truncated
    assert not parse_ocr_answer(f"<char>a</char>{box}\n<cha 1 < 2").truncated
    # a complete opening tag in the tail, however far its entry got
    assert parse_grounding_answer("<obj>the ca").truncated
    assert parse_grounding_answer(f"<obj>a</obj>{box}\n<obj>the ca").truncated
    assert parse_ocr_answer(f"<char>a</char>{box}<bbox>0.5, 0.5").truncated


def test_dropped_counts_broken_entries_between_and_after_matches():
    raw = "<char>a<bbox>0.1,0.1,0.2,0.2</bbox><char>b</char><bbox>0.3,0.3,0.4,0.4</bbox><char>c</char>x<char>d</char><bbox>0.5,0.5,0.6,0.6</bbox>"
    assert parse_ocr_answer(raw).dropped == 2  # <char>a (no </char>) and <char>c (no box)
    assert parse_ocr_answer(raw + "\n<char>e</char><bbox>0.7, 0.7, 0.8").dropped == 3  # the cut-off entry
    assert parse_ocr_answer(raw + "<char>e<char>f").dropped == 4


def test_a_duplicate_entry_does_not_stop_the_words_after_it():
    raw = ("<char>a</char><bbox>0.1,0.1,0.2,0.2</bbox><char>a</char><bbox>0.1,0.1,0.2,0.2</bbox>"
           "<char>b</char><bbox>0.3,0.3,0.4,0.4</bbox>")
    answer = parse_ocr_answer(raw)
    assert [w.text for w in answer.words] == ["a", "b"] and answer.dropped == 1


def test_outside_image_boundaries_on_each_side():
    raw = (
        "<char>beyond</char><bbox>1.5, 0.1, 1.5, 0.2</bbox>"  # zero width, right of the image: outside
        "<char>left</char><bbox>-0.5, 0.1, -0.5, 0.2</bbox>"  # zero width, left of the image: outside
        "<char>touch</char><bbox>-0.2, 0.1, 0.0, 0.2</bbox>"  # reaches the left edge from outside: outside
        "<char>rim0</char><bbox>0.0, 0.5, 0.0, 0.6</bbox>"  # zero width on the left edge itself: kept
    )
    answer = parse_ocr_answer(raw)
    assert [(w.text, w.box) for w in answer.words] == [("rim0", (0.0, 0.5, 0.0, 0.6))]
    assert answer.dropped_boxes == 3


def test_answers_that_are_not_str_are_read_as_their_text():
    from collections import UserString

    ocr = parse_ocr_answer(UserString(CARD_ANSWER))
    assert [w.text for w in ocr.words] == ["백범로", "Apt"]
    gro = parse_grounding_answer(UserString("<obj>cat</obj><bbox>0.1, 0.1, 0.2, 0.2</bbox>"))
    assert [p.text for p in gro.phrases] == ["cat"]
    assert parse_ocr_answer(None).words == () and parse_grounding_answer(None).phrases == ()


def test_exact_formats_and_clamps():
    assert format_coordinate(1.5) == "1.0" and format_coordinate(-0.2) == "0.0"
    assert format_ocr_answer([("a", (0.1, 0.2, 0.3, 0.4)), ("b", (0.5, 0.5, 1.0, 1.0))]) == (
        "<char>a</char><bbox>0.1, 0.2, 0.3, 0.4</bbox>\n<char>b</char><bbox>0.5, 0.5, 1.0, 1.0</bbox>")
    # each corner keeps its own axis (y1 > x2 here), and pixels beyond the image clamp to 1.0
    assert to_normalised((10, 50, 30, 60), 100, 100) == (0.1, 0.5, 0.3, 0.6)
    assert to_normalised((0, 0, 150, 50), 100, 100) == (0.0, 0.0, 1.0, 0.5)
    # a box thinner than half a pixel at the origin stays zero-size, not grown to one pixel
    assert to_pixels((0.0, 0.0, 0.001, 0.001), 100, 100) == (0, 0, 0, 0)


def test_grounding_answer_format_exactly_and_round_trip():
    from varco_ocr.parsing import format_grounding_answer

    phrases = [("cat", [(0.1, 0.2, 0.3, 0.4), (0.5, 0.5, 0.6, 0.6)]), ("dog", [(0.0, 0.0, 1.0, 1.0)])]
    raw = format_grounding_answer(phrases)
    assert raw == ("<obj>cat</obj><bbox>0.1, 0.2, 0.3, 0.4<delim>0.5, 0.5, 0.6, 0.6</bbox>\n"
                   "<obj>dog</obj><bbox>0.0, 0.0, 1.0, 1.0</bbox>")
    assert [(p.text, list(p.boxes)) for p in parse_grounding_answer(raw).phrases] == phrases
