"""Detection accuracy on one image: recall, precision and mAP@0.5, overall and by object size.

Matching is greedy by descending score: each prediction takes the unmatched ground-truth box of
its class with the highest IoU, if that IoU is >= the threshold; one prediction per GT box.
A prediction left unmatched whose intersection-over-its-own-area with an ignore region is > 0.5
is neither a true nor a false positive (it is counted in ``n_ignored``).

Size buckets follow COCO: small area < 32², medium 32² <= area < 96², large >= 96² (pixels²).

* ``recall`` of a bucket: matched GT of that size / GT of that size (by GT box area).
* ``precision`` of a bucket: among predictions whose own box area falls in the bucket,
  TP / (TP + FP), ignored predictions excluded.
* ``map50`` of a bucket, as COCO does per area range: GT outside the bucket is set aside,
  predictions matched to it are dropped, and unmatched predictions count as false positives only
  when their own area is in the bucket. Matching is done once, over all sizes.

AP is pycocotools' ``COCOeval`` (101-point interpolated) at the one IoU threshold, over the
classes that have GT (predictions of classes without GT do not lower it); ignore regions are
COCO crowd regions of every class, so a prediction inside one is neither true nor false.

Undefined values (recall with no GT, precision with no counted prediction) are ``nan``.
"""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import torch
from torchvision.ops import box_iou

from sparse_yolo.errors import SparseYoloError
from sparse_yolo.eval.labels import GroundTruth
from sparse_yolo.types import Detections

# name -> [min_area, max_area) in pixels²
SIZE_BUCKETS: dict[str, tuple[float, float]] = {
    "all": (0.0, math.inf),
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, math.inf),
}
IGNORE_IOA = 0.5


def _check_iou(iou: float) -> None:
    if not 0.0 < iou <= 1.0:
        raise SparseYoloError(f"iou threshold must be in (0, 1], got {iou}")


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Areas of (N, 4) xyxy boxes, (N,) float64; inverted boxes have area 0."""
    wh = np.clip(boxes[:, 2:4].astype(np.float64) - boxes[:, 0:2], 0, None)
    return wh[:, 0] * wh[:, 1]


def box_ioa(boxes: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Intersection over the area of each box, (N, M), for (N, 4) boxes and (M, 4) regions, xyxy."""
    lt = np.maximum(boxes[:, None, :2], regions[None, :, :2])
    rb = np.minimum(boxes[:, None, 2:], regions[None, :, 2:])
    wh = np.clip(rb - lt, 0, None).astype(np.float64)
    return wh[..., 0] * wh[..., 1] / np.maximum(box_area(boxes), 1e-9)[:, None]


def greedy_match(
    pred_boxes: np.ndarray,
    pred_scores: np.ndarray,
    pred_classes: np.ndarray,
    gt_boxes: np.ndarray,
    gt_classes: np.ndarray,
    iou: float = 0.5,
) -> np.ndarray:
    """Match predictions to GT one-to-one, greedily by descending score, within each class.

    Args:
        pred_boxes: (P, 4) xyxy, same pixel frame as ``gt_boxes``.
        pred_scores: (P,) confidences; higher scores pick first (ties keep input order).
        pred_classes: (P,) class ids.
        gt_boxes: (G, 4) xyxy.
        gt_classes: (G,) class ids.
        iou: minimum IoU for a match.

    Returns:
        (P,) int64: index of the matched GT box for each prediction, or -1.
    """
    match = np.full(len(pred_boxes), -1, np.int64)
    order = np.argsort(-np.asarray(pred_scores, np.float64), kind="stable")
    for cls in np.unique(pred_classes):
        g_idx = np.flatnonzero(gt_classes == cls)
        if not len(g_idx):
            continue
        p_idx = order[pred_classes[order] == cls]
        ious = box_iou(
            torch.from_numpy(np.asarray(pred_boxes[p_idx], np.float32)),
            torch.from_numpy(np.asarray(gt_boxes[g_idx], np.float32)),
        ).numpy()
        taken = np.zeros(len(g_idx), bool)
        for row, p in enumerate(p_idx):
            candidates = np.where(taken, -1.0, ious[row])
            j = int(candidates.argmax())
            if candidates[j] >= iou:
                taken[j] = True
                match[p] = g_idx[j]
    return match


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def coco_map(
    pred: Detections, pred_cls: np.ndarray, gt: GroundTruth, gt_cls: np.ndarray, iou: float
) -> dict[str, float]:
    """mAP at ``iou`` per size bucket, by pycocotools' ``COCOeval``; nan where no GT.

    Args:
        pred: detections, (N, 4) xyxy in image pixels.
        pred_cls: (N,) class ids to score them by (all zero when class-agnostic).
        gt: ground truth in the same frame; its ignore regions become crowd regions.
        gt_cls: (G,) class ids of ``gt.boxes``.
        iou: the IoU threshold.
    """
    from pycocotools.coco import COCO  # noqa: PLC0415
    from pycocotools.cocoeval import COCOeval  # noqa: PLC0415

    cats = sorted({int(c) for c in gt_cls} | {int(c) for c in pred_cls})
    anns = [_coco_box(b, int(c), 0) for b, c in zip(gt.boxes, gt_cls, strict=True)]
    anns += [_coco_box(b, c, 1) for b in gt.ignore for c in cats]
    for i, a in enumerate(anns, 1):
        a.update(id=i, image_id=1)
    coco_gt = COCO()
    coco_gt.dataset = {"images": [{"id": 1}], "categories": [{"id": c} for c in cats]}
    coco_gt.dataset["annotations"] = anns
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
        if not len(pred):
            return {
                n: (math.nan if not _n_gt(gt, gt_cls, lo, hi) else 0.0)
                for n, (lo, hi) in SIZE_BUCKETS.items()
            }
        dets = [
            {**_coco_box(b, int(c), 0), "score": float(s), "image_id": 1}
            for b, c, s in zip(pred.boxes, pred_cls, pred.scores, strict=True)
        ]
        ev = COCOeval(coco_gt, coco_gt.loadRes(dets), "bbox")
        ev.params.iouThrs = np.array([iou])
        ev.params.maxDets = [len(pred)]
        ev.params.areaRng = [[lo, min(hi, 1e10)] for lo, hi in SIZE_BUCKETS.values()]
        ev.params.areaRngLbl = list(SIZE_BUCKETS)
        ev.evaluate()
        ev.accumulate()
    out = {}
    for a, name in enumerate(SIZE_BUCKETS):
        prec = ev.eval["precision"][0, :, :, a, 0]  # (recall points, classes)
        valid = prec[0] > -1  # classes with GT in this bucket
        out[name] = float(prec[:, valid].mean()) if valid.any() else math.nan
    return out


