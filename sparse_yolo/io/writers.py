"""Detection writers keyed by output suffix, plus a preview image; all writes are atomic.

Formats (``WRITERS``):
    ``.geojson``: FeatureCollection of box polygons. Geometry is in the source CRS when it
        has one (with the legacy ``crs`` member so GDAL/QGIS/geopandas pick it up), in
        image pixels otherwise, or in RFC 7946 EPSG:4326 lon/lat with ``to_wgs84=True``.
        Properties: ``class_id``, ``class_name``, ``score``, ``bbox_px`` (x1, y1, x2, y2 in
        full-image pixels) and ``source`` (file name).
    ``.json``: COCO results list (``pycocotools`` ``COCO.loadRes`` format); ``image_id`` is
        the index of the source in ``items`` and ``category_id`` the model's class id.
    ``.csv``: ``source,class_id,class_name,score,x1,y1,x2,y2`` (pixels), plus
        ``geometry_wkt`` when any source is georeferenced.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np
import shapely
from affine import Affine
from rasterio.crs import CRS

from sparse_yolo.atomic import atomic_open
from sparse_yolo.errors import SparseYoloError
from sparse_yolo.geo import pixel_boxes_to_polygons, polygons_to_wgs84
from sparse_yolo.types import Result

Writer = Callable[[IO[str], Sequence[Result], bool], None]


# --- atomic files -----------------------------------------------------------------------


# --- coordinate frames ------------------------------------------------------------------


def _epsg_or_wkt(crs: CRS) -> str:
    """The legacy GeoJSON ``crs`` name: an OGC EPSG URN, or the WKT when there is no code."""
    epsg = crs.to_epsg()
    return f"urn:ogc:def:crs:EPSG::{epsg}" if epsg else crs.to_wkt()


def _output_crs(items: Sequence[Result], to_wgs84: bool) -> CRS | None:
    """The one CRS the geometries of ``items`` will share (None: pixels or WGS84).

    Raises:
        SparseYoloError: sources in different CRSs without ``to_wgs84``.
    """
    if to_wgs84:
        return None
    distinct: list[CRS] = []
    for item in items:
        if item.georef.crs is not None and all(item.georef.crs != c for c in distinct):
            distinct.append(item.georef.crs)
    if len(distinct) > 1:
        names = ", ".join(str(c.to_string()) for c in distinct[:4])
        raise SparseYoloError(
            f"sources are in different CRSs ({names}); use --to-wgs84 to write one EPSG:4326 file"
        )
    return distinct[0] if distinct else None


def _geometries(item: Result, to_wgs84: bool) -> list[shapely.Polygon]:
    """Box polygons of one source: CRS units, lon/lat with ``to_wgs84``, or pixels."""
    boxes = item.detections.boxes
    if item.georef.crs is None:
        if to_wgs84:
            raise SparseYoloError("has no CRS, so it cannot be written in WGS84", item.source)
        return pixel_boxes_to_polygons(boxes, Affine.identity())
    polys = pixel_boxes_to_polygons(boxes, item.georef.transform)
    return polygons_to_wgs84(polys, item.georef.crs) if to_wgs84 else polys


def _rows(item: Result) -> Iterator[tuple[int, str, float, list[float]]]:
    """(class_id, class_name, score, [x1, y1, x2, y2] pixels) per detection."""
    det = item.detections
    for cls, score, box in zip(
        det.classes.tolist(), det.scores.tolist(), det.boxes.tolist(), strict=True
    ):
        yield (
            int(cls),
            det.names.get(int(cls), str(cls)),
            round(score, 5),
            [round(v, 2) for v in box],
        )


# --- writers ----------------------------------------------------------------------------


def write_geojson(fh: IO[str], items: Sequence[Result], to_wgs84: bool) -> None:
    """Write a GeoJSON FeatureCollection (see the module docstring)."""
    crs = _output_crs(items, to_wgs84)
    if crs is not None and any(item.georef.crs is None for item in items):
        plain = next(item.name for item in items if item.georef.crs is None)
        raise SparseYoloError(
            f"mixes georeferenced and plain-pixel sources ({plain} has no CRS); "
            "write them to separate files"
        )
    features = []
    for item in items:
        for poly, (cls, name, score, box) in zip(
            _geometries(item, to_wgs84), _rows(item), strict=True
        ):
            props = {
                "class_id": cls,
                "class_name": name,
                "score": score,
                "bbox_px": box,
                "source": item.name,
            }
            features.append(
                {"type": "Feature", "geometry": shapely.geometry.mapping(poly), "properties": props}
            )
    collection: dict[str, Any] = {"type": "FeatureCollection"}
    if crs is not None:
        collection["crs"] = {"type": "name", "properties": {"name": _epsg_or_wkt(crs)}}
    collection["features"] = features
    json.dump(collection, fh)


def write_coco(fh: IO[str], items: Sequence[Result], to_wgs84: bool) -> None:
    """Write a COCO results list; ``to_wgs84`` is ignored (COCO is pixels only)."""
    results = [
        {
            "image_id": i,
            "category_id": cls,
            "bbox": [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)],
            "score": score,
        }
        for i, item in enumerate(items)
        for cls, _, score, (x1, y1, x2, y2) in _rows(item)
    ]
    json.dump(results, fh)


def write_csv(fh: IO[str], items: Sequence[Result], to_wgs84: bool) -> None:
    """Write one CSV row per detection; ``geometry_wkt`` is blank for sources without CRS."""
    _output_crs(items, to_wgs84)
    with_wkt = any(item.georef.crs is not None for item in items)
    writer = csv.writer(fh, lineterminator="\n")
    writer.writerow(
        ["source", "class_id", "class_name", "score", "x1", "y1", "x2", "y2"]
        + (["geometry_wkt"] if with_wkt else [])
    )
    for item in items:
        geoms = (
            _geometries(item, to_wgs84)
            if item.georef.crs is not None
            else [None] * len(item.detections)
        )
        for geom, (cls, name, score, box) in zip(geoms, _rows(item), strict=True):
            wkt = (
                [shapely.to_wkt(geom, rounding_precision=-1) if geom is not None else ""]
                if with_wkt
                else []
            )
            writer.writerow([item.name, cls, name, score, *box, *wkt])


WRITERS: dict[str, Writer] = {".geojson": write_geojson, ".json": write_coco, ".csv": write_csv}


def write_detections(path: str | Path, items: Sequence[Result], to_wgs84: bool = False) -> None:
    """Write detections of one or more sources to ``path`` in the format its suffix names.

    Args:
        path: output file; ``.geojson``, ``.json`` (COCO results) or ``.csv``.
        items: one record per source, in input order (COCO ``image_id`` is this index).
        to_wgs84: write geometries as EPSG:4326 lon/lat (GeoJSON, CSV).

    Raises:
        SparseYoloError: unknown suffix, incompatible sources, or a failed write. Nothing is
            left at ``path`` (or next to it) when writing fails.
    """
    path = Path(path)
    writer = WRITERS.get(path.suffix.lower())
    if writer is None:
        raise SparseYoloError(
            f"unknown output format {path.suffix or '(no suffix)'!r}; known: {', '.join(WRITERS)}",
            path,
        )
    with atomic_open(path) as fh:
        writer(fh, items, to_wgs84)


# --- preview ----------------------------------------------------------------------------


def class_color(class_id: int) -> tuple[int, int, int]:
    """A stable, saturated BGR colour for a class id."""
    hue = (class_id * 47) % 180  # OpenCV hue range is 0..179
    bgr = cv2.cvtColor(np.array([[[hue, 220, 255]]], dtype=np.uint8), cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


def write_preview(
    path: str | Path,
    image_bgr: np.ndarray,
    boxes_xyxy: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray,
    names: dict[int, str],
    scale: float = 1.0,
    max_side: int | None = None,
) -> None:
    """Draw boxes on an image and write it (PNG, or JPEG by suffix) atomically.

    Args:
        path: output image, ``.png`` (or ``.jpg``/``.jpeg``).
        image_bgr: ``(h, w, 3)`` uint8 BGR, e.g. ``ImageSource.read_overview()``'s image.
        boxes_xyxy: ``(N, 4)`` xyxy in full-image pixels.
        classes: ``(N,)`` class ids.
        scores: ``(N,)`` confidences.
        names: class id -> name for the labels.
        scale: image pixels per full-image pixel (the overview's ``scale``; 1.0 when
            ``image_bgr`` is the full image).
        max_side: if given, downscale the image further so its long side fits.

    Raises:
        SparseYoloError: unsupported suffix or a failed write.
    """
    path = Path(path)
    if path.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise SparseYoloError("preview must be a .png (or .jpg) file", path)
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(
            f"image_bgr must be (h, w, 3) uint8, got {image_bgr.shape} {image_bgr.dtype}"
        )
    canvas = image_bgr
    if max_side is not None and max(canvas.shape[:2]) > max_side:
        shrink = max_side / max(canvas.shape[:2])
        size = (max(1, round(canvas.shape[1] * shrink)), max(1, round(canvas.shape[0] * shrink)))
        canvas = cv2.resize(canvas, size, interpolation=cv2.INTER_AREA)
        scale *= canvas.shape[1] / image_bgr.shape[1]
    canvas = _draw_boxes(
        canvas.copy(),
        np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4) * scale,
        classes,
        scores,
        names,
    )
    ok, encoded = cv2.imencode(path.suffix.lower(), canvas)
    if not ok:
        raise SparseYoloError("OpenCV could not encode the preview", path)
    with atomic_open(path, binary=True) as fh:
        fh.write(encoded.tobytes())


def _draw_boxes(
    canvas: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray,
    names: dict[int, str],
) -> np.ndarray:
    """Draw ``(N, 4)`` xyxy boxes (canvas pixels) in place, labelled when wide enough."""
    thick = max(1, round(max(canvas.shape[:2]) / 1000))
    for box, cls, score in zip(
        boxes, np.asarray(classes).tolist(), np.asarray(scores).tolist(), strict=True
    ):
        x1, y1, x2, y2 = (round(v) for v in box)
        color = class_color(int(cls))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thick, cv2.LINE_AA)
        if x2 - x1 >= 24:
            label = f"{names.get(int(cls), str(cls))} {score:.2f}"
            cv2.putText(
                canvas,
                label,
                (x1, max(y1 - 3, 10)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.35 * thick,
                color,
                thick,
                cv2.LINE_AA,
            )
    return canvas
