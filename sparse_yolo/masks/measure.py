"""What a mask is judged by: the objects it covers and the "perfect" mask of a labelled frame.

Boxes are (N, 4) xyxy in the pixels of the frame the (Hc, Wc) cell grid covers
(:func:`sparse_yolo.masks.cell_grid`).
"""

from __future__ import annotations

import cv2
import numpy as np

from sparse_yolo.masks.base import CellMask, MaskResult


def box_cells(boxes: np.ndarray, shape: tuple[int, int], cell: int) -> np.ndarray:
    """(Hc, Wc) bool: the cells any box overlaps (a degenerate box marks its own cell)."""
    out = np.zeros(shape, bool)
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    lo = np.floor(b[:, :2] / cell).astype(np.int64)
    hi = np.maximum(np.ceil(b[:, 2:] / cell).astype(np.int64), lo + 1)
    for (x0, y0), (x1, y1) in zip(lo.tolist(), hi.tolist(), strict=True):
        out[max(y0, 0) : max(min(y1, shape[0]), 0), max(x0, 0) : max(min(x1, shape[1]), 0)] = True
    return out


def perfect_cells(
    boxes: np.ndarray, shape: tuple[int, int], cell: int, margin: int = 1
) -> np.ndarray:
    """(Hc, Wc) bool: the reference mask, the boxes' own cells plus ``margin`` cells around."""
    cells = box_cells(boxes, shape, cell).astype(np.uint8)
    if margin:
        cells = cv2.dilate(cells, np.ones((2 * margin + 1,) * 2, np.uint8))
    return cells.astype(bool)


def centres_covered(cells: np.ndarray, cell: int, boxes: np.ndarray) -> np.ndarray:
    """(N,) bool: the centre of each box lies in an active cell (outside the grid: False)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    col = np.floor((b[:, 0] + b[:, 2]) / 2 / cell).astype(np.int64)
    row = np.floor((b[:, 1] + b[:, 3]) / 2 / cell).astype(np.int64)
    inside = (row >= 0) & (row < cells.shape[0]) & (col >= 0) & (col < cells.shape[1])
    out = np.zeros(len(b), bool)
    out[inside] = cells[row[inside], col[inside]]
    return out


class FixedMask(CellMask):
    """A mask of given cells (e.g. :func:`perfect_cells`), used as is: no post-processing."""

    name = "fixed"

    def __init__(self, cfg, cells: np.ndarray) -> None:
        super().__init__(cfg)
        self.cells = cells

    def __call__(self, image, valid=None, frame=None) -> MaskResult:
        return MaskResult(self.cells, self.cells.astype(np.float32), self.cfg.cell)
