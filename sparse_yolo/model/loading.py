"""Find and load weights: sparse-yolo checkpoints or Ultralytics detection ``.pt`` files
(YOLOv8, YOLO11, YOLO26 and their P2/P6 variants)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from sparse_yolo.errors import SparseYoloError
from sparse_yolo.model.yolo import CHECKPOINT_FORMAT, SparseYOLO

ENV_WEIGHTS = "SPARSE_YOLO_WEIGHTS"
DEFAULT_WEIGHTS = "yolov8n.pt"


def resolve_weights(weights: str | Path | None = None) -> Path:
    """Weights in order: an explicit path, ``$SPARSE_YOLO_WEIGHTS``, then Ultralytics' own
    ``yolov8n.pt`` (found in the working directory or downloaded by Ultralytics).

    Raises:
        SparseYoloError: the file is missing or cannot be downloaded.
    """
    chosen = weights or os.environ.get(ENV_WEIGHTS)
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_file():
            source = "" if weights else f" (from ${ENV_WEIGHTS})"
            raise SparseYoloError(f"weights file not found{source}", path)
        return path
    from ultralytics.utils.downloads import attempt_download_asset  # noqa: PLC0415

    try:
        path = Path(attempt_download_asset(DEFAULT_WEIGHTS))
    except Exception as exc:  # network errors come in many types
        raise SparseYoloError(
            f"could not download {DEFAULT_WEIGHTS} ({exc}); pass --weights or set ${ENV_WEIGHTS}"
        ) from exc
    if not path.is_file():
        raise SparseYoloError(f"download failed; pass --weights or set ${ENV_WEIGHTS}", path)
    return path


def load_model(weights: str | Path | None = None, neck: str = "pan") -> SparseYOLO:
    """Load a SparseYOLO from a sparse-yolo checkpoint or import an Ultralytics detector.

    Args:
        weights: path or None (see :func:`resolve_weights`).
        neck: neck for a dense import (``pan`` imports it, ``slim`` starts fresh).
    """
    path = resolve_weights(weights)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise SparseYoloError(f"not a PyTorch checkpoint ({type(exc).__name__})", path) from exc
    if isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT:
        try:
            return SparseYOLO.from_checkpoint(ckpt)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise SparseYoloError(f"incompatible sparse-yolo checkpoint ({exc})", path) from exc
    if isinstance(ckpt, dict) and ("model" in ckpt or "ema" in ckpt):
        try:
            return SparseYOLO.from_ultralytics(path, neck=neck)
        except SparseYoloError as exc:
            raise SparseYoloError(str(exc).removeprefix(f"{path}: "), path) from exc
    raise SparseYoloError("not a sparse-yolo or Ultralytics detection checkpoint", path)
