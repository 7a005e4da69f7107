"""Reuse of detections in unchanged regions between full frames.

A static camera's parked cars, moored boats and furniture give the same detections frame
after frame. Between full frames (warm-up, refresh), a detection whose box, grown by a
margin of context, saw no motion since the frame that computed it is carried forward
(same box, score and class) instead of recomputed. What motion reaches is recomputed: the
moving cells, and every stored detection or kept object whose region they touch, and, in
turn, whatever those regions touch (so a region is either computed whole or carried
whole). Full frames compute everything and restart the store from their detections.
"""

from __future__ import annotations

import numpy as np

from sparse_yolo.postprocess import nms_boxes


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

    Args:
        active: (Hc, Wc) bool cells.
        rects: (N, 4) [row0, row1, col0, col1] from :func:`box_rects`.

    Returns:
        (N,) bool: the rectangles added.
    """
    added = np.zeros(len(rects), bool)
    grew = True
    while grew:
        grew = False
        for i in np.flatnonzero(~added):
            r0, r1, c0, c1 = rects[i]
            if active[r0:r1, c0:c1].any():
                active[r0:r1, c0:c1] = True
                added[i] = grew = True
    return added


class Reuse:
    """The detections last computed in each region, and which of them a frame carries.

    Args:
        cell: cell edge in pixels.
        margin: cells around a box that must see no motion for it to be carried (the
            detector's context), and that are computed with it when motion comes.
        conf: detections at or above this score are stored (the output threshold).
    """

    def __init__(self, cell: int, margin: int, conf: float) -> None:
        self.cell, self.margin, self.conf = cell, margin, conf
        self.dets = np.zeros((0, 6), np.float32)  # (K, 6) [x1, y1, x2, y2, score, class]

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

    def update(self, computed: np.ndarray, dets: np.ndarray, full: bool) -> None:
        """After a frame: its computed (Hc, Wc) bool cells and its (N, 6) detections.

        A stored detection whose box reaches a computed cell is replaced by what that
        computation found; a full frame replaces them all.
        """
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
