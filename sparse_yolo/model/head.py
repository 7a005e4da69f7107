"""Inference of YOLOv8's Detect head at candidate anchors only.

Ultralytics' Detect decodes every anchor: at 3840x2176 that is 171k anchors, and the box
branch, DFL and decode cost about 600 ms of the 1.9 s dense remainder on 2 CPU threads
(measured), while a few hundred anchors pass the confidence threshold. Here the class branch
runs dense (it decides which anchors are candidates); the box branch runs only at the
candidates, with the gather kernel of the sparse stem on the sites it needs (a 3x3, 3x3, 1x1
branch reads a 5x5 neighbourhood), and only candidates are decoded. The result equals
Ultralytics' decode followed by NMS (``multi_label=False``): same modules, same weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.nn.modules import Detect
from ultralytics.utils.tal import dist2bbox

from sparse_yolo.sparse.active import ActiveLevel
from sparse_yolo.sparse.backends import GatherBackend, Rows

# Above this share of a window's sites needed by the box branch, running it dense is cheaper.
# Measured, P3 of a 4K frame, 2 threads, scattered candidates: gather 4.5/16.5/31.3/53.4 ms
# against dense 49.5/49.2/40.6/42.7 ms with 5/22/53/78% of the sites needed.
DENSE_BOX_SHARE = 0.6


def logit(p: float) -> float:
    p = min(max(p, 1e-7), 1 - 1e-7)
    return math.log(p / (1 - p))


def candidate_detections(head: Detect, feats: list[torch.Tensor], conf: float) -> torch.Tensor:
    """Decoded detections of every anchor whose best class score exceeds ``conf``.

    Args:
        head: a YOLOv8 (legacy) Detect head in eval mode, fused or not.
        feats: its P3, P4, P5 inputs, each (B, C, H, W) for the same B windows.
        conf: confidence threshold on sigmoid class scores.

    Returns:
        (K, 7) float [x1, y1, x2, y2, score, class, window] in window pixels.
    """
    threshold = logit(conf)
    out = []
    for i, x in enumerate(feats):
        logits = head.cv3[i](x)  # (B, nc, H, W)
        best, cls = logits.max(1)
        cand = torch.nonzero(best > threshold)  # (K, 3): window, y, x
        if not len(cand):
            continue
        b, y, xx = cand.unbind(1)
        raw = _box_branch(head.cv2[i], x, cand)  # (K, 4 * reg_max)
        # decode in float32 even for a half model: fp16 steps 2 px apart beyond 2048 px
        dist = _dfl(head, raw).float()  # (1, 4, K) distances in stride units
        anchors = torch.stack([xx, y]).float()[None] + 0.5
        boxes = dist2bbox(dist, anchors, xywh=False, dim=1)[0].t() * float(head.stride[i])
        score = best[b, y, xx].float().sigmoid()
        out.append(torch.cat([boxes, score[:, None], cls[b, y, xx, None], b[:, None]], 1))
    if not out:
        return feats[0].new_zeros((0, 7), dtype=torch.float32)
    return torch.cat(out).float()


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
