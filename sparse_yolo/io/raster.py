"""Image sources: windowed reads of rasters (rasterio) and plain images (OpenCV).

Every source hands out the same thing for a window: an ``(h, w, 3)`` uint8 **BGR** array
(OpenCV / Ultralytics channel order) and an ``(h, w)`` bool ``valid`` array that is False
where the pixel is nodata, transparent (alpha == 0) or masked out by the dataset mask.
Invalid pixels are set to 0 in the BGR array so their content is deterministic.

Windows are ``rasterio.windows.Window`` objects in full-image pixel coordinates and must lie
inside the image (see ``sparse_yolo.io.tiles.tile_windows``).
"""

from __future__ import annotations

import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from sparse_yolo.errors import SparseYoloError

try:  # GDAL errors that rasterio re-raises without wrapping (private module, stable for years).
    from rasterio._err import CPLE_BaseError
except ImportError:  # pragma: no cover - older/newer rasterio
    CPLE_BaseError = RasterioError  # type: ignore[misc,assignment]

PLAIN_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})  # read with OpenCV
# What a folder of inputs is searched for: plain images and the usual raster formats.
IMAGE_SUFFIXES = PLAIN_SUFFIXES | {".tif", ".tiff", ".jp2", ".vrt", ".img"}
# Single frames that cv2.imread decodes whole (video frame folders, training images).
FRAME_SUFFIXES = PLAIN_SUFFIXES | {".tif", ".tiff"}
STATS_SIDE = 1024  # long side, in pixels, of the decimated read used for stretch and nodata stats
PERCENTILES = (2.0, 98.0)

_GDAL_ERRORS = (RasterioError, CPLE_BaseError, OSError)

# GDAL's block cache defaults to 5% of RAM and fills with every new tile's blocks, which
# are read once: a small cache loses nothing and keeps memory bounded by the tile size
# (docs/performance.md). Set for each open raster through rasterio.Env; a user's own
# GDAL_CACHEMAX in the environment wins.
GDAL_CACHEMAX_MB = 128


def open_source(path: str | Path) -> ImageSource:
    """Open an image file for windowed reading.

    JPEG/PNG/BMP/WebP files are decoded with OpenCV; everything else (GeoTIFF, VRT, JP2,
    ERDAS .img, ...) is opened lazily with rasterio.

    Args:
        path: the file to open (GDAL ``/vsi...`` paths and URLs go straight to rasterio).

    Returns:
        An open ``ImageSource``; close it, or use it as a context manager.

    Raises:
        SparseYoloError: missing file, unreadable or unsupported image, all pixels nodata.
    """
    text = str(path)
    if not (text.startswith("/vsi") or "://" in text):
        path = Path(path)
        if not path.exists():
            raise SparseYoloError("no such file", path)
        if path.is_dir():
            raise SparseYoloError("is a directory, expected an image file", path)
    if Path(text).suffix.lower() in PLAIN_SUFFIXES:
        return PlainImageSource(path)
    return RasterSource(path)


