"""Batch detection over many tiles (or one huge raster's windows), locally or on Ray."""

from __future__ import annotations

from sparse_yolo.batch.driver import BatchReport, expand_sources, run_batch
from sparse_yolo.batch.work import ENGINES, BatchSpec

__all__ = ["ENGINES", "BatchReport", "BatchSpec", "expand_sources", "run_batch"]
