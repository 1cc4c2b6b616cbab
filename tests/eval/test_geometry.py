"""Polygon geometry of the RRC protocols (varco_ocr.eval.geometry), hand-computed: truncation as the
official scripts' int() casts, self-intersecting quads, the bounding-box pre-filter's boundaries,
degenerate boxes and the do-not-care threshold."""

import warnings

import numpy as np
import pytest
import shapely

from varco_ocr.eval.geometry import (
    dont_care_detections,
    int_polygons,
    intersection_areas,
    iou_matrix,
    points_in_polygon,
    rrc_polygon,
)
from varco_ocr.eval.regions import TextRegion


def box(x1, y1, x2, y2, dont_care=False):
    return TextRegion.from_ltrb(x1, y1, x2, y2, "###" if dont_care else "w", dont_care)


def test_coordinates_are_truncated_toward_zero_for_quads_and_other_polygons():
    # int(-0.9) == 0 and int(9.9) == 9: a 9 x 9 box, where floor() would give 10 x 10
    quad = TextRegion(((-0.9, -0.9), (9.9, -0.9), (9.9, 9.9), (-0.9, 9.9)))
    assert shapely.area(int_polygons([quad])).tolist() == [81.0]
    # a six-point region goes through rrc_polygon: (0,0) (10.7,0) (10.7,5.5) (5.9,5.5) (5.9,10.2) (0,10.2)
    ell = TextRegion(((0, 0), (10.7, 0), (10.7, 5.5), (5.9, 5.5), (5.9, 10.2), (0, 10.2)))
    assert rrc_polygon(ell).area == 10 * 5 + 5 * 5
    pentagon = TextRegion(((0, 0), (4, 0), (4, 4), (2, 6), (0, 4)))
    assert shapely.area(int_polygons([ell, pentagon])).tolist() == [75.0, 20.0]  # non-quads only
    polys = int_polygons([ell, quad])
    assert shapely.area(polys).tolist() == [75.0, 81.0]
    assert int_polygons([]).shape == (0,)


def test_a_self_intersecting_region_is_filled_like_the_official_scripts():
    # a bow tie: two triangles of 25 each (GPC's even-odd fill); shapely's raw area would be 0
    bow_tie = TextRegion(((0, 0), (10, 10), (10, 0), (0, 10)))
    assert shapely.area(int_polygons([bow_tie])).tolist() == [50.0]
    hexagon_tie = TextRegion(((0, 0), (5, 5), (10, 10), (10, 0), (5, 5), (0, 10)))
    assert rrc_polygon(hexagon_tie).area == 50.0
    assert shapely.area(int_polygons([hexagon_tie, box(0, 0, 2, 2)])).tolist() == [50.0, 4.0]


def test_intersection_areas_of_apart_touching_and_overlapping_boxes():
    a = int_polygons([box(0, 0, 10, 10), box(100, 100, 110, 110)])
    b = int_polygons([box(10, 0, 20, 10), box(5, 5, 15, 15), box(0, 11, 10, 20), box(105, 0, 115, 10)])
    assert intersection_areas(a, b).tolist() == [[0.0, 25.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    # boxes apart in x only, in y only (the pre-filter's four comparisons), and one inside another
    c = int_polygons([box(0, 0, 4, 4)])
    d = int_polygons([box(5, 0, 9, 4), box(0, 5, 4, 9), box(-9, 0, -5, 4), box(0, -9, 4, -5), box(1, 1, 3, 3)])
    assert intersection_areas(c, d).tolist() == [[0.0, 0.0, 0.0, 0.0, 4.0]]
    assert intersection_areas(c, int_polygons([])).shape == (1, 0)
    assert intersection_areas(int_polygons([]), d).shape == (0, 5)


def test_iou_of_degenerate_boxes_is_zero_not_nan():
    gt = int_polygons([box(0, 0, 10, 10), box(5, 5, 5, 5)])
    det = int_polygons([box(0, 0, 10, 5), box(5, 5, 5, 5)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0 / 0 for the two empty boxes must not print a RuntimeWarning
        iou = iou_matrix(gt, det)
    assert iou.tolist() == [[0.5, 0.0], [0.0, 0.0]]
    one = int_polygons([box(0, 0, 1, 1)])  # the smallest union there is: 1 pixel
    assert iou_matrix(one, one).tolist() == [[1.0]]
    assert iou_matrix(gt, int_polygons([])).shape == (2, 0)


def test_dont_care_needs_strictly_more_than_the_threshold_of_the_detection():
    gt = [box(0, 0, 10, 10, dont_care=True), box(50, 0, 60, 10)]
    dets = [box(5, 0, 15, 10), box(4, 0, 14, 10), box(50, 0, 60, 10), box(3, 3, 3, 3), box(3, 3, 4, 4)]
    g, d = int_polygons(gt), int_polygons(dets)
    inter = intersection_areas(g, d)
    # half inside: not ignored; 60% inside: ignored; inside a cared-for region: not ignored; zero area: not
    # (and no 0 / 0 warning); one pixel inside: ignored
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dont_care_detections(gt, g, d, inter, 0.5) == [False, True, False, False, True]
    assert dont_care_detections(gt, g, d, inter, 0.6) == [False, False, False, False, True]
    assert dont_care_detections(gt, g, int_polygons([]), np.zeros((2, 0)), 0.5) == []


def test_points_in_polygon_is_half_open_on_every_edge_of_a_slanted_quad():
    # a parallelogram: left edge from (0,0) to (5,10), right edge from (10,0) to (15,10)
    quad = np.array([[0, 0], [10, 0], [15, 10], [5, 10]], float)
    xs = np.array([2.5, 12.5, 5.0, 5.0, 7.0, 2.4, 12.6, 7.0, -1.0, 0.0, 20.0])
    ys = np.array([5.0, 5.0, 0.0, 10.0, 5.0, 5.0, 5.0, -0.1, 0.0, 0.0, 10.0])
    assert points_in_polygon(quad, xs, ys).tolist() == [True, False, True, False, True, False, False, False,
                                                        False, True, False]
    # a horizontal edge (yj == yi) never crosses; a degenerate polygon holds nothing
    flat = np.array([[0, 0], [10, 0], [10, 0], [0, 0]], float)
    assert points_in_polygon(flat, np.array([5.0]), np.array([0.0])).tolist() == [False]
