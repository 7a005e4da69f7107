"""Regions of interest from vector files: reprojection, rasterisation onto cells, errors."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from pyproj import Transformer
from rasterio.windows import Window
from rasters import ROTATED, TRANSFORM, no_crs, rgb_utm, rotated
from shapely.geometry import Polygon, box

from sparse_yolo import Detector, SparseYoloError
from sparse_yolo.config import MaskConfig
from sparse_yolo.io.raster import open_source
from sparse_yolo.io.roi import load_roi
from tests.conftest import tiny_model

CELL = 16
# pixel rectangle (cols 34..62, rows 50..78): cells cols 2-3, rows 3-4
PIXELS = (34, 50, 62, 78)


def expected_cells(shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, bool)
    out[3:5, 2:4] = True
    return out


def wgs84_roi(tmp_path: Path, affine, name: str = "roi.geojson", **columns) -> Path:
    """The pixel rectangle PIXELS mapped through ``affine`` to UTM 33N, saved in EPSG:4326."""
    c0, r0, c1, r1 = PIXELS
    utm = [affine @ p for p in ((c0, r0), (c1, r0), (c1, r1), (c0, r1))]
    to_wgs = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    poly = Polygon([to_wgs.transform(x, y) for x, y in utm])
    frame = gpd.GeoDataFrame({"kind": ["road"], **columns}, geometry=[poly], crs="EPSG:4326")
    path = tmp_path / name
    frame.to_file(path)
    return path


@pytest.mark.parametrize(("make", "affine"), [(rgb_utm, TRANSFORM), (rotated, ROTATED)])
def test_roi_from_wgs84_lands_on_the_right_cells(tmp_path, make, affine):
    raster = make(tmp_path)
    roi_path = wgs84_roi(tmp_path, affine)
    with open_source(raster) as src:
        roi = load_roi(MaskConfig(roi=str(roi_path)), src)
        cells = roi.cells(Window(0, 0, src.width, src.height), CELL)
        np.testing.assert_array_equal(cells, expected_cells(cells.shape))
        # a tile's own grid: the same cells, shifted by the tile offset (2 cells, 1 cell)
        tile = roi.cells(Window(32, 16, 128, 128), CELL)
        np.testing.assert_array_equal(tile, expected_cells(cells.shape)[1:9, 2:10])


def test_roi_buffer_is_in_metres(tmp_path):
    raster = rgb_utm(tmp_path)  # 0.5 m pixels: 8 m = 16 px = one cell
    roi_path = wgs84_roi(tmp_path, TRANSFORM)
    with open_source(raster) as src:
        roi = load_roi(MaskConfig(roi=str(roi_path), roi_buffer=8.0), src)
        cells = roi.cells(src.full_window, CELL)
    # the 28 px rectangle grows 16 px on each side: cols 18..78 -> cells 1-4, rows 34..94 -> 2-5
    want = np.zeros_like(cells)
    want[2:6, 1:5] = True
    np.testing.assert_array_equal(cells, want)


def test_roi_where_filter_and_detector_examines_only_the_roi(tmp_path):
    raster = rgb_utm(tmp_path)
    c0, r0, c1, r1 = PIXELS
    road = Polygon([TRANSFORM @ p for p in ((c0, r0), (c1, r0), (c1, r1), (c0, r1))])
    river = box(*(TRANSFORM @ (200, 250)), *(TRANSFORM @ (250, 200)))
    path = tmp_path / "mixed.gpkg"
    gpd.GeoDataFrame({"kind": ["road", "river"]}, geometry=[road, river], crs="EPSG:32633").to_file(
        path, layer="features"
    )
    det = Detector(
        tiny_model(),
        mask="all",
        device="cpu",
        **{"mask.roi": str(path), "mask.roi_layer": "features", "mask.roi_where": "kind = 'road'"},
    )
    res = det.predict(raster)
    want = expected_cells(res.mask.cells.shape)
    want[:4, :4] = False  # the raster's nodata block (rows and cols 0..63) stays inactive too
    assert want.sum() == 2
    np.testing.assert_array_equal(res.mask.cells, want)


def one_line_error(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_bad_roi_files_get_one_line_errors(tmp_path):
    raster = rgb_utm(tmp_path)
    garbage = tmp_path / "garbage.geojson"
    garbage.write_text("{not json")
    far = tmp_path / "far.geojson"
    gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)], crs="EPSG:4326").to_file(far)
    no_crs_roi = tmp_path / "nocrs.geojson"
    no_crs_roi.write_text(
        '{"type":"FeatureCollection","features":[{"type":"Feature","properties":{},'
        '"geometry":{"type":"Point","coordinates":[500010,4999990]}}]}'
    )
    cases = {
        tmp_path / "missing.gpkg": "no such ROI file",
        garbage: "cannot read ROI",
        far: "does not overlap",
    }
    with open_source(raster) as src:
        for path, message in cases.items():
            with pytest.raises(SparseYoloError) as exc:
                load_roi(MaskConfig(roi=str(path)), src)
            assert message in one_line_error(exc) and path.name in str(exc.value)
        good = wgs84_roi(tmp_path, TRANSFORM)
        with pytest.raises(SparseYoloError) as exc:
            load_roi(MaskConfig(roi=str(good), roi_where="kind = 'river'"), src)
        assert "no features" in one_line_error(exc)
    with open_source(no_crs(tmp_path)) as src, pytest.raises(SparseYoloError) as exc:
        load_roi(MaskConfig(roi=str(wgs84_roi(tmp_path, TRANSFORM))), src)
    assert "raster has no CRS" in one_line_error(exc)
