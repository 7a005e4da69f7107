"""Tiles without a raster: offsets along an axis, and merging detections across tiles.

Pure numpy/torch, so in-memory slicing (the SAHI baseline in ``compare``) needs no GDAL;
``sparse_yolo.io.tiles`` turns the offsets into rasterio windows for files.
"""

from __future__ import annotations

import numpy as np
import torch

from sparse_yolo.config import PostprocessConfig
from sparse_yolo.engine import nms


def tile_offsets(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles along one axis.

    Tiles step by ``tile - overlap``; the last one is pushed back inside so it ends exactly
    at ``size`` (never shrunk), which only ever increases its overlap with the previous one.

    Args:
        size: axis length in pixels.
        tile: tile length in pixels.
        overlap: minimum overlap between neighbouring tiles in pixels.

    Returns:
        Increasing offsets; ``[0]`` when ``size <= tile``.
    """
    if size <= tile:
        return [0]
    offsets = list(range(0, size - tile, tile - overlap))
    offsets.append(size - tile)
    return offsets


def merge_tiles(dets: torch.Tensor, post: PostprocessConfig, merge: str = "nms") -> np.ndarray:
    """Merge detections of overlapping tiles in full-raster pixels.

    Args:
        dets: (N, 6) [x1, y1, x2, y2, score, class].
        post: IoU threshold, class-agnostic flag and max_det.
        merge: ``nms`` (torchvision batched NMS) or ``greedy`` (SAHI-style greedy
            non-maximum merging: boxes overlapping the kept one by intersection over the
            smaller area >= iou are fused into their union box).

    Returns:
        (M, 6) float32, sorted by score.
    """
    if not len(dets):
        return np.zeros((0, 6), np.float32)
    if merge == "greedy":
        groups = torch.zeros_like(dets[:, 5]) if post.agnostic else dets[:, 5]
        out = greedy_merge(dets, groups, post.iou)
    elif merge == "nms":
        out = nms(dets, post)
    else:
        raise ValueError(f"unknown merge {merge!r}; known: nms, greedy")
    return out[: post.max_det].numpy().astype(np.float32)


def greedy_merge(dets: torch.Tensor, groups: torch.Tensor, ios: float) -> torch.Tensor:
    """SAHI-style greedy non-maximum merging, grown to a fixed point.

    In score order, each kept box absorbs the same-group boxes whose intersection over the
    smaller area is >= ``ios``, then keeps absorbing against the fused box, so the pieces of
    a box cut by two seams all join it.
    """
    order = dets[:, 4].argsort(descending=True)
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
