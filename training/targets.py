"""Training targets from annotations: OCR answers from words, grounding answers from objects.

Both are written exactly as the model is asked to answer at inference, through the same code
``varco_ocr`` reads answers with: words are put in reading order by ``varco_ocr.layout.order_words`` (the
y-clustered order the OCR command returns) and formatted by ``varco_ocr.parsing.format_ocr_answer``
(coordinates normalised to 0..1 of the image, three decimals, trailing zeros dropped). A target built
here and parsed back by ``varco_ocr.parsing`` gives the same words and boxes (tested).

The prompts are the ones the engine sends: the image then ``<ocr>``; the image then ``<gro>`` and the
phrase on the next line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from varco_ocr import model_spec
from varco_ocr.document import Word
from varco_ocr.layout import order_words
from varco_ocr.parsing import format_grounding_answer, format_ocr_answer, to_normalised

OCR_INSTRUCTION = model_spec.OCR_PROMPT


@dataclass(frozen=True)
class GroundedObject:
    phrase: str
    bbox: tuple[float, float, float, float]  # pixels of the image, x1, y1, x2, y2


def reading_order(words: Sequence[Word]) -> list[Word]:
    return [w for block in order_words(words) for w in block.words]


def ocr_answer(words: Sequence[Word], width: int, height: int) -> str:
    """``<char>w</char><bbox>x1, y1, x2, y2</bbox>`` per word, in reading order, one per line."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive (got {width} x {height})")
    ordered = reading_order(words)
    return format_ocr_answer((w.text, to_normalised(w.bbox, width, height)) for w in ordered)


def grounding_instruction(phrase: str) -> str:
    return f"{model_spec.GROUNDING_PROMPT}\n{phrase}"


def grounding_answer(objects: Sequence[GroundedObject], width: int, height: int) -> str:
    """One ``<obj>phrase</obj><bbox>b1<delim>b2</bbox>`` entry per distinct phrase (in first-seen order),
    each phrase's boxes top-to-bottom then left-to-right."""
    boxes: dict[str, list[tuple[float, float, float, float]]] = {}
    for obj in objects:
        boxes.setdefault(obj.phrase, []).append(obj.bbox)
    return format_grounding_answer(
        (phrase, [to_normalised(b, width, height) for b in sorted(bs, key=lambda b: (b[1], b[0]))])
        for phrase, bs in boxes.items()
    )


def ocr_record(image: str, words: Sequence[Word], width: int, height: int, sample_id: str | None = None) -> dict[str, Any]:
    """A conversation JSON-lines record (the format ``training.data`` reads) for one OCR page."""
    record: dict[str, Any] = {
        "images": [image],
        "conversations": [
            {"from": "human", "value": f"{model_spec.IMAGE_TOKEN}\n{OCR_INSTRUCTION}"},
            {"from": "gpt", "value": ocr_answer(words, width, height)},
        ],
    }
    if sample_id is not None:
        record = {"id": sample_id, **record}
    return record


def grounding_record(
    image: str, phrase: str, objects: Sequence[GroundedObject], width: int, height: int, sample_id: str | None = None
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "images": [image],
        "conversations": [
            {"from": "human", "value": f"{model_spec.IMAGE_TOKEN}\n{grounding_instruction(phrase)}"},
            {"from": "gpt", "value": grounding_answer([o for o in objects if o.phrase == phrase], width, height)},
        ],
    }
    if sample_id is not None:
        record = {"id": sample_id, **record}
    return record
