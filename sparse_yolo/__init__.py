"""sparse-yolo: full-resolution small-object detection on very large images.

A YOLOv8 whose stem runs only on the active cells of a cheap mask, densified at stride 8
into windows around the active clusters. See ``Detector`` for the public API.
"""

from __future__ import annotations

from sparse_yolo.config import DetectorConfig, ModelConfig
from sparse_yolo.detector import Detector, Result
from sparse_yolo.errors import SparseYoloError
from sparse_yolo.model.yolo import SparseYOLO

__all__ = ["Detector", "DetectorConfig", "ModelConfig", "Result", "SparseYOLO", "SparseYoloError"]
__version__ = "0.1.0"