def _coco_box(box: np.ndarray, cls: int, crowd: int) -> dict:
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    return {"bbox": [x1, y1, w, h], "area": w * h, "category_id": cls, "iscrowd": crowd}


def _n_gt(gt: GroundTruth, gt_cls: np.ndarray, lo: float, hi: float) -> int:
    area = box_area(gt.boxes)
    return int(((area >= lo) & (area < hi)).sum())


def _bucket_stats(
    lo: float,
    hi: float,
    pred_cls: np.ndarray,
    match: np.ndarray,
    ignored: np.ndarray,
    gt_area: np.ndarray,
    pred_area: np.ndarray,
) -> dict[str, float | int]:
    gt_in = (gt_area >= lo) & (gt_area < hi)
    pred_in = (pred_area >= lo) & (pred_area < hi)
    matched = match >= 0
    tp_by_pred = int((pred_in & matched).sum())
    fp_by_pred = int((pred_in & ~matched & ~ignored).sum())
    gt_found = int(gt_in[match[matched]].sum())
    return {
        "n_gt": int(gt_in.sum()),
        "n_pred": int(pred_in.sum()),
        "tp": tp_by_pred,
        "fp": fp_by_pred,
        "n_ignored": int((pred_in & ignored).sum()),
        "recall": _ratio(gt_found, int(gt_in.sum())),
        "precision": _ratio(tp_by_pred, tp_by_pred + fp_by_pred),
    }


def evaluate(
    pred: Detections, gt: GroundTruth, iou: float = 0.5, class_agnostic: bool = False
) -> dict[str, dict[str, float | int]]:
    """Score one image's detections against its ground truth.

    Args:
        pred: detections, (N, 4) xyxy in image pixels; all of them count (no extra threshold).
        gt: ground truth in the same pixel frame, with optional ignore regions.
        iou: IoU threshold for a match (also the AP threshold; 0.5 gives mAP@0.5).
        class_agnostic: ignore class ids when matching and in AP.

    Returns:
        ``{bucket: stats}`` for buckets ``all``, ``small``, ``medium``, ``large``; stats are
        ``n_gt``, ``n_pred``, ``tp``, ``fp``, ``n_ignored`` (ints) and ``recall``,
        ``precision``, ``map50`` (floats, ``nan`` when undefined). See the module docstring
        for how each is computed per bucket.
    """
    _check_iou(iou)
    pred_cls = np.zeros_like(pred.classes) if class_agnostic else pred.classes
    gt_cls = np.zeros_like(gt.classes) if class_agnostic else gt.classes
    match = greedy_match(pred.boxes, pred.scores, pred_cls, gt.boxes, gt_cls, iou)
    ignored = np.zeros(len(pred), bool)
    if len(gt.ignore) and len(pred):
        ignored = (match < 0) & (box_ioa(pred.boxes, gt.ignore).max(1) > IGNORE_IOA)
    gt_area, pred_area = box_area(gt.boxes), box_area(pred.boxes)
    ap = coco_map(pred, pred_cls, gt, gt_cls, iou)
    return {
        name: {
            **_bucket_stats(lo, hi, pred_cls, match, ignored, gt_area, pred_area),
            "map50": ap[name],
        }
        for name, (lo, hi) in SIZE_BUCKETS.items()
    }


def match_recall(
    pred_a: Detections, pred_b: Detections, iou: float = 0.5, class_agnostic: bool = False
) -> float:
    """Fraction of B's boxes that A recovers: agreement of detector A with detector B.

    B plays ground truth: A's boxes are matched one-to-one to B's (same class unless
    ``class_agnostic``, IoU >= ``iou``), greedily by A's descending score. Use it without labels,
    e.g. A = sparse, B = dense on the same image.

    Args:
        pred_a: detections of A, (N, 4) xyxy in image pixels.
        pred_b: detections of B, (M, 4) xyxy in the same frame.
        iou: IoU threshold for a match.
        class_agnostic: match regardless of class.

    Returns:
        Matched B boxes / M, in [0, 1]; ``nan`` when B is empty.
    """
    _check_iou(iou)
    if not len(pred_b):
        return math.nan
    cls_a = np.zeros_like(pred_a.classes) if class_agnostic else pred_a.classes
    cls_b = np.zeros_like(pred_b.classes) if class_agnostic else pred_b.classes
    match = greedy_match(pred_a.boxes, pred_a.scores, cls_a, pred_b.boxes, cls_b, iou)
    return float((match >= 0).sum() / len(pred_b))