class ImageSource(ABC):
    """An image read window by window.

    Attributes:
        path: the file this source reads.
        width: image width in pixels.
        height: image height in pixels.
        crs: the raster's CRS, or None when it has none (plain images, ungeoreferenced TIFFs).
        transform: affine mapping (col, row) pixel coordinates to CRS coordinates; identity
            for plain images. Rotated or sheared transforms are kept as they are.
    """

    path: str | Path
    width: int
    height: int
    crs: CRS | None
    transform: Affine

    @abstractmethod
    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read one window at full resolution.

        Args:
            window: pixel window, inside the image.

        Returns:
            ``(bgr, valid)``: ``(h, w, 3)`` uint8 BGR and ``(h, w)`` bool, where ``h, w``
            are the window's height and width.
        """

    @abstractmethod
    def read_overview(self, max_side: int = 2048) -> tuple[np.ndarray, np.ndarray, float]:
        """Read the whole image downscaled so that its long side is at most ``max_side``.

        Returns:
            ``(bgr, valid, scale)``: ``(h', w', 3)`` uint8 BGR, ``(h', w')`` bool, and the
            factor that maps full-image pixel coordinates to overview pixels (``<= 1``).
        """

    @abstractmethod
    def close(self) -> None:
        """Release the file handle and any cached pixels."""

    @property
    def full_window(self) -> Window:
        """The window covering the whole image."""
        return Window(0, 0, self.width, self.height)

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, {self.width}x{self.height})"

    def _window_slices(self, window: Window) -> tuple[slice, slice]:
        """(rows, cols) slices of an integer window, checked to lie inside the image."""
        col, row = int(window.col_off), int(window.row_off)
        w, h = int(window.width), int(window.height)
        if w < 1 or h < 1 or col < 0 or row < 0 or col + w > self.width or row + h > self.height:
            raise ValueError(f"window {window} is not inside a {self.width}x{self.height} image")
        return slice(row, row + h), slice(col, col + w)


def overview_shape(width: int, height: int, max_side: int) -> tuple[int, int, float]:
    """Size of a downscaled image whose long side is at most ``max_side``.

    Returns:
        ``(out_height, out_width, scale)`` with ``scale = out_width / width`` (<= 1).
    """
    scale = min(1.0, max_side / max(width, height))
    out_w = max(1, round(width * scale))
    out_h = max(1, round(height * scale))
    return out_h, out_w, out_w / width


def band_percentiles(bands: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-band 2nd/98th percentiles of the valid pixels.

    Args:
        bands: ``(k, h, w)`` pixel values of any numeric dtype.
        valid: ``(h, w)`` bool; must have at least one True.

    Returns:
        ``(k, 2)`` float64 ``[low, high]`` per band with ``high > low``.
    """
    limits = np.empty((len(bands), 2), dtype=np.float64)
    for i, band in enumerate(bands):
        values = band[valid].astype(np.float64)
        values = values[np.isfinite(values)]
        low, high = np.percentile(values, PERCENTILES) if values.size else (0.0, 1.0)
        limits[i] = (low, high if high > low else low + 1.0)
    return limits


