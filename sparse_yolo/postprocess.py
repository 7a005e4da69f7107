"""Every NMS and merge of detections, in the manner of ``torchvision/ops/boxes.py``.

Detections are ``(N, 6)`` float tensors ``[x1, y1, x2, y2, score, class]``. The stages that
merge, in data-path order:

1. :func:`window_nms`: within each densified window (as Ultralytics' per-image NMS), then
   window pixels -> image pixels.
2. :func:`merge_windows`: across the overlapping windows of one image.
3. :func:`cut_by_seam` and :func:`merge_tiles`: across the overlapping tiles of one raster,
   in full-raster pixels.
4. :func:`join_cut_boxes`: across abutting tile files, the pieces of a box cut by their
   shared edge become one.
5. :func:`nms_boxes`: across files, on boxes in any shared frame (e.g. CRS envelopes).

Pure torch/torchvision: no model, no GDAL.
"""

from __future__ import annotations

import numpy as np
import torch
import torchvision

from sparse_yolo.config import PostprocessConfig

SEAM_PX = 2.0  # a box this close to an interior tile edge is cut by the seam


def nms(dets: torch.Tensor, post: PostprocessConfig) -> torch.Tensor:
    """Class-aware (unless ``post.agnostic``) batched NMS of (N, 6) detections, best first."""
    groups = torch.zeros_like(dets[:, 5]) if post.agnostic else dets[:, 5]
    keep = torchvision.ops.batched_nms(dets[:, :4], dets[:, 4], groups, post.iou)
    return dets[keep[: post.max_det]]


def window_nms(
    cand: torch.Tensor,
    windows: torch.Tensor,
    post: PostprocessConfig,
    stride: int = 8,
    suppress: bool = True,
) -> torch.Tensor:
    """NMS within each window, then shift the kept boxes to image pixels.

    Args:
        cand: (K, 7) [x1, y1, x2, y2, score, class, window index] in window pixels.
        windows: (B, 4) windows (y0, x0, h, w) in ``stride`` units.
        post: IoU threshold and class-agnostic flag.
        stride: pixels per window unit.
        suppress: False for an end-to-end (NMS-free) head, whose top-k Ultralytics keeps.

    Returns:
        (M, 6) on CPU, in image pixels.
    """
    win = cand[:, 6].long()
    if not suppress:
        out = cand[:, :6].cpu()
        out[:, :4] += (windows[:, [1, 0, 1, 0]] * stride).to(out)[win.cpu()]
        return out
    # One NMS group per (window, class): offsetting by a class count larger than any class
    # id keeps the groups distinct without knowing the model's nc.
    span = 1 if post.agnostic else int(cand[:, 5].max().item()) + 1 if len(cand) else 1
    groups = win * span + (0 if post.agnostic else cand[:, 5].long())
    keep = torchvision.ops.batched_nms(cand[:, :4], cand[:, 4], groups, post.iou)
    out = cand[keep, :6].cpu()
    shift = (windows[:, [1, 0, 1, 0]] * stride).to(out)[win[keep].cpu()]
    out[:, :4] += shift
    return out


def merge_windows(
    dets: torch.Tensor, image_hw: tuple[int, int], post: PostprocessConfig, suppress: bool = True
) -> torch.Tensor:
    """Merge detections from overlapping windows of one image: NMS, then clip to it.

    NMS runs on the boxes as predicted and clipping comes after, in Ultralytics' order.

    Args:
        dets: (N, 6) in image pixels.
        image_hw: (H, W); boxes are clipped to it and boxes centred outside are dropped.
        post: IoU threshold, class-agnostic flag and max_det.
        suppress: run NMS (False: only sort, cap and clip: one window of an end-to-end head).

    Returns:
        (M, 6) sorted by descending score, at most ``post.max_det`` rows.
    """
    h, w = image_hw
    cx, cy = (dets[:, 0] + dets[:, 2]) / 2, (dets[:, 1] + dets[:, 3]) / 2
    dets = dets[(cx < w) & (cy < h)]
    if suppress:
        dets = nms(dets, post)
    else:
        dets = dets[torch.argsort(dets[:, 4], descending=True, stable=True)[: post.max_det]]
    dets[:, [0, 2]] = dets[:, [0, 2]].clamp(0, w)
    dets[:, [1, 3]] = dets[:, [1, 3]].clamp(0, h)
    return dets


