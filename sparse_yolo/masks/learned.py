"""``learned``: cells a small trained net (:mod:`sparse_yolo.model.masknet`) finds likely
to hold an object.

The net comes from a file given as ``--mask learned:PATH`` (a mask net alone, written by
``tools/mask_learn.py``, or any sparse-yolo checkpoint that carries one, ``sparse-yolo distill
--images``), else from the detector's own checkpoint, else the net shipped with the package
(:data:`SHIPPED_MASK_NET`, distilled from YOLOv8n on the aerial frames of the project's data),
so a mask adapted to one archive works with any weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from sparse_yolo.errors import SparseYoloError
from sparse_yolo.masks.base import CellMask, cell_grid

SHIPPED_MASK_NET = Path(__file__).with_name("masknet.pt")


class LearnedMask(CellMask):
    """Cells whose net probability exceeds the net's calibrated ``threshold`` times
    ``MaskConfig.threshold``.

    The net is ``context["mask_net"]``, else the one in ``MaskConfig.path``, else the
    detector's (``context["detector"].model.mask_net``), else :data:`SHIPPED_MASK_NET`.

    Raises:
        SparseYoloError: no mask net found.
    """

    name: ClassVar[str] = "learned"

    def __init__(self, cfg: Any, **context: Any) -> None:
        super().__init__(cfg, **context)
        self.net = self._find_net()  # its ``threshold`` is read at each select
        self.runner = self.net.for_inference()

    def _find_net(self) -> Any:
        net = self.context.get("mask_net")
        if net is None and self.cfg.path:
            from sparse_yolo.model.loading import load_model  # noqa: PLC0415 - needs torch
            from sparse_yolo.model.masknet import load_mask_net  # noqa: PLC0415

            net = load_mask_net(self.cfg.path) or load_model(self.cfg.path).mask_net
            if net is None:
                raise SparseYoloError("checkpoint carries no mask net", self.cfg.path)
        detector = self.context.get("detector")
        if net is None and detector is not None:
            net = getattr(detector.model, "mask_net", None)
        if net is None and SHIPPED_MASK_NET.is_file():
            from sparse_yolo.model.masknet import load_mask_net  # noqa: PLC0415

            net = load_mask_net(SHIPPED_MASK_NET)
        if net is None:
            raise SparseYoloError(
                "--mask learned needs a checkpoint with a trained mask net "
                "(sparse-yolo distill), or --mask learned:PATH"
            )
        if detector is not None:  # run where the detector runs
            net = net.to(next(detector.model.parameters()).device)
        return net

    def scores(self, image: np.ndarray) -> np.ndarray:
        hc, wc = cell_grid(image.shape[0], image.shape[1], self.cfg.cell)
        probs = self.runner.cell_probs(image, self.cfg.cell)
        return probs[:hc, :wc]

    def select(self, scores: np.ndarray) -> tuple[np.ndarray, float]:
        """Probability threshold; a strong peak lies halfway between it and 1."""
        thr = min(float(self.net.threshold) * self.cfg.threshold, 0.999)
        return scores > thr, (1.0 + thr) / 2.0
