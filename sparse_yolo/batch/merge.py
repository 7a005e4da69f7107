"""Merge per-tile outputs into one file: join edge-cut boxes, drop duplicates, reproject.

Per-tile GeoJSON files are re-read here (not held by the driver), so a resumed batch
merges tiles done by earlier runs too. In order:

1. Tiles in one CRS, north-up and at one resolution, share a pixel frame; in it, the
   pieces of a box cut by the edge between two abutting tiles are joined into one
   (:func:`sparse_yolo.postprocess.join_cut_boxes`).
2. Tiles in different CRSs are reprojected to EPSG:4326 (pyproj).
3. Overlapping tiles see one object twice: class-aware NMS on the boxes' envelopes in the
   shared frame keeps the best (:func:`sparse_yolo.postprocess.nms_boxes`). Plain-pixel
   tiles share no frame, so their boxes are only concatenated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
from affine import Affine

from sparse_yolo.errors import SparseYoloError


@dataclass
class TileTable:
    """The detections of one per-tile output, with the tile's georeference.

    Attributes:
        crs: CRS name from the file (None: plain pixels).
        rows: (N, 4) pixel boxes ``bbox_px`` (x1, y1, x2, y2 in the tile's pixels).
        scores, classes: (N,).
        class_names, sources: (N,) strings.
        geoms: (N,) box polygons in ``crs`` units (or pixels).
        transform, size: the tile raster's affine and (width, height); None when unknown.
        native: the raster's own CRS (``crs`` is EPSG:4326 when written with --to-wgs84).
    """

    crs: str | None
    rows: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    class_names: list[str]
    sources: list[str]
    geoms: list[shapely.Polygon]
    transform: Affine | None = None
    size: tuple[int, int] | None = None
    native: str | None = None


def merge_outputs(
    files: list[Path], sources: list[Path], out: Path, iou: float = 0.5, wgs84: bool = False
) -> int:
    """Merge per-tile GeoJSON ``files`` (of raster ``sources``) into ``out``, by suffix.

    Args:
        files: per-tile outputs, one per source.
        sources: the rasters they came from (their affine lets edge-cut boxes join).
        out: the merged file; its suffix picks the format.
        iou: NMS threshold for objects seen by overlapping tiles.
        wgs84: the per-tile outputs were written in EPSG:4326 lon/lat (``--to-wgs84``).

    Returns:
        The number of merged detections written.

    Raises:
        SparseYoloError: plain-pixel tiles mixed with georeferenced ones, or a failed write.
    """
    from sparse_yolo.io.writers import write_frame  # noqa: PLC0415

    tables = [
        _read(f, s, "EPSG:4326" if wgs84 else None) for f, s in zip(files, sources, strict=True)
    ]
    georef = {t.crs is not None for t in tables}
    if len(georef) > 1:
        raise SparseYoloError("cannot merge pixel-coordinate tiles with georeferenced ones", out)
    crs_names = list(dict.fromkeys(t.crs for t in tables))
    frames = list(dict.fromkeys((t.crs, t.native) for t in tables))  # can share pixels
    tables = [joined for key in frames for joined in _join_edge_cuts(tables, *key)]
    frame = _frame(tables, crs_names)
    if True in georef and len(files) > 1 and len(frame):
        frame = _dedupe(frame, iou)
    write_frame(out, frame)
    return len(frame)


def _read(path: Path, source: Path, default_crs: str | None) -> TileTable:
    """One per-tile GeoJSON, plus its raster's CRS, affine and size when the source opens."""
    collection = json.loads(path.read_text())
    crs = (collection.get("crs") or {}).get("properties", {}).get("name") or default_crs
    feats = collection["features"]
    props = [f["properties"] for f in feats]
    table = TileTable(
        crs,
        np.array([p["bbox_px"] for p in props], np.float64).reshape(-1, 4),
        np.array([p["score"] for p in props], np.float64),
        np.array([p["class_id"] for p in props], np.int64),
        [p["class_name"] for p in props],
        [p["source"] for p in props],
        [shapely.geometry.shape(f["geometry"]) for f in feats],
    )
    if crs is not None:
        try:
            import rasterio  # noqa: PLC0415

            with rasterio.open(source) as ds:
                if ds.crs:
                    table.native = ds.crs.to_string()
                    table.transform, table.size = ds.transform, (ds.width, ds.height)
        except Exception:  # a source gone since its output was written: no joining
            pass
    return table


def _join_edge_cuts(
    tables: list[TileTable], crs: str | None, native: str | None
) -> list[TileTable]:
    """Join edge-cut pieces across the tiles written in ``crs`` from rasters in ``native``
    that share one pixel frame."""
    from sparse_yolo.geo import pixel_boxes_to_polygons, polygons_to_wgs84  # noqa: PLC0415
    from sparse_yolo.postprocess import join_cut_boxes  # noqa: PLC0415

    group = [t for t in tables if (t.crs, t.native) == (crs, native)]
    ref = next((t.transform for t in group if t.transform is not None), None)
    if native is None or ref is None or sum(len(t.scores) for t in group) == 0:
        return group
    offsets = [_offset(t, ref) for t in group]
    boxes = np.concatenate([t.rows + np.tile(o, 2) for t, o in zip(group, offsets, strict=True)])
    foot = np.concatenate(
        [
            np.tile(
                [*o, o[0] + t.size[0], o[1] + t.size[1]] if t.size else np.nan, (len(t.rows), 1)
            )
            for t, o in zip(group, offsets, strict=True)
        ]
    )
    owner = np.concatenate([np.full(len(t.scores), i) for i, t in enumerate(group)])
    scores = np.concatenate([t.scores for t in group])
    classes = np.concatenate([t.classes for t in group])
    keep, fused = join_cut_boxes(boxes, scores, classes, foot)
    geoms = [g for t in group for g in t.geoms]
    joined = ~np.isclose(fused, boxes[keep], equal_nan=True).all(axis=1)
    for k in np.flatnonzero(joined):
        poly = pixel_boxes_to_polygons(fused[k : k + 1], ref)
        geoms[keep[k]] = (polygons_to_wgs84(poly, native) if crs == "EPSG:4326" else poly)[0]
    rows = np.concatenate([t.rows for t in group])
    rows[keep[joined]] = fused[joined] - np.tile(np.array(offsets)[owner[keep[joined]]], 2)
    names = [n for t in group for n in t.class_names]
    sources = [s for t in group for s in t.sources]
    pick = keep.tolist()
    return [
        TileTable(
            crs,
            rows[keep],
            scores[keep],
            classes[keep],
            [names[i] for i in pick],
            [sources[i] for i in pick],
            [geoms[i] for i in pick],
            native=native,
        )
    ]


def _offset(table: TileTable, ref: Affine) -> np.ndarray:
    """The tile's origin in ``ref``'s pixels, or NaN when it shares no pixel frame with it."""
    t = table.transform
    if (
        t is None
        or t.b
        or t.d
        or ref.b
        or ref.d
        or not np.isclose([t.a, t.e], [ref.a, ref.e]).all()
    ):
        return np.array([np.nan, np.nan])
    return np.array([(t.c - ref.c) / ref.a, (t.f - ref.f) / ref.e])


def _frame(tables: list[TileTable], crs_names: list[str | None]):
    """One GeoDataFrame (the writers' columns); several CRSs are reprojected to EPSG:4326."""
    import geopandas as gpd  # noqa: PLC0415

    from sparse_yolo.geo import polygons_to_wgs84  # noqa: PLC0415
    from sparse_yolo.io.writers import FRAME_COLUMNS  # noqa: PLC0415

    to_wgs84 = len(crs_names) > 1
    geoms = [
        g
        for t in tables
        for g in (polygons_to_wgs84(t.geoms, t.crs) if to_wgs84 and t.geoms else t.geoms)
    ]
    rows = np.concatenate([t.rows for t in tables]) if tables else np.zeros((0, 4))
    columns = {
        "source": [s for t in tables for s in t.sources],
        "class_id": np.concatenate([t.classes for t in tables]) if tables else [],
        "class_name": [n for t in tables for n in t.class_names],
        "score": np.concatenate([t.scores for t in tables]) if tables else [],
        **{k: rows[:, i].round(2) for i, k in enumerate(FRAME_COLUMNS[4:])},
    }
    crs = "EPSG:4326" if to_wgs84 else (crs_names[0] if crs_names else None)
    frame = gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries(geoms, crs=crs))
    frame = frame.astype({"class_id": "int64", "score": "float64"})
    frame.attrs["rfc7946"] = crs == "EPSG:4326"  # lon/lat: GeoJSON names no CRS
    return frame


def _dedupe(frame, iou: float):
    """Class-aware NMS over the rows by the envelopes of their geometries (best score kept)."""
    from sparse_yolo.postprocess import nms_boxes  # noqa: PLC0415

    keep = nms_boxes(
        np.array(frame.geometry.bounds, np.float64),
        np.array(frame["score"], np.float64),
        np.array(frame["class_id"], np.int64),
        iou,
    )
    return frame.iloc[keep].reset_index(drop=True)