def cut_by_seam(
    boxes: torch.Tensor, w: int, h: int, interior: tuple[bool, bool, bool, bool]
) -> torch.Tensor:
    """(N,) bool: the box touches an interior tile edge, so a neighbouring tile sees it whole.

    Args:
        boxes: (N, 4) xyxy in tile pixels.
        w, h: tile size.
        interior: which of the (left, top, right, bottom) edges are seams inside the raster.
    """
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


def merge_tiles(dets: torch.Tensor, post: PostprocessConfig, merge: str = "nms") -> np.ndarray:
    """Merge detections of overlapping tiles in full-raster pixels.

    Args:
        dets: (N, 6) in full-raster pixels.
        post: IoU threshold, class-agnostic flag and max_det.
        merge: ``nms`` (torchvision batched NMS) or ``greedy`` (SAHI-style greedy
            non-maximum merging: boxes overlapping the kept one by intersection over the
            smaller area >= iou are fused into their union box).

    Returns:
        (M, 6) float32, sorted by score.
    """
    if merge not in MERGES:
        raise ValueError(f"unknown merge {merge!r}; known: {', '.join(MERGES)}")
    if not len(dets):
        return np.zeros((0, 6), np.float32)
    if merge == "greedy":
        groups = torch.zeros_like(dets[:, 5]) if post.agnostic else dets[:, 5]
        out = greedy_merge(dets, groups, post.iou)
    else:
        out = nms(dets, post)
    return out[: post.max_det].numpy().astype(np.float32)


MERGES = ("nms", "greedy")


def greedy_merge(dets: torch.Tensor, groups: torch.Tensor, ios: float) -> torch.Tensor:
    """SAHI-style greedy non-maximum merging, grown to a fixed point.

    In score order, each kept box absorbs the same-group boxes whose intersection over the
    smaller area is >= ``ios``, then keeps absorbing against the fused box, so the pieces of
    a box cut by two seams all join it.
    """
    order = dets[:, 4].argsort(descending=True, stable=True)
    dets, groups = dets[order], groups[order]
    boxes = dets[:, :4]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    taken = torch.zeros(len(dets), dtype=torch.bool)
    out = []
    for i in range(len(dets)):
        if taken[i]:
            continue
        fused = dets[i].clone()
        taken[i] = True
        while True:
            lt = torch.maximum(fused[:2], boxes[:, :2])
            rb = torch.minimum(fused[2:4], boxes[:, 2:])
            inter = (rb - lt).clamp(min=0).prod(-1)
            own = (fused[2] - fused[0]) * (fused[3] - fused[1])
            new = inter / torch.minimum(area, own).clamp(min=1e-6) >= ios
            new &= (groups == groups[i]) & ~taken
            if not new.any():
                break
            taken |= new
            fused[:2] = torch.minimum(fused[:2], boxes[new, :2].min(0).values)
            fused[2:4] = torch.maximum(fused[2:4], boxes[new, 2:].max(0).values)
        out.append(fused)
    return torch.stack(out)


