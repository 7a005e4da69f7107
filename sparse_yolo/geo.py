"""Georeferencing: raster-pixel boxes to CRS (or WGS84) polygons and back.

Pixel coordinates are (col, row) = (x, y) in the full raster, with (0, 0) the top-left
corner of the top-left pixel, the frame rasterio's affine ``transform`` maps from.
Georeferencing happens last: boxes are merged in pixel space first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS as ProjCRS
from pyproj import Transformer
from shapely import Polygon
from shapely.geometry.polygon import orient


def pixel_to_crs(points: np.ndarray, transform: Affine) -> np.ndarray:
    """Map pixel points to CRS coordinates.

    Args:
        points: ``(..., 2)`` (x=col, y=row) in raster pixels.
        transform: the raster's affine (pixel -> CRS); any rotation or shear is honoured.

    Returns:
        ``(..., 2)`` float64 (x, y) in the raster's CRS.
    """
    p = np.asarray(points, dtype=np.float64)
    t = transform
    x = t.a * p[..., 0] + t.b * p[..., 1] + t.c
    y = t.d * p[..., 0] + t.e * p[..., 1] + t.f
    return np.stack([x, y], axis=-1)


def crs_to_pixel(points: np.ndarray, transform: Affine) -> np.ndarray:
    """Inverse of ``pixel_to_crs``: ``(..., 2)`` CRS (x, y) -> ``(..., 2)`` (col, row) pixels."""
    return pixel_to_crs(points, ~transform)


def _ccw(rings: np.ndarray) -> np.ndarray:
    """Reverse the rings of ``(N, K, 2)`` open rings whose signed area is negative (clockwise)."""
    x, y = rings[..., 0], rings[..., 1]
    area2 = np.sum(x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y, axis=1)
    rings = rings.copy()
    rings[area2 < 0] = rings[area2 < 0, ::-1]
    return rings


def _polygons(rings: np.ndarray) -> list[Polygon]:
    """``(N, K, 2)`` open rings -> closed, counter-clockwise shapely polygons."""
    if len(rings) == 0:
        return []
    rings = _ccw(rings)
    closed = np.concatenate([rings, rings[:, :1]], axis=1)
    return list(shapely.polygons(closed))


def pixel_boxes_to_polygons(boxes_xyxy: np.ndarray, transform: Affine) -> list[Polygon]:
    """Turn pixel boxes into CRS polygons.

    All four corners go through the affine, so rotated or sheared rasters give the right
    (non axis-aligned) quadrilaterals.

    Args:
        boxes_xyxy: ``(N, 4)`` x1, y1, x2, y2 in full-raster pixels.
        transform: the raster's affine (pixel -> CRS); identity keeps pixel coordinates.

    Returns:
        N closed polygons with counter-clockwise exterior rings (RFC 7946), in CRS units.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = boxes.T
    corners = np.stack(
        [
            np.stack([x1, y1], -1),
            np.stack([x2, y1], -1),
            np.stack([x2, y2], -1),
            np.stack([x1, y2], -1),
        ],
        axis=1,
    )  # (N, 4, 2)
    return _polygons(pixel_to_crs(corners, transform))


def polygons_to_wgs84(polys: Sequence[Polygon], crs: Any) -> list[Polygon]:
    """Reproject polygons to EPSG:4326 in (lon, lat) order.

    Only the vertices are reprojected; box edges stay straight, which is exact enough for
    object-sized boxes.

    Args:
        polys: polygons in ``crs`` coordinates.
        crs: anything pyproj accepts (a rasterio ``CRS``, ``"EPSG:32633"``, WKT, ...).

    Returns:
        Polygons in longitude/latitude degrees, counter-clockwise, in input order.
    """
    if len(polys) == 0:
        return []
    transformer = Transformer.from_crs(ProjCRS.from_user_input(crs), "EPSG:4326", always_xy=True)
    exteriors = shapely.get_exterior_ring(np.asarray(polys, dtype=object))
    counts = shapely.get_num_coordinates(exteriors)
    if np.all(counts == counts[0]):  # the usual case (boxes): one vectorised call
        rings = shapely.get_coordinates(exteriors).reshape(len(polys), counts[0], 2)[:, :-1]
        lon, lat = transformer.transform(rings[..., 0], rings[..., 1])
        return _polygons(np.stack([lon, lat], axis=-1))
    return [
        orient(shapely.transform(p, lambda xy: np.column_stack(transformer.transform(*xy.T))))
        for p in polys
    ]
