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
        """Mean gradient energy per cell, computed in strips of :data:`STRIP` rows so that
        each step's buffers stay in cache and are reused (whole-frame buffers of a 4K frame
        cost more in page faults than in arithmetic); the result equals a whole-frame pass."""
        h, w = image.shape[:2]
        c = self.cfg.cell
        hc, wc = cell_grid(h, w, c)
        out = np.zeros((hc, wc), np.float32)
        step = max(STRIP // c, 1) * c
        for y0 in range(0, h, step):
            y1 = min(h, y0 + step)
            out[y0 // c : -(-y1 // c)] = _strip_energy(image, y0, y1, c, wc)
        return out

    def device_scores(self, frame: torch.Tensor) -> torch.Tensor | None:
        return gradient_scores(frame, self.cfg.cell) if min(frame.shape[:2]) > 1 else None


STRIP = 128  # rows of a frame the CPU gradient mask processes at a time


def _strip_energy(image: np.ndarray, y0: int, y1: int, cell: int, wc: int) -> np.ndarray:
    """Cell means of the gradient energy of rows ``y0:y1`` (``y0`` a multiple of ``cell``).

    Sobel reads one row beyond the strip where the frame has one and mirrors the frame's own
    edges (OpenCV's default reflect-101), exactly as over the whole frame; rows and columns
    past the frame count as 0 energy in their cells.
    """
    h, w = image.shape[:2]
    a0, a1 = max(0, y0 - 1), min(h, y1 + 1)
    grey = cv2.cvtColor(image[a0:a1], cv2.COLOR_BGR2GRAY)
    gx = cv2.convertScaleAbs(cv2.Sobel(grey, cv2.CV_16S, 1, 0, ksize=3))
    gy = cv2.convertScaleAbs(cv2.Sobel(grey, cv2.CV_16S, 0, 1, ksize=3))
    energy = cv2.addWeighted(gx, 0.5, gy, 0.5, 0)[y0 - a0 : y1 - a0]
    rows = -(-(y1 - y0) // cell) * cell
    energy = cv2.copyMakeBorder(energy, 0, rows - (y1 - y0), 0, wc * cell - w, cv2.BORDER_CONSTANT)
    return cv2.resize(energy.astype(np.float32), (wc, rows // cell), interpolation=cv2.INTER_AREA)


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
