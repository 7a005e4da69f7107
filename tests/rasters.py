"""Tiny synthetic rasters written with rasterio, shared by the I/O, geo and writer tests.

Import as ``from rasters import ...`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin

SIZE = 256
CRS_UTM = "EPSG:32633"
# 0.5 m pixels, top-left corner at (500000, 5000000) in UTM 33N (lon 15, lat ~45.1).
TRANSFORM = from_origin(500000.0, 5000000.0, 0.5, 0.5)
ROTATED = Affine.translation(500000.0, 5000000.0) @ Affine.rotation(30.0) @ Affine.scale(0.5, -0.5)
NODATA_BLOCK = (slice(0, 64), slice(0, 64))  # rows, cols set to nodata in the RGB raster
COLOR_PATCH = (slice(100, 110), slice(200, 210))  # R=200, G=100, B=50 in the RGB raster
ALPHA_HOLE = (slice(100, 150), slice(100, 150))  # alpha == 0 in the RGBA raster
OBJECTS = [(150, 40), (180, 120), (220, 220)]  # (row, col) centres of 6x6 bright squares


def write_raster(
    path: Path,
    data: np.ndarray,
    crs: str | None = CRS_UTM,
    transform: Affine | None = TRANSFORM,
    nodata: float | None = None,
    colorinterp: list[ColorInterp] | None = None,
) -> Path:
    """Write ``(count, h, w)`` ``data`` as a GeoTIFF and return its path."""
    profile = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype.name,
    }
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform
    if nodata is not None:
        profile["nodata"] = nodata
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # no_crs() means it
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(data)
            if colorinterp is not None:
                ds.colorinterp = colorinterp
    return path


def rgb_bands(seed: int = 0) -> np.ndarray:
    """``(3, 256, 256)`` uint8 RGB texture in 20..200, a colour patch and bright objects."""
    rng = np.random.default_rng(seed)
    data = rng.integers(20, 200, size=(3, SIZE, SIZE), dtype=np.uint8)
    data[:, COLOR_PATCH[0], COLOR_PATCH[1]] = np.array([200, 100, 50], np.uint8)[:, None, None]
    for row, col in OBJECTS:
        data[:, row - 3 : row + 3, col - 3 : col + 3] = 255
    return data


def rgb_utm(tmp_path: Path, name: str = "rgb.tif") -> Path:
    """256x256x3 uint8, EPSG:32633, nodata=0 in ``NODATA_BLOCK``."""
    data = rgb_bands()
    data[:, NODATA_BLOCK[0], NODATA_BLOCK[1]] = 0
    return write_raster(tmp_path / name, data, nodata=0)


def gray_uint16(tmp_path: Path, name: str = "pan16.tif") -> Path:
    """256x256 single-band uint16 ramp 1000..5000 (+noise), nodata=0 in ``NODATA_BLOCK``."""
    ramp = np.linspace(1000, 5000, SIZE)[None, :] + np.zeros((SIZE, 1))
    noise = np.random.default_rng(1).normal(0, 20, size=(SIZE, SIZE))
    data = np.clip(ramp + noise, 1, 65535).astype(np.uint16)[None]
    data[:, NODATA_BLOCK[0], NODATA_BLOCK[1]] = 0
    return write_raster(tmp_path / name, data, nodata=0)


def rgba(tmp_path: Path, name: str = "rgba.tif", tag_alpha: bool = True) -> Path:
    """256x256 RGBA uint8 with alpha 0 in ``ALPHA_HOLE`` (band 4 tagged alpha or not)."""
    alpha = np.full((1, SIZE, SIZE), 255, np.uint8)
    alpha[:, ALPHA_HOLE[0], ALPHA_HOLE[1]] = 0
    data = np.concatenate([rgb_bands(), alpha])
    interp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    return write_raster(tmp_path / name, data, colorinterp=interp if tag_alpha else None)


def rotated(tmp_path: Path, name: str = "rotated.tif") -> Path:
    """256x256x3 uint8 in EPSG:32633 with a 30 degree rotated affine (``ROTATED``)."""
    return write_raster(tmp_path / name, rgb_bands(), transform=ROTATED)


def no_crs(tmp_path: Path, name: str = "nocrs.tif") -> Path:
    """256x256x3 uint8 with neither CRS nor geotransform."""
    return write_raster(tmp_path / name, rgb_bands(), crs=None, transform=None)


def two_band(tmp_path: Path, name: str = "twoband.tif") -> Path:
    """A 2-band uint8 raster (unsupported band count)."""
    return write_raster(tmp_path / name, np.ones((2, 32, 32), np.uint8))


def all_nodata(tmp_path: Path, name: str = "empty.tif") -> Path:
    """A 3-band uint8 raster whose every pixel is nodata (0)."""
    return write_raster(tmp_path / name, np.zeros((3, 64, 64), np.uint8), nodata=0)


def truncated(tmp_path: Path, name: str = "truncated.tif") -> Path:
    """A valid deflate GeoTIFF cut to half its bytes."""
    path = tmp_path / name
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=SIZE,
        height=SIZE,
        count=3,
        dtype="uint8",
        crs=CRS_UTM,
        transform=TRANSFORM,
        compress="deflate",
    ) as ds:
        ds.write(rgb_bands())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path
