"""What a distilled model is worth: agreement with its teacher, neck cost, mask quality."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sparse_yolo.config import MaskConfig
from sparse_yolo.detector import Detector
from sparse_yolo.eval.metrics import greedy_match
from sparse_yolo.masks import make_mask
from sparse_yolo.model.yolo import SparseYOLO
from sparse_yolo.train.maskfit import Frame, RecallPoint, pooled_recall


@dataclass(frozen=True)
class NeckCost:
    """GFLOPs (2 x multiply-adds) and parameters of a neck at one input size."""

    kind: str
    gflops: float
    params: int


def neck_cost(model: SparseYOLO, imgsz: int = 640) -> NeckCost:
    """Cost of ``model.neck`` alone on the P3/P4/P5 maps of an ``imgsz`` x ``imgsz`` image.

    Counted with the project's conv counter (:class:`~sparse_yolo.bench.flops.FlopCounter`)
    on a copy; parameters counted exactly.
    """
    from sparse_yolo.bench.flops import FlopCounter  # noqa: PLC0415

    neck = copy.deepcopy(model.neck).float().eval().cpu()
    feats = [
        torch.zeros(1, f["num_chs"], imgsz // f["reduction"], imgsz // f["reduction"])
        for f in model.feature_info
    ]
    gflops = FlopCounter.during(lambda: neck(feats), neck)
    params = sum(p.numel() for p in model.neck.parameters())
    return NeckCost(model.neck.kind, gflops, int(params))


def detections(model: SparseYOLO | Detector, frames: list[Frame], mask: str = "all") -> list:
    """Full-resolution detections ((N, 6) xyxy, score, class arrays) of each frame."""
    det = model if isinstance(model, Detector) else Detector(model, backend="dense", mask=mask)
    out = []
    for f in frames:
        r = det.predict(f.image)
        out.append(np.concatenate([r.boxes, r.scores[:, None], r.classes[:, None]], 1))
    return out


def agreement(a: list[np.ndarray], b: list[np.ndarray], iou: float = 0.5) -> float:
    """Fraction of B's detections that A recovers (same class, IoU >= iou), over all frames."""
    found = total = 0
    for da, db in zip(a, b, strict=True):
        total += len(db)
        if len(da) and len(db):
            m = greedy_match(
                da[:, :4],
                da[:, 4],
                da[:, 5].astype(np.int64),
                db[:, :4],
                db[:, 5].astype(np.int64),
                iou,
            )
            found += int((m >= 0).sum())
    return found / total if total else float("nan")


def mask_point(
    name: str, frames: list[Frame], net: nn.Module | None = None, **cfg: object
) -> RecallPoint:
    """Recall of ``frames``' boxes and active fraction of the ``name`` mask."""
    mask = make_mask(MaskConfig(name=name, **cfg), mask_net=net)
    return pooled_recall([mask(f.image) for f in frames], frames)


def frames_with_boxes(
    paths: list[Path], dets: list[np.ndarray], images: list[np.ndarray]
) -> list[Frame]:
    """Frames whose objects are given detections (e.g. the teacher's)."""
    return [
        Frame(im, d[:, :4].astype(np.float32), p.name)
        for p, d, im in zip(paths, dets, images, strict=True)
    ]
