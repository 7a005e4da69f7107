"""Pixel boxes to CRS / WGS84 polygons and back."""

from __future__ import annotations

import numpy as np
import pytest
import rasters
from affine import Affine
from pyproj import Transformer

from sparse_yolo.geo import crs_to_pixel, pixel_boxes_to_polygons, pixel_to_crs, polygons_to_wgs84

BOXES = np.array([[0, 0, 10, 20], [100.5, 30.25, 140, 90], [250, 250, 256, 256]], np.float32)


def test_north_up_box_corners() -> None:
    (poly,) = pixel_boxes_to_polygons(BOXES[:1], rasters.TRANSFORM)
    assert poly.bounds == (500000.0, 4999990.0, 500005.0, 5000000.0)
    assert poly.area == pytest.approx(10 * 20 * 0.25)
    assert poly.exterior.is_ccw and poly.exterior.is_closed


@pytest.mark.parametrize("transform", [rasters.TRANSFORM, rasters.ROTATED, Affine.identity()])
def test_pixel_crs_pixel_round_trip(transform: Affine) -> None:
    polys = pixel_boxes_to_polygons(BOXES, transform)
    assert len(polys) == len(BOXES)
    for poly, box in zip(polys, BOXES, strict=True):
        assert poly.exterior.is_ccw and poly.is_valid
        assert poly.area == pytest.approx(
            (box[2] - box[0]) * (box[3] - box[1]) * abs(transform.determinant)
        )
        back = crs_to_pixel(np.asarray(poly.exterior.coords), transform)
        x1, y1, x2, y2 = box
        assert np.abs(back.min(0) - [x1, y1]).max() < 1.0
        assert np.abs(back.max(0) - [x2, y2]).max() < 1.0
    points = np.random.default_rng(0).uniform(0, 256, size=(100, 2))
    np.testing.assert_allclose(
        crs_to_pixel(pixel_to_crs(points, transform), transform), points, atol=1e-6
    )


def test_rotated_polygon_is_not_axis_aligned() -> None:
    (poly,) = pixel_boxes_to_polygons(BOXES[:1], rasters.ROTATED)
    xs, ys = np.asarray(poly.exterior.coords)[:-1].T
    assert len(set(np.round(xs, 6))) == 4 and len(set(np.round(ys, 6))) == 4


def test_to_wgs84_lon_lat() -> None:
    polys = pixel_boxes_to_polygons(BOXES, rasters.TRANSFORM)
    wgs = polygons_to_wgs84(polys, rasters.CRS_UTM)
    expected = Transformer.from_crs(rasters.CRS_UTM, "EPSG:4326", always_xy=True)
    for poly, src in zip(wgs, polys, strict=True):
        assert poly.exterior.is_ccw
        lon, lat = np.asarray(poly.exterior.coords).T
        assert (
            (lon > 14.9).all() and (lon < 15.1).all() and (lat > 45.0).all() and (lat < 45.2).all()
        )
        x, y = np.asarray(src.exterior.coords).T
        np.testing.assert_allclose(
            np.stack(expected.transform(x, y), -1), poly.exterior.coords, atol=1e-9
        )


def test_empty_inputs() -> None:
    assert pixel_boxes_to_polygons(np.zeros((0, 4)), rasters.TRANSFORM) == []
    assert polygons_to_wgs84([], rasters.CRS_UTM) == []
