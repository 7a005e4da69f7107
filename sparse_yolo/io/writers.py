"""Detection writers keyed by output suffix; all writes are atomic.

Every GIS format writes one table (:func:`detections_frame`) built with geopandas; the
binary formats are written by pyogrio (GDAL) and pyarrow, never by hand. Formats
(``WRITERS``):
    ``.geojson``: FeatureCollection of box polygons. Geometry is in the source CRS when it
        has one (with the legacy ``crs`` member so GDAL/QGIS/geopandas pick it up), in
        image pixels otherwise, or in RFC 7946 EPSG:4326 lon/lat with ``to_wgs84=True``.
        Properties: ``class_id``, ``class_name``, ``score``, ``bbox_px`` (x1, y1, x2, y2 in
        full-image pixels) and ``source`` (file name).
    ``.parquet`` (GeoParquet), ``.gpkg`` (GeoPackage, layer ``detections``), ``.fgb``
        (FlatGeobuf): the same geometry and CRS, with columns ``source``, ``class_id``,
        ``class_name``, ``score`` and the pixel box as ``x1, y1, x2, y2``.
    ``.json``: COCO results list (``pycocotools`` ``COCO.loadRes`` format); ``image_id`` is
        the index of the source in ``items`` and ``category_id`` the model's class id.
    ``.csv``: ``source,class_id,class_name,score,x1,y1,x2,y2`` (pixels), plus
        ``geometry_wkt`` when any source is georeferenced.
The preview image lives in :mod:`sparse_yolo.io.preview`.
"""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import shapely
from affine import Affine
from rasterio.crs import CRS

from sparse_yolo.atomic import atomic_open, atomic_path
from sparse_yolo.errors import SparseYoloError
from sparse_yolo.geo import pixel_boxes_to_polygons, polygons_to_wgs84
from sparse_yolo.io.preview import class_color, write_preview  # noqa: F401 - re-exported
from sparse_yolo.types import Result

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


# --- one table of detections -----------------------------------------------------------


def detections_frame(items: Sequence[Result], to_wgs84: bool = False, mixed_ok=False):
    """All detections of ``items`` as one GeoDataFrame, the table every GIS format writes.

    Columns: ``source`` (file name), ``class_id``, ``class_name``, ``score``, ``x1``, ``y1``,
    ``x2``, ``y2`` (full-image pixels) and ``geometry`` (box polygons in the shared CRS,
    EPSG:4326 lon/lat with ``to_wgs84``, or pixels when no source has a CRS).

    Args:
        items: one record per source.
        to_wgs84: reproject every geometry to EPSG:4326.
        mixed_ok: allow plain-pixel sources beside georeferenced ones (their geometry is
            empty); only CSV can say that.

    Raises:
        SparseYoloError: sources in different CRSs without ``to_wgs84``, or mixed
            georeferenced and plain sources without ``mixed_ok``.
    """
    import geopandas as gpd  # noqa: PLC0415 - pandas only when writing

    crs = _output_crs(items, to_wgs84)
    if crs is not None and not mixed_ok and any(item.georef.crs is None for item in items):
        plain = next(item.name for item in items if item.georef.crs is None)
        raise SparseYoloError(
            f"mixes georeferenced and plain-pixel sources ({plain} has no CRS); "
            "write them to separate files"
        )
    columns: dict[str, list[Any]] = {k: [] for k in (*FRAME_COLUMNS, "geometry")}
    for item in items:
        plain_beside_crs = item.georef.crs is None and crs is not None
        geoms = [None] * len(item.detections) if plain_beside_crs else _geometries(item, to_wgs84)
        for geom, (cls, name, score, box) in zip(geoms, _rows(item), strict=True):
            for key, value in zip(FRAME_COLUMNS, (item.name, cls, name, score, *box), strict=True):
                columns[key].append(value)
            columns["geometry"].append(geom)
    geometry = columns.pop("geometry")
    frame_crs = "EPSG:4326" if to_wgs84 else crs
    frame = gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries(geometry, crs=frame_crs))
    frame = frame.astype({"class_id": "int64", "score": "float64"})
    frame.attrs["rfc7946"] = to_wgs84  # lon/lat in EPSG:4326: GeoJSON names no CRS
    return frame


FRAME_COLUMNS = ("source", "class_id", "class_name", "score", "x1", "y1", "x2", "y2")


# --- writers ----------------------------------------------------------------------------


