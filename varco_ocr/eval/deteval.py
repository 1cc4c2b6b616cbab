"""ICDAR2013 DetEval (RRC Challenge 2, Task 2.1), as the official ICDAR2013 script scores it.

Boxes are axis-aligned rectangles with inclusive pixel coordinates: a box (l, t, r, b) covers
(r - l + 1) x (b - t + 1) pixels, and so do intersections. A polygon prediction is scored by its
bounding rectangle (the protocol knows only rectangles); coordinates are truncated to integers.

With area recall = |G ∩ D| / |G| and area precision = |G ∩ D| / |D|, per image:
1. one-to-one: G and D pass both thresholds (recall >= 0.8, precision >= 0.4, inclusive) with each
   other and with nothing else, each overlaps nothing else at all, and their centres are closer
   than the mean of their diagonals (normalised distance 2·d / (diag G + diag D) < 1). Credit 1/1.
2. one-to-many (split): a free G whose free detections with precision >= 0.4 cover it with summed
   recall >= 0.8 (rounded to 4 decimals), when G overlaps at least two detections. Recall credit
   0.8, precision credit 0.8 per detection (1 and 1 if only one detection qualified).
3. many-to-one (merge): a free D whose free ground truths with recall >= 0.8 have summed precision
   >= 0.4, when D overlaps at least two ground truths. Recall credit 1 per ground truth, precision 1.
Ground truth ``###`` is do-not-care; a detection inside one by more than 0.4 of its area is ignored.
Data-set recall = Σ recall credit / Σ cared-for GT, precision = Σ precision credit / Σ cared-for
detections. Loops run in file order, which (as in the official script) decides ties.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from varco_ocr.eval.regions import TextRegion
from varco_ocr.eval.scores import PRH, Counts, dataset_prh

AREA_RECALL = 0.8
AREA_PRECISION = 0.4
CENTER_DIFF_THRESHOLD = 1.0
CREDIT_ONE_TO_ONE = 1.0
CREDIT_ONE_TO_MANY = 0.8  # per split piece
CREDIT_MANY_TO_ONE = 1.0

Rect = tuple[int, int, int, int]


def rect_of(region: TextRegion) -> Rect:
    l, t, r, b = region.ltrb
    return (int(l), int(t), int(r), int(b))


def rect_area(r: Rect) -> int:
    return (r[2] - r[0] + 1) * (r[3] - r[1] + 1)


def intersection_area(a: Rect, b: Rect) -> int:
    dx = min(a[2], b[2]) - max(a[0], b[0]) + 1
    dy = min(a[3], b[3]) - max(a[1], b[1]) + 1
    # The official script counts dx >= 0 and dy >= 0 (a zero-width overlap is area 0 anyway).
    return dx * dy if dx >= 0 and dy >= 0 else 0


def _center(r: Rect) -> tuple[float, float]:
    return (r[0] + (r[2] - r[0] + 1) / 2.0, r[1] + (r[3] - r[1] + 1) / 2.0)


def _diag(r: Rect) -> float:
    return math.hypot(r[2] - r[0] + 1, r[3] - r[1] + 1)


def normalised_centre_distance(g: Rect, d: Rect) -> float:
    """Centre distance over the mean of the two diagonals (the one-to-one sanity check)."""
    (gx, gy), (dx, dy) = _center(g), _center(d)
    return 2.0 * math.hypot(gx - dx, gy - dy) / (_diag(g) + _diag(d))


@dataclass(frozen=True)
class ImageMatch:
    counts: Counts
    pairs: tuple[tuple[tuple[int, ...], tuple[int, ...], str], ...]  # (gts, dets, "OO"|"OM"|"MO")
    ignored_detections: tuple[int, ...]


def match_image(gt_regions: Sequence[TextRegion], det_regions: Sequence[TextRegion]) -> ImageMatch:
    gts = [rect_of(r) for r in gt_regions]
    dets = [rect_of(r) for r in det_regions]
    gt_dc = {i for i, r in enumerate(gt_regions) if r.dont_care}
    det_dc: set[int] = set()
    for j, d in enumerate(dets):
        for i in sorted(gt_dc):
            area = rect_area(d)
            if area != 0 and intersection_area(gts[i], d) / area > AREA_PRECISION:
                det_dc.add(j)
                break
    n_g, n_d = len(gts), len(dets)
    recall_mat = np.zeros((n_g, n_d))
    precision_mat = np.zeros((n_g, n_d))
    for i, g in enumerate(gts):
        for j, d in enumerate(dets):
            inter = intersection_area(g, d)
            ga, da = rect_area(g), rect_area(d)
            recall_mat[i, j] = 0 if ga == 0 else inter / ga
            precision_mat[i, j] = 0 if da == 0 else inter / da
    passes = (recall_mat >= AREA_RECALL) & (precision_mat >= AREA_PRECISION)
    gt_taken = [False] * n_g
    det_taken = [False] * n_d
    recall_credit = 0.0
    precision_credit = 0.0
    pairs = []

    # Overlap counts skip the other side's do-not-care items, as the official helpers do.
    def overlaps_of_gt(i: int) -> int:
        return sum(1 for j in range(n_d) if j not in det_dc and recall_mat[i, j] > 0)

    def overlaps_of_det(j: int) -> int:
        return sum(1 for i in range(n_g) if i not in gt_dc and recall_mat[i, j] > 0)

    # 1. one-to-one. The uniqueness checks count every item, do-not-care ones included (official).
    for i in range(n_g):
        for j in range(n_d):
            if gt_taken[i] or det_taken[j] or i in gt_dc or j in det_dc:
                continue
            if not (passes[i, j] and passes[i].sum() == 1 and passes[:, j].sum() == 1):
                continue
            if overlaps_of_gt(i) != 1 or overlaps_of_det(j) != 1:
                continue
            if normalised_centre_distance(gts[i], dets[j]) < CENTER_DIFF_THRESHOLD:
                gt_taken[i] = det_taken[j] = True
                recall_credit += CREDIT_ONE_TO_ONE
                precision_credit += CREDIT_ONE_TO_ONE
                pairs.append(((i,), (j,), "OO"))

    # 2. one-to-many: one ground truth split over several detections.
    for i in range(n_g):
        if i in gt_dc:
            continue
        covered = 0.0
        pieces = []
        for j in range(n_d):
            if not gt_taken[i] and not det_taken[j] and j not in det_dc and precision_mat[i, j] >= AREA_PRECISION:
                covered += recall_mat[i, j]
                pieces.append(j)
        if round(covered, 4) >= AREA_RECALL and overlaps_of_gt(i) >= 2:
            gt_taken[i] = True
            if len(pieces) == 1:
                recall_credit += CREDIT_ONE_TO_ONE
                precision_credit += CREDIT_ONE_TO_ONE
            else:
                recall_credit += CREDIT_ONE_TO_MANY
                precision_credit += CREDIT_ONE_TO_MANY * len(pieces)
            for j in pieces:
                det_taken[j] = True
            pairs.append(((i,), tuple(pieces), "OO" if len(pieces) == 1 else "OM"))

    # 3. many-to-one: several ground truths merged into one detection.
    for j in range(n_d):
        if j in det_dc:
            continue
        covered = 0.0
        merged = []
        for i in range(n_g):
            if not gt_taken[i] and not det_taken[j] and i not in gt_dc and recall_mat[i, j] >= AREA_RECALL:
                covered += precision_mat[i, j]
                merged.append(i)
        if round(covered, 4) >= AREA_PRECISION and overlaps_of_det(j) >= 2:
            det_taken[j] = True
            if len(merged) == 1:
                recall_credit += CREDIT_ONE_TO_ONE
                precision_credit += CREDIT_ONE_TO_ONE
            else:
                recall_credit += CREDIT_MANY_TO_ONE * len(merged)
                precision_credit += CREDIT_MANY_TO_ONE
            for i in merged:
                gt_taken[i] = True
            pairs.append((tuple(merged), (j,), "OO" if len(merged) == 1 else "MO"))

    counts = Counts(recall_credit, n_g - len(gt_dc), precision_credit, n_d - len(det_dc))
    return ImageMatch(counts, tuple(pairs), tuple(sorted(det_dc)))


def evaluate(images: Sequence[tuple[Sequence[TextRegion], Sequence[TextRegion]]]) -> tuple[PRH, list[Counts]]:
    per_image = [match_image(g, d).counts for g, d in images]
    return dataset_prh(per_image), per_image
