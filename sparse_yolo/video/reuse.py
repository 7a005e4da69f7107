"""Reuse of detections in unchanged regions between full frames.

A static camera's parked cars, moored boats and furniture give the same detections frame
after frame. Between full frames (warm-up, refresh), a detection whose box, grown by a
margin of context, saw no motion and no change since the frame that computed it is
carried forward (same box, score and class) instead of recomputed. What motion or change
reaches is recomputed: the moving cells (the background model's), the changed cells (a
coarse copy of the frame against the one kept from when each cell was last computed: a
background model learns a slow or stopped object into the background, a comparison with
the computing frame does not), and every stored detection or kept object whose region
they touch, and, in turn, whatever those regions touch (so a region is either computed
whole or carried whole). Full frames compute everything and restart the store.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from sparse_yolo.postprocess import nms_boxes
from sparse_yolo.video.config import VideoConfig

# A pixel of the coarse copy has changed when it differs from the kept one by more than
# this many grey levels, after the frame-wide brightness shift is taken out (sensor and
# encoder noise stays under it: docs/video.md, "Sensor noise").
CHANGE_LEVELS = 16


def box_rects(boxes: np.ndarray, shape: tuple[int, int], cell: int, margin: int) -> np.ndarray:
    """Cell rectangles touched by boxes, grown by ``margin`` cells, cut to the grid.

    Args:
        boxes: (N, 4) xyxy in image pixels.
        shape: (Hc, Wc) of the cell grid.
        cell: cell edge in pixels.
        margin: cells added on every side.

    Returns:
        (N, 4) int64 [row0, row1, col0, col1], ends exclusive (empty when outside the grid).
    """
    if not len(boxes):
        return np.zeros((0, 4), np.int64)
    boxes = np.asarray(boxes, np.float64)
    lo = np.floor(boxes[:, :2] / cell).astype(np.int64) - margin
    hi = np.floor(np.maximum(boxes[:, 2:] - 1e-3, boxes[:, :2]) / cell).astype(np.int64)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi + margin + 1, [shape[1], shape[0]])
    return np.stack([lo[:, 1], hi[:, 1], lo[:, 0], hi[:, 0]], 1)


def grow_through(active: np.ndarray, rects: np.ndarray) -> np.ndarray:
    """Add to ``active`` (in place) every rectangle it touches, until none more touches.

    A rectangle is added when it shares a cell with ``active`` or with a rectangle added
    before it: the connected components of the rectangles under shared cells, those that
    reach an active cell. Found in one pass over the rectangles' cells (sorting them), so
    a car park's thousands of stored boxes cost milliseconds, however they chain.

    Args:
        active: (Hc, Wc) bool cells.
        rects: (N, 4) [row0, row1, col0, col1] from :func:`box_rects`.

    Returns:
        (N,) bool: the rectangles added.
    """
    n = len(rects)
    if not n:
        return np.zeros(0, bool)
    rects = np.asarray(rects, np.int64)
    h = np.maximum(rects[:, 1] - rects[:, 0], 0)
    w = np.maximum(rects[:, 3] - rects[:, 2], 0)
    sizes = h * w
    owner = np.repeat(np.arange(n), sizes)  # the rectangle of each of their cells
    k = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    wk = np.repeat(w, sizes)  # never 0: an empty rectangle has no cells to repeat
    rows = np.repeat(rects[:, 0], sizes) + k // wk
    cells = rows * active.shape[1] + np.repeat(rects[:, 2], sizes) + k % wk
    seeds = np.unique(owner[active.flat[cells]])
    order = np.argsort(cells, kind="stable")
    c, o = cells[order], owner[order]
    same = c[1:] == c[:-1]  # consecutive owners of one cell share it
    graph = coo_matrix((np.ones(int(same.sum())), (o[:-1][same], o[1:][same])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    added = np.isin(label, label[seeds])
    active.flat[cells[added[owner]]] = True
    return added


class Reuse:
    """The detections last computed in each region, and which of them a frame carries.

    Args:
        cell: cell edge in pixels.
        conf: detections at or above this score are stored (the output threshold).
        video: ``persist_margin`` (cells around a box that must see no motion or change
            for it to be carried: the detector's context; they are computed with it when
            motion comes), ``motion_min`` (share of a cell's coarse pixels that must
            change) and ``motion_size``/``motion_scale`` (the coarse copy's resolution).
    """

    def __init__(self, cell: int, conf: float, video: VideoConfig) -> None:
        self.cell, self.conf, self.video = cell, conf, video
        self.margin = video.persist_margin
        self.dets = np.zeros((0, 6), np.float32)  # (K, 6) [x1, y1, x2, y2, score, class]
        self.kept: np.ndarray | None = None  # (h, w) coarse grey copy as each cell was computed
        self.step = 1  # frame pixels per coarse pixel
        self._grid: tuple | None = None  # (key, (h, w) cell index of each coarse pixel, counts)

    def coarse(self, image: np.ndarray) -> np.ndarray:
        """(h, w) int16 grey copy of an (H, W, 3) uint8 BGR frame: every ``step``-th pixel,
        the step set by ``motion_size``/``motion_scale`` (sampling, not averaging: it costs
        little at 4K, and the noise stays under ``CHANGE_LEVELS``)."""
        h, w = image.shape[:2]
        scale = min(self.video.motion_scale, self.video.motion_size / max(h, w))
        self.step = step = max(1, round(1 / scale))
        if h % step or w % step:
            small = np.ascontiguousarray(image[::step, ::step])
        else:  # the same pixels, picked by OpenCV: 0.25 ms at 4K against numpy's 2.3
            small = cv2.resize(image, (w // step, h // step), interpolation=cv2.INTER_NEAREST)
        return cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.int16)

    def changed(self, view: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """(Hc, Wc) bool cells where at least ``motion_min`` of the coarse pixels changed
        since the cell was last computed (all of them before a first frame is kept)."""
        if self.kept is None or self.kept.shape != view.shape:
            return np.ones(shape, bool)
        diff = view - self.kept
        diff -= int(np.median(diff[::4, ::4]))  # a global exposure change is not a change
        index, counts = self._cells(view.shape, shape)
        moved = np.bincount(index.ravel(), (np.abs(diff) > CHANGE_LEVELS).ravel(), counts.size)
        share = moved / np.maximum(counts, 1)
        return (share >= self.video.motion_min).reshape(shape)

    def _cells(self, view_hw: tuple[int, int], shape: tuple[int, int]) -> tuple:
        """(h, w) flat cell index of each coarse pixel and (Hc * Wc,) pixels per cell."""
        key = (view_hw, shape, self.step)
        if self._grid is None or self._grid[0] != key:
            hc, wc = shape
            rows = np.minimum(np.arange(view_hw[0]) * self.step // self.cell, hc - 1)
            cols = np.minimum(np.arange(view_hw[1]) * self.step // self.cell, wc - 1)
            index = rows[:, None] * wc + cols[None, :]
            self._grid = (key, index, np.bincount(index.ravel(), minlength=hc * wc))
        return self._grid[1], self._grid[2]

    def split(self, moving: np.ndarray, objects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The cells a frame computes and the detections it carries.

        Args:
            moving: (Hc, Wc) bool cells the frame's masks marked (motion).
            objects: (N, 4) xyxy pixels of the kept objects (persistence).

        Returns:
            (Hc, Wc) bool cells to compute: ``moving`` grown through every stored
            detection and kept object whose region it touches; (M, 6) carried detections.
        """
        active = moving.copy()
        boxes = np.concatenate([self.dets[:, :4], np.asarray(objects, np.float32)])
        added = grow_through(active, box_rects(boxes, active.shape, self.cell, self.margin))
        return active, self.dets[~added[: len(self.dets)]]

    def update(
        self, computed: np.ndarray, dets: np.ndarray, full: bool, view: np.ndarray | None
    ) -> None:
        """After a frame: its computed (Hc, Wc) bool cells, its (N, 6) detections and its
        coarse copy (:meth:`coarse`; None when it had nothing stored to compare).

        A stored detection whose box reaches a computed cell is replaced by what that
        computation found, and the coarse copy of the computed cells is kept; a full frame
        replaces them all.
        """
        if view is None:
            pass  # not looked at: the kept copy grows older, so later comparisons flag more
        elif full or self.kept is None or self.kept.shape != view.shape:
            self.kept = view.copy()
        else:
            index, _ = self._cells(view.shape, computed.shape)
            where = computed.ravel()[index]
            self.kept[where] = view[where]
        old = self.dets[:0] if full else self.dets
        if len(old):
            rects = box_rects(old[:, :4], computed.shape, self.cell, 0)
            hit = np.array([computed[r0:r1, c0:c1].any() for r0, r1, c0, c1 in rects])
            old = old[~hit]
        fresh = dets[dets[:, 4] >= self.conf].astype(np.float32)
        self.dets = np.concatenate([fresh, old])


def merge_carried(
    computed: np.ndarray, carried: np.ndarray, iou: float
) -> tuple[np.ndarray, np.ndarray]:
    """A frame's computed and carried detections as one set; where both hold the same
    object (same class, IoU >= ``iou``), the computed one wins.

    Args:
        computed: (N, 6) [x1, y1, x2, y2, score, class] in frame pixels.
        carried: (M, 6) likewise.
        iou: overlap at which two boxes are one object.

    Returns:
        (K, 6) detections sorted by descending score, and (K,) bool: carried.
    """
    rows = np.concatenate([computed, carried]).astype(np.float32)
    is_carried = np.arange(len(rows)) >= len(computed)
    if len(carried) and len(computed):
        rank = rows[:, 4] + np.where(is_carried, 0.0, 2.0)  # computed first, then by score
        keep = nms_boxes(rows[:, :4], rank, rows[:, 5].astype(np.int64), iou)
        rows, is_carried = rows[keep], is_carried[keep]
    order = np.argsort(-rows[:, 4], kind="stable")
    return rows[order], is_carried[order]
