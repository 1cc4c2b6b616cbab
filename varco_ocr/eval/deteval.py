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
    n_g, n_d = len(gt_regions), len(det_regions)
    gts = np.array([rect_of(r) for r in gt_regions], dtype=np.int64).reshape(n_g, 4)
    dets = np.array([rect_of(r) for r in det_regions], dtype=np.int64).reshape(n_d, 4)
    gt_dc = np.array([r.dont_care for r in gt_regions], dtype=bool)
    # Inclusive-pixel intersections of every pair, vectorised (same integers as intersection_area).
    dx = np.minimum(gts[:, None, 2], dets[None, :, 2]) - np.maximum(gts[:, None, 0], dets[None, :, 0]) + 1
    dy = np.minimum(gts[:, None, 3], dets[None, :, 3]) - np.maximum(gts[:, None, 1], dets[None, :, 1]) + 1
    inter = np.where((dx >= 0) & (dy >= 0), dx * dy, 0).astype(float)
    g_area = ((gts[:, 2] - gts[:, 0] + 1) * (gts[:, 3] - gts[:, 1] + 1)).astype(float)
    d_area = ((dets[:, 2] - dets[:, 0] + 1) * (dets[:, 3] - dets[:, 1] + 1)).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall_mat = np.where(g_area[:, None] != 0, inter / g_area[:, None], 0.0)
        precision_mat = np.where(d_area[None, :] != 0, inter / d_area[None, :], 0.0)
    det_dc = np.zeros(n_d, dtype=bool)
    if gt_dc.any() and n_d:
        # inside a do-not-care region by more than 0.4 of the detection's area (strict, as official)
        det_dc = (precision_mat[gt_dc] > AREA_PRECISION).any(axis=0)
    passes = (recall_mat >= AREA_RECALL) & (precision_mat >= AREA_PRECISION)
    # Overlap counts skip the other side's do-not-care items, as the official helpers do; they
    # depend only on the matrices, so they are counted once.
    overlaps_of_gt = ((recall_mat > 0) & ~det_dc[None, :]).sum(axis=1)
    overlaps_of_det = ((recall_mat > 0) & ~gt_dc[:, None]).sum(axis=0)
    passes_per_gt = passes.sum(axis=1)  # the uniqueness checks count every item, do-not-care included
    passes_per_det = passes.sum(axis=0)
    gt_taken = np.zeros(n_g, dtype=bool)
    det_taken = np.zeros(n_d, dtype=bool)
    recall_credit = 0.0
    precision_credit = 0.0
    pairs = []

    # 1. one-to-one. A row with exactly one passing column has a single candidate, so the official
    # double loop reduces to one check per ground truth.
    for i in range(n_g):
        if gt_dc[i] or passes_per_gt[i] != 1:
            continue
        j = int(np.argmax(passes[i]))
        if det_taken[j] or det_dc[j] or passes_per_det[j] != 1:
            continue
        if overlaps_of_gt[i] != 1 or overlaps_of_det[j] != 1:
            continue
        if normalised_centre_distance(tuple(gts[i]), tuple(dets[j])) < CENTER_DIFF_THRESHOLD:
            gt_taken[i] = det_taken[j] = True
            recall_credit += CREDIT_ONE_TO_ONE
            precision_credit += CREDIT_ONE_TO_ONE
            pairs.append(((i,), (j,), "OO"))

    # 2. one-to-many: one ground truth split over several detections.
    for i in range(n_g):
        if gt_dc[i] or gt_taken[i]:
            continue
        pieces = np.nonzero(~det_taken & ~det_dc & (precision_mat[i] >= AREA_PRECISION))[0]
        covered = float(sum(recall_mat[i, j] for j in pieces))  # summed in order, as the official loop
        if round(covered, 4) >= AREA_RECALL and overlaps_of_gt[i] >= 2:
            gt_taken[i] = True
            if len(pieces) == 1:
                recall_credit += CREDIT_ONE_TO_ONE
                precision_credit += CREDIT_ONE_TO_ONE
            else:
                recall_credit += CREDIT_ONE_TO_MANY
                precision_credit += CREDIT_ONE_TO_MANY * len(pieces)
            det_taken[pieces] = True
            pairs.append(((i,), tuple(int(j) for j in pieces), "OO" if len(pieces) == 1 else "OM"))

    # 3. many-to-one: several ground truths merged into one detection.
    for j in range(n_d):
        if det_dc[j] or det_taken[j]:
            continue
        merged = np.nonzero(~gt_taken & ~gt_dc & (recall_mat[:, j] >= AREA_RECALL))[0]
        covered = float(sum(precision_mat[i, j] for i in merged))
        if round(covered, 4) >= AREA_PRECISION and overlaps_of_det[j] >= 2:
            det_taken[j] = True
            if len(merged) == 1:
                recall_credit += CREDIT_ONE_TO_ONE
                precision_credit += CREDIT_ONE_TO_ONE
            else:
                recall_credit += CREDIT_MANY_TO_ONE * len(merged)
                precision_credit += CREDIT_MANY_TO_ONE
            gt_taken[merged] = True
            pairs.append((tuple(int(i) for i in merged), (j,), "OO" if len(merged) == 1 else "MO"))

    counts = Counts(recall_credit, int(n_g - gt_dc.sum()), precision_credit, int(n_d - det_dc.sum()))
    return ImageMatch(counts, tuple(pairs), tuple(int(j) for j in np.nonzero(det_dc)[0]))


def evaluate(images: Sequence[tuple[Sequence[TextRegion], Sequence[TextRegion]]]) -> tuple[PRH, list[Counts]]:
    per_image = [match_image(g, d).counts for g, d in images]
    return dataset_prh(per_image), per_image