def write_geojson(fh: IO[str], frame) -> None:
    """Write a GeoJSON FeatureCollection (see the module docstring)."""
    features = []
    for row, geom in zip(
        frame[list(FRAME_COLUMNS)].itertuples(index=False), frame.geometry, strict=True
    ):
        props = {
            "class_id": int(row.class_id),
            "class_name": row.class_name,
            "score": float(row.score),
            "bbox_px": [float(row.x1), float(row.y1), float(row.x2), float(row.y2)],
            "source": row.source,
        }
        features.append(
            {"type": "Feature", "geometry": shapely.geometry.mapping(geom), "properties": props}
        )
    collection: dict[str, Any] = {"type": "FeatureCollection"}
    if frame.crs is not None and not frame.attrs.get("rfc7946"):
        collection["crs"] = {"type": "name", "properties": {"name": _epsg_or_wkt(frame.crs)}}
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


def write_csv(fh: IO[str], frame) -> None:
    """Write one CSV row per detection; ``geometry_wkt`` is blank for sources without CRS."""
    with_wkt = frame.crs is not None
    writer = csv.writer(fh, lineterminator="\n")
    writer.writerow([*FRAME_COLUMNS, *(["geometry_wkt"] if with_wkt else [])])
    for row, geom in zip(
        frame[list(FRAME_COLUMNS)].itertuples(index=False), frame.geometry, strict=True
    ):
        wkt = "" if geom is None else shapely.to_wkt(geom, rounding_precision=-1)
        writer.writerow([*row, *([wkt] if with_wkt else [])])


def _ogr(driver: str) -> Callable[[Path, Any], None]:
    def write(path: Path, frame) -> None:
        with warnings.catch_warnings():  # pixel coordinates have no CRS, by design
            warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)
            frame.to_file(
                path, driver=driver, engine="pyogrio", layer="detections", geometry_type="Polygon"
            )

    return write


def _parquet(path: Path, frame) -> None:
    frame.to_parquet(path, index=False)


TEXT_WRITERS: dict[str, Callable[[IO[str], Any], None]] = {
    ".geojson": write_geojson,
    ".csv": write_csv,
}
FILE_WRITERS: dict[str, Callable[[Path, Any], None]] = {
    ".parquet": _parquet,  # GeoParquet, through pyarrow
    ".gpkg": _ogr("GPKG"),
    ".fgb": _ogr("FlatGeobuf"),
}
FRAME_WRITERS = (*TEXT_WRITERS, *FILE_WRITERS)
WRITERS = (".geojson", ".json", ".csv", *FILE_WRITERS)


def write_frame(path: str | Path, frame) -> None:
    """Write a detections table (:func:`detections_frame`'s columns) by ``path``'s suffix.

    Raises:
        SparseYoloError: a suffix without a table format, or a failed write. Nothing is
            left at ``path`` (or next to it) when writing fails.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in TEXT_WRITERS:
        with atomic_open(path) as fh:
            TEXT_WRITERS[suffix](fh, frame)
    elif suffix in FILE_WRITERS:
        with atomic_path(path) as tmp:
            FILE_WRITERS[suffix](tmp, frame)
    else:
        known = ", ".join(FRAME_WRITERS)
        raise SparseYoloError(
            f"cannot write a detections table as {suffix!r}; known: {known}", path
        )


def write_detections(path: str | Path, items: Sequence[Result], to_wgs84: bool = False) -> None:
    """Write detections of one or more sources to ``path`` in the format its suffix names.

    Args:
        path: output file; ``.geojson``, ``.json`` (COCO results), ``.csv``, ``.parquet``
            (GeoParquet), ``.gpkg`` (GeoPackage) or ``.fgb`` (FlatGeobuf).
        items: one record per source, in input order (COCO ``image_id`` is this index).
        to_wgs84: write geometries as EPSG:4326 lon/lat (every format but COCO).

    Raises:
        SparseYoloError: unknown suffix, incompatible sources, or a failed write. Nothing is
            left at ``path`` (or next to it) when writing fails.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITERS:
        raise SparseYoloError(
            f"unknown output format {path.suffix or '(no suffix)'!r}; known: {', '.join(WRITERS)}",
            path,
        )
    if suffix == ".json":
        with atomic_open(path) as fh:
            write_coco(fh, items, to_wgs84)
        return
    frame = detections_frame(items, to_wgs84, mixed_ok=suffix == ".csv")
    if not path.parent.is_dir():
        raise SparseYoloError(f"output directory {path.parent} does not exist", path)
    write_frame(path, frame)
