"""Batch detection over many tiles (or one huge raster's windows), locally or on Ray."""

from __future__ import annotations

from sparse_yolo.batch.driver import ENGINES, BatchReport, BatchSpec, expand_sources, run_batch

__all__ = ["ENGINES", "BatchReport", "BatchSpec", "expand_sources", "run_batch"]
