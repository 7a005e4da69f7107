"""The public API: ``Detector(weights, backend, mask).predict(source) -> Result``.

A thin facade: it loads the model, builds the engine and the mask, and hands every source
to :class:`sparse_yolo.pipeline.Pipeline`, which knows the stage order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparse_yolo.config import DetectorConfig
from sparse_yolo.engine import SparseEngine
from sparse_yolo.masks import CellMask, make_mask
from sparse_yolo.model.loading import load_model
from sparse_yolo.model.yolo import SparseYOLO
from sparse_yolo.pipeline import Pipeline
from sparse_yolo.types import Result

__all__ = ["Detector", "Result"]


class Detector:
    """Sparse YOLO inference on full-resolution images.

    Args:
        weights: sparse-yolo or Ultralytics checkpoint; None resolves
            ``$SPARSE_YOLO_WEIGHTS``, then Ultralytics' ``yolov8n.pt``. A ``SparseYOLO``
            instance is used as is.
        backend: ``auto``, ``gather``, ``spconv`` or ``dense``.
        mask: mask name (``gradient``, ``all``, ...).
        config: full pipeline config; ``backend`` and ``mask`` override it when given.
        device: torch device; default CUDA when available.
        **overrides: dotted config overrides, e.g. ``{"post.conf": 0.1}`` as
            ``Detector(..., **{"post.conf": 0.1})``.
    """

    def __init__(
        self,
        weights: str | Path | SparseYOLO | None = None,
        backend: str | None = None,
        mask: str | None = None,
        config: DetectorConfig | None = None,
        device: str | torch.device | None = None,
        **overrides: Any,
    ) -> None:
        cfg = config or DetectorConfig()
        cfg = cfg.replace(backend=backend, **{"mask.name": mask}, **overrides)
        self.config = cfg
        model = weights if isinstance(weights, SparseYOLO) else load_model(weights)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.engine = SparseEngine(model, cfg, device)
        self.pipeline = Pipeline(self.engine, None, cfg)
        self.pipeline.mask = make_mask(cfg.mask, detector=self)
        self.names = model.names

    @property
    def model(self) -> SparseYOLO:
        return self.engine.model

    @property
    def mask(self) -> CellMask:
        """The cell mask the pipeline runs (assignable, e.g. to a fixed mask in tests)."""
        return self.pipeline.mask

    @mask.setter
    def mask(self, mask: CellMask) -> None:
        self.pipeline.mask = mask

    def predict(self, source: str | Path | np.ndarray, progress: bool = False) -> Result:
        """Detect objects in an image or raster file of any size, or in an array.

        Args:
            source: a path (JPEG, PNG, GeoTIFF, ... read tile by tile) or an (H, W, 3)
                uint8 BGR array.
            progress: show a per-tile progress bar for multi-tile rasters.

        Returns:
            Boxes in full-image pixels, stats, and the source's georeference.
        """
        if isinstance(source, np.ndarray):
            return self.pipeline.run_array(source)
        return self.pipeline.run_path(source, progress)

    def predict_array(
        self, image: np.ndarray, valid: np.ndarray | None = None, source_name: str = "<array>"
    ) -> Result:
        """Detect objects in one in-memory (H, W, 3) uint8 BGR image; ``valid`` marks real
        pixels (nodata never activates cells)."""
        return self.pipeline.run_array(image, valid, source_name)
