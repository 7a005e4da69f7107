"""Detection writers (GeoJSON, COCO results, CSV), preview PNG and atomic writes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import geopandas as gpd
import numpy as np
import pytest
import rasters
import shapely
from affine import Affine
from rasterio.crs import CRS

from sparse_yolo.errors import SparseYoloError
from sparse_yolo.geo import pixel_boxes_to_polygons
from sparse_yolo.io import writers
from sparse_yolo.io.writers import WRITERS, write_detections, write_preview
from sparse_yolo.types import Detections, GeoRef, Result, RunStats

NAMES = {0: "person", 1: "car", 2: "boat"}
BOXES = np.array([[10, 20, 30, 50], [100.5, 100.25, 120, 130], [200, 5, 256, 40]], np.float32)


def _dets(n: int = 3) -> Detections:
    return Detections(BOXES[:n], np.array([0.9, 0.5, 0.31])[:n], np.array([0, 1, 2])[:n], NAMES)


def _item(
    source: str = "dir/a.tif",
    crs: str | CRS | None = rasters.CRS_UTM,
    transform: Affine = rasters.TRANSFORM,
    n: int = 3,
) -> Result:
    crs = CRS.from_user_input(crs) if isinstance(crs, str) else crs
    georef = GeoRef(256, 256, crs, transform if crs else Affine.identity())
    return Result(_dets(n), RunStats(), source, georef)


def test_geojson_read_by_geopandas_with_crs(tmp_path: Path) -> None:
    out = tmp_path / "dets.geojson"
    write_detections(out, [_item(), _item("b.tif", n=1)])
    raw = json.loads(out.read_text())
    assert raw["type"] == "FeatureCollection"
    assert raw["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    props = raw["features"][1]["properties"]
    assert set(props) == {"class_id", "class_name", "score", "bbox_px", "source"}
    assert props == {
        "class_id": 1,
        "class_name": "car",
        "score": pytest.approx(0.5),
        "bbox_px": [100.5, 100.25, 120.0, 130.0],
        "source": "a.tif",
    }
    gdf = gpd.read_file(out)
    assert gdf.crs.to_epsg() == 32633
    assert len(gdf) == 4 and list(gdf["source"]) == ["a.tif"] * 3 + ["b.tif"]
    assert gdf["class_id"].dtype.kind == "i" and gdf["score"].dtype.kind == "f"
    expected = pixel_boxes_to_polygons(BOXES, rasters.TRANSFORM)
    for geom, poly in zip(gdf.geometry[:3], expected, strict=True):
        assert geom.equals_exact(poly, 1e-6)
        assert geom.exterior.is_ccw


def test_geojson_pixels_without_crs(tmp_path: Path) -> None:
    out = tmp_path / "plain.geojson"
    write_detections(out, [_item("img.jpg", crs=None)])
    raw = json.loads(out.read_text())
    assert "crs" not in raw
    ring = np.array(raw["features"][0]["geometry"]["coordinates"][0])
    assert ring.min(0).tolist() == [10, 20] and ring.max(0).tolist() == [30, 50]


def test_geojson_crs_without_epsg_uses_wkt(tmp_path: Path) -> None:
    custom = CRS.from_proj4(
        "+proj=tmerc +lat_0=0 +lon_0=13.3 +k=0.9996 +x_0=500000 +y_0=0 +ellps=GRS80 +units=m"
    )
    out = tmp_path / "custom.geojson"
    write_detections(out, [_item(crs=custom)])
    gdf = gpd.read_file(out)
    assert gdf.crs is not None and gdf.crs.equals(custom.to_wkt())


def test_geojson_to_wgs84(tmp_path: Path) -> None:
    out = tmp_path / "wgs.geojson"
    write_detections(out, [_item(), _item("r.tif", transform=rasters.ROTATED)], to_wgs84=True)
    raw = json.loads(out.read_text())
    assert "crs" not in raw
    coords = np.concatenate([np.array(f["geometry"]["coordinates"][0]) for f in raw["features"]])
    lon, lat = coords.T
    assert (lon > 14.9).all() and (lon < 15.1).all() and (lat > 45.0).all() and (lat < 45.2).all()
    gdf = gpd.read_file(out)
    assert gdf.crs.to_epsg() == 4326 and all(g.exterior.is_ccw for g in gdf.geometry)


def test_mixed_crs_needs_to_wgs84(tmp_path: Path) -> None:
    out = tmp_path / "mixed.geojson"
    items = [_item(), _item("b.tif", crs="EPSG:32618")]
    with pytest.raises(SparseYoloError, match="--to-wgs84"):
        write_detections(out, items)
    assert list(tmp_path.iterdir()) == []
    write_detections(out, items, to_wgs84=True)
    assert len(gpd.read_file(out)) == 6


def test_mixed_georeferenced_and_plain_geojson_rejected(tmp_path: Path) -> None:
    with pytest.raises(SparseYoloError, match="img.jpg has no CRS"):
        write_detections(tmp_path / "x.geojson", [_item(), _item("img.jpg", crs=None)])
    with pytest.raises(SparseYoloError, match="img.jpg"):
        write_detections(tmp_path / "x.geojson", [_item("img.jpg", crs=None)], to_wgs84=True)
    assert list(tmp_path.iterdir()) == []


def test_coco_results_load_with_pycocotools(tmp_path: Path) -> None:
    coco = pytest.importorskip("pycocotools.coco")
    out = tmp_path / "results.json"
    write_detections(out, [_item(), _item("b.tif", n=2)])
    results = json.loads(out.read_text())
    assert isinstance(results, list) and len(results) == 5
    assert set(results[0]) == {"image_id", "category_id", "bbox", "score"}
    assert results[1]["bbox"] == [100.5, 100.25, 19.5, 29.75]
    gt = coco.COCO()
    gt.dataset = {
        "images": [
            {"id": i, "width": 256, "height": 256, "file_name": f}
            for i, f in enumerate(["a.tif", "b.tif"])
        ],
        "annotations": [],
        "categories": [{"id": i, "name": n} for i, n in NAMES.items()],
    }
    gt.createIndex()
    res = gt.loadRes(str(out))
    assert len(res.getAnnIds(imgIds=[0])) == 3 and len(res.getAnnIds(imgIds=[1])) == 2
    assert res.anns[1]["area"] == pytest.approx(20 * 30)


def test_csv_header_and_wkt(tmp_path: Path) -> None:
    out = tmp_path / "dets.csv"
    write_detections(out, [_item(), _item("img.png", crs=None, n=1)])
    with out.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == [
        "source",
        "class_id",
        "class_name",
        "score",
        "x1",
        "y1",
        "x2",
        "y2",
        "geometry_wkt",
    ]
    assert len(rows) == 5
    assert rows[1][:8] == ["a.tif", "0", "person", "0.9", "10.0", "20.0", "30.0", "50.0"]
    geom = shapely.from_wkt(rows[1][8])
    assert geom.equals_exact(pixel_boxes_to_polygons(BOXES[:1], rasters.TRANSFORM)[0], 1e-6)
    assert rows[4][0] == "img.png" and rows[4][8] == ""


def test_csv_without_crs_has_plain_header(tmp_path: Path) -> None:
    out = tmp_path / "plain.csv"
    write_detections(out, [_item("a.jpg", crs=None)])
    assert out.read_text().splitlines()[0] == "source,class_id,class_name,score,x1,y1,x2,y2"


def test_unknown_suffix_lists_known(tmp_path: Path) -> None:
    with pytest.raises(SparseYoloError) as info:
        write_detections(tmp_path / "out.kml", [_item()])
    assert all(suffix in str(info.value) for suffix in WRITERS)
    assert "out.kml" in str(info.value) and list(tmp_path.iterdir()) == []


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_dump(obj: object, fh: object) -> None:
        fh.write('{"type": "FeatureCollection", "features": [')  # type: ignore[attr-defined]
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(writers.json, "dump", broken_dump)
    with pytest.raises(RuntimeError):
        write_detections(tmp_path / "dets.geojson", [_item()])
    assert list(tmp_path.iterdir()) == []
    previous = tmp_path / "old.json"
    previous.write_text("[]")
    with pytest.raises(RuntimeError):
        write_detections(previous, [_item()])
    assert previous.read_text() == "[]" and list(tmp_path.iterdir()) == [previous]


def test_missing_output_directory(tmp_path: Path) -> None:
    with pytest.raises(SparseYoloError, match="does not exist"):
        write_detections(tmp_path / "nope" / "dets.geojson", [_item()])


def test_preview_png(tmp_path: Path) -> None:
    image = np.full((128, 128, 3), 40, np.uint8)  # a 0.5x overview of a 256x256 raster
    out = tmp_path / "preview.png"
    write_preview(
        out, image, BOXES, np.array([0, 1, 2]), np.array([0.9, 0.5, 0.3]), NAMES, scale=0.5
    )
    drawn = cv2.imread(str(out))
    assert drawn.shape == (128, 128, 3)
    assert (drawn[10:25, 5] != 40).any()  # left edge of box 0 at x = 10 * 0.5
    assert (image == 40).all()  # input untouched
    small = tmp_path / "small.png"
    write_preview(
        small, image, BOXES, np.array([0, 1, 2]), np.array([0.9, 0.5, 0.3]), NAMES, 0.5, max_side=64
    )
    assert cv2.imread(str(small)).shape == (64, 64, 3)
    with pytest.raises(SparseYoloError, match="png"):
        write_preview(tmp_path / "p.tif", image, BOXES, np.zeros(3), np.zeros(3), NAMES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preview.png", "small.png"]


def _read(path: Path) -> gpd.GeoDataFrame:
    """Rows in input order (FlatGeobuf's spatial index stores them in Hilbert order)."""
    gdf = gpd.read_parquet(path) if path.suffix == ".parquet" else gpd.read_file(path)
    return gdf.sort_values(["source", "x1"], kind="stable").reset_index(drop=True)


@pytest.mark.parametrize("suffix", [".parquet", ".gpkg", ".fgb"])
def test_archive_formats_open_in_geopandas_with_crs_and_properties(tmp_path, suffix):
    out = tmp_path / f"dets{suffix}"
    write_detections(out, [_item(), _item("b.tif", n=1)])
    gdf = _read(out)
    assert gdf.crs.to_epsg() == 32633 and len(gdf) == 4
    assert list(gdf.columns) == [*writers.FRAME_COLUMNS, "geometry"]
    row = gdf.iloc[1]
    assert (row.source, row.class_id, row.class_name) == ("a.tif", 1, "car")
    assert row.score == pytest.approx(0.5) and [row.x1, row.y1, row.x2, row.y2] == [
        100.5,
        100.25,
        120.0,
        130.0,
    ]
    assert gdf["class_id"].dtype.kind == "i" and gdf["score"].dtype.kind == "f"
    expected = pixel_boxes_to_polygons(BOXES, rasters.TRANSFORM)
    for geom, poly in zip(gdf.geometry[:3], expected, strict=True):
        assert geom.equals_exact(poly, 1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no sidecar, no temp


@pytest.mark.parametrize("suffix", [".parquet", ".gpkg", ".fgb"])
def test_archive_formats_in_wgs84_in_pixels_and_empty(tmp_path, suffix):
    wgs = tmp_path / f"wgs{suffix}"
    write_detections(wgs, [_item(), _item("r.tif", transform=rasters.ROTATED)], to_wgs84=True)
    gdf = _read(wgs)
    assert gdf.crs.to_epsg() == 4326
    lon, lat = gdf.geometry.bounds["minx"], gdf.geometry.bounds["miny"]
    assert lon.between(14.9, 15.1).all() and lat.between(45.0, 45.2).all()
    plain = tmp_path / f"plain{suffix}"
    write_detections(plain, [_item("img.jpg", crs=None)])
    gdf = _read(plain)
    assert gdf.crs is None and gdf.total_bounds.tolist() == [10, 5, 256, 130]
    empty = tmp_path / f"empty{suffix}"
    write_detections(empty, [_item(n=0)])
    gdf = _read(empty)
    assert len(gdf) == 0 and gdf.crs.to_epsg() == 32633


def test_failed_archive_write_leaves_nothing(tmp_path, monkeypatch):
    def broken(self, path, **kwargs):
        Path(path).write_bytes(b"half a GeoPackage")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(gpd.GeoDataFrame, "to_file", broken)
    with pytest.raises(RuntimeError):
        write_detections(tmp_path / "dets.gpkg", [_item()])
    assert list(tmp_path.iterdir()) == []
