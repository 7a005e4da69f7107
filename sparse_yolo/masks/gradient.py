"""``gradient``: mean Sobel gradient magnitude per cell, thresholded per image."""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from sparse_yolo.masks.base import BACKGROUND_PERCENTILE, CellMask, Source, cell_grid, sample_source

if TYPE_CHECKING:
    import torch


class GradientMask(CellMask):
    """Mean gradient magnitude per cell (Sobel on grey levels).

    The threshold's background level comes from the whole source when the pipeline has
    prepared one (:meth:`source_statistics`), so a raster's cells do not depend on
    ``--tile``; an in-memory image is its own whole.
    """

    name = "gradient"
    floor = 4.0  # grey levels: flat background and JPEG noise never pass

    def source_statistics(self, source: Source, max_side: int) -> float:
        """The background level (see :meth:`CellMask.select`) of all of a source's cells."""
        reads = sample_source(source, max_side)
        scores = [self.valid_scores(bgr, valid).ravel() for bgr, valid in reads]
        return float(np.percentile(np.concatenate(scores), BACKGROUND_PERCENTILE))

    def scores(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        hc, wc = cell_grid(h, w, self.cfg.cell)
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        gx = cv2.Sobel(grey, cv2.CV_16S, 1, 0, ksize=3)
        gy = cv2.Sobel(grey, cv2.CV_16S, 0, 1, ksize=3)
        energy = cv2.addWeighted(cv2.convertScaleAbs(gx), 0.5, cv2.convertScaleAbs(gy), 0.5, 0)
        c = self.cfg.cell
        energy = cv2.copyMakeBorder(energy, 0, hc * c - h, 0, wc * c - w, cv2.BORDER_CONSTANT)
        return cv2.resize(energy.astype(np.float32), (wc, hc), interpolation=cv2.INTER_AREA)

    def device_scores(self, frame: torch.Tensor) -> torch.Tensor | None:
        return gradient_scores(frame, self.cfg.cell) if min(frame.shape[:2]) > 1 else None


# OpenCV's uint8 BGR -> grey: 15-bit fixed-point weights, rounded (B, G, R).
_GREY_WEIGHTS = (3735, 19235, 9798)


def gradient_scores(frame: torch.Tensor, cell: int) -> torch.Tensor:
    """:meth:`GradientMask.scores` in torch on the frame's device, equal to the OpenCV path.

    Every step is integer arithmetic held exactly in float32: OpenCV's fixed-point grey,
    Sobel with its default reflect-101 border, saturating absolute values, the rounded
    (half to even) average of the two, and a per-cell mean. On a CUDA frame it costs a
    fraction of a millisecond instead of tens on the CPU (the frame is uploaded anyway).

    Args:
        frame: (H, W, 3) uint8 BGR, H and W >= 2.
        cell: cell edge in pixels.

    Returns:
        (Hc, Wc) float32 mean gradient energy per cell (:func:`cell_grid`).
    """
    import torch  # noqa: PLC0415 - masks stay importable without touching torch
    import torch.nn.functional as F  # noqa: PLC0415

    h, w = frame.shape[:2]
    hc, wc = cell_grid(h, w, cell)
    b, g, r = (frame[..., i].to(torch.int32) * k for i, k in enumerate(_GREY_WEIGHTS))
    grey = ((b + g + r + (1 << 14)) >> 15).float()
    x = F.pad(grey[None, None], (1, 1, 1, 1), mode="reflect")  # reflect = OpenCV's REFLECT_101
    k = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=frame.device)
    grad = F.conv2d(x, torch.stack([k, k.t()])[:, None])  # (1, 2, H, W): d/dx, d/dy
    energy = grad.abs_().clamp_(max=255).sum(1, keepdim=True).mul_(0.5).round_()
    energy = F.pad(energy, (0, wc * cell - w, 0, hc * cell - h))
    return F.avg_pool2d(energy, cell)[0, 0]
