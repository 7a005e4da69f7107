"""The one orchestrator: source -> tiles -> mask -> engine -> merge -> georeference.

:meth:`Pipeline.run_source` is the whole data path of a file, top-down; :meth:`Pipeline.run_array`
is one in-memory image (a frame, or one tile of a raster). Writers take the resulting
:class:`~sparse_yolo.types.Result` and georeference last, through its ``georef``. Memory is
bounded by the tile size: one tile's pixels are held at a time, and tiles that are all nodata
never reach the model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
from tqdm import tqdm

from sparse_yolo.config import DetectorConfig, TileConfig
from sparse_yolo.engine import SparseEngine, Timer
from sparse_yolo.engine.runner import Frame
from sparse_yolo.errors import SparseYoloError
from sparse_yolo.postprocess import cut_by_seam, merge_tiles
from sparse_yolo.tiling import tile_cores
from sparse_yolo.types import Detections, EngineRun, GeoRef, Result, RunStats

if TYPE_CHECKING:
    from rasterio.windows import Window

    from sparse_yolo.io.raster import ImageSource
    from sparse_yolo.masks import CellMask, MaskResult

OVERVIEW_SIDE = 2048  # long side of the preview / mask overview


class Pipeline:
    """Detection on images and rasters of any size with one engine and one mask.

    Args:
        engine: the sparse model on its device.
        mask: the cell mask.
        config: tiling, merging and post-processing settings.
    """

    def __init__(self, engine: SparseEngine, mask: CellMask, config: DetectorConfig) -> None:
        self.engine, self.mask, self.config = engine, mask, config

    @property
    def names(self) -> dict[int, str]:
        return self.engine.model.names

    def run_path(self, path: str | Path, progress: bool = False) -> Result:
        """Detect objects in an image or raster file, tile by tile."""
        from sparse_yolo.io.raster import open_source  # noqa: PLC0415 - GDAL only for files

        with open_source(path) as src:
            return self.run_source(src, progress)

    def run_source(self, src: ImageSource, progress: bool = False) -> Result:
        """The data path of one open source: tiles -> mask -> engine -> merge -> georef."""
        windows = self.tile_windows(src)
        acc = self.detect_tiles(src, windows, progress)
        merged = merge_source(src, acc.dets(), self.config, self.names)
        single = acc.last if len(windows) == 1 else None
        return replace(
            merged,
            stats=acc.finish(self.config.mask.name),
            mask=single.mask if single is not None else None,
            engine=single.engine if single is not None else None,
            mask_overview=acc.overview,
            overview_scale=acc.scale,
        )

    def tile_windows(self, src: ImageSource) -> list[Window]:
        """The source's tile windows, row-major: the order every run detects them in."""
        from sparse_yolo.io.tiles import tile_windows  # noqa: PLC0415

        cfg = self.config.tiling
        return tile_windows(src.width, src.height, cfg.tile, cfg.overlap)

    def detect_tiles(
        self, src: ImageSource, windows: list[Window], progress: bool = False
    ) -> _TileAccumulator:
        """Detect in each of ``windows`` (a run may take a part of the source's windows, so
        workers can share one huge raster); seam cuts are dropped, nothing merged yet."""
        cfg = self.config.tiling
        roi = None
        if self.config.mask.roi:  # only cells inside the region of interest are examined
            from sparse_yolo.io.roi import load_roi  # noqa: PLC0415 - vectors only when asked

            roi = load_roi(self.config.mask, src)
        name = Path(str(src.path)).name
        acc = _TileAccumulator(src.width, src.height, len(windows), cfg)
        bar = tqdm(windows, desc=name, unit="tile", disable=not progress or len(windows) == 1)
        self.mask.prepare(src, cfg.tile)  # image-wide mask statistics, not one tile's
        try:
            for win in bar:
                bgr, valid = src.read(win)
                if roi is not None:
                    valid &= roi.pixels(win, self.config.mask.cell)
                if not valid.any():
                    acc.stats.tiles_skipped_nodata += 1
                    continue
                acc.add(win, self.run_array(bgr, None if valid.all() else valid, name))
        finally:
            self.mask.prepare(None)
        return acc

    def run_array(
        self, image: np.ndarray, valid: np.ndarray | None = None, source_name: str = "<array>"
    ) -> Result:
        """Detect objects in one in-memory image: mask -> engine (stem, windows, merge).

        Args:
            image: (H, W, 3) uint8 BGR.
            valid: optional (H, W) bool; invalid (nodata) pixels never activate cells.
            source_name: recorded in the result.

        Returns:
            Boxes in image pixels, with the mask and the engine's cells and windows.
        """
        return self.run_arrays([image], [valid], source_name)[0]

    def run_arrays(
        self,
        images: Sequence[np.ndarray],
        valid: Sequence[np.ndarray | None] | None = None,
        source_name: str = "<array>",
    ) -> list[Result]:
        """:meth:`run_array` on several images at once: each is masked and planned alone, and
        the engine batches their windows (``stats.seconds`` are the whole batch's)."""
        valid = list(valid) if valid is not None else [None] * len(images)
        timer = Timer(self.engine.device)
        t0 = time.perf_counter()
        frames = []
        for image, ok in zip(images, valid, strict=True):
            check_image(image, source_name)
            uploaded = None
            if self.engine.device.type != "cpu":  # one upload, shared by the mask and the stem
                with timer.stage("upload"):
                    uploaded = self.engine.upload(image)
            with timer.stage("mask"):
                frames.append(Frame(image, self.mask(image, ok, uploaded), ok, uploaded))
        runs = self.engine.run_batch(frames, timer)
        seconds = {**timer.seconds, "total": time.perf_counter() - t0}
        return [
            self._result(f, dets, run, seconds, source_name)
            for f, (dets, run) in zip(frames, runs, strict=True)
        ]

    def _result(
        self, f: Frame, dets: torch.Tensor, run: EngineRun, seconds: dict, name: str
    ) -> Result:
        height, width = f.image.shape[:2]
        stats = RunStats(
            seconds=seconds,
            active_fraction=run.active_fraction,
            mask_fraction=f.mask.active_fraction,
            window_fraction=run.window_fraction,
            n_windows=len(run.windows),
            backend=run.backend,
            fill=run.fill,
            mask=self.config.mask.name,
            image_size=(width, height),
            tiles_without_active_cells=int(len(run.windows) == 0),
        )
        d = Detections.from_rows(dets, self.names)
        return Result(d, stats, name, GeoRef(width, height), mask=f.mask, engine=run)


