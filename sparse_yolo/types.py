"""Plain data passed between pipeline stages."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Detections:
    """Detections of one image or raster.

    Attributes:
        boxes: (N, 4) float32 xyxy in full-image (raster) pixels.
        scores: (N,) float32 confidences.
        classes: (N,) int64 class ids.
        names: class id -> class name.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    names: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.classes = np.asarray(self.classes, dtype=np.int64).reshape(-1)
        if not len(self.boxes) == len(self.scores) == len(self.classes):
            raise ValueError("boxes, scores and classes differ in length")

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls, names: dict[int, str] | None = None) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0), names or {})
