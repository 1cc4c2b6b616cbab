"""Text accuracy on reading-order page text: character error rate and normalised edit distance.

Whitespace is normalised (any run of spaces, tabs and newlines becomes one space) before comparing,
because the ground truth of the scene-text sets has no line structure while a document's text has:
the metrics judge the characters and their order, not the layout separators.

- CER (data set) = total Levenshtein edits / total ground-truth characters (can exceed 1).
- NED (per image) = edits / max(len(gt), len(pred)) in [0, 1]; the data-set figure is the mean over
  images, and ``1 - NED`` is the similarity reported beside it (1.0 = identical text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from rapidfuzz.distance import Levenshtein

_WHITESPACE = re.compile(r"\s+")


def normalise_whitespace(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


@dataclass(frozen=True)
class TextScore:
    edits: int
    gt_chars: int
    pred_chars: int

    @property
    def cer(self) -> float:
        if self.gt_chars == 0:
            return 0.0 if self.pred_chars == 0 else 1.0
        return self.edits / self.gt_chars

    @property
    def ned(self) -> float:
        longest = max(self.gt_chars, self.pred_chars)
        return 0.0 if longest == 0 else self.edits / longest


def score_text(gt: str, pred: str) -> TextScore:
    gt_n, pred_n = normalise_whitespace(gt), normalise_whitespace(pred)
    return TextScore(Levenshtein.distance(gt_n, pred_n), len(gt_n), len(pred_n))


@dataclass(frozen=True)
class TextMetrics:
    cer: float
    ned: float  # mean over images

    @property
    def one_minus_ned(self) -> float:
        return 1.0 - self.ned

    def to_dict(self) -> dict[str, float]:
        return {"cer": self.cer, "ned": self.ned, "1-ned": self.one_minus_ned}


def evaluate(pairs: Sequence[tuple[str, str]]) -> tuple[TextMetrics, list[TextScore]]:
    """``pairs``: (ground-truth text, predicted text) per image."""
    per_image = [score_text(g, p) for g, p in pairs]
    edits = sum(s.edits for s in per_image)
    gt_chars = sum(s.gt_chars for s in per_image)
    pred_chars = sum(s.pred_chars for s in per_image)
    cer = TextScore(edits, gt_chars, pred_chars).cer
    ned = sum(s.ned for s in per_image) / len(per_image) if per_image else 0.0
    return TextMetrics(cer, ned), per_image
