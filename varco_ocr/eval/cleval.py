"""CLEval: character-level detection and end-to-end evaluation (NAVER Clova, Baek et al. 2020).

CLEval scores characters, not boxes, so engines whose boxes differ in granularity (one box per word,
per line, or per character) are compared fairly: a line box that covers five ground-truth words
finds their characters and pays a small granularity penalty instead of scoring zero. The paper's
Table 11 figures are CLEval end-to-end H-mean x 100.

This module reproduces the reference implementation (``cleval`` 0.1.1 on PyPI, clovaai/CLEval) with
its default parameters, rule for rule:

- Ground truth ``###`` is do-not-care; its transcription becomes ``#`` x min(round(0.5 + max(r, 1/r)),
  10) with r the box's aspect ratio, and the parts of it that overlap cared-for ground truth are cut
  away before any area is measured.
- Each ground-truth word of n characters gets n *pseudo character centres* (PCC) evenly spaced on the
  line through the middles of its left and right sides (top/bottom sides when its aspect ratio is
  below 0.5, i.e. vertical text).
- Area precision AP(g, d) = |g ∩ d| / |d| on polygons of integer-truncated corners; a pair "passes"
  when AP >= 0.3 and d contains at least one PCC of g.
- A detection is do-not-care when it passes AP >= 0.3 with a do-not-care region, or when the AP it
  shares with do-not-care regions whose PCCs it holds sums to >= 0.3.
- Matches (all kept, not exclusive): one-to-one (the pair passes and neither side passes with anything
  else), one-to-many (a ground truth passes with >= 2 cared-for detections), many-to-one (a detection
  holds PCCs of >= 2 cared-for ground truths whose AP sums to >= 0.3). PCC hits of unmatched pairs
  are dropped.
- Detection: TP = distinct PCCs found by matched detections. Recall = (TP - Σ(#dets per gt - 1)) /
  #GT chars, precision = (TP - Σ(#gts per det - 1)) / (PCC hits of matched pairs + false-positive
  chars), where an unmatched detection counts min(round(0.5 + 1 / aspect ratio), 10) characters (sic:
  the reference uses 1/r here, not max(r, 1/r), so a wide box counts one character).
- End-to-end: per ground truth (in the reference's set order, below), its matched detections are ordered by the first PCC each
  holds, their not-yet-used characters concatenated, and the longest common subsequence with the
  ground truth's text is consumed from them. TP = consumed characters; precision divides by all
  characters of cared-for detections; the same granularity penalties apply.
- Comparison is case-sensitive (the reference CLI's default ``--CASE_SENSITIVE True``).
- Order of visits (see ``_package_index_sets``): the reference keeps do-not-care and valid indices in
  Python ``set`` objects and iterates them; where the order of visits changes a figure, we iterate
  the very same set expressions, built the same way, so CPython gives us the same order.
- Data-set figures sum the character counts over images, then apply the formulas once.

Areas use shapely where the reference uses Polygon3 (GPC); point-in-box uses Polygon3's own
half-open crossing test (``geometry.points_in_polygon``), because character centres often fall
exactly on a box edge (adjacent word boxes share it) and shapely's ``contains`` would differ there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import shapely

from varco_ocr.eval.geometry import int_polygons, points_in_polygon
from varco_ocr.eval.regions import TextRegion
from varco_ocr.eval.scores import PRH, hmean

AREA_PRECISION_CONSTRAINT = 0.3
GRANULARITY_PENALTY_WEIGHT = 1.0
VERTICAL_ASPECT_RATIO_THRESHOLD = 0.5
MAX_PSEUDO_LENGTH = 10


def _dist(p: tuple[float, float], q: tuple[float, float]) -> float:
    return math.hypot(p[0] - q[0], p[1] - q[1])


def aspect_ratio(points: Sequence[tuple[float, float]]) -> float:
    """Mean horizontal side over mean vertical side of a quad (reference ``QUAD.aspect_ratio``)."""
    p0, p1, p2, p3 = points
    horizontal = (_dist(p0, p1) + _dist(p2, p3)) / 2
    vertical = (_dist(p1, p2) + _dist(p3, p0)) / 2
    return (horizontal + 1e-5) / (vertical + 1e-5)


def pseudo_transcription_length(points: Sequence[tuple[float, float]]) -> int:
    r = aspect_ratio(points)
    # Python's round (half to even), as the reference runs it.
    return min(round(0.5 + max(r, 1 / r)), MAX_PSEUDO_LENGTH)


def false_positive_chars(points: Sequence[tuple[float, float]]) -> int:
    # The reference's get_num_fp_char: 1 / aspect ratio, not max(r, 1/r).
    return min(round(0.5 + 1 / (1e-5 + aspect_ratio(points))), MAX_PSEUDO_LENGTH)


def pseudo_character_centres(points: Sequence[tuple[float, float]], n_chars: int) -> list[tuple[float, float]]:
    if n_chars == 0:
        return []
    p0, p1, p2, p3 = points
    if aspect_ratio(points) >= VERTICAL_ASPECT_RATIO_THRESHOLD:
        left_top, right_top, right_bottom, left_bottom = p0, p1, p2, p3
    else:  # vertical text reads top to bottom: rotate the corner roles
        left_top, right_top, right_bottom, left_bottom = p3, p0, p1, p2
    start = ((left_top[0] + left_bottom[0]) / 2, (left_top[1] + left_bottom[1]) / 2)
    end = ((right_top[0] + right_bottom[0]) / 2, (right_top[1] + right_bottom[1]) / 2)
    ux = (end[0] - start[0]) / n_chars
    uy = (end[1] - start[1]) / n_chars
    return [(start[0] + ux / 2 + ux * i, start[1] + uy / 2 + uy * i) for i in range(n_chars)]


def longest_common_subsequence(s1: str, s2: str) -> str:
    """The reference's LCS, including its tie-breaking (prefer the cell to the left on ties), which
    decides *which* characters are consumed when several subsequences are equally long."""
    if not s1 or not s2:
        return ""
    matrix = [["" for _ in range(len(s2))] for _ in range(len(s1))]
    for i in range(len(s1)):
        for j in range(len(s2)):
            if s1[i] == s2[j]:
                matrix[i][j] = s1[i] if (i == 0 or j == 0) else matrix[i - 1][j - 1] + s1[i]
            elif len(matrix[i - 1][j]) > len(matrix[i][j - 1]):
                matrix[i][j] = matrix[i - 1][j]
            else:
                matrix[i][j] = matrix[i][j - 1]
    return matrix[-1][-1]


def _package_index_sets(dont_care: Sequence[bool]) -> tuple[set[int], set[int]]:
    """The reference's ``(gt_dc_indices, gt_valid_indices)`` (and the same pair for detections),
    built exactly as it builds them.

    This is the package's behaviour, not a principled rule, and we copy it because it changes
    scores. ``gt_dc_indices`` is a set filled by ``add`` in index order; the valid indices are
    ``set(range(n)) - gt_dc_indices``. CPython iterates a set in hash-table slot order, and a small
    int's slot is ``i & (table_size - 1)``: ``set(range(n))`` is dense and iterates in ascending
    order, but when many indices are removed the difference is built as a *new*, smaller table and an
    index at or above its size wraps to a low slot, e.g. valid ``{1, 8}`` out of 9 iterates ``[8, 1]``.
    End-to-end scoring consumes a detection's characters at their first occurrence, one ground truth
    after the other, so for a detection matched to several ground truths the order of visits decides
    which of them gets a shared character. Two sums over these sets (do-not-care area precision of a
    detection, many-to-one area precision) are also summed in set order, which can move a float sum
    across the 0.3 threshold. Iterate the returned sets themselves; never sort them.
    """
    dc: set[int] = set()
    for i, is_dc in enumerate(dont_care):
        if is_dc:
            dc.add(i)
    return dc, set(range(len(dont_care))) - dc


@dataclass(frozen=True)
class CharCounts:
    """Character tallies of one image or a data set (reference ``CoreStats``)."""

    num_char_gt: int = 0
    num_char_det: int = 0
    tp: int = 0  # characters found (detection) or correctly read (end-to-end)
    gran_recall: float = 0.0  # granularity penalties
    gran_precision: float = 0.0

    def __add__(self, o: "CharCounts") -> "CharCounts":
        return CharCounts(
            self.num_char_gt + o.num_char_gt,
            self.num_char_det + o.num_char_det,
            self.tp + o.tp,
            self.gran_recall + o.gran_recall,
            self.gran_precision + o.gran_precision,
        )

    @property
    def recall(self) -> float:
        return 0.0 if self.num_char_gt == 0 else max(0.0, self.tp - self.gran_recall) / self.num_char_gt

    @property
    def precision(self) -> float:
        return 0.0 if self.num_char_det == 0 else max(0.0, self.tp - self.gran_precision) / self.num_char_det

    @property
    def hmean(self) -> float:
        return hmean(self.precision, self.recall)

    def prh(self) -> PRH:
        return PRH(self.precision, self.recall, self.hmean)


@dataclass(frozen=True)
class ImageResult:
    det: CharCounts
    e2e: CharCounts
    matches: tuple[tuple[tuple[int, ...], tuple[int, ...], str], ...] = field(default=())  # (gts, dets, kind)


def evaluate_image(
    gt_regions: Sequence[TextRegion], det_regions: Sequence[TextRegion], case_sensitive: bool = True
) -> ImageResult:
    for r in list(gt_regions) + list(det_regions):
        if len(r.points) != 4:
            raise ValueError("CLEval scores quadrilaterals: every region needs exactly 4 points")
    n_g, n_d = len(gt_regions), len(det_regions)

    # Transcriptions: '###' (on either side, as the reference's Box does) becomes a pseudo text.
    def prepared_text(r: TextRegion, is_dc: bool) -> str:
        if is_dc:
            return "#" * pseudo_transcription_length(r.points)
        return r.text if case_sensitive else r.text.upper()

    gt_dc = [r.dont_care or r.text == "###" for r in gt_regions]
    # Visit orders: the reference's sets, iterated as they are (see _package_index_sets).
    dc_set, gt_valid = _package_index_sets(gt_dc)
    gt_text = [prepared_text(r, dc) for r, dc in zip(gt_regions, gt_dc)]
    det_text = [prepared_text(r, r.text == "###") for r in det_regions]
    gt_pccs = [pseudo_character_centres(r.points, len(t)) for r, t in zip(gt_regions, gt_text)]

    gt_polys = list(int_polygons(gt_regions))
    det_polys = list(int_polygons(det_regions))
    # Do-not-care regions lose the parts that cared-for ground truth covers.
    for k in dc_set:  # (each box independently: the order does not change the result)
        for i in range(n_g):
            if not gt_dc[i] and gt_polys[i].intersects(gt_polys[k]) and gt_polys[i].intersection(gt_polys[k]).area > 0:
                gt_polys[k] = gt_polys[k].difference(gt_polys[i])

    # Area precision (float32, as the reference's matrix) and PCC inclusion. All PCCs of the image
    # live in one array; `hit[j, p]` says whether detection j contains PCC p (of ground truth owner[p]).
    ap = np.zeros((n_g, n_d), dtype=np.float32)
    offsets = np.cumsum([0] + [len(p) for p in gt_pccs])
    owner = np.repeat(np.arange(n_g), [len(p) for p in gt_pccs]).astype(np.int64)
    pcc_xy = np.array([pt for p in gt_pccs for pt in p], dtype=float).reshape(-1, 2)
    hit = np.zeros((n_d, len(pcc_xy)), dtype=bool)
    if n_g and n_d:
        det_arr = np.array(det_polys, dtype=object)
        det_area = shapely.area(det_arr)
        db = shapely.bounds(det_arr)
        for i in range(n_g):
            gb = gt_polys[i].bounds
            near = np.nonzero((db[:, 0] <= gb[2]) & (gb[0] <= db[:, 2]) & (db[:, 1] <= gb[3]) & (gb[1] <= db[:, 3]))[0]
            if len(near):
                inter = shapely.area(shapely.intersection(gt_polys[i], det_arr[near]))
                ok = det_area[near] > 0
                ap[i, near[ok]] = (inter[ok] / det_area[near][ok]).astype(np.float32)
        if len(pcc_xy):
            # Integer-truncated corners, as the reference's Polygon3 objects hold them.
            det_quads = np.trunc(np.array([r.points for r in det_regions], dtype=float))
            for j in range(n_d):
                inside_box = np.nonzero(
                    (pcc_xy[:, 0] >= db[j, 0]) & (pcc_xy[:, 0] <= db[j, 2]) & (pcc_xy[:, 1] >= db[j, 1]) & (pcc_xy[:, 1] <= db[j, 3])
                )[0]
                if len(inside_box):
                    hit[j, inside_box] = points_in_polygon(det_quads[j], pcc_xy[inside_box, 0], pcc_xy[inside_box, 1])

    def pcc_counts() -> np.ndarray:  # (n_g, n_d): PCCs of ground truth i inside detection j
        out = np.zeros((n_g, n_d), dtype=np.int64)
        for j in range(n_d):
            if hit[j].any():
                out[:, j] = np.bincount(owner[hit[j]], minlength=n_g)
        return out

    pcc_sum = pcc_counts()
    ap_ok = ap >= AREA_PRECISION_CONSTRAINT

    det_dc = [False] * n_d
    if dc_set:
        threshold32 = np.float32(AREA_PRECISION_CONSTRAINT)
        for j in range(n_d):
            # The reference's `ap_sum = 0; ap_sum += ap_mat[i, j]` accumulates in float32 (NumPy 2
            # scalar rules) and compares in float32; order of the set, float32 sums, as it does.
            ap_sum = np.float32(0.0)
            for i in dc_set:
                if ap_ok[i, j]:
                    det_dc[j] = True
                    break
                if pcc_sum[i, j] > 0:
                    ap_sum = np.float32(ap_sum + ap[i, j])
            if ap_sum >= threshold32:
                det_dc[j] = True
    # Detections in the reference's set order too: it only orders the reported matches, not a figure.
    _, det_valid = _package_index_sets(det_dc)
    det_valid_order = list(det_valid)

    passes = ap_ok & (pcc_sum > 0)
    passes_per_gt = passes.sum(axis=1)
    passes_per_det = passes.sum(axis=0)
    match = np.zeros((n_g, n_d), dtype=bool)
    matches = []
    for i in gt_valid:  # one-to-one: uniqueness counted over *all* boxes, as the reference's helper
        if passes_per_gt[i] != 1:
            continue
        j = int(np.argmax(passes[i]))  # the only detection it passes with
        if not det_dc[j] and passes_per_det[j] == 1:
            matches.append(((i,), (j,), "one-to-one"))
    for i in gt_valid:  # one-to-many (split)
        dets = [j for j in det_valid_order if passes[i, j]]
        if len(dets) >= 2:
            matches.append(((i,), tuple(dets), "one-to-many"))
    gt_valid_order = list(gt_valid)  # the reference's np.array(list(gt_valid_indices))
    for j in det_valid:  # many-to-one (merge)
        gts = [i for i in gt_valid_order if pcc_sum[i, j] > 0]
        # float64 sum of float32 values in set order, as the reference's numba loop
        if len(gts) >= 2 and sum(float(ap[i, j]) for i in gts) >= AREA_PRECISION_CONSTRAINT:
            matches.append((tuple(gts), (j,), "many-to-one"))
    for gts, dets, _ in matches:
        for i in gts:
            for j in dets:
                match[i, j] = True
    # Forget PCC hits of pairs that did not match.
    if n_d and len(pcc_xy):
        hit &= match[owner].T
    pcc_sum = pcc_counts()

    gts_per_det = match.sum(axis=0)
    dets_per_gt = match.sum(axis=1)
    gran_precision = sum(max(int(gts_per_det[j]) - 1, 0) * GRANULARITY_PENALTY_WEIGHT for j in det_valid if gts_per_det[j] > 0)
    gran_recall = sum(max(int(dets_per_gt[i]) - 1, 0) * GRANULARITY_PENALTY_WEIGHT for i in gt_valid if dets_per_gt[i] > 0)
    num_char_gt = sum(len(gt_text[i]) for i in gt_valid)

    # Detection: each ground-truth character counts once, whichever matched detection holds it.
    found = np.zeros(len(pcc_xy), dtype=bool)
    for j in det_valid:
        if gts_per_det[j] > 0:
            found |= hit[j]
    det_tp = int(found.sum())
    num_char_det = int(pcc_sum[:, det_valid_order].sum()) if n_g and det_valid else 0
    num_char_det += sum(false_positive_chars(det_regions[j].points) for j in det_valid if gts_per_det[j] == 0)
    det_counts = CharCounts(num_char_gt, num_char_det, det_tp, gran_recall, gran_precision)

    # End-to-end: consume each ground truth's longest common subsequence from its detections, visiting
    # ground truths in the reference's set order (not ascending: see _package_index_sets).
    det_left = list(det_text)
    for i in gt_valid:
        if dets_per_gt[i] == 0:
            continue
        unordered = [int(j) for j in np.nonzero(match[i])[0]]
        ordered = []
        for k in range(len(gt_pccs[i])):
            if len(unordered) == 1:
                break
            for j in unordered:
                if hit[j, offsets[i] + k]:
                    ordered.append(j)
                    unordered.remove(j)
                    break
        # (sic) the reference keeps only the first of any detections holding none of the PCCs
        ordered.append(unordered[0])
        common = longest_common_subsequence(gt_text[i], "".join(det_left[j] for j in ordered))
        for ch in common:
            for j in ordered:
                pos = det_left[j].find(ch)
                if pos >= 0:
                    det_left[j] = det_left[j][:pos] + det_left[j][pos + 1:]
                    break
    e2e_tp = sum(len(det_text[j]) - len(det_left[j]) for j in det_valid)
    e2e_det_chars = sum(len(det_text[j]) for j in det_valid)
    e2e_counts = CharCounts(num_char_gt, e2e_det_chars, e2e_tp, gran_recall, gran_precision)
    return ImageResult(det_counts, e2e_counts, tuple(matches))


@dataclass(frozen=True)
class CLEvalResult:
    det: PRH
    e2e: PRH
    det_counts: CharCounts
    e2e_counts: CharCounts


def evaluate(
    images: Sequence[tuple[Sequence[TextRegion], Sequence[TextRegion]]], case_sensitive: bool = True
) -> tuple[CLEvalResult, list[ImageResult]]:
    per_image = [evaluate_image(g, d, case_sensitive) for g, d in images]
    det = sum((r.det for r in per_image), CharCounts())
    e2e = sum((r.e2e for r in per_image), CharCounts())
    return CLEvalResult(det.prh(), e2e.prh(), det, e2e), per_image