def nms_boxes(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> np.ndarray:
    """Class-aware NMS on boxes in any shared frame (e.g. CRS envelopes of several files).

    Coordinates are shifted to the frame's minimum and kept in float64, so boxes in large
    CRS units (metres of a UTM zone) keep their precision.

    Args:
        boxes: (N, 4) xyxy.
        scores: (N,).
        classes: (N,) int class ids.
        iou: IoU threshold.

    Returns:
        Sorted indices of the boxes kept.
    """
    if len(boxes) < 2:
        return np.arange(len(boxes))
    b = torch.as_tensor(np.asarray(boxes, np.float64))
    b = b - b[:, :2].min(0).values.repeat(2)
    s = torch.as_tensor(np.asarray(scores, np.float64))
    keep = torchvision.ops.batched_nms(b, s, torch.as_tensor(np.asarray(classes)), iou)
    return keep.sort().values.numpy()


def join_cut_boxes(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    footprints: np.ndarray,
    tol: float = SEAM_PX,
    min_overlap: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Join the pieces of boxes cut by the shared edge of abutting tiles (e.g. tile files).

    A box is cut on a side when that side lies within ``tol`` of the same side of its own
    tile. Two pieces join when they have one class, their tiles meet on one line (the right
    or bottom edge of one is the left or top edge of the other), both are cut on that line,
    and they overlap along it by at least ``min_overlap`` of the shorter one. Joining is
    transitive, so the four pieces of a box cut at a tile corner become one. (Two distinct
    objects touching each other across the edge are joined too: the tiles cannot tell.)

    Args:
        boxes: (N, 4) xyxy in one pixel frame shared by all tiles (y down).
        scores: (N,).
        classes: (N,) int class ids.
        footprints: (N, 4) xyxy of each box's tile in the same frame; NaN rows never join.
        tol: pixels within which a box side lies on a tile edge.
        min_overlap: required overlap along the edge, as a fraction of the shorter piece.

    Returns:
        ``keep``: (M,) sorted indices of the best-scoring piece of each joined set (and of
        every box that joined nothing); ``fused``: (M, 4) the union box of each set.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    footprints = np.asarray(footprints, np.float64).reshape(-1, 4)
    parent = np.arange(len(boxes))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for lo_side, hi_side in ((0, 2), (1, 3)):  # a vertical edge (x), then a horizontal one
        along = [1, 3] if lo_side == 0 else [0, 2]
        for i, j in _pieces_on_shared_edges(boxes, footprints, lo_side, hi_side, tol):
            a, b = boxes[i, along], boxes[j, along]
            shared = min(a[1], b[1]) - max(a[0], b[0])
            shorter = min(a[1] - a[0], b[1] - b[0])
            if classes[i] == classes[j] and shared >= min_overlap * max(shorter, 1e-9):
                parent[root(i)] = root(j)
    roots = np.array([root(i) for i in range(len(boxes))], dtype=np.int64)
    keep, fused = [], []
    for r in np.unique(roots):
        members = np.flatnonzero(roots == r)
        keep.append(members[np.argmax(np.asarray(scores)[members])])
        fused.append([*boxes[members, :2].min(0), *boxes[members, 2:].max(0)])
    order = np.argsort(keep, kind="stable")
    return np.asarray(keep, np.int64)[order], np.asarray(fused, np.float64).reshape(-1, 4)[order]


def _pieces_on_shared_edges(
    boxes: np.ndarray, footprints: np.ndarray, lo_side: int, hi_side: int, tol: float
) -> list[tuple[int, int]]:
    """(i, j) pairs: box i cut by its tile's ``hi_side`` edge, box j by its tile's
    ``lo_side`` edge, on the same line (``hi_side`` is right or bottom)."""
    with np.errstate(invalid="ignore"):
        hi = np.flatnonzero(np.abs(boxes[:, hi_side] - footprints[:, hi_side]) <= tol)
        lo = np.flatnonzero(np.abs(boxes[:, lo_side] - footprints[:, lo_side]) <= tol)
    on_line: dict[int, list[int]] = {}
    for j in lo.tolist():
        on_line.setdefault(round(footprints[j, lo_side]), []).append(j)
    return [(i, j) for i in hi.tolist() for j in on_line.get(round(footprints[i, hi_side]), ())]
