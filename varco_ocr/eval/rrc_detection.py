"""ICDAR2015 text localisation (RRC Challenge 4, Task 4.1), as the official script scores it.

Rules reproduced (official ``script.py`` of the task with ``rrc_evaluation_funcs``):
- a ground-truth region whose transcription is ``###`` is "do not care";
- a detection lying inside a do-not-care region by more than half of its own area is ignored;
- IoU strictly above 0.5 (``>``, not ``>=``) makes a match;
- matching is greedy and one-to-one: ground-truth regions in file order, and for each the first
  still-free detection in file order that passes (not the best-IoU one);
- precision, recall and H-mean are sums over the whole data set (matched / cared-for counts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from varco_ocr.eval.geometry import dont_care_detections, intersection_areas, iou_matrix, polygons
from varco_ocr.eval.regions import TextRegion
from varco_ocr.eval.scores import PRH, Counts, dataset_prh

IOU_THRESHOLD = 0.5
DONT_CARE_AREA_THRESHOLD = 0.5


@dataclass(frozen=True)
class ImageMatch:
    counts: Counts
    pairs: tuple[tuple[int, int], ...]  # (gt index, detection index)
    ignored_detections: tuple[int, ...]


def match_image(gt_regions: Sequence[TextRegion], det_regions: Sequence[TextRegion]) -> ImageMatch:
    gt = polygons(gt_regions)
    det = polygons(det_regions)
    inter = intersection_areas(gt, det)
    iou = iou_matrix(gt, det, inter)
    ignored = dont_care_detections(gt_regions, gt, det, inter, DONT_CARE_AREA_THRESHOLD)
    gt_taken = [False] * len(gt_regions)
    det_taken = [False] * len(det_regions)
    pairs = []
    for i, g in enumerate(gt_regions):
        if g.dont_care:
            continue
        for j in range(len(det_regions)):
            if gt_taken[i] or det_taken[j] or ignored[j]:
                continue
            if iou[i, j] > IOU_THRESHOLD:
                gt_taken[i] = det_taken[j] = True
                pairs.append((i, j))
    gt_care = sum(1 for g in gt_regions if not g.dont_care)
    det_care = len(det_regions) - sum(ignored)
    counts = Counts(len(pairs), gt_care, len(pairs), det_care)
    return ImageMatch(counts, tuple(pairs), tuple(j for j, x in enumerate(ignored) if x))


def evaluate(images: Sequence[tuple[Sequence[TextRegion], Sequence[TextRegion]]]) -> tuple[PRH, list[Counts]]:
    """``images``: (ground truth, detections) per image. Returns the data-set figures and per-image counts."""
    per_image = [match_image(g, d).counts for g, d in images]
    return dataset_prh(per_image), per_image
