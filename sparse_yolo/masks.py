"""Cell masks: which cells of an image the sparse stem computes.

Every mask scores cells, then shares one post-processing chain so that all of them stay
blob-shaped and budgeted:

1. threshold the scores (adaptive per image by default),
2. close small gaps into blobs,
3. drop specks: active groups smaller than ``min_blob`` cells whose peak score is weak
   (a small object has a strong peak and survives; texture noise does not),
4. dilate by ``context`` cells, because zeroed background around an object costs recall,
5. keep at most ``max_active`` of the cells, ranked by (dilated) score.

Masks are looked up by name in ``MASKS``; unknown names are rejected with the known ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import cv2
import numpy as np

from sparse_yolo.config import MaskConfig

if TYPE_CHECKING:
    import torch

PAD_TO = 32  # images are padded to a multiple of the model's largest stride


def cell_grid(height: int, width: int, cell: int) -> tuple[int, int]:
    """(Hc, Wc) cells covering an image padded to a multiple of 32 pixels."""
    return -(-height // PAD_TO) * (PAD_TO // cell), -(-width // PAD_TO) * (PAD_TO // cell)


@dataclass
class MaskResult:
    """Active cells of one image.

    Attributes:
        cells: (Hc, Wc) bool, True where the stem computes.
        scores: (Hc, Wc) float32 objectness-like score used for ranking.
        cell: cell edge in pixels.
    """

    cells: np.ndarray
    scores: np.ndarray
    cell: int

    @property
    def active_fraction(self) -> float:
        return float(self.cells.mean()) if self.cells.size else 0.0


class CellMask:
    """Base class: subclasses implement :meth:`scores` (and may override :meth:`select`)."""

    name: ClassVar[str] = "base"

    def __init__(self, cfg: MaskConfig, **context: Any) -> None:
        self.cfg = cfg
        self.context = context

    def scores(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 BGR image -> (Hc, Wc) float32 cell scores."""
        raise NotImplementedError

    def select(self, scores: np.ndarray) -> tuple[np.ndarray, float]:
        """Adaptive threshold relative to the frame's quiet background.

        The background level is the 25th percentile of cell scores (robust while objects and
        clutter cover under 75% of the frame); cells above ``threshold * (2 * background +
        floor)`` are active, and twice that marks a strong peak.

        Returns:
            (Hc, Wc) bool cells above threshold, and the score of a strong peak.
        """
        background = float(np.percentile(scores, 25))
        thr = self.cfg.threshold * (2.0 * background + self.floor)
        return scores > thr, 2.0 * thr

    floor: ClassVar[float] = 0.0

    def device_scores(self, frame: torch.Tensor) -> torch.Tensor | None:
        """:meth:`scores` from the frame already on the model's (CUDA) device, or None (the
        default) to compute them from the CPU copy."""
        return None

    def __call__(
        self,
        image: np.ndarray,
        valid: np.ndarray | None = None,
        frame: torch.Tensor | None = None,
    ) -> MaskResult:
        """Compute the mask of an (H, W, 3) uint8 BGR image.

        Args:
            image: pixels.
            valid: optional (H, W) bool; cells without any valid pixel stay inactive.
            frame: the same pixels on the model's device, when they are there already.
        """
        s = self.device_scores(frame) if frame is not None else None
        s = (self.scores(image) if s is None else s.cpu().numpy()).astype(np.float32)
        if valid is not None:
            s = np.where(_cell_any(valid, self.cfg.cell, s.shape), s, 0.0).astype(np.float32)
        cells, strong = self.select(s)
        return MaskResult(postprocess(cells, s, strong, self.cfg), s, self.cfg.cell)


def _cell_any(valid: np.ndarray, cell: int, shape: tuple[int, int]) -> np.ndarray:
    padded = np.zeros((shape[0] * cell, shape[1] * cell), dtype=np.uint8)
    padded[: valid.shape[0], : valid.shape[1]] = valid
    return padded.reshape(shape[0], cell, shape[1], cell).max(axis=(1, 3)) > 0


def postprocess(
    cells: np.ndarray, scores: np.ndarray, strong: float, cfg: MaskConfig
) -> np.ndarray:
    """Close, de-speck, dilate and budget a thresholded cell mask (steps 2-5 above)."""
    kernel = np.ones((3, 3), np.uint8)
    m = cv2.morphologyEx(cells.astype(np.uint8), cv2.MORPH_CLOSE, kernel)
    m = drop_specks(m, scores, cfg.min_blob, strong)
    if cfg.context:
        m = cv2.dilate(m, kernel, iterations=cfg.context)
    m = m.astype(bool)
    if cfg.max_active is not None:
        m = apply_budget(m, scores, cfg.max_active, cfg.context)
    return m


