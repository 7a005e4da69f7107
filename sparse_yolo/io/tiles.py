"""Cut a raster into overlapping read windows."""

from __future__ import annotations

from rasterio.windows import Window

from sparse_yolo.tiling import tile_offsets


def tile_windows(width: int, height: int, tile: int, overlap: int) -> list[Window]:
    """Overlapping windows that cover a ``width x height`` raster.

    Each axis longer than ``tile`` gets windows of exactly ``tile`` pixels, stepping by
    ``tile - overlap``, with the last one pushed inside the raster; an axis no longer than
    ``tile`` gets one window of its own length.

    Args:
        width: raster width in pixels.
        height: raster height in pixels.
        tile: tile edge in pixels.
        overlap: minimum overlap of neighbouring tiles in pixels, ``0 <= overlap < tile``.

    Returns:
        Windows in full-raster pixel coordinates, in row-major order (top row first, left to
        right).

    Raises:
        ValueError: non-positive sizes or an overlap outside ``[0, tile)``.
    """
    if width < 1 or height < 1 or tile < 1:
        raise ValueError(f"width, height and tile must be >= 1, got {width}, {height}, {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, {tile}), got {overlap}")
    tile_w, tile_h = min(tile, width), min(tile, height)
    return [
        Window(col, row, tile_w, tile_h)
        for row in tile_offsets(height, tile, overlap)
        for col in tile_offsets(width, tile, overlap)
    ]
