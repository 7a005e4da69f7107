"""Inference of an Ultralytics Detect head at candidate anchors only.

Ultralytics' Detect decodes every anchor: at 3840x2176 that is 171k anchors, while a few
hundred pass the confidence threshold (docs/performance.md). Here the class branch runs dense
(it decides which anchors are candidates; YOLOv8's plain 3x3 branch or YOLO11/26's DWConv
one alike); the box branch runs only at the candidates, with the gather kernel of the sparse
stem on the sites it needs (a 3x3, 3x3, 1x1 branch reads a 5x5 neighbourhood), and only
candidates are decoded, with DFL or without it (``reg_max`` 1). The result equals
Ultralytics' decode followed by its post-processing input: NMS candidates
(``multi_label=False``), or, for an end-to-end head, its one-to-one branch's top
``max_det`` (anchor, class) pairs above the threshold, per window.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.nn.modules import Detect
from ultralytics.utils.tal import dist2bbox

from sparse_yolo.sparse.active import ActiveLevel
from sparse_yolo.sparse.backends import GatherBackend
from sparse_yolo.sparse.ops import Rows

# Above this share of a window's sites needed by the box branch, running it dense is cheaper
# (docs/performance.md).
DENSE_BOX_SHARE = 0.6


def logit(p: float) -> float:
    p = min(max(p, 1e-7), 1 - 1e-7)
    return math.log(p / (1 - p))


def candidate_detections(head: Detect, feats: list[torch.Tensor], conf: float) -> torch.Tensor:
    """Decoded detections of every anchor whose best class score exceeds ``conf``.

    Args:
        head: an Ultralytics Detect head in eval mode, fused or not.
        feats: its inputs, each (B, C, H, W) for the same B windows.
        conf: confidence threshold on sigmoid class scores.

    Returns:
        (K, 7) float [x1, y1, x2, y2, score, class, window] in window pixels. One row per
        candidate anchor (its best class), or for an end-to-end head one per (anchor, class)
        pair, at most ``head.max_det`` per window, best first.
    """
    e2e = bool(getattr(head, "end2end", False))
    box_heads, cls_heads = (head.one2one_cv2, head.one2one_cv3) if e2e else (head.cv2, head.cv3)
    threshold = logit(conf)
    out, pair_logits = [], []
    for i, x in enumerate(feats):
        logits = cls_heads[i](x)  # (B, nc, H, W)
        best, cls = logits.max(1)
        cand = torch.nonzero(best > threshold)  # (K, 3): window, y, x
        if not len(cand):
            continue
        b, y, xx = cand.unbind(1)
        raw = _box_branch(box_heads[i], x, cand)  # (K, 4 * reg_max)
        # decode in float32 even for a half model: fp16 steps 2 px apart beyond 2048 px
        dist = _dfl(head, raw).float()  # (1, 4, K) distances in stride units
        anchors = torch.stack([xx, y]).float()[None] + 0.5
        boxes = dist2bbox(dist, anchors, xywh=False, dim=1)[0].t() * float(head.stride[i])
        score = best[b, y, xx].float().sigmoid()
        out.append(torch.cat([boxes, score[:, None], cls[b, y, xx, None], b[:, None]], 1))
        if e2e:
            pair_logits.append(logits.permute(0, 2, 3, 1)[b, y, xx].float())
    if not out:
        return feats[0].new_zeros((0, 7), dtype=torch.float32)
    rows = torch.cat(out).float()
    return _top_pairs(rows, torch.cat(pair_logits), threshold, head.max_det) if e2e else rows


def _top_pairs(rows: torch.Tensor, logits: torch.Tensor, threshold: float, k: int) -> torch.Tensor:
    """End-to-end selection: the best ``k`` (anchor, class) pairs above ``threshold`` in each
    window, as Ultralytics' ``Detect.postprocess`` (top-k anchors, then top-k pairs) followed
    by its confidence filter; pairs outside the top-k anchors never rank in the top k pairs.

    Args:
        rows: (K, 7) candidate anchors (:func:`candidate_detections`).
        logits: (K, nc) their class logits.
    """
    anchor, cls = torch.nonzero(logits > threshold).unbind(1)
    score = logits[anchor, cls].sigmoid()
    pairs = torch.cat([rows[anchor, :4], score[:, None], cls[:, None].float(), rows[anchor, 6:]], 1)
    order = torch.argsort(score, descending=True, stable=True)
    pairs = pairs[order]
    win = pairs[:, 6].long()
    order = torch.argsort(win, stable=True)  # by window, best first within each
    pairs, win = pairs[order], win[order]
    _, counts = torch.unique_consecutive(win, return_counts=True)
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    rank = torch.arange(len(win), device=win.device) - starts
    return pairs[rank < k]


def _dfl(head: Detect, raw: torch.Tensor) -> torch.Tensor:
    """Ultralytics' DFL (expected bin over a softmax) on (K, 4 * reg_max) rows -> (1, 4, K).

    The same fixed bin weights as ``head.dfl``, applied as a dot product: its 1x1 conv on a
    transposed (1, reg_max, 4, K) view fell back to PyTorch's slow conv path.
    """
    if not hasattr(head.dfl, "conv"):  # reg_max == 1: Ultralytics' DFL is an identity
        return raw.t()[None]
    bins = head.dfl.conv.weight.view(-1)
    dist = (raw.view(-1, 4, bins.numel()).softmax(-1) * bins).sum(-1)
    return dist.t()[None]


def _box_branch(branch: nn.Sequential, x: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """Box branch (Conv 3x3, Conv 3x3, Conv2d 1x1) output at the candidate sites.

    The B windows are stacked into one tall grid with a blank row between them, so the
    gather kernel's zero row stands for each window's zero padding.
    """
    bsz, _, h, w = x.shape
    need = torch.zeros((bsz, 1, h, w), dtype=x.dtype, device=x.device)
    need[cand[:, 0], 0, cand[:, 1], cand[:, 2]] = 1
    need = F.max_pool2d(need, 5, 1, 2)[:, 0] > 0  # the 5x5 neighbourhood two 3x3 convs read
    if need.sum() > DENSE_BOX_SHARE * need.numel():
        dense = branch(x)
        return dense[cand[:, 0], :, cand[:, 1], cand[:, 2]]
    tall = F.pad(need, (0, 0, 0, 1)).reshape(bsz * (h + 1), w)  # blank row after each window
    level = ActiveLevel.from_mask(tall, stride=1)
    sites = level.coords
    rows = x.permute(0, 2, 3, 1)[sites[:, 0] // (h + 1), sites[:, 0] % (h + 1), sites[:, 1]]
    gather = GatherBackend()
    feats = Rows(torch.cat([rows, rows.new_zeros(1, rows.shape[1])]), level, None)
    for conv in branch[:-1]:
        feats = gather.conv(conv, feats)
    tall_w = w + 2
    at = level.index[(cand[:, 0] * (h + 1) + cand[:, 1] + 1) * tall_w + cand[:, 2] + 1]
    last = branch[-1]
    return torch.addmm(last.bias, feats.feats[at], last.weight.flatten(1).t())
