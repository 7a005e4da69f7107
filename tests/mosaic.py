"""Synthetic georeferenced mosaics cut into abutting tile files, and output readers.

Import as ``from mosaic import ...`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from helpers import scene
from rasterio.transform import from_origin
from rasters import write_raster

ORIGIN = (500000.0, 5000000.0)  # UTM 33N metres, 0.5 m pixels
PIXEL = 0.5


def mosaic_bands(h: int, w: int, seed: int = 5) -> np.ndarray:
    """(3, h, w) uint8 RGB: a plain noisy background with many small objects."""
    return np.ascontiguousarray(scene(h, w, h * w // 6000, seed=seed)[..., ::-1].transpose(2, 0, 1))


def write_tiles(folder: Path, bands: np.ndarray, tile: int) -> list[Path]:
    """Cut ``bands`` into abutting ``tile``-px GeoTIFFs ``r{row}c{col}.tif`` (one pixel frame)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for r in range(0, bands.shape[1], tile):
        for c in range(0, bands.shape[2], tile):
            t = from_origin(ORIGIN[0] + c * PIXEL, ORIGIN[1] - r * PIXEL, PIXEL, PIXEL)
            data = np.ascontiguousarray(bands[:, r : r + tile, c : c + tile])
            paths.append(write_raster(folder / f"r{r // tile}c{c // tile}.tif", data, transform=t))
    return paths


def write_whole(path: Path, bands: np.ndarray) -> Path:
    """The whole mosaic as one GeoTIFF in the tiles' frame."""
    return write_raster(path, bands, transform=from_origin(*ORIGIN, PIXEL, PIXEL))


def read_dets(path: Path) -> np.ndarray:
    """(N, 6) [x1, y1, x2, y2, score, class] of a GeoJSON output, sorted by box then score."""
    feats = json.loads(path.read_text())["features"]
    rows = [
        [*f["properties"]["bbox_px"], f["properties"]["score"], f["properties"]["class_id"]]
        for f in feats
    ]
    arr = np.array(rows, np.float64).reshape(-1, 6)
    return arr[np.lexsort(arr.T[::-1])]


def assert_same_dets(a: Path, b: Path) -> None:
    """Same detections in two GeoJSON outputs: boxes to the written 0.01 px, scores to 1e-4."""
    da, db = read_dets(a), read_dets(b)
    assert da.shape == db.shape, (a, b, da.shape, db.shape)
    np.testing.assert_allclose(da[:, :4], db[:, :4], atol=0.011)
    np.testing.assert_allclose(da[:, 4], db[:, 4], atol=1e-4)
    np.testing.assert_array_equal(da[:, 5], db[:, 5])
