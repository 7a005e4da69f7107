"""Images and rasters of any size: tiles read from disk, detected, merged in raster pixels.

The data path (GUIDE.md): source -> tiles -> mask -> sparse model -> merge in pixels ->
georeference last (in the writers). Memory is bounded by the tile size: one tile's pixels
are held at a time, and skipped tiles (all nodata, or no active cell) never reach the model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from rasterio.windows import Window
from tqdm import tqdm

from sparse_yolo.io.raster import ImageSource, RasterSource, open_source
from sparse_yolo.io.tiles import tile_windows
from sparse_yolo.io.writers import SourceDetections
from sparse_yolo.masks import MaskResult
from sparse_yolo.tiling import merge_tiles
from sparse_yolo.types import Detections

log = logging.getLogger("sparse_yolo")

SEAM_PX = 2.0  # a box this close to an interior tile edge is cut by the seam
OVERVIEW_SIDE = 2048  # long side of the preview / mask overview


@dataclass
class SourceRun:
    """Everything one source produced.

    Attributes:
        result: detections (``(N, 4)`` xyxy in full-raster pixels) with georeferencing.
        stats: seconds per stage, tiles, active fraction, windows, backend, mask, size.
        mask_overview: (h', w') bool cells examined, at ``overview_scale``.
        overview_scale: overview pixels per full-raster pixel.
        mask: the cell mask when the source was a single tile, else None.
        warnings: one-line notes for the user (e.g. a raster without CRS).
    """

    result: SourceDetections
    stats: dict[str, Any]
    mask_overview: np.ndarray
    overview_scale: float
    mask: MaskResult | None = None
    warnings: list[str] = field(default_factory=list)


def detect_path(detector, path: str | Path, progress: bool = False) -> SourceRun:
    """Detect objects in an image or raster file of any size, tile by tile.

    Args:
        detector: a ``sparse_yolo.Detector``.
        path: JPEG/PNG/... or any raster GDAL reads.
        progress: show a per-tile progress bar when there are several tiles.
    """
    with open_source(path) as src:
        return detect_source(detector, src, progress)


def detect_source(detector, src: ImageSource, progress: bool = False) -> SourceRun:
    """Tile loop over an open source; see :func:`detect_path`.

    With ``MaskConfig.roi``, only cells inside the region of interest are ever examined.
    """
    cfg = detector.config
    roi = None
    if cfg.mask.roi:
        from sparse_yolo.io.roi import load_roi  # noqa: PLC0415 - vectors only when asked

        roi = load_roi(cfg.mask, src)
    windows = tile_windows(src.width, src.height, cfg.tiling.tile, cfg.tiling.overlap)
    last_mask = None
    name = Path(str(src.path)).name
    acc = _Accumulator(src.width, src.height, drop_seam_cuts=cfg.tiling.merge == "nms")
    bar = tqdm(windows, desc=name, unit="tile", disable=not progress or len(windows) == 1)
    detector.mask.prepare(src, cfg.tiling.tile)  # image-wide statistics, not one tile's
    try:
        for win in bar:
            bgr, valid = src.read(win)
            if roi is not None:
                valid &= roi.pixels(win, cfg.mask.cell)
            if not valid.any():
                acc.skipped += 1
                continue
            res = detector.predict_array(bgr, None if valid.all() else valid, name)
            acc.add(win, res, _interior_edges(win, src.width, src.height))
            last_mask = res.mask
    finally:
        detector.mask.prepare(None)
    dets = merge_tiles(acc.dets(), cfg.post, cfg.tiling.merge)
    warnings = []
    if src.crs is None and isinstance(src, RasterSource):
        warnings.append(f"{name}: no CRS; writing pixel coordinates")
    result = SourceDetections(
        str(src.path),
        src.width,
        src.height,
        src.crs,
        src.transform,
        Detections(dets[:, :4], dets[:, 4], dets[:, 5], detector.names),
    )
    stats = acc.stats(len(windows), cfg.mask.name)
    single = last_mask if len(windows) == 1 else None
    return SourceRun(result, stats, acc.mask_overview(), acc.scale, single, warnings)


def _interior_edges(win: Window, width: int, height: int) -> tuple[bool, bool, bool, bool]:
    """Which of (left, top, right, bottom) edges of a tile are seams inside the raster."""
    c, r, w, h = int(win.col_off), int(win.row_off), int(win.width), int(win.height)
    return c > 0, r > 0, c + w < width, r + h < height


class _Accumulator:
    """Collects tile detections (shifted to raster pixels), stats and a mask overview."""

    def __init__(self, width: int, height: int, drop_seam_cuts: bool) -> None:
        self.width, self.height = width, height
        self.drop_seam_cuts = drop_seam_cuts
        self.scale = min(1.0, OVERVIEW_SIDE / max(width, height))
        self._dets: list[torch.Tensor] = []
        self._mask = np.zeros(
            (max(1, round(height * self.scale)), max(1, round(width * self.scale))), bool
        )
        self.seconds: dict[str, float] = {}
        self.active_px = 0.0
        self.mask_px = 0.0
        self.tile_px = 0
        self.n_windows = 0
        self.backends: set[str] = set()
        self.skipped = 0
        self.inactive = 0

    def add(self, win: Window, res, interior: tuple[bool, bool, bool, bool]) -> None:
        c, r = int(win.col_off), int(win.row_off)
        w, h = int(win.width), int(win.height)
        d = np.concatenate([res.boxes, res.scores[:, None], res.classes[:, None]], 1)
        d = torch.from_numpy(d).float()
        if self.drop_seam_cuts:
            d = d[~_cut_by_seam(d[:, :4], w, h, interior)]
        d[:, [0, 2]] += c
        d[:, [1, 3]] += r
        self._dets.append(d)
        for k, v in res.stats["seconds"].items():
            self.seconds[k] = self.seconds.get(k, 0.0) + v
        self.active_px += res.stats["active_fraction"] * w * h
        self.mask_px += res.stats["mask_fraction"] * w * h
        self.tile_px += w * h
        self.n_windows += res.stats["n_windows"]
        self.inactive += res.stats["n_windows"] == 0
        self.backends.add(res.stats["backend"])
        self._paint_mask(res.mask, c, r, w, h)

    def _paint_mask(self, mask: MaskResult | None, c: int, r: int, w: int, h: int) -> None:
        if mask is None:
            return
        s = self.scale
        y0, x0 = round(r * s), round(c * s)
        y1 = min(self._mask.shape[0], round((r + h) * s))
        x1 = min(self._mask.shape[1], round((c + w) * s))
        if y1 <= y0 or x1 <= x0:
            return
        cells = mask.cells[: -(-h // mask.cell), : -(-w // mask.cell)].astype(np.uint8)
        up = cv2.resize(cells, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
        self._mask[y0:y1, x0:x1] |= up.astype(bool)

    def dets(self) -> torch.Tensor:
        return torch.cat(self._dets) if self._dets else torch.zeros((0, 6))

    def mask_overview(self) -> np.ndarray:
        return self._mask

    def stats(self, n_tiles: int, mask_name: str) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "n_tiles": n_tiles,
            "tiles_skipped_nodata": self.skipped,
            "tiles_without_active_cells": int(self.inactive),
            "active_fraction": self.active_px / self.tile_px if self.tile_px else 0.0,
            "mask_fraction": self.mask_px / self.tile_px if self.tile_px else 0.0,
            "n_windows": self.n_windows,
            "backend": ",".join(sorted(self.backends)) or "none",
            "mask": mask_name,
            "image_size": [self.width, self.height],
        }


def _cut_by_seam(boxes: torch.Tensor, w: int, h: int, interior: tuple[bool, ...]) -> torch.Tensor:
    """(N,) bool: box touches an interior tile edge, so the neighbouring tile sees it whole."""
    left, top, right, bottom = interior
    cut = torch.zeros(len(boxes), dtype=torch.bool)
    if left:
        cut |= boxes[:, 0] <= SEAM_PX
    if top:
        cut |= boxes[:, 1] <= SEAM_PX
    if right:
        cut |= boxes[:, 2] >= w - SEAM_PX
    if bottom:
        cut |= boxes[:, 3] >= h - SEAM_PX
    return cut
