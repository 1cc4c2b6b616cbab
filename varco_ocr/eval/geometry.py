"""Polygon geometry for the RRC protocols, on shapely.

The official RRC scripts (Polygon3 / GPC) build every polygon from ``int()`` of its coordinates
(numpy int32), so fractional coordinates are truncated toward zero before any area is computed; we
do the same so that sub-pixel predictions score exactly as the official script scores them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import shapely
from shapely.geometry import Polygon

from varco_ocr.eval.regions import TextRegion


def rrc_polygon(region: TextRegion) -> Polygon:
    # int() truncation, as the official scripts' np.int32 casts.
    pts = [(int(x), int(y)) for x, y in region.points]
    poly = Polygon(pts)
    if not poly.is_valid:
        # A self-intersecting quad ("bow tie"). GPC, behind the official scripts, fills it by the
        # even-odd rule; make_valid gives the same filled area for a simple crossing.
        poly = shapely.make_valid(poly)
    return poly


def int_polygons(regions: Sequence[TextRegion]) -> np.ndarray:
    """``rrc_polygon`` for many quads at once (shapely's vectorised constructor)."""
    if not regions:
        return np.array([], dtype=object)
    if any(len(r.points) != 4 for r in regions):
        return np.array([rrc_polygon(r) for r in regions], dtype=object)
    coords = np.trunc(np.array([r.points for r in regions], dtype=float))  # int() truncates toward 0
    polys = shapely.polygons(coords)
    bad = ~shapely.is_valid(polys)
    if bad.any():
        polys[bad] = shapely.make_valid(polys[bad])
    return polys


def polygons(regions: Sequence[TextRegion]) -> np.ndarray:
    return int_polygons(regions)


def intersection_areas(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a_i ∩ b_j| for every pair, shape (len(a), len(b)). Pairs whose bounding boxes do not meet are
    skipped (their area is 0), which keeps a 500-image data set to a fraction of a second."""
    out = np.zeros((len(a), len(b)), dtype=float)
    if len(a) == 0 or len(b) == 0:
        return out
    ba = shapely.bounds(a)
    bb = shapely.bounds(b)
    meet = (
        (ba[:, None, 0] <= bb[None, :, 2])
        & (bb[None, :, 0] <= ba[:, None, 2])
        & (ba[:, None, 1] <= bb[None, :, 3])
        & (bb[None, :, 1] <= ba[:, None, 3])
    )
    ii, jj = np.nonzero(meet)
    if len(ii):
        out[ii, jj] = shapely.area(shapely.intersection(a[ii], b[jj]))
    return out


def iou_matrix(gt: np.ndarray, det: np.ndarray, inter: np.ndarray | None = None) -> np.ndarray:
    inter = intersection_areas(gt, det) if inter is None else inter
    if inter.size == 0:
        return inter
    union = shapely.area(gt)[:, None] + shapely.area(det)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou


def dont_care_detections(gt_regions: Sequence[TextRegion], gt: np.ndarray, det: np.ndarray, inter: np.ndarray, threshold: float) -> list[bool]:
    """A detection whose area lies inside a do-not-care ground-truth region by more than
    ``threshold`` of its own area is ignored (neither a hit nor a false alarm)."""
    det_area = shapely.area(det) if len(det) else np.zeros(0)
    ignored = []
    dc = [i for i, r in enumerate(gt_regions) if r.dont_care]
    for j in range(len(det)):
        hit = False
        for i in dc:
            # Strictly above the threshold, as the scripts' `precision > AREA_PRECISION_CONSTRAINT`.
            if det_area[j] > 0 and inter[i, j] / det_area[j] > threshold:
                hit = True
                break
        ignored.append(hit)
    return ignored


def points_in_polygon(vertices: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Even-odd crossing test (W. R. Franklin's PNPOLY), the test Polygon3's ``isInside`` runs and
    so the one CLEval's reference uses. It is half-open: a point on a left or top edge of an
    axis-aligned box is inside, one on a right or bottom edge is not; shapely's ``contains`` would
    exclude every edge, which changes CLEval counts when a character centre falls on a box edge."""
    inside = np.zeros(len(xs), dtype=bool)
    n = len(vertices)
    j = n - 1
    for i in range(n):
        xi, yi = vertices[i]
        xj, yj = vertices[j]
        crosses = ((yi <= ys) & (ys < yj)) | ((yj <= ys) & (ys < yi))
        if yj != yi:
            with np.errstate(divide="ignore", invalid="ignore"):
                x_at = (xj - xi) * (ys - yi) / (yj - yi) + xi
            inside ^= crosses & (xs < x_at)
        j = i
    return inside
