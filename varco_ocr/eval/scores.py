"""Precision / recall / H-mean bookkeeping shared by the detection-style metrics.

Every protocol here sums its numerators and denominators over the whole data set and divides once
(the RRC scripts' "method" figures), rather than averaging per-image ratios.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


def hmean(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2.0 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class Counts:
    """Matches of one image (or a whole data set). The RRC IoU protocols credit recall and precision
    with the same match count; DetEval credits them differently (a split counts 0.8 per piece on the
    precision side), hence two numerators."""

    recall_hits: float
    gt_care: int
    precision_hits: float
    det_care: int

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(
            self.recall_hits + other.recall_hits,
            self.gt_care + other.gt_care,
            self.precision_hits + other.precision_hits,
            self.det_care + other.det_care,
        )

    # Per-image figures follow the RRC scripts' per-sample rule: an image without ground truth that
    # counts has recall 1, and precision 1 only if nothing was detected either.
    @property
    def image_recall(self) -> float:
        return 1.0 if self.gt_care == 0 else self.recall_hits / self.gt_care

    @property
    def image_precision(self) -> float:
        if self.gt_care == 0:
            return 0.0 if self.det_care > 0 else 1.0
        return 0.0 if self.det_care == 0 else self.precision_hits / self.det_care

    @property
    def image_hmean(self) -> float:
        return hmean(self.image_precision, self.image_recall)


@dataclass(frozen=True)
class PRH:
    precision: float
    recall: float
    hmean: float

    def to_dict(self) -> dict[str, float]:
        return {"precision": self.precision, "recall": self.recall, "hmean": self.hmean}


def dataset_prh(per_image: Iterable[Counts]) -> PRH:
    """The scripts' method-level figures: sums over images, 0 when a denominator is 0."""
    total = Counts(0.0, 0, 0.0, 0)
    for c in per_image:
        total = total + c
    recall = 0.0 if total.gt_care == 0 else total.recall_hits / total.gt_care
    precision = 0.0 if total.det_care == 0 else total.precision_hits / total.det_care
    return PRH(precision, recall, hmean(precision, recall))