def drop_specks(mask: np.ndarray, scores: np.ndarray, min_blob: int, strong: float) -> np.ndarray:
    """Remove groups smaller than ``min_blob`` cells unless their peak score is ``strong``."""
    if min_blob <= 1:
        return mask
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return mask
    peak = np.zeros(n, np.float32)
    np.maximum.at(peak, labels.reshape(-1), scores.reshape(-1))
    keep = (stats[:, cv2.CC_STAT_AREA] >= min_blob) | (peak >= strong)
    keep[0] = False  # background label
    return keep[labels].astype(np.uint8)


def apply_budget(mask: np.ndarray, scores: np.ndarray, fraction: float, context: int) -> np.ndarray:
    """Keep the best ``fraction`` of all cells within ``mask``.

    Context cells rank with the best score within ``context`` cells, so a blob and its
    context margin are kept or dropped together.
    """
    budget = int(fraction * mask.size)
    if mask.sum() <= budget:
        return mask
    ranked = scores
    if context:
        ranked = cv2.dilate(scores, np.ones((2 * context + 1,) * 2, np.uint8))
    ranked = np.where(mask, ranked, -np.inf).reshape(-1)
    keep = np.zeros(mask.size, dtype=bool)
    keep[np.argsort(-ranked, kind="stable")[:budget]] = True
    return keep.reshape(mask.shape) & mask


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


class GradientMask(CellMask):
    """Mean gradient magnitude per cell (Sobel on grey levels)."""

    name = "gradient"
    floor = 4.0  # grey levels: flat background and JPEG noise never pass

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


class CoarseMask(CellMask):
    """Cascade: the same detector, dense at low resolution with a low confidence threshold.

    Candidate boxes, grown by one cell, mark the cells to examine at full resolution; a
    cell scores the best confidence among the boxes covering it. Measured (GUIDE.md), such a
    cascade misses many of the smallest objects, which a full-resolution statistic catches.
    """

    name = "coarse"

    def scores(self, image: np.ndarray) -> np.ndarray:
        import torch  # noqa: PLC0415
        import torchvision  # noqa: PLC0415

        detector = self.context.get("detector")
        if detector is None:
            raise ValueError("the coarse mask needs the detector (make_mask(cfg, detector=...))")
        model = detector.model
        h, w = image.shape[:2]
        c = self.cfg.cell
        scale = min(1.0, self.cfg.coarse_size / max(h, w))
        size = (max(32, round(w * scale / 32) * 32), max(32, round(h * scale / 32) * 32))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        device = next(model.parameters()).device
        x = torch.from_numpy(small[:, :, ::-1].copy()).to(device).permute(2, 0, 1)[None] / 255
        with torch.inference_mode():  # dense stem, then the candidate-only head
            cand = model.detect_p3(model.dense_stem(x.to(model.dtype)), self.cfg.coarse_conf)
            keep = torchvision.ops.batched_nms(cand[:, :4], cand[:, 4], cand[:, 5], 0.7)
        d = cand[keep[:3000], :6].cpu().numpy()
        d[:, [0, 2]] *= w / size[0]
        d[:, [1, 3]] *= h / size[1]
        hc, wc = cell_grid(h, w, c)
        out = np.zeros((hc, wc), np.float32)
        for x1, y1, x2, y2, conf, _ in d[np.argsort(d[:, 4])]:  # best confidence painted last
            r0, r1 = max(0, int(y1 // c) - 1), min(hc, int(y2 // c) + 2)
            c0, c1 = max(0, int(x1 // c) - 1), min(wc, int(x2 // c) + 2)
            out[r0:r1, c0:c1] = np.maximum(out[r0:r1, c0:c1], conf)
        return out

    def select(self, scores: np.ndarray) -> tuple[np.ndarray, float]:
        return scores > 0, 10 * self.cfg.coarse_conf


MASKS: dict[str, type[CellMask]] = {m.name: m for m in (AllMask, GradientMask, CoarseMask)}


def make_mask(cfg: MaskConfig, **context: Any) -> CellMask:
    """Instantiate the mask named by ``cfg.name``.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    if cfg.name not in MASKS:
        raise ValueError(f"unknown mask {cfg.name!r}; known: {', '.join(MASKS)}")
    return MASKS[cfg.name](cfg, **context)


# The learned mask registers itself in MASKS (sparse_yolo.model.masknet imports this module).
import sparse_yolo.model.masknet  # noqa: E402, F401
