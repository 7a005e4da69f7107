"""Cell masks: which cells of an image the sparse stem computes.

One module per mask, all sharing :mod:`sparse_yolo.masks.base` (scores -> threshold ->
close -> de-speck -> dilate -> budget). Masks are looked up by name in ``MASKS``; unknown
names are rejected with the known ones. Importing this package does not import torch; a
mask that needs it (``coarse``, ``learned``) imports it when it is built.
"""

from __future__ import annotations

from typing import Any

from sparse_yolo.config import MaskConfig
from sparse_yolo.masks.all import AllMask
from sparse_yolo.masks.base import (
    PAD_TO,
    CellMask,
    MaskResult,
    apply_budget,
    cell_grid,
    drop_specks,
    postprocess,
)
from sparse_yolo.masks.coarse import CoarseMask
from sparse_yolo.masks.gradient import GradientMask, gradient_scores
from sparse_yolo.masks.learned import LearnedMask

MASKS: dict[str, type[CellMask]] = {
    m.name: m for m in (AllMask, GradientMask, CoarseMask, LearnedMask)
}


def make_mask(cfg: MaskConfig, **context: Any) -> CellMask:
    """Instantiate the mask named by ``cfg.name``.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    if cfg.name not in MASKS:
        raise ValueError(f"unknown mask {cfg.name!r}; known: {', '.join(MASKS)}")
    return MASKS[cfg.name](cfg, **context)


__all__ = [
    "MASKS",
    "PAD_TO",
    "AllMask",
    "CellMask",
    "CoarseMask",
    "GradientMask",
    "LearnedMask",
    "MaskResult",
    "apply_budget",
    "cell_grid",
    "drop_specks",
    "gradient_scores",
    "make_mask",
    "postprocess",
]
