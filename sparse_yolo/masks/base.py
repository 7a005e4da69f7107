"""The mask base class and the post-processing chain every mask shares.

Every mask scores cells, then shares one post-processing chain so that all of them stay
blob-shaped and budgeted:

1. threshold the scores (adaptive per image by default),
2. close small gaps into blobs,
3. drop specks: active groups smaller than ``min_blob`` cells whose peak score is weak
   (a small object has a strong peak and survives; texture noise does not),
4. dilate by ``context`` cells, because zeroed background around an object costs recall,
5. keep at most ``max_active`` of the cells, ranked by (dilated) score.

A mask whose decision depends on statistics of the whole image (not of one tile) takes
them in :meth:`CellMask.prepare`, which the pipeline calls once per source before its tile
loop; until then (an in-memory array) the image itself is the whole image.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import cv2
import numpy as np

from sparse_yolo.config import MaskConfig
from sparse_yolo.imageops import PAD_TO, padded

if TYPE_CHECKING:
    import torch
    from rasterio.windows import Window

BACKGROUND_PERCENTILE = 25  # of cell scores: the quiet background of a frame


def cell_grid(height: int, width: int, cell: int) -> tuple[int, int]:
    """(Hc, Wc) cells covering an image padded to a multiple of 32 pixels."""
    return padded(height) // cell, padded(width) // cell


@dataclass
class MaskResult:
    """Active cells of one image.

    Attributes:
        cells: (Hc, Wc) bool, True where the stem computes.
        scores: (Hc, Wc) float32 objectness-like score used for ranking.
        cell: cell edge in pixels.
    """

    cells: np.ndarray
    scores: np.ndarray
    cell: int

    @property
    def active_fraction(self) -> float:
        return float(self.cells.mean()) if self.cells.size else 0.0


class Source(Protocol):
    """What :meth:`CellMask.prepare` reads (``sparse_yolo.io.raster.ImageSource``)."""

    width: int
    height: int

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]: ...

    def read_overview(self, max_side: int = 2048) -> tuple[np.ndarray, np.ndarray, float]: ...


class CellMask:
    """Base class: subclasses implement :meth:`scores` (and may override :meth:`select`).

    Masks with image-wide statistics override :meth:`image_statistics`; the statistics of
    the source being detected (set by :meth:`prepare`) are then in ``self.stats``.
    """

    name: ClassVar[str] = "base"

    def __init__(self, cfg: MaskConfig, **context: Any) -> None:
        self.cfg = cfg
        self.context = context
        self.stats: Any = None

    def prepare(self, source: Source | None, max_side: int = 1 << 30) -> None:
        """Fix image-wide statistics from a whole source, before its tiles are masked, so
        that the cells a tile gets do not depend on the tiling. ``None`` forgets them
        (every image is then its own whole). Reads are at most ``max_side`` px."""
        self.stats = None if source is None else self.source_statistics(source, max_side)

    def source_statistics(self, source: Source, max_side: int) -> Any:
        """Statistics of a whole source (default: none)."""
        return None

    def valid_scores(self, image: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        """(Hc, Wc) float32 :meth:`scores`, 0 in cells without a valid pixel."""
        s = self.scores(image).astype(np.float32)
        if valid is not None:
            s = np.where(cell_any(valid, self.cfg.cell, s.shape), s, 0.0).astype(np.float32)
        return s

    def image_statistics(self, image: np.ndarray, valid: np.ndarray | None) -> Any:
        """Statistics of one whole (H, W, 3) uint8 BGR image (default: none)."""
        return None

    def scores(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 BGR image -> (Hc, Wc) float32 cell scores."""
        raise NotImplementedError

    def select(self, scores: np.ndarray) -> tuple[np.ndarray, float]:
        """Adaptive threshold relative to the frame's quiet background.

        The background level is the 25th percentile of cell scores (robust while objects and
        clutter cover under 75% of the frame), of the whole source's cells when
        :meth:`prepare` has set it (``self.stats``); cells above ``threshold * (2 * background +
        floor)`` are active, and twice that marks a strong peak.

        Returns:
            (Hc, Wc) bool cells above threshold, and the score of a strong peak.
        """
        background = (
            float(np.percentile(scores, BACKGROUND_PERCENTILE))
            if self.stats is None
            else float(self.stats)
        )
        thr = self.cfg.threshold * (2.0 * background + self.floor)
        return scores > thr, 2.0 * thr

    floor: ClassVar[float] = 0.0

    def device_scores(self, frame: torch.Tensor) -> torch.Tensor | None:
        """:meth:`scores` from the frame already on the model's (CUDA) device, or None (the
        default) to compute them from the CPU copy."""
        return None

    def __call__(
        self,
        image: np.ndarray,
        valid: np.ndarray | None = None,
        frame: torch.Tensor | None = None,
    ) -> MaskResult:
        """Compute the mask of an (H, W, 3) uint8 BGR image.

        Args:
            image: pixels.
            valid: optional (H, W) bool; cells without any valid pixel stay inactive.
            frame: the same pixels on the model's device, when they are there already.
        """
        prepared = self.stats is not None
        if not prepared:
            self.stats = self.image_statistics(image, valid)
        try:
            s = self.device_scores(frame) if frame is not None else None
            if s is None:
                s = self.valid_scores(image, valid)
            else:
                s = s.cpu().numpy().astype(np.float32)
                if valid is not None:
                    s = np.where(cell_any(valid, self.cfg.cell, s.shape), s, 0.0)
                    s = s.astype(np.float32)
            cells, strong = self.select(s)
        finally:
            if not prepared:
                self.stats = None
        cells = postprocess(cells, s, strong, self.cfg)
        if valid is not None:  # not even the context margin reaches nodata or outside an ROI
            cells &= cell_any(valid, self.cfg.cell, s.shape)
        else:  # nor the padding to a multiple of 32 px: cells holding no pixel of the image
            c = self.cfg.cell
            cells[-(-image.shape[0] // c) :] = False
            cells[:, -(-image.shape[1] // c) :] = False
        return MaskResult(cells, s, self.cfg.cell)


def cell_any(valid: np.ndarray, cell: int, shape: tuple[int, int]) -> np.ndarray:
    """(Hc, Wc) bool: cells of the ``shape`` grid holding any True pixel of (H, W) ``valid``."""
    padded = np.zeros((shape[0] * cell, shape[1] * cell), dtype=np.uint8)
    padded[: valid.shape[0], : valid.shape[1]] = valid
    return padded.reshape(shape[0], cell, shape[1], cell).max(axis=(1, 3)) > 0


def postprocess(
    cells: np.ndarray, scores: np.ndarray, strong: float, cfg: MaskConfig
) -> np.ndarray:
    """Close, de-speck, dilate and budget a thresholded cell mask (steps 2-5 above)."""
    kernel = np.ones((3, 3), np.uint8)
    m = cv2.morphologyEx(cells.astype(np.uint8), cv2.MORPH_CLOSE, kernel)
    m = drop_specks(m, scores, cfg.min_blob, strong)
    if cfg.context:
        m = cv2.dilate(m, kernel, iterations=cfg.context)
    m = m.astype(bool)
    if cfg.max_active is not None:
        m = apply_budget(m, scores, cfg.max_active, cfg.context)
    return m


def drop_specks(mask: np.ndarray, scores: np.ndarray, min_blob: int, strong: float) -> np.ndarray:
    """Remove groups smaller than ``min_blob`` cells unless their peak score is ``strong``."""
    if min_blob <= 1:
        return mask
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return mask
    peak = np.zeros(n, np.float32)
    np.maximum.at(peak, labels.reshape(-1), scores.reshape(-1))
    keep = (stats[:, cv2.CC_STAT_AREA] >= min_blob) | (peak >= strong)
    keep[0] = False  # background label
    return keep[labels].astype(np.uint8)


def apply_budget(mask: np.ndarray, scores: np.ndarray, fraction: float, context: int) -> np.ndarray:
    """Keep the best ``fraction`` of all cells within ``mask``.

    Context cells rank with the best score within ``context`` cells, so a blob and its
    context margin are kept or dropped together.
    """
    budget = int(fraction * mask.size)
    if mask.sum() <= budget:
        return mask
    ranked = scores
    if context:
        ranked = cv2.dilate(scores, np.ones((2 * context + 1,) * 2, np.uint8))
    ranked = np.where(mask, ranked, -np.inf).reshape(-1)
    keep = np.zeros(mask.size, dtype=bool)
    keep[np.argsort(-ranked, kind="stable")[:budget]] = True
    return keep.reshape(mask.shape) & mask


SAMPLE_SIDE = 1024  # px: full-resolution windows read for a large source's statistics
SAMPLE_GRID = 4  # SAMPLE_GRID x SAMPLE_GRID windows on a regular grid
WHOLE_MAX_PX = 4096 * 4096  # sources up to this size are read whole


def sample_source(
    source: Source, max_side: int = SAMPLE_SIDE
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Full-resolution ``(bgr, valid)`` reads that stand for a whole source: all of it, in
    chunks, when it is small, else a regular grid of windows. Reads are at most ``max_side``
    (the tile size, so memory stays bounded by it) and :data:`SAMPLE_SIDE` px; from a tile size
    of :data:`SAMPLE_SIDE` up they do not depend on the tiling at all."""
    from rasterio.windows import Window  # noqa: PLC0415 - only sources need rasterio

    w, h = source.width, source.height
    side = max(PAD_TO, min(SAMPLE_SIDE, max_side) // PAD_TO * PAD_TO)
    if w * h <= WHOLE_MAX_PX:
        cols, rows = range(0, w, side), range(0, h, side)
    else:
        cols = np.linspace(0, max(w - side, 0), SAMPLE_GRID).round().astype(int).tolist()
        rows = np.linspace(0, max(h - side, 0), SAMPLE_GRID).round().astype(int).tolist()
    for r in rows:
        for c in cols:
            yield source.read(Window(c, r, min(side, w - c), min(side, h - r)))