def merge_source(
    src: ImageSource, dets: torch.Tensor, config: DetectorConfig, names: dict[int, str]
) -> Result:
    """Merge a source's tile detections and attach its georeference.

    Args:
        src: the open source.
        dets: (N, 6) [x1, y1, x2, y2, score, class] in full-raster pixels from
            :meth:`Pipeline.detect_tiles`, of all its windows (in window order).
        config: the tiling merge and post-processing settings.
        names: class id -> name.
    """
    from sparse_yolo.io.raster import RasterSource  # noqa: PLC0415

    merged = merge_tiles(dets, config.post, config.tiling.merge)
    name = Path(str(src.path)).name
    warnings = []
    if src.crs is None and isinstance(src, RasterSource):
        warnings.append(f"{name}: no CRS; writing pixel coordinates")
    georef = GeoRef(src.width, src.height, src.crs, src.transform)
    stats = RunStats(image_size=(src.width, src.height))
    return Result(
        Detections.from_rows(merged, names), stats, str(src.path), georef, warnings=warnings
    )


def check_image(image: np.ndarray, name: str) -> None:
    """Reject arrays that are not (H, W, 3) uint8 with H, W > 0."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise SparseYoloError(
            f"expected an (H, W, 3) uint8 BGR image, got {image.shape} {image.dtype}", name
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise SparseYoloError("zero-size image", name)


class _TileAccumulator:
    """Tile detections shifted to raster pixels, summed stats, and a mask overview.

    Each tile keeps the detections whose centre lies in its core (:func:`tile_cores`), so
    an object in an overlap comes from the tile that sees it farthest from an edge; boxes
    larger than half the overlap may be cut in their owner, so every uncut copy of those is
    kept for the merge. With ``nms`` merging, boxes cut by a seam are dropped (another tile
    sees them whole); ``greedy`` merging fuses the pieces.
    """

    def __init__(self, width: int, height: int, n_tiles: int, tiling: TileConfig) -> None:
        self.width, self.height = width, height
        self.drop_seam_cuts = tiling.merge == "nms"
        self.large = tiling.overlap / 2
        self.cores = (
            tile_cores(width, tiling.tile, tiling.overlap),
            tile_cores(height, tiling.tile, tiling.overlap),
        )
        self.scale = min(1.0, OVERVIEW_SIDE / max(width, height))
        self.overview = np.zeros(
            (max(1, round(height * self.scale)), max(1, round(width * self.scale))), bool
        )
        self.stats = RunStats(n_tiles=n_tiles, image_size=(width, height))
        self._dets: list[torch.Tensor] = []
        self._px = {"active": 0.0, "mask": 0.0, "window": 0.0, "tile": 0}
        self._backends: set[str] = set()
        self.last: Result | None = None

    def add(self, win, res: Result) -> None:
        c, r = int(win.col_off), int(win.row_off)
        w, h = int(win.width), int(win.height)
        d = torch.from_numpy(
            np.concatenate([res.boxes, res.scores[:, None], res.classes[:, None]], 1)
        ).float()
        interior = (c > 0, r > 0, c + w < self.width, r + h < self.height)
        cut = cut_by_seam(d[:, :4], w, h, interior)
        d[:, [0, 2]] += c
        d[:, [1, 3]] += r
        keep = self._owned(d[:, :4], c, r) | (d[:, 2:4] - d[:, :2]).amax(1).gt(self.large)
        self._dets.append(d[(keep & ~cut) if self.drop_seam_cuts else (keep | cut)])
        s = self.stats
        for k, v in res.stats.seconds.items():
            s.seconds[k] = s.seconds.get(k, 0.0) + v
        self._px["active"] += res.stats.active_fraction * w * h
        self._px["mask"] += res.stats.mask_fraction * w * h
        self._px["window"] += res.stats.window_fraction * w * h
        self._px["tile"] += w * h
        s.n_windows += res.stats.n_windows
        s.tiles_without_active_cells += res.stats.tiles_without_active_cells
        s.fill = res.stats.fill
        self._backends.add(res.stats.backend)
        self._paint(res.mask, c, r, w, h)
        self.last = res

    def _owned(self, boxes: torch.Tensor, c: int, r: int) -> torch.Tensor:
        """(N,) bool: the box centre (raster pixels) lies in the core of the tile at (c, r)."""
        (x0, x1), (y0, y1) = self.cores[0][c], self.cores[1][r]
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        return (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)

    def _paint(self, mask: MaskResult | None, c: int, r: int, w: int, h: int) -> None:
        if mask is None:
            return
        s = self.scale
        y0, x0 = round(r * s), round(c * s)
        y1 = min(self.overview.shape[0], round((r + h) * s))
        x1 = min(self.overview.shape[1], round((c + w) * s))
        if y1 <= y0 or x1 <= x0:
            return
        cells = mask.cells[: -(-h // mask.cell), : -(-w // mask.cell)].astype(np.uint8)
        up = cv2.resize(cells, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
        self.overview[y0:y1, x0:x1] |= up.astype(bool)

    def dets(self) -> torch.Tensor:
        return torch.cat(self._dets) if self._dets else torch.zeros((0, 6))

    def finish(self, mask_name: str) -> RunStats:
        s, px = self.stats, self._px
        if px["tile"]:
            s.active_fraction = px["active"] / px["tile"]
            s.mask_fraction = px["mask"] / px["tile"]
            s.window_fraction = px["window"] / px["tile"]
        s.backend = ",".join(sorted(self._backends)) or "none"
        s.mask = mask_name
        return s
