"""Tile offsets without a raster.

Pure Python, so in-memory slicing needs no GDAL; ``sparse_yolo.io.tiles`` turns the offsets
into rasterio windows for files. Merging across tiles lives in :mod:`sparse_yolo.postprocess`.
"""

from __future__ import annotations

# Tiles start on multiples of this many pixels, so every tile's stride-32 (and a P6 model's
# stride-64) lattice is the whole raster's: a strided network is not shift-invariant, and a
# tile 16 px off the lattice sees its objects differently from an untiled run, so detections
# would depend on --tile. Small tiles (a step under 512 px) align to 32 px instead, where
# rounding the step down to 64 would cost up to an eighth more tiles.
TILE_ALIGN = 64


def tile_offsets(
    size: int, tile: int, overlap: int, align: int | None = None
) -> list[tuple[int, int]]:
    """(start, length) of the tiles along one axis.

    Tiles start on the ``align`` lattice and step by ``tile - overlap`` rounded down to it
    (so neighbours overlap by at least ``overlap``). Every tile is ``tile`` long but the
    last, which starts on the lattice and runs to ``size``: between ``tile`` and
    ``tile + align - 1`` pixels (with ``align=1``, SAHI's slicing: the last one is pushed
    back inside).

    Args:
        size: axis length in pixels.
        tile: tile length in pixels.
        overlap: minimum overlap between neighbouring tiles in pixels, ``< tile``.
        align: the lattice; :func:`tile_align` when None.

    Returns:
        Increasing (start, length) pairs; ``[(0, size)]`` when ``size <= tile``.
    """
    if size <= tile:
        return [(0, size)]
    align = tile_align(tile, overlap) if align is None else align
    step = (tile - overlap) // align * align
    starts = list(range(0, size - tile, step))
    last = (size - tile) // align * align
    if last > starts[-1]:
        starts.append(last)
    return [(s, tile) for s in starts[:-1]] + [(starts[-1], size - starts[-1])]


def tile_align(tile: int, overlap: int) -> int:
    """The lattice tiles start on: :data:`TILE_ALIGN` for steps of 512 px or more, else 32 px
    (or the largest power of two that fits the step of a tiny tile)."""
    step = tile - overlap
    return TILE_ALIGN if step >= 512 else min(32, 1 << (step.bit_length() - 1))


def tile_cores(size: int, tile: int, overlap: int) -> dict[int, tuple[int, int]]:
    """The part of the axis each tile owns, by tile start: ``[lo, hi)``.

    Cores split every overlap at its middle, so they partition ``[0, size)`` and each core
    lies at least half an overlap inside its tile wherever a neighbour exists. A detection
    is taken from the tile that owns its centre, where the tile's edge is farthest away,
    instead of the higher-scored of two copies (which would bias scores upwards).
    """
    spans = tile_offsets(size, tile, overlap)
    cuts = [(a + la + b) // 2 for (a, la), (b, _) in zip(spans, spans[1:], strict=False)]
    bounds = [0, *cuts, size]
    return {s: (bounds[k], bounds[k + 1]) for k, (s, _) in enumerate(spans)}
