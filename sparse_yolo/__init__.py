"""sparse-yolo: full-resolution small-object detection on very large images.

A YOLOv8 whose stem runs only on the active cells of a cheap mask, densified at stride 8
into windows around the active clusters. See ``Detector`` for the public API.

Names are imported lazily, so ``import sparse_yolo.sparse`` (the kernels) pulls in neither
rasterio nor the CLI.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Detector", "DetectorConfig", "ModelConfig", "Result", "SparseYOLO", "SparseYoloError"]
__version__ = "0.1.0"

_HOMES = {
    "Detector": "sparse_yolo.detector",
    "Result": "sparse_yolo.detector",
    "DetectorConfig": "sparse_yolo.config",
    "ModelConfig": "sparse_yolo.config",
    "SparseYOLO": "sparse_yolo.model.yolo",
    "SparseYoloError": "sparse_yolo.errors",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'sparse_yolo' has no attribute {name!r}")
