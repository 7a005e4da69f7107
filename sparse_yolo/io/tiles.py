"""Cut a raster into overlapping read windows."""

from __future__ import annotations

from rasterio.windows import Window

from sparse_yolo.tiling import tile_offsets


def tile_windows(width: int, height: int, tile: int, overlap: int) -> list[Window]:
    """Overlapping windows that cover a ``width x height`` raster.

    Each axis longer than ``tile`` gets windows of ``tile`` pixels that start on the
    :data:`~sparse_yolo.tiling.TILE_ALIGN` lattice, stepping by about ``tile - overlap``; the
    last runs to the raster's edge (up to ``TILE_ALIGN - 1`` pixels longer than ``tile``). An
    axis no longer than ``tile`` gets one window of its own length.

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
    return [
        Window(col, row, w, h)
        for row, h in tile_offsets(height, tile, overlap)
        for col, w in tile_offsets(width, tile, overlap)
    ]
