"""Tile offsets without a raster.

Pure Python, so in-memory slicing (the SAHI baseline in ``compare``) needs no GDAL;
``sparse_yolo.io.tiles`` turns the offsets into rasterio windows for files. Merging across
tiles lives in :mod:`sparse_yolo.postprocess`.
"""

from __future__ import annotations


def tile_offsets(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles along one axis.

    Tiles step by ``tile - overlap``; the last one is pushed back inside so it ends exactly
    at ``size`` (never shrunk), which only ever increases its overlap with the previous one.

    Args:
        size: axis length in pixels.
        tile: tile length in pixels.
        overlap: minimum overlap between neighbouring tiles in pixels.

    Returns:
        Increasing offsets; ``[0]`` when ``size <= tile``.
    """
    if size <= tile:
        return [0]
    offsets = list(range(0, size - tile, tile - overlap))
    offsets.append(size - tile)
    return offsets
