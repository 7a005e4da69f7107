"""Plan the dense windows that cover the active cells at stride 8.

Windows follow the active clusters: one box per connected group of active cells, grown by a
context margin and aligned to stride 32 (so P4/P5 of a window sit on the full-frame grid),
then merged while a merge is no dearer than the separate windows. The dense remainder costs
about the same per stride-8 cell batched or not, so the objective is the total windowed area;
overlapping windows would pay twice.

Planning is bounded in the number of components n: candidate pairs come from a coarse
bucket grid (only boxes that touch can merge), and merges happen in rounds, each box joining
its best partner (:func:`merge_boxes`), so a round is O(n log n) numpy work and the rounds
are few. When the boxes cover most of the frame before any merge, one frame-wide window is
planned at once (``FULL_COVER``).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from sparse_yolo.config import WindowConfig

ALIGN = 4  # stride-8 cells per stride-32 cell
# Window edges (stride-8 cells) are rounded up to this ladder (then multiples of 128), so
# that windows share a few shapes: each new input shape costs the CPU conv library fresh
# kernels and buffers, and equal shapes batch into one forward.
LADDER = np.array([8, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128])
# When the component boxes alone (before merging, which only grows them) cover this share
# of the frame, the plan is one frame-wide window: at most 1/0.85 of the best plan's area.
FULL_COVER = 0.85
BUCKET = 16  # stride-8 cells per bucket edge of the pair search
MAX_ROUNDS = 64  # merge rounds; each merges at least one pair, most halve the boxes


def plan_windows(cells: np.ndarray, cell: int, cfg: WindowConfig, align: int = ALIGN) -> np.ndarray:
    """Boxes that cover every active cell with ``cfg.margin`` stride-8 cells of context.

    Args:
        cells: (Hc, Wc) bool active cells; ``Hc * cell`` and ``Wc * cell`` are multiples of
            ``8 * align`` px.
        cell: cell edge in pixels.
        cfg: margin and merge rule.
        align: stride-8 cells per coarsest model stride (4 for stride 32, 8 for a P6 model's
            64): windows start and end on that lattice.

    Returns:
        (K, 4) int64 (y0, x0, h, w) in stride-8 units, inside the stride-8 grid.
    """
    cells = np.ascontiguousarray(cells, dtype=np.uint8)
    r = cell // 8
    grid_h, grid_w = cells.shape[0] * r, cells.shape[1] * r
    n, _, stats, _ = cv2.connectedComponentsWithStats(cells, connectivity=8)
    if n <= 1:
        return np.zeros((0, 4), dtype=np.int64)
    x, y, w, h = (stats[1:, i].astype(np.int64) * r for i in range(4))
    boxes = np.stack([y, x, y + h, x + w], 1) + np.array([-1, -1, 1, 1]) * cfg.margin
    boxes = _align(boxes, grid_h, grid_w, align)
    full = np.array([[0, 0, grid_h, grid_w]], dtype=np.int64)
    if cover_fraction(boxes, (grid_h, grid_w)) >= FULL_COVER:
        boxes = full
    else:
        boxes = _snap_sizes(merge_boxes(boxes, cfg.merge_slack), grid_h, grid_w, align)
        if _area(boxes).sum() >= grid_h * grid_w:  # overlaps made windows dearer than the frame
            boxes = full
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)


def cover_fraction(boxes: np.ndarray, grid_hw: tuple[int, int]) -> float:
    """Share of the grid inside the union of ``ALIGN``-aligned (y0, x0, y1, x1) boxes.

    Painted on the stride-32 lattice with a 2D difference array: O(n + grid / 16).
    """
    hb, wb = -(-grid_hw[0] // ALIGN), -(-grid_hw[1] // ALIGN)
    b = boxes // ALIGN
    diff = np.zeros((hb + 1, wb + 1), np.int32)
    np.add.at(diff, (b[:, 0], b[:, 1]), 1)
    np.add.at(diff, (b[:, 0], b[:, 3]), -1)
    np.add.at(diff, (b[:, 2], b[:, 1]), -1)
    np.add.at(diff, (b[:, 2], b[:, 3]), 1)
    painted = diff.cumsum(0).cumsum(1)[:hb, :wb] > 0
    return float(painted.mean())


def ladder_size(n: np.ndarray, limit: int, align: int = ALIGN) -> np.ndarray:
    """Round window edges up to the shape ladder (then to multiples of ``align``), never
    past ``limit``."""
    big = -(-n // 128) * 128
    idx = np.searchsorted(LADDER, n)
    snapped = np.where(n <= LADDER[-1], LADDER[np.minimum(idx, len(LADDER) - 1)], big)
    return np.minimum(-(-snapped // align) * align, limit)


def _snap_sizes(boxes: np.ndarray, grid_h: int, grid_w: int, align: int) -> np.ndarray:
    """Grow each (y0, x0, y1, x1) to a ladder size, centred, shifted to stay in the grid."""
    size = boxes[:, 2:] - boxes[:, :2]
    new = [ladder_size(size[:, 0], grid_h, align), ladder_size(size[:, 1], grid_w, align)]
    return _grow(boxes, np.stack(new, 1), (grid_h, grid_w), align)


def _grow(
    boxes: np.ndarray, new: np.ndarray, grid_hw: tuple[int, int], align: int = ALIGN
) -> np.ndarray:
    """Grow (y0, x0, y1, x1) boxes to (h, w) ``new`` sizes around their centres, on the
    ``align`` lattice, shifted to stay inside the grid; each still contains its box."""
    size = boxes[:, 2:] - boxes[:, :2]
    lo = boxes[:, :2] - (new - size) // 2 // align * align
    lo = np.clip(lo, 0, np.array(grid_hw) - new)
    return np.concatenate([lo, lo + new], 1)


def _align(boxes: np.ndarray, grid_h: int, grid_w: int, align: int = ALIGN) -> np.ndarray:
    """Snap (y0, x0, y1, x1) outward to multiples of ``align`` and clip to the grid."""
    lo = np.maximum(boxes[:, :2] // align * align, 0)
    hi = -(-boxes[:, 2:] // align) * align
    hi = np.minimum(hi, [grid_h, grid_w])
    return np.concatenate([lo, hi], 1)


def _area(b: np.ndarray) -> np.ndarray:
    return (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])


def group_by_shape(
    windows: np.ndarray,
    grid_hw: tuple[int, int] | None = None,
    forward_cells: int = 0,
    align: int = ALIGN,
) -> list[torch.Tensor]:
    """Split windows into batches of equal (h, w), largest batches first.

    With ``forward_cells`` > 0, a window joins the smallest batch shape that contains it
    when growing it to that shape costs at most ``forward_cells`` stride-8 cells of extra
    compute, the fixed cost of one more forward pass (windows are taken largest first, so the
    big ones set the shapes). A grown window (:func:`_grow`, inside ``grid_hw``) still holds
    its own; the growth reads the real features around it (active or background fill).

    Returns:
        list of (B, 4) long tensors (y0, x0, h, w).
    """
    if len(windows) == 0:
        return []
    if forward_cells > 0:
        if grid_hw is None:
            raise ValueError("growing windows to shared shapes needs the grid size")
        windows = _share_shapes(windows, grid_hw, forward_cells, align)
    shapes, inverse = np.unique(windows[:, 2:], axis=0, return_inverse=True)
    groups = [windows[inverse.reshape(-1) == k] for k in range(len(shapes))]
    groups.sort(key=len, reverse=True)
    return [torch.from_numpy(g) for g in groups]


def _share_shapes(
    windows: np.ndarray, grid_hw: tuple[int, int], budget: int, align: int = ALIGN
) -> np.ndarray:
    out = windows.copy()
    shapes: list[np.ndarray] = []
    for i in np.argsort(-(windows[:, 2] * windows[:, 3]), kind="stable"):
        hw = windows[i, 2:]
        fits = [s for s in shapes if (s >= hw).all() and s.prod() - hw.prod() <= budget]
        if not fits:
            shapes.append(hw)
            continue
        best = min(fits, key=lambda s: s.prod())
        box = np.concatenate([windows[i, :2], windows[i, :2] + hw])[None]
        grown = _grow(box, best[None], grid_hw, align)[0]
        out[i] = np.concatenate([grown[:2], best])
    return out


def merge_boxes(boxes: np.ndarray, slack: float) -> np.ndarray:
    """Merge (y0, x0, y1, x1) boxes while a merge is no dearer than the boxes it replaces.

    Two boxes may merge when ``area(union box) <= slack * (area(a) + area(b))``; a box's best
    partner is the one with the largest saving. Each round joins every box to its best
    partner; a group so formed becomes its bounding box when that costs at most ``slack``
    times its members' areas, else only its mutual best pair merges. With ``slack == 1`` the
    total area never grows.

    Args:
        boxes: (n, 4) int64 boxes in stride-8 units.
        slack: merge tolerance (>= 1).

    Returns:
        (m, 4) int64 boxes, m <= n, whose union contains the input boxes.
    """
    boxes = boxes.copy()
    for _ in range(MAX_ROUNDS):
        first, second, cost = _candidate_pairs(boxes, slack)
        if not len(cost):
            break
        boxes = _merge_round(boxes, _best_partner(len(boxes), first, second, cost), slack)
    return boxes


def _candidate_pairs(boxes: np.ndarray, slack: float) -> tuple[np.ndarray, ...]:
    """Pairs (i < j) that may merge, and their cost ``union - slack * (a + b)`` (<= 0).

    Boxes that lie farther apart than ``(slack - 1) * (their sizes)`` along an axis can never
    merge (the union would exceed the slack), so only boxes sharing a bucket of the
    ``BUCKET`` grid after growing by that much are compared.
    """
    size = boxes[:, 2:] - boxes[:, :2]
    grow = np.ceil((slack - 1) * size).astype(np.int64)
    lo = (boxes[:, :2] - grow) // BUCKET
    hi = (boxes[:, 2:] + grow) // BUCKET  # inclusive: boxes that only touch share a bucket
    lo, hi = np.maximum(lo, 0), np.maximum(hi, 0)
    span = hi - lo + 1
    count = span[:, 0] * span[:, 1]
    owner = np.repeat(np.arange(len(boxes)), count)
    k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    by = lo[owner, 0] + k // span[owner, 1]
    bx = lo[owner, 1] + k % span[owner, 1]
    bucket = by * (int(bx.max()) + 1) + bx
    order = np.argsort(bucket, kind="stable")
    bucket, owner = bucket[order], owner[order]
    first, second = _pairs_within_groups(bucket)
    i, j = np.minimum(owner[first], owner[second]), np.maximum(owner[first], owner[second])
    key = np.unique(i * len(boxes) + j)
    i, j = key // len(boxes), key % len(boxes)
    union = _area(
        np.concatenate(
            [np.minimum(boxes[i, :2], boxes[j, :2]), np.maximum(boxes[i, 2:], boxes[j, 2:])], 1
        )
    )
    cost = union - slack * (_area(boxes[i]) + _area(boxes[j]))
    ok = cost <= 0
    return i[ok], j[ok], cost[ok]


def _pairs_within_groups(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of positions (p < q) that hold the same key in a sorted array."""
    n = len(sorted_keys)
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    sizes = np.diff(np.r_[starts, n])
    pos = np.arange(n)
    count = np.repeat(starts + sizes, sizes) - pos - 1
    first = np.repeat(pos, count)
    offset = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    return first, first + 1 + offset


