"""Turn VARCO-VISION-2.0 answers into words and boxes. Pure functions; nothing here ever raises on an
answer string, whatever the model emitted (tested with hypothesis).

OCR answers are ``<char>WORD</char><bbox>x1, y1, x2, y2</bbox>`` entries, usually separated by newlines;
grounding answers are ``<obj>PHRASE</obj><bbox>x1, y1, x2, y2<delim>x1, y1, x2, y2</bbox>``.
Coordinates are normalised to 0..1 of the image the model saw. Because the upscale keeps the aspect
ratio, normalised coordinates mean the same place on the original image: pixels are computed against
the *original* size, so the upscale never leaks into results.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

NormBox = tuple[float, float, float, float]

# Word text may not contain another tag opening: a `<char>` whose `</char>` is missing must not
# swallow the next entry. Coordinates may not contain `<` (the next tag), except `<delim>` in grounding.
_OCR_ENTRY = re.compile(
    r"<char>(?P<text>(?:(?!</?char>|<bbox>).)*)</char>\s*<bbox>(?P<box>[^<]*)</bbox>",
    re.S,
)
_GROUNDING_ENTRY = re.compile(
    r"<obj>(?P<text>(?:(?!</?obj>|<bbox>).)*)</obj>\s*<bbox>(?P<boxes>(?:[^<]|<delim>)*)</bbox>",
    re.S,
)
_TAGS = ("<char>", "</char>", "<bbox>", "</bbox>", "<obj>", "</obj>", "<delim>")


@dataclass(frozen=True)
class ParsedWord:
    text: str
    box: NormBox  # normalised 0..1, x1 <= x2, y1 <= y2
    entry: int  # ordinal of this entry's <char> tag in the answer (maps words to generated tokens)


@dataclass(frozen=True)
class OCRAnswer:
    words: tuple[ParsedWord, ...]
    truncated: bool  # the answer ends inside an entry (token limit reached mid-word)
    dropped: int  # malformed entries skipped (bad coordinates, empty text, duplicates)
    dropped_boxes: int = 0  # well-formed entries whose box lies wholly outside the image (see outside_image)


@dataclass(frozen=True)
class GroundedPhrase:
    text: str
    boxes: tuple[NormBox, ...]


@dataclass(frozen=True)
class GroundingAnswer:
    phrases: tuple[GroundedPhrase, ...]
    truncated: bool


def _box_values(text: str) -> NormBox | None:
    """``"x1, y1, x2, y2"`` -> the four numbers, corners ordered, not clamped; None when they are not
    four finite numbers."""
    parts = [p.strip() for p in text.replace("\n", " ").split(",")]
    if len(parts) != 4:
        return None
    values: list[float] = []
    for p in parts:
        try:
            v = float(p)
        except ValueError:
            return None
        if not math.isfinite(v):
            return None
        values.append(v)
    x1, y1, x2, y2 = values
    return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


def _clamp(box: NormBox) -> NormBox:
    return tuple(min(1.0, max(0.0, v)) for v in box)  # type: ignore[return-value]


def outside_image(box: NormBox) -> bool:
    """True when an ordered, unclamped box has no part on the image: clamping would squash it onto
    an edge as a zero-area box the model never drew. On each axis the span lies beyond the image
    (``x2 < 0`` or ``x1 > 1``) or reaches it only at an edge (``x2 <= 0`` or ``x1 >= 1`` with
    ``x1 < x2``). A zero-width or zero-height box the model drew *on* the image (``x1 == x2 == 0.4``,
    or on an edge) is not outside: it is kept."""
    for lo, hi in ((box[0], box[2]), (box[1], box[3])):
        if hi < 0.0 or lo > 1.0 or (lo < hi and (hi <= 0.0 or lo >= 1.0)):
            return True
    return False


def parse_box(text: str) -> NormBox | None:
    """``"x1, y1, x2, y2"`` -> a clamped, ordered box, or None when it is not four finite numbers."""
    box = _box_values(text)
    return None if box is None else _clamp(box)


def _clean_text(raw: str) -> str:
    # The model escapes nothing, but training data scraped from HTML sometimes taught it entities.
    return html.unescape(raw).strip()


def _ends_inside_entry(tail: str) -> bool:
    """True when what follows the last complete entry is the start of another one, or a tag cut off
    mid-way (``<cha``): the generation stopped inside an entry."""
    if any(t in tail for t in ("<char>", "<bbox>", "<obj>")):
        return True
    cut = tail.rfind("<")
    return cut >= 0 and any(tag.startswith(tail[cut:]) for tag in _TAGS)


def parse_ocr_answer(answer: str) -> OCRAnswer:
    """Parse an ``<ocr>`` answer into words with normalised boxes, in the order the model wrote them."""
    if not isinstance(answer, str):
        answer = str(answer)
    words: list[ParsedWord] = []
    seen: set[tuple[str, NormBox]] = set()
    dropped = dropped_boxes = 0
    last_end = 0
    # Ordinal of the current entry's <char> tag, counted as the matches advance (one pass: counting
    # from the start of the answer for every entry made long answers quadratic).
    entry = 0
    for m in _OCR_ENTRY.finditer(answer):
        # Entries broken beyond repair (a <char> with no </char>, a lone <bbox>) between matches.
        skipped = answer.count("<char>", last_end, m.start())
        dropped += skipped
        entry += skipped
        this_entry, entry = entry, entry + 1
        last_end = m.end()
        text = _clean_text(m.group("text"))
        raw_box = _box_values(m.group("box"))
        if not text or raw_box is None:
            dropped += 1
            continue
        if outside_image(raw_box):
            dropped_boxes += 1
            continue
        box = _clamp(raw_box)
        # A looping model repeats whole entries verbatim; a real page never has two identical words
        # in exactly the same place.
        key = (text, box)
        if key in seen:
            dropped += 1
            continue
        seen.add(key)
        words.append(ParsedWord(text=text, box=box, entry=this_entry))
    tail = answer[last_end:]
    truncated = _ends_inside_entry(tail.rstrip())
    dropped += tail.count("<char>")
    return OCRAnswer(words=tuple(words), truncated=truncated, dropped=dropped, dropped_boxes=dropped_boxes)


def parse_grounding_answer(answer: str) -> GroundingAnswer:
    """Parse a ``<gro>`` answer into phrases, each with one or more normalised boxes."""
    if not isinstance(answer, str):
        answer = str(answer)
    phrases: list[GroundedPhrase] = []
    last_end = 0
    for m in _GROUNDING_ENTRY.finditer(answer):
        last_end = m.end()
        boxes = tuple(b for b in (parse_box(part) for part in m.group("boxes").split("<delim>")) if b is not None)
        text = _clean_text(m.group("text"))
        if boxes:
            phrases.append(GroundedPhrase(text=text, boxes=boxes))
    return GroundingAnswer(phrases=tuple(phrases), truncated=_ends_inside_entry(answer[last_end:].rstrip()))


def to_pixels(box: NormBox, width: int, height: int) -> tuple[int, int, int, int]:
    """Normalised box -> integer pixels of a ``width`` x ``height`` image (rounded, inside the image)."""
    x1, y1, x2, y2 = box
    return (
        min(width, max(0, round(x1 * width))),
        min(height, max(0, round(y1 * height))),
        min(width, max(0, round(x2 * width))),
        min(height, max(0, round(y2 * height))),
    )


def to_normalised(bbox: Sequence[float], width: int, height: int) -> NormBox:
    """Pixel box -> normalised 0..1 box (clamped, ordered), the inverse of ``to_pixels``."""
    x1, y1, x2, y2 = (float(v) for v in bbox)
    box = (x1 / width, y1 / height, x2 / width, y2 / height)
    c = [min(1.0, max(0.0, v)) for v in box]
    return (min(c[0], c[2]), min(c[1], c[3]), max(c[0], c[2]), max(c[1], c[3]))


def format_coordinate(v: float) -> str:
    """Up to three decimals with trailing zeros dropped, as the model writes them (``0.28``, ``0.0``)."""
    s = f"{min(1.0, max(0.0, v)):.3f}".rstrip("0")
    return s + "0" if s.endswith(".") else s


def format_box(box: NormBox) -> str:
    return ", ".join(format_coordinate(v) for v in box)


def format_ocr_answer(words: Iterable[tuple[str, NormBox]]) -> str:
    """The answer the model is trained to give for words already in reading order (training targets)."""
    return "\n".join(f"<char>{text}</char><bbox>{format_box(box)}</bbox>" for text, box in words)


def format_grounding_answer(phrases: Iterable[tuple[str, Sequence[NormBox]]]) -> str:
    return "\n".join(
        f"<obj>{text}</obj><bbox>{'<delim>'.join(format_box(b) for b in boxes)}</bbox>" for text, boxes in phrases
    )
