"""``all``: every cell active (the dense network, computed by the sparse path)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sparse_yolo.masks.base import CellMask, MaskResult, cell_any, cell_grid

if TYPE_CHECKING:
    import torch


class AllMask(CellMask):
    """Every cell with a valid pixel active: the sparse model computes exactly the dense
    network (outside nodata and regions of interest)."""

    name = "all"

    def __call__(
        self,
        image: np.ndarray,
        valid: np.ndarray | None = None,
        frame: torch.Tensor | None = None,
    ) -> MaskResult:
        shape = cell_grid(image.shape[0], image.shape[1], self.cfg.cell)
        cells = np.ones(shape, bool) if valid is None else cell_any(valid, self.cfg.cell, shape)
        return MaskResult(cells, np.ones(shape, np.float32), self.cfg.cell)
