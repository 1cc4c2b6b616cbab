"""ICDAR2015 end-to-end recognition (RRC Challenge 4, Task 4.4), generic and word-spotting modes.

Same localisation as Task 4.1 (greedy one-to-one in ground-truth order, IoU > 0.5, detections
inside do-not-care regions by more than half their area ignored). The official script locks a
pair on IoU alone *before* comparing text, so a detection with the wrong text still uses up its
ground truth and counts only as a false alarm. A locked pair is correct when:

- generic mode: the upper-cased texts are equal, or equal once ONE special character
  (``!?.:,*"()·[]/'``) is removed from the start and/or the end of the GROUND TRUTH (the detection
  is never stripped);
- word spotting: ground truth that is not a "dictionary word" becomes do-not-care (after removing a
  final ``'s``, end hyphens and special characters: shorter than 3 characters, containing a space,
  or any character outside Latin a-z/A-Z, U+00C0-U+01BF, U+01C4-U+024F, Greek U+0386-U+03FF and
  ``-``, or one of ``×÷·``); the rest is compared upper-cased and exactly, with the filtered ground
  truth text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from varco_ocr.eval.geometry import dont_care_detections, intersection_areas, iou_matrix, polygons
from varco_ocr.eval.regions import TextRegion
from varco_ocr.eval.scores import PRH, Counts, dataset_prh

IOU_THRESHOLD = 0.5
DONT_CARE_AREA_THRESHOLD = 0.5
MIN_WORD_LENGTH = 3
SPECIAL_CHARACTERS = "!?.:,*\"()·[]/'"
# The dictionary filter uses the same set in a different order (the official code's own string).
_DICTIONARY_SPECIALS = "'!?.:,*\"()·[]/"
_NOT_ALLOWED = "×÷·"
_ALLOWED_RANGES = (
    (ord("a"), ord("z")),
    (ord("A"), ord("Z")),
    (ord("À"), ord("ƿ")),
    (ord("Ǆ"), ord("ɿ")),
    (ord("Ά"), ord("Ͽ")),
    (ord("-"), ord("-")),
)


def generic_transcription_match(gt: str, det: str) -> bool:
    """Both arguments already upper-cased, as the official script passes them."""
    if gt == det:
        return True
    if not gt:
        # The official script would index gt[0] and crash on an empty ground truth; an empty
        # ground truth can only equal an empty detection.
        return False
    first_special = gt[0] in SPECIAL_CHARACTERS
    last_special = gt[-1] in SPECIAL_CHARACTERS
    if first_special and gt[1:] == det:
        return True
    if last_special and gt[:-1] == det:
        return True
    if first_special and last_special and gt[1:-1] == det:
        return True
    return False


def dictionary_form(text: str) -> str:
    """The official ``include_in_dictionary_transcription``: drop a final 's, end hyphens, and
    replace special characters by spaces, then strip."""
    if text[-2:] in ("'s", "'S"):
        text = text[:-2]
    text = text.strip("-")
    for ch in _DICTIONARY_SPECIALS:
        text = text.replace(ch, " ")
    return text.strip()


def in_dictionary(text: str, min_length: int = MIN_WORD_LENGTH) -> bool:
    """The official ``include_in_dictionary`` word-spotting filter."""
    form = dictionary_form(text)
    if " " in form:
        return False
    if len(form) < min_length:
        return False
    for ch in form:
        if ch in _NOT_ALLOWED:
            return False
        code = ord(ch)
        if not any(lo <= code <= hi for lo, hi in _ALLOWED_RANGES):
            return False
    return True


def word_spotting_ground_truth(regions: Sequence[TextRegion]) -> list[TextRegion]:
    """Ground truth as word spotting sees it: non-dictionary words become do-not-care, the others
    carry their dictionary form."""
    out = []
    for r in regions:
        if r.dont_care:
            out.append(r)
        elif not in_dictionary(r.text):
            out.append(TextRegion(r.points, r.text, True))
        else:
            out.append(TextRegion(r.points, dictionary_form(r.text), False))
    return out


@dataclass(frozen=True)
class ImageMatch:
    counts: Counts
    pairs: tuple[tuple[int, int, bool], ...]  # (gt index, detection index, text correct)
    ignored_detections: tuple[int, ...]


def match_image(gt_regions: Sequence[TextRegion], det_regions: Sequence[TextRegion], word_spotting: bool = False) -> ImageMatch:
    if word_spotting:
        gt_regions = word_spotting_ground_truth(gt_regions)
    gt = polygons(gt_regions)
    det = polygons(det_regions)
    inter = intersection_areas(gt, det)
    iou = iou_matrix(gt, det, inter)
    ignored = dont_care_detections(gt_regions, gt, det, inter, DONT_CARE_AREA_THRESHOLD)
    gt_taken = [False] * len(gt_regions)
    det_taken = [False] * len(det_regions)
    pairs = []
    correct_count = 0
    for i, g in enumerate(gt_regions):
        if g.dont_care:
            continue
        for j, d in enumerate(det_regions):
            if gt_taken[i] or det_taken[j] or ignored[j]:
                continue
            if iou[i, j] > IOU_THRESHOLD:
                # Locked on geometry alone; the text decides only whether it counts.
                gt_taken[i] = det_taken[j] = True
                if word_spotting:
                    correct = g.text.upper() == d.text.upper()
                else:
                    correct = generic_transcription_match(g.text.upper(), d.text.upper())
                correct_count += correct
                pairs.append((i, j, correct))
    gt_care = sum(1 for g in gt_regions if not g.dont_care)
    det_care = len(det_regions) - sum(ignored)
    counts = Counts(correct_count, gt_care, correct_count, det_care)
    return ImageMatch(counts, tuple(pairs), tuple(j for j, x in enumerate(ignored) if x))


def evaluate(
    images: Sequence[tuple[Sequence[TextRegion], Sequence[TextRegion]]], word_spotting: bool = False
) -> tuple[PRH, list[Counts]]:
    per_image = [match_image(g, d, word_spotting).counts for g, d in images]
    return dataset_prh(per_image), per_image
