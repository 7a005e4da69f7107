"""Plan the dense windows that cover the active cells at stride 8.

Windows follow the active clusters: one box per connected group of active cells, grown by
a context margin, aligned to stride 32 (so P4/P5 of a window sit on the full-frame grid),
then merged greedily while a merge is no dearer than the separate windows. The dense
remainder costs about the same per stride-8 cell batched or not (measured, GUIDE.md), so
the objective is the total windowed area; overlapping windows would pay twice.
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
    boxes = _merge(boxes, cfg.merge_slack)
    boxes = _snap_sizes(boxes, grid_h, grid_w, align)
    if _area(boxes).sum() >= grid_h * grid_w:  # overlaps made the windows dearer than the frame
        boxes = np.array([[0, 0, grid_h, grid_w]], dtype=np.int64)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)


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


def _align(boxes: np.ndarray, grid_h: int, grid_w: int, align: int) -> np.ndarray:
    """Snap (y0, x0, y1, x1) outward to multiples of ``align`` and clip to the grid."""
    lo = np.maximum(boxes[:, :2] // align * align, 0)
    hi = -(-boxes[:, 2:] // align) * align
    hi = np.minimum(hi, [grid_h, grid_w])
    return np.concatenate([lo, hi], 1)


def _area(b: np.ndarray) -> np.ndarray:
    return (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])


def _merge(boxes: np.ndarray, slack: float) -> np.ndarray:
    """Greedily merge the pair with the largest saving until no merge pays off.

    A pair merges when ``area(union box) <= slack * (area(a) + area(b))``.
    """
    boxes = boxes.copy()
    while len(boxes) > 1:
        lo = np.minimum(boxes[:, None, :2], boxes[None, :, :2])
        hi = np.maximum(boxes[:, None, 2:], boxes[None, :, 2:])
        union = _area(np.concatenate([lo, hi], -1))
        areas = _area(boxes)
        cost = union - slack * (areas[:, None] + areas[None, :])
        np.fill_diagonal(cost, np.iinfo(np.int64).max)
        i, j = np.unravel_index(np.argmin(cost), cost.shape)
        if cost[i, j] > 0:
            break
        boxes[i] = np.concatenate([lo[i, j], hi[i, j]])
        boxes = np.delete(boxes, j, 0)
    return boxes


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
    windows: np.ndarray, grid_hw: tuple[int, int], budget: int, align: int
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
