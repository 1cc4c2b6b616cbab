"""OCR and grounding targets: reading order from varco_ocr.layout, formatting the parser reads back."""

from __future__ import annotations

from varco_ocr.document import Word
from varco_ocr.parsing import parse_grounding_answer, parse_ocr_answer, to_pixels
from training.targets import GroundedObject, grounding_answer, grounding_record, ocr_answer, ocr_record


def test_ocr_answer_is_in_reading_order_and_parses_back_to_the_words():
    # Given out of order: second line first, words of the first line reversed.
    words = [
        Word("CASH", (10, 60, 60, 80)),
        Word("합계", (120, 10, 180, 30)),
        Word("TOTAL", (10, 10, 100, 30)),
        Word("5,000", (120, 60, 190, 80)),
    ]
    answer = ocr_answer(words, width=200, height=100)
    assert answer.splitlines() == [
        "<char>TOTAL</char><bbox>0.05, 0.1, 0.5, 0.3</bbox>",
        "<char>합계</char><bbox>0.6, 0.1, 0.9, 0.3</bbox>",
        "<char>CASH</char><bbox>0.05, 0.6, 0.3, 0.8</bbox>",
        "<char>5,000</char><bbox>0.6, 0.6, 0.95, 0.8</bbox>",
    ]
    parsed = parse_ocr_answer(answer)
    assert [(w.text, to_pixels(w.box, 200, 100)) for w in parsed.words] == [
        ("TOTAL", (10, 10, 100, 30)),
        ("합계", (120, 10, 180, 30)),
        ("CASH", (10, 60, 60, 80)),
        ("5,000", (120, 60, 190, 80)),
    ]


def test_grounding_answer_groups_boxes_per_phrase():
    objects = [GroundedObject("cat", (50, 0, 100, 50)), GroundedObject("dog", (0, 0, 10, 10)), GroundedObject("cat", (0, 50, 50, 100))]
    answer = grounding_answer(objects, 100, 100)
    assert answer == "<obj>cat</obj><bbox>0.5, 0.0, 1.0, 0.5<delim>0.0, 0.5, 0.5, 1.0</bbox>\n<obj>dog</obj><bbox>0.0, 0.0, 0.1, 0.1</bbox>"
    parsed = parse_grounding_answer(answer)
    assert [(p.text, len(p.boxes)) for p in parsed.phrases] == [("cat", 2), ("dog", 1)]
    record = grounding_record("x.png", "cat", objects, 100, 100)
    assert record["conversations"][0]["value"] == "<image>\n<gro>\ncat"
    assert "dog" not in record["conversations"][1]["value"]


def test_ocr_record_uses_the_engines_prompt():
    record = ocr_record("p.png", [Word("A", (0, 0, 5, 5))], 10, 10, sample_id="p")
    assert record["id"] == "p" and record["images"] == ["p.png"]
    assert record["conversations"][0] == {"from": "human", "value": "<image>\n<ocr>"}
