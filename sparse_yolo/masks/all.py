"""``all``: every cell active (the dense network, computed by the sparse path)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sparse_yolo.masks.base import CellMask, MaskResult, cell_grid

if TYPE_CHECKING:
    import torch


class AllMask(CellMask):
    """Every cell active: the sparse model computes exactly the dense network."""

    name = "all"

    def __call__(
        self,
        image: np.ndarray,
        valid: np.ndarray | None = None,
        frame: torch.Tensor | None = None,
    ) -> MaskResult:
        shape = cell_grid(image.shape[0], image.shape[1], self.cfg.cell)
        return MaskResult(np.ones(shape, bool), np.ones(shape, np.float32), self.cfg.cell)
