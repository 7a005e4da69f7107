"""The public API: ``Detector(weights, backend, mask).predict(source) -> Result``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sparse_yolo.config import DetectorConfig
from sparse_yolo.engine import SparseEngine, Timer
from sparse_yolo.engine.runner import Frame
from sparse_yolo.errors import SparseYoloError
from sparse_yolo.masks import MaskResult, make_mask
from sparse_yolo.model.loading import load_model
from sparse_yolo.model.yolo import SparseYOLO
from sparse_yolo.types import Detections

if TYPE_CHECKING:
    from sparse_yolo.pipeline import SourceRun


@dataclass
class Result:
    """Detections of one image.

    Attributes:
        boxes: (N, 4) float32 xyxy in image pixels.
        scores: (N,) float32.
        classes: (N,) int64 class ids; ``names`` maps id -> name.
        stats: seconds per stage and in total, active_fraction (cells computed),
            mask_fraction (cells the mask marked), n_windows, backend, fill, mask,
            image size.
        mask: the cell mask that was examined (None for multi-tile rasters).
        source: file name, or ``"<array>"``.
        run: for file sources, the full record (georeferencing, mask overview, warnings).
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    names: dict[int, str]
    stats: dict[str, Any] = field(default_factory=dict)
    mask: MaskResult | None = None
    source: str = "<array>"
    run: SourceRun | None = None

    @property
    def detections(self) -> Detections:
        return Detections(self.boxes, self.scores, self.classes, self.names)

    def __len__(self) -> int:
        return len(self.boxes)


class Detector:
    """Sparse YOLOv8 inference on full-resolution images.

    Args:
        weights: sparse-yolo or Ultralytics YOLOv8 checkpoint; None resolves
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
        self.mask = make_mask(cfg.mask, detector=self)
        self.names = model.names

    @property
    def model(self) -> SparseYOLO:
        return self.engine.model

    def predict(self, source: str | Path | np.ndarray, progress: bool = False) -> Result:
        """Detect objects in an image or raster file of any size, or in an array.

        Args:
            source: a path (JPEG, PNG, GeoTIFF, ... read tile by tile) or an (H, W, 3)
                uint8 BGR array.
            progress: show a per-tile progress bar for multi-tile rasters.

        Returns:
            Boxes in full-image pixels; ``result.run`` holds the georeferencing of files.
        """
        if isinstance(source, np.ndarray):
            return self.predict_array(source)
        from sparse_yolo.pipeline import detect_path  # noqa: PLC0415 - rasterio only for files

        run = detect_path(self, source, progress)
        d = run.result.detections
        name = Path(str(source)).name
        return Result(d.boxes, d.scores, d.classes, self.names, run.stats, run.mask, name, run)

    def predict_array(
        self, image: np.ndarray, valid: np.ndarray | None = None, source_name: str = "<array>"
    ) -> Result:
        """Detect objects in one in-memory image.

        Args:
            image: (H, W, 3) uint8 BGR.
            valid: optional (H, W) bool; invalid (nodata) pixels never activate cells.
            source_name: recorded in the result.
        """
        return self.predict_batch([image], [valid], source_name)[0]

    def predict_batch(
        self,
        images: Sequence[np.ndarray],
        valid: Sequence[np.ndarray | None] | None = None,
        source_name: str = "<array>",
    ) -> list[Result]:
        """Detect objects in several in-memory images (video frames, tiles) at once.

        Each image gets its own mask, plan and stem; the windows of all of them share the
        remainder's forward passes, so the detections are those of :meth:`predict_array`
        on each image alone. ``stats["seconds"]`` are the whole batch's.

        Args:
            images: (H, W, 3) uint8 BGR arrays, any sizes.
            valid: optional (H, W) bool per image.
        """
        valid = list(valid) if valid is not None else [None] * len(images)
        timer = Timer(self.engine.device)
        t0 = time.perf_counter()
        frames = []
        for image, ok in zip(images, valid, strict=True):
            check_image(image, source_name)
            frame = None
            if self.engine.device.type != "cpu":  # one upload, shared by the mask and the stem
                with timer.stage("upload"):
                    frame = self.engine.upload(image)
            with timer.stage("mask"):
                frames.append(Frame(image, self.mask(image, ok, frame), ok, frame))
        runs = self.engine.run_batch(frames, timer)
        seconds = {**timer.seconds, "total": time.perf_counter() - t0}
        return [
            self._result(f, dets, info, seconds, source_name)
            for f, (dets, info) in zip(frames, runs, strict=True)
        ]

    def _result(self, f: Frame, dets, info: dict, seconds: dict, name: str) -> Result:
        stats = {
            "seconds": seconds,
            "active_fraction": f.mask.active_fraction,  # the engine reports it as computed
            "mask_fraction": f.mask.active_fraction,
            "mask": self.config.mask.name,
            "image_size": [int(f.image.shape[1]), int(f.image.shape[0])],
            **info,
        }
        d = dets.numpy()
        return Result(d[:, :4], d[:, 4], d[:, 5].astype(np.int64), self.names, stats, f.mask, name)


def check_image(image: np.ndarray, name: str) -> None:
    """Reject arrays that are not (H, W, 3) uint8 with H, W > 0."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise SparseYoloError(
            f"expected an (H, W, 3) uint8 BGR image, got {image.shape} {image.dtype}", name
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise SparseYoloError("zero-size image", name)
