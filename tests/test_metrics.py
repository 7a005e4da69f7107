"""Detection metrics on hand-built cases whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sparse_yolo.errors import SparseYoloError
from sparse_yolo.eval.labels import GroundTruth
from sparse_yolo.eval.metrics import evaluate, greedy_match, match_recall
from sparse_yolo.types import Detections

# Four well-separated GT boxes, xyxy pixels: small (10x10), small, medium (50x50), large (200x200).
GT_BOXES = np.array(
    [[0, 0, 10, 10], [100, 0, 110, 10], [200, 200, 250, 250], [400, 400, 600, 600]], np.float32
)
GT_CLASSES = np.array([0, 2, 2, 7])


def _gt(ignore: list | None = None) -> GroundTruth:
    return GroundTruth(GT_BOXES.copy(), GT_CLASSES.copy(), np.array(ignore or [], np.float32))


def _det(
    boxes: list | np.ndarray, classes: list | np.ndarray, scores: list | None = None
) -> Detections:
    n = len(boxes)
    scores = scores if scores is not None else np.linspace(0.9, 0.5, n)
    return Detections(np.array(boxes, np.float32), scores, classes)


def test_perfect_predictions() -> None:
    res = evaluate(_det(GT_BOXES + 0.5, GT_CLASSES), _gt())
    assert set(res) == {"all", "small", "medium", "large"}
    for bucket, n in [("all", 4), ("small", 2), ("medium", 1), ("large", 1)]:
        stats = res[bucket]
        assert stats["n_gt"] == stats["n_pred"] == stats["tp"] == n
        assert stats["fp"] == stats["n_ignored"] == 0
        assert stats["recall"] == 1.0 and stats["precision"] == 1.0
        # COCOeval (101-point interpolation) reports a perfect AP as exactly 1.
        assert stats["map50"] == pytest.approx(1.0, abs=1e-9)


def test_one_missing_one_false_positive() -> None:
    boxes = [*GT_BOXES[:3], [700, 0, 720, 20]]  # large GT missed, a small FP instead
    res = evaluate(_det(boxes, [0, 2, 2, 5]), _gt())["all"]
    assert (res["n_gt"], res["n_pred"], res["tp"], res["fp"]) == (4, 4, 3, 1)
    assert res["recall"] == 0.75 and res["precision"] == 0.75
    assert 0.0 < res["map50"] < 1.0


def test_size_buckets() -> None:
    # small GT 0 and large GT 3 found; medium GT missed; a medium-sized FP; a small FP.
    boxes = [GT_BOXES[0], GT_BOXES[3], [800, 800, 850, 850], [900, 0, 905, 5]]
    res = evaluate(_det(boxes, [0, 7, 2, 0]), _gt())
    small, medium, large = res["small"], res["medium"], res["large"]
    assert (small["n_gt"], small["n_pred"], small["tp"], small["fp"]) == (2, 2, 1, 1)
    assert small["recall"] == 0.5 and small["precision"] == 0.5
    assert (medium["n_gt"], medium["n_pred"], medium["tp"], medium["fp"]) == (1, 1, 0, 1)
    assert medium["recall"] == 0.0 and medium["precision"] == 0.0 and medium["map50"] == 0.0
    assert (large["n_gt"], large["n_pred"], large["recall"], large["precision"]) == (1, 1, 1.0, 1.0)
    assert large["map50"] == pytest.approx(1.0, abs=1e-9)


def test_ignore_regions_excluded() -> None:
    boxes = [*GT_BOXES, [705, 5, 715, 15], [790, 0, 810, 20]]
    # the first extra box lies inside the ignore region; the second has IoA 0.5, not > 0.5
    res = evaluate(_det(boxes, [*GT_CLASSES, 0, 0]), _gt(ignore=[[700, 0, 800, 100]]))["all"]
    assert (res["tp"], res["fp"], res["n_ignored"], res["n_pred"]) == (4, 1, 1, 6)
    assert res["recall"] == 1.0 and res["precision"] == 0.8


def test_prediction_matching_gt_inside_ignore_is_a_true_positive() -> None:
    res = evaluate(_det(GT_BOXES, GT_CLASSES), _gt(ignore=[[0, 0, 1000, 1000]]))["all"]
    assert (res["tp"], res["fp"], res["n_ignored"]) == (4, 0, 0)


def test_class_mismatch_not_matched() -> None:
    pred = _det(GT_BOXES, [1, 2, 2, 7])  # first box has the wrong class
    res = evaluate(pred, _gt())["all"]
    assert (res["tp"], res["fp"], res["recall"]) == (3, 1, 0.75)
    agnostic = evaluate(pred, _gt(), class_agnostic=True)["all"]
    assert (agnostic["tp"], agnostic["fp"], agnostic["recall"]) == (4, 0, 1.0)


def test_greedy_by_score_and_one_prediction_per_gt() -> None:
    # Two predictions on one GT: the higher score wins, even with lower IoU; the other is FP.
    gt = np.array([[0, 0, 100, 100]], np.float32)
    boxes = np.array([[0, 0, 100, 100], [10, 10, 100, 100]], np.float32)
    match = greedy_match(boxes, np.array([0.3, 0.9]), np.array([0, 0]), gt, np.array([0]))
    assert match.tolist() == [-1, 0]
    res = evaluate(Detections(boxes, [0.3, 0.9], [0, 0]), GroundTruth(gt, [0]))["all"]
    assert (res["tp"], res["fp"], res["precision"]) == (1, 1, 0.5)


def test_iou_threshold() -> None:
    gt = GroundTruth(np.array([[0, 0, 100, 100]]), [0])
    pred = Detections(np.array([[0, 0, 100, 60]]), [0.9], [0])  # IoU 0.6
    assert evaluate(pred, gt, iou=0.5)["all"]["tp"] == 1
    assert evaluate(pred, gt, iou=0.7)["all"]["tp"] == 0
    with pytest.raises(SparseYoloError, match="iou threshold"):
        evaluate(pred, gt, iou=0.0)


def test_ap_penalises_confident_false_positive() -> None:
    gt = GroundTruth(np.array([[0, 0, 50, 50]]), [0])
    good_first = Detections(np.array([[0, 0, 50, 50], [200, 200, 250, 250]]), [0.9, 0.8], [0, 0])
    bad_first = Detections(good_first.boxes, [0.8, 0.9], [0, 0])
    assert evaluate(good_first, gt)["all"]["map50"] == pytest.approx(1.0, abs=1e-9)
    assert evaluate(bad_first, gt)["all"]["map50"] == pytest.approx(0.5, abs=0.01)


def test_empty_inputs() -> None:
    res = evaluate(Detections.empty(), _gt())
    assert res["all"]["recall"] == 0.0 and res["all"]["map50"] == 0.0
    assert math.isnan(res["all"]["precision"])
    res = evaluate(_det(GT_BOXES, GT_CLASSES), GroundTruth(np.zeros((0, 4)), []))
    assert res["all"]["precision"] == 0.0 and res["all"]["fp"] == 4
    assert math.isnan(res["all"]["recall"]) and math.isnan(res["all"]["map50"])


def test_match_recall() -> None:
    dense = _det(GT_BOXES, GT_CLASSES)
    sparse = _det([GT_BOXES[0] + 1, GT_BOXES[3], [900, 900, 950, 950]], [0, 7, 2])
    assert match_recall(sparse, dense) == 0.5
    assert match_recall(dense, dense) == 1.0
    assert match_recall(dense, sparse) == pytest.approx(2 / 3)
    wrong_class = _det(GT_BOXES, [1, 1, 1, 1])
    assert match_recall(wrong_class, dense) == 0.0
    assert match_recall(wrong_class, dense, class_agnostic=True) == 1.0
    assert math.isnan(match_recall(dense, Detections.empty()))
