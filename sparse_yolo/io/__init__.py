"""Raster input, tiling and detection writers."""

from __future__ import annotations

from sparse_yolo.io.raster import ImageSource, PlainImageSource, RasterSource, open_source
from sparse_yolo.io.tiles import tile_windows
from sparse_yolo.io.writers import WRITERS, write_detections, write_preview

__all__ = [
    "WRITERS",
    "ImageSource",
    "PlainImageSource",
    "RasterSource",
    "open_source",
    "tile_windows",
    "write_detections",
    "write_preview",
]
