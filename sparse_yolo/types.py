"""Plain data passed between pipeline stages, and the one result record per image.

``Detections`` are what the engine and the merges produce; ``RunStats`` is what a run
measured; ``GeoRef`` is what the writers need to put pixels on the ground. ``Result`` holds
the three for one image or raster, plus the mask that was examined.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from affine import Affine

    from sparse_yolo.masks import MaskResult


@dataclass
class Detections:
    """Detections of one image or raster.

    Attributes:
        boxes: (N, 4) float32 xyxy in full-image (raster) pixels.
        scores: (N,) float32 confidences.
        classes: (N,) int64 class ids.
        names: class id -> class name.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    names: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.classes = np.asarray(self.classes, dtype=np.int64).reshape(-1)
        if not len(self.boxes) == len(self.scores) == len(self.classes):
            raise ValueError("boxes, scores and classes differ in length")

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls, names: dict[int, str] | None = None) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0), names or {})

    @classmethod
    def from_rows(cls, rows: Any, names: dict[int, str]) -> Detections:
        """From an (N, 6) array or tensor of [x1, y1, x2, y2, score, class] rows."""
        rows = np.asarray(rows.cpu() if hasattr(rows, "cpu") else rows, np.float32).reshape(-1, 6)
        return cls(rows[:, :4], rows[:, 4], rows[:, 5], names)


@dataclass
class EngineRun:
    """What the engine computed for one image: the cells and windows it actually used.

    Attributes:
        backend: the stem backend that ran (``gather``, ``spconv`` or ``dense``; ``plain``
            for the plain dense forward).
        fill: what inactive stride-8 sites held (``flat``, ``zero``, or ``background``:
            the camera's, see :mod:`sparse_yolo.engine.background`).
        cells: (Hc, Wc) bool cells the stem computed (all True when ``auto`` chose every
            cell or the plain dense forward).
        cell: cell edge in pixels.
        windows: (B, 4) int windows (y0, x0, h, w) in stride-8 units.
        path: ``windows``, ``every_cell`` or ``dense`` (``sparse_yolo.engine.policy``).
        predicted_ms: ``auto``'s predicted milliseconds of every candidate path (empty for
            an explicit backend).
    """

    backend: str
    fill: str
    cells: np.ndarray
    cell: int
    windows: np.ndarray
    path: str = "windows"
    predicted_ms: dict[str, float] = field(default_factory=dict)

    @property
    def active_fraction(self) -> float:
        return float(self.cells.mean()) if self.cells.size else 0.0

    @property
    def window_fraction(self) -> float:
        """Share of the stride-8 grid the windows cover (overlaps counted twice)."""
        grid = self.cells.size * (self.cell // 8) ** 2
        return float((self.windows[:, 2] * self.windows[:, 3]).sum() / grid) if grid else 0.0


@dataclass
class RunStats:
    """What one run measured, summed over the tiles of a raster.

    Attributes:
        seconds: seconds per stage (``upload``, ``mask``, ``plan``, ``stem``, ``densify``,
            ``remainder``, ``merge``) and ``total``.
        active_fraction: share of cells the stem computed.
        mask_fraction: share of cells the mask marked.
        window_fraction: share of the stride-8 grid the windows covered.
        n_windows: windows run through the rest of the network.
        backend: stem backends used, comma-separated (``none`` when nothing ran).
        fill: background fill of inactive sites.
        mask: mask name.
        image_size: (width, height) in pixels.
        n_tiles: tiles read; ``tiles_skipped_nodata`` of them were all nodata and
            ``tiles_without_active_cells`` had no active cell.
    """

    seconds: dict[str, float] = field(default_factory=dict)
    active_fraction: float = 0.0
    mask_fraction: float = 0.0
    window_fraction: float = 0.0
    n_windows: int = 0
    backend: str = "none"
    fill: str = ""
    mask: str = ""
    image_size: tuple[int, int] = (0, 0)
    n_tiles: int = 1
    tiles_skipped_nodata: int = 0
    tiles_without_active_cells: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (``--stats``)."""
        out = dataclasses.asdict(self)
        out["image_size"] = list(self.image_size)
        return out


@dataclass
class GeoRef:
    """Where an image's pixels lie on the ground.

    Attributes:
        width: image width in pixels.
        height: image height in pixels.
        crs: a ``rasterio.crs.CRS``, or None for plain (ungeoreferenced) images.
        transform: affine from (col, row) pixels to CRS coordinates (identity when no CRS).
    """

    width: int
    height: int
    crs: Any = None
    transform: Affine | None = None


@dataclass
class Result:
    """Everything one image or raster produced: the one record per image.

    Attributes:
        detections: boxes as (N, 4) xyxy in full-image pixels, scores, classes, names.
        stats: what the run measured.
        source: the input's path, or ``"<array>"``.
        georef: size, CRS and affine of the source; the writers georeference through it.
        mask: the cell mask that was examined, for single-tile sources.
        engine: the cells and windows the engine used, for single-tile sources.
        mask_overview: (h', w') bool cells examined over the whole source, at
            ``overview_scale`` overview pixels per source pixel.
        warnings: one-line notes for the user (e.g. a raster without CRS).
    """

    detections: Detections
    stats: RunStats
    source: str = "<array>"
    georef: GeoRef | None = None
    mask: MaskResult | None = None
    engine: EngineRun | None = None
    mask_overview: np.ndarray | None = None
    overview_scale: float = 1.0
    warnings: list[str] = field(default_factory=list)

    @property
    def boxes(self) -> np.ndarray:
        """(N, 4) float32 xyxy in full-image pixels."""
        return self.detections.boxes

    @property
    def scores(self) -> np.ndarray:
        return self.detections.scores

    @property
    def classes(self) -> np.ndarray:
        return self.detections.classes

    @property
    def names(self) -> dict[int, str]:
        return self.detections.names

    @property
    def name(self) -> str:
        """The source's file name (what the outputs record)."""
        return Path(str(self.source)).name

    def __len__(self) -> int:
        return len(self.detections)