def stretch_to_uint8(bands: np.ndarray, limits: np.ndarray | None) -> np.ndarray:
    """Map each band linearly from ``[low, high]`` to ``0..255`` with clipping.

    Args:
        bands: ``(k, h, w)`` pixel values.
        limits: ``(k, 2)`` from ``band_percentiles``, or None to pass uint8 through.

    Returns:
        ``(k, h, w)`` uint8; non-finite values become 0.
    """
    if limits is None:
        return bands.astype(np.uint8, copy=False)
    out = np.empty(bands.shape, dtype=np.uint8)
    for i, (band, (low, high)) in enumerate(zip(bands, limits, strict=True)):
        scaled = (band.astype(np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
        np.nan_to_num(scaled, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
        np.clip(scaled, 0.0, 255.0, out=scaled)
        out[i] = np.rint(scaled)
    return out


def _to_bgr(color: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``(1 or 3, h, w)`` uint8 bands already in BGR order -> ``(h, w, 3)``, invalid -> 0."""
    if len(color) == 1:
        color = np.repeat(color, 3, axis=0)
    bgr = np.ascontiguousarray(color.transpose(1, 2, 0))
    bgr[~valid] = 0
    return bgr


def _gdal_detail(exc: BaseException) -> str:
    """The most specific message in a rasterio/GDAL exception chain."""
    seen: list[BaseException] = [exc]
    while seen[-1].__cause__ is not None and len(seen) < 8:
        seen.append(seen[-1].__cause__)
    for e in reversed(seen):
        text = str(e.args[2] if isinstance(e, CPLE_BaseError) and len(e.args) > 2 else e)
        if text and "previous exception" not in text:
            return text
    return type(exc).__name__


@contextmanager
def _gdal_errors(path: str | Path, what: str) -> Iterator[None]:
    """Turn rasterio/GDAL failures into a one-line ``SparseYoloError`` naming the file."""
    try:
        yield
    except _GDAL_ERRORS as exc:
        raise SparseYoloError(f"{what}: {_gdal_detail(exc)}", path) from exc


def _band_layout(ds: rasterio.DatasetReader) -> tuple[list[int], int | None]:
    """1-based band indexes to read in BGR order (one index for gray) and the alpha band."""
    if ds.count == 1:
        return [1], None
    interp = list(ds.colorinterp)
    rgb = [1, 2, 3]
    if {ColorInterp.red, ColorInterp.green, ColorInterp.blue} <= set(interp):
        rgb = [interp.index(c) + 1 for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)]
    alpha = next((i for i in range(1, ds.count + 1) if i not in rgb), None)
    return rgb[::-1], alpha


class RasterSource(ImageSource):
    """A raster read lazily through rasterio, one window at a time.

    Band handling: 1 band is gray (replicated to 3), 3 bands are RGB, 4 bands are RGB plus
    alpha (colour interpretation decides which band is which when it names red, green and
    blue). Non-uint8 data is stretched per band from its 2nd..98th percentile to 0..255;
    the percentiles come once, at open, from a read decimated to ``STATS_SIDE`` pixels.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = path
        options = (
            {} if "GDAL_CACHEMAX" in os.environ else {"GDAL_CACHEMAX": GDAL_CACHEMAX_MB * 2**20}
        )
        self._env = rasterio.Env(**options)
        self._env.__enter__()  # held while the source is open: every windowed read runs in it
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with _gdal_errors(path, "cannot open as a raster"):
                    self._ds = rasterio.open(path)
        except BaseException:
            self._env.__exit__(None, None, None)
            raise
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        ds = self._ds
        if ds.count not in (1, 3, 4):
            raise SparseYoloError(
                f"unsupported band count {ds.count} (expected 1, 3 or 4)", self.path
            )
        if ds.width < 1 or ds.height < 1:
            raise SparseYoloError("raster has no pixels", self.path)
        self.width, self.height = int(ds.width), int(ds.height)
        self.crs = ds.crs if ds.crs else None
        self.transform = ds.transform
        self._color, self._alpha = _band_layout(ds)
        self._indexes = self._color + ([self._alpha] if self._alpha else [])
        nodata = [ds.nodatavals[i - 1] for i in self._color]
        self._nodata = None if any(v is None for v in nodata) else nodata
        self._internal_mask = any(
            MaskFlags.per_dataset in flags and MaskFlags.alpha not in flags
            for flags in ds.mask_flag_enums
        )
        self._limits: np.ndarray | None = None
        is_uint8 = ds.dtypes[self._color[0] - 1] == "uint8"
        can_be_invalid = self._nodata is not None or self._alpha is not None or self._internal_mask
        if is_uint8 and not can_be_invalid:
            return  # nothing to learn from a stats read
        out_h, out_w, _ = overview_shape(self.width, self.height, STATS_SIDE)
        data, valid = self._read_raw(None, (out_h, out_w))
        if not valid.any():
            raise SparseYoloError("all pixels are nodata", self.path)
        if not is_uint8:
            self._limits = band_percentiles(data[: len(self._color)], valid)

    def _read_raw(
        self, window: Window | None, out_shape: tuple[int, int] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Native-dtype ``(k, h, w)`` bands (BGR or gray, then alpha) and ``(h, w)`` valid.

        ``window=None`` reads the whole raster; ``out_shape=(h, w)`` decimates the read.
        """
        shape = (len(self._indexes), *out_shape) if out_shape else None
        where = (
            "pixels"
            if window is None
            else f"rows {window.row_off}..{window.row_off + window.height}"
        )
        with _gdal_errors(self.path, f"cannot read {where} (truncated or corrupt file?)"):
            data = self._ds.read(self._indexes, window=window, out_shape=shape, boundless=False)
            valid = self._valid(data)
            if self._internal_mask:
                valid &= self._ds.dataset_mask(window=window, out_shape=out_shape) != 0
        return data, valid

    def _valid(self, data: np.ndarray) -> np.ndarray:
        """``(h, w)`` bool from ``(k, h, w)`` bands: not all nodata, finite, alpha != 0."""
        color = data[: len(self._color)]
        valid = np.ones(data.shape[1:], dtype=bool)
        if self._nodata is not None:
            same = [
                np.isnan(b) if np.isnan(v) else b == v
                for b, v in zip(color, self._nodata, strict=True)
            ]
            valid &= ~np.logical_and.reduce(same)
        if data.dtype.kind == "f":
            valid &= np.isfinite(color).all(axis=0)
        if self._alpha is not None:
            valid &= data[-1] != 0
        return valid

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        rows, cols = self._window_slices(window)
        window = Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)
        data, valid = self._read_raw(window, None)
        color = stretch_to_uint8(data[: len(self._color)], self._limits)
        return _to_bgr(color, valid), valid

    def read_overview(self, max_side: int = 2048) -> tuple[np.ndarray, np.ndarray, float]:
        out_h, out_w, scale = overview_shape(self.width, self.height, max_side)
        data, valid = self._read_raw(None, (out_h, out_w))
        color = stretch_to_uint8(data[: len(self._color)], self._limits)
        return _to_bgr(color, valid), valid, scale

    def close(self) -> None:
        self._ds.close()
        self._env.__exit__(None, None, None)


class PlainImageSource(ImageSource):
    """A JPEG/PNG/BMP/WebP decoded once with OpenCV and held in memory.

    Gray images are replicated to 3 channels, a 4th channel is alpha (0 = invalid), and
    16-bit images get the same percentile stretch as rasters. ``crs`` is None and
    ``transform`` the identity.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = path
        try:
            buffer = np.fromfile(str(path), dtype=np.uint8)
        except OSError as exc:
            raise SparseYoloError(f"cannot read file: {exc.strerror or exc}", path) from exc
        if buffer.size == 0:
            raise SparseYoloError("empty file (0 bytes), not an image", path)
        # JPEG has no alpha; IMREAD_COLOR there also applies the EXIF orientation.
        jpeg = Path(str(path)).suffix.lower() in (".jpg", ".jpeg")
        try:
            image = cv2.imdecode(buffer, cv2.IMREAD_COLOR if jpeg else cv2.IMREAD_UNCHANGED)
        except cv2.error:
            image = None
        if image is None or image.size == 0:
            raise SparseYoloError("not a readable image (OpenCV could not decode it)", path)
        self._bgr, self._valid = self._normalise(image)
        self.height, self.width = self._valid.shape
        self.crs = None
        self.transform = Affine.identity()

    def _normalise(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """OpenCV's ``(h, w)``/``(h, w, c)`` decode -> ``(h, w, 3)`` uint8 BGR, ``(h, w)`` valid."""
        bands = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)
        if len(bands) not in (1, 3, 4):
            raise SparseYoloError(f"unsupported channel count {len(bands)}", self.path)
        valid = bands[3] != 0 if len(bands) == 4 else np.ones(bands.shape[1:], dtype=bool)
        if not valid.any():
            raise SparseYoloError("all pixels are transparent", self.path)
        color = bands[:3] if len(bands) == 4 else bands
        limits = None if color.dtype == np.uint8 else band_percentiles(color, valid)
        return _to_bgr(stretch_to_uint8(color, limits), valid), valid

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        rows, cols = self._window_slices(window)
        return self._bgr[rows, cols].copy(), self._valid[rows, cols].copy()

    def read_overview(self, max_side: int = 2048) -> tuple[np.ndarray, np.ndarray, float]:
        out_h, out_w, scale = overview_shape(self.width, self.height, max_side)
        if scale == 1.0:
            return self._bgr.copy(), self._valid.copy(), 1.0
        bgr = cv2.resize(self._bgr, (out_w, out_h), interpolation=cv2.INTER_AREA)
        valid = cv2.resize(
            self._valid.astype(np.uint8), (out_w, out_h), interpolation=cv2.INTER_NEAREST
        ).astype(bool)
        return bgr, valid, scale

    def close(self) -> None:
        self._bgr = np.zeros((0, 0, 3), dtype=np.uint8)
        self._valid = np.zeros((0, 0), dtype=bool)
