"""Raster and plain-image sources, and tile windows."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio
import rasters
from rasterio.windows import Window

from sparse_yolo.errors import SparseYoloError
from sparse_yolo.io.raster import PlainImageSource, RasterSource, open_source
from sparse_yolo.io.tiles import tile_windows
from sparse_yolo.tiling import tile_align, tile_cores, tile_offsets

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def _read_all(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open_source(path) as src:
        return src.read(src.full_window)


def test_rgb_is_bgr_with_nodata_invalid(tmp_path: Path) -> None:
    path = rasters.rgb_utm(tmp_path)
    with open_source(path) as src:
        assert isinstance(src, RasterSource)
        assert (src.width, src.height) == (256, 256)
        assert src.crs == rasterio.crs.CRS.from_string(rasters.CRS_UTM)
        assert src.transform == rasters.TRANSFORM
        bgr, valid = src.read(src.full_window)
    assert bgr.shape == (256, 256, 3) and bgr.dtype == np.uint8
    assert valid.shape == (256, 256) and valid.dtype == bool
    assert (bgr[rasters.COLOR_PATCH] == [50, 100, 200]).all()  # B, G, R
    assert not valid[rasters.NODATA_BLOCK].any()
    assert valid.sum() == 256 * 256 - 64 * 64
    np.testing.assert_array_equal(bgr[~valid], 0)


def test_window_read_matches_full_read(tmp_path: Path) -> None:
    path = rasters.gray_uint16(tmp_path)  # stretched: windows must share one stretch
    with open_source(path) as src:
        full, full_valid = src.read(src.full_window)
        part, part_valid = src.read(Window(30, 50, 100, 70))
    assert part.shape == (70, 100, 3)
    np.testing.assert_array_equal(part, full[50:120, 30:130])
    np.testing.assert_array_equal(part_valid, full_valid[50:120, 30:130])


def test_uint16_single_band_stretch(tmp_path: Path) -> None:
    bgr, valid = _read_all(rasters.gray_uint16(tmp_path))
    assert bgr.shape == (256, 256, 3) and bgr.dtype == np.uint8
    assert (bgr[..., 0] == bgr[..., 1]).all() and (bgr[..., 1] == bgr[..., 2]).all()
    assert not valid[rasters.NODATA_BLOCK].any() and valid.mean() == pytest.approx(0.9375)
    values = bgr[..., 0][valid]
    assert values.min() <= 3 and values.max() >= 252  # 2nd..98th percentile -> 0..255
    assert 100 < values.mean() < 155
    assert (np.diff(bgr[200, :, 0].astype(int)) > -40).all()  # the ramp stays a ramp


def test_float32_with_nan_is_stretched_and_invalid(tmp_path: Path) -> None:
    data = np.linspace(-1.0, 1.0, 64 * 64, dtype=np.float32).reshape(1, 64, 64)
    data[0, :8] = np.nan
    bgr, valid = _read_all(rasters.write_raster(tmp_path / "f.tif", data))
    assert not valid[:8].any() and valid[8:].all()
    assert bgr[8:].min() <= 3 and bgr[8:].max() >= 252


@pytest.mark.parametrize("tag_alpha", [True, False])
def test_rgba_alpha_hole_invalid(tmp_path: Path, tag_alpha: bool) -> None:
    bgr, valid = _read_all(rasters.rgba(tmp_path, tag_alpha=tag_alpha))
    assert bgr.shape == (256, 256, 3) and bgr.dtype == np.uint8
    assert not valid[rasters.ALPHA_HOLE].any()
    assert valid.sum() == 256 * 256 - 50 * 50
    assert (bgr[rasters.COLOR_PATCH] == [50, 100, 200]).all()


def test_rotated_affine_kept(tmp_path: Path) -> None:
    with open_source(rasters.rotated(tmp_path)) as src:
        assert src.transform.almost_equals(rasters.ROTATED)
        bgr, valid = src.read(Window(0, 0, 16, 16))
    assert bgr.shape == (16, 16, 3) and valid.all()


def test_no_crs_gives_none_and_identity(tmp_path: Path) -> None:
    with open_source(rasters.no_crs(tmp_path)) as src:
        assert src.crs is None
        assert src.transform.is_identity


def test_overview_is_downscaled(tmp_path: Path) -> None:
    with open_source(rasters.rgb_utm(tmp_path)) as src:
        bgr, valid, scale = src.read_overview(max_side=64)
    assert bgr.shape == (64, 64, 3) and valid.shape == (64, 64)
    assert scale == pytest.approx(0.25)
    assert not valid[:16, :16].any() and valid[20:, 20:].all()


def test_window_outside_image_rejected(tmp_path: Path) -> None:
    with open_source(rasters.rgb_utm(tmp_path)) as src, pytest.raises(ValueError):
        src.read(Window(200, 200, 100, 100))


def test_plain_images(tmp_path: Path) -> None:
    bgr = rasters.rgb_bands()[::-1].transpose(1, 2, 0).copy()  # RGB bands -> BGR image
    cv2.imwrite(str(tmp_path / "a.png"), bgr)
    bgra = np.dstack([bgr, np.full((256, 256), 255, np.uint8)])
    bgra[rasters.ALPHA_HOLE] = 0
    cv2.imwrite(str(tmp_path / "b.png"), bgra)
    cv2.imwrite(str(tmp_path / "c.png"), bgr[..., 1])
    with open_source(tmp_path / "a.png") as src:
        assert isinstance(src, PlainImageSource) and src.crs is None
        out, valid = src.read(Window(200, 100, 10, 10))
        assert (out == [50, 100, 200]).all() and valid.all()
    out, valid = _read_all(tmp_path / "b.png")
    assert not valid[rasters.ALPHA_HOLE].any() and valid.sum() == 256 * 256 - 2500
    out, valid = _read_all(tmp_path / "c.png")
    assert out.shape == (256, 256, 3) and (out[..., 0] == bgr[..., 1]).all()


def _text_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_text("this is not an image\n")
    return path


def _empty_png(tmp_path: Path) -> Path:
    path = tmp_path / "zero.png"
    path.write_bytes(b"")
    return path


BAD_INPUTS = {
    "two_band": (rasters.two_band, "unsupported band count 2 (expected 1, 3 or 4)"),
    "truncated": (rasters.truncated, "truncated or corrupt"),
    "text_tif": (lambda p: _text_file(p, "x.tif"), "cannot open as a raster"),
    "text_jpg": (lambda p: _text_file(p, "x.jpg"), "not a readable image"),
    "zero_png": (_empty_png, "empty file"),
    "all_nodata": (rasters.all_nodata, "all pixels are nodata"),
    "missing": (lambda p: p / "missing.tif", "no such file"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_one_line_error(tmp_path: Path, case: str) -> None:
    make, expected = BAD_INPUTS[case]
    path = make(tmp_path)
    with pytest.raises(SparseYoloError) as info:
        _read_all(path)
    message = str(info.value)
    assert path.name in message and expected in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("width", "height", "tile", "overlap"),
    [
        (256, 256, 64, 16),
        (1000, 700, 256, 32),
        (300, 90, 128, 0),
        (50, 40, 128, 16),
        (129, 128, 128, 8),
    ],
)
def test_tile_windows_cover_and_stay_inside(
    width: int, height: int, tile: int, overlap: int
) -> None:
    windows = tile_windows(width, height, tile, overlap)
    align = tile_align(tile, overlap)
    hits = np.zeros((height, width), dtype=int)
    for w in windows:
        assert w.col_off % align == 0 and w.row_off % align == 0  # on the model's lattice
        assert w.col_off >= 0 and w.row_off >= 0
        for off, size, full in ((w.col_off, w.width, width), (w.row_off, w.height, height)):
            if off + size < full:
                assert size == tile  # every tile but the last of a row / column
            else:  # the last runs to the edge, at most align - 1 px longer than a tile
                assert off + size == full and min(tile, full) <= size < tile + align
        hits[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] += 1
    assert (hits >= 1).all()
    keys = [(w.row_off, w.col_off) for w in windows]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)  # row-major, no duplicates
    cols = sorted({w.col_off for w in windows})
    for a, b in itertools.pairwise(cols):
        assert a + min(tile, width) - b >= overlap  # neighbours overlap by at least `overlap`


@pytest.mark.parametrize(
    ("size", "tile", "overlap"), [(2160, 1024, 128), (384, 128, 32), (300, 128, 0)]
)
def test_tile_cores_partition_the_axis_inside_their_tiles(size, tile, overlap) -> None:
    spans = dict(tile_offsets(size, tile, overlap))
    cores = tile_cores(size, tile, overlap)
    bounds = sorted(cores.values())
    assert bounds[0][0] == 0 and bounds[-1][1] == size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))  # no gap, no overlap
    for start, (lo, hi) in cores.items():
        end = start + spans[start]
        assert lo < hi
        # half an overlap of real pixels around a core wherever a neighbour tile exists
        assert start == 0 or lo - start >= overlap // 2
        assert end == size or end - hi >= overlap // 2


def test_tile_windows_small_raster_is_one_window() -> None:
    assert tile_windows(50, 40, 128, 16) == [Window(0, 0, 50, 40)]
    with pytest.raises(ValueError):
        tile_windows(100, 100, 64, 64)


REAL = {  # name: (min, max) valid fraction of the first 512x512 window
    "cogeo.tif": (0.99, 1.0),
    "RGB.byte.tif": (0.5, 0.95),
    "RGBA.byte.tif": (0.5, 0.95),
    "OSBS_029.tif": (0.95, 1.0),
    "sample_pan16.tif": (0.99, 1.0),
}


@pytest.mark.shared
@pytest.mark.parametrize("name", list(REAL))
def test_real_geotiffs(name: str) -> None:
    path = SHARED / "data" / "geotiff" / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    low, high = REAL[name]
    with open_source(path) as src:
        assert src.crs is not None
        window = Window(0, 0, min(512, src.width), min(512, src.height))
        bgr, valid = src.read(window)
        overview, overview_valid, _ = src.read_overview(256)
    assert bgr.shape == (window.height, window.width, 3) and bgr.dtype == np.uint8
    assert low <= valid.mean() <= high
    assert low - 0.1 <= overview_valid.mean() <= high
    assert bgr[valid].std() > 5  # real texture, not a constant
    assert overview.shape[2] == 3 and max(overview.shape[:2]) == 256


def test_gdal_block_cache_is_bounded_while_a_raster_is_open(tmp_path, monkeypatch) -> None:
    """The cache limit is set through rasterio.Env for the open source only; a user's wins."""
    from sparse_yolo.io.raster import GDAL_CACHEMAX_MB  # noqa: PLC0415

    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    path = rasters.rgb_utm(tmp_path)
    with open_source(path):
        assert rasterio.env.getenv()["GDAL_CACHEMAX"] == GDAL_CACHEMAX_MB * 2**20
    assert not rasterio.env.hasenv() or "GDAL_CACHEMAX" not in rasterio.env.getenv()
    monkeypatch.setenv("GDAL_CACHEMAX", "512")
    with open_source(path):
        assert "GDAL_CACHEMAX" not in rasterio.env.getenv()
