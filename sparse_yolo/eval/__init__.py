"""Ground-truth labels and detection-accuracy metrics for the ``compare`` command."""

from __future__ import annotations

from sparse_yolo.eval.labels import (
    COCO_NAMES,
    DOTA_TO_COCO,
    LABEL_FORMATS,
    VISDRONE_TO_COCO,
    GroundTruth,
    detect_format,
    load_labels,
)
from sparse_yolo.eval.metrics import SIZE_BUCKETS, evaluate, greedy_match, match_recall

__all__ = [
    "COCO_NAMES",
    "DOTA_TO_COCO",
    "LABEL_FORMATS",
    "SIZE_BUCKETS",
    "VISDRONE_TO_COCO",
    "GroundTruth",
    "detect_format",
    "evaluate",
    "greedy_match",
    "load_labels",
    "match_recall",
]