def _best_partner(n: int, i: np.ndarray, j: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """(n,) the cheapest partner of each box (ties: lower index), -1 for none."""
    src, dst, c = np.r_[i, j], np.r_[j, i], np.r_[cost, cost]
    order = np.lexsort((dst, c, src))
    src, dst = src[order], dst[order]
    head = np.r_[True, src[1:] != src[:-1]]
    best = np.full(n, -1, np.int64)
    best[src[head]] = dst[head]
    return best


def _merge_round(boxes: np.ndarray, best: np.ndarray, slack: float) -> np.ndarray:
    """Join each box to its best partner; see :func:`merge_boxes`."""
    n = len(boxes)
    idx = np.arange(n)
    has = best >= 0
    mutual = has & (best[np.where(has, best, 0)] == idx)
    parent = np.where(has & ~(mutual & (idx < best)), best, idx)  # a mutual pair's low end: root
    while True:  # pointer jumping to each tree's root
        nxt = parent[parent]
        if (nxt == parent).all():
            break
        parent = nxt
    lo = np.full((n, 2), np.iinfo(np.int64).max)
    hi = np.full((n, 2), np.iinfo(np.int64).min)
    np.minimum.at(lo, parent, boxes[:, :2])
    np.maximum.at(hi, parent, boxes[:, 2:])
    members = np.bincount(parent, _area(boxes).astype(np.float64), n)
    group = np.concatenate([lo, hi], 1)
    whole = _area(group) <= slack * members  # rows of roots only are meaningful
    joined = whole[parent]
    out = boxes.copy()
    out[idx[joined]] = group[parent[joined]]
    pair = ~joined & mutual & (idx < best)  # a group too dear as a whole: its mutual pair
    partner = best[pair]
    out[pair] = np.concatenate(
        [
            np.minimum(boxes[pair, :2], boxes[partner, :2]),
            np.maximum(boxes[pair, 2:], boxes[partner, 2:]),
        ],
        1,
    )
    drop = np.zeros(n, bool)
    drop[partner] = True
    drop |= joined & (parent != idx)
    return out[~drop]
