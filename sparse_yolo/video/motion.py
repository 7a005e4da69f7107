"""Cell masks over time: background motion, persistence of detections, periodic refresh.

A static camera's frames are mostly unchanged background. Per frame, :class:`FrameMasks`
marks the union of

* the masks of ordinary frames (``motion`` by default: OpenCV background subtraction at
  reduced resolution, scored per cell and sent through the masks' shared post-processing
  chain, like every still-image mask),
* on warm-up and refresh frames, the full-frame base mask (``all`` by default: every cell), so
  objects that never move are found,
* persistence: the objects found so far, grown by a margin, so an object found once stays
  examined after it stops moving and while it never moves. It has hysteresis: an object
  enters at the output threshold and is kept while a weaker box still overlaps it, so a
  score that dips does not drop it, and weak boxes elsewhere never grow the mask.

With reuse (:mod:`sparse_yolo.video.reuse`), ordinary frames compute only what motion or
change reaches: the moving cells and the cells changed since they were last computed,
grown through the kept objects and last detections whose regions they touch; the
detections of untouched regions are carried from the frame that last computed them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torchvision.ops import box_iou

from sparse_yolo.config import MaskConfig
from sparse_yolo.masks import CellMask, MaskResult, cell_grid, make_mask
from sparse_yolo.video.config import REUSE_MIN_PIXELS, VideoConfig
from sparse_yolo.video.reuse import Reuse, box_rects, merge_carried

# A box at least this IoU with a kept object is that object again (it moved or its score
# dipped), and keeps it examined.
SAME_OBJECT_IOU = 0.3
# A cell at least half covered by foreground is a strong peak: it survives the de-speck
# step however small its group (a distant walker is one or two cells).
STRONG_SHARE = 0.5


class MotionMask(CellMask):
    """Share of each cell's pixels that OpenCV's background model calls foreground.

    Stateful: each call feeds one frame to the background model, so one instance serves
    one stream, frames in order. The model runs on a copy downscaled to a long side of
    ``motion_size`` pixels or to ``motion_scale`` of the resolution, whichever is smaller
    (bilinear: each small pixel averages the 2x2 frame pixels at its centre; area
    averaging costs 13x more at 4K, 9 ms a frame, for noise the model ignores anyway),
    rescaled to the first frame's median grey level (auto-exposure changes are global,
    not motion); a 3x3 opening removes single-pixel flicker before the shares are
    averaged into cells.

    Args:
        cfg: cell size, de-speck and budget settings (shared with every mask).
        video: subtractor, working resolution, foreground share of a moving cell, and the
            context (cells of dilation) around moving cells.
    """

    name = "motion"

    def __init__(self, cfg: MaskConfig, video: VideoConfig | None = None, **context: Any):
        self.video = video or VideoConfig()
        super().__init__(dataclasses.replace(cfg, context=self.video.motion_context), **context)
        if self.video.subtractor == "knn":
            self.model = cv2.createBackgroundSubtractorKNN(detectShadows=False)
        else:
            self.model = cv2.createBackgroundSubtractorMOG2(detectShadows=False)
        self.level = 0.0  # median grey of the first frame

    def scores(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 BGR frame -> (Hc, Wc) float32 foreground share per cell."""
        h, w = image.shape[:2]
        hc, wc = cell_grid(h, w, self.cfg.cell)
        scale = min(self.video.motion_scale, self.video.motion_size / max(h, w))
        small = image
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            small = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        # Cameras re-expose as people pass: scale each frame to the first frame's median
        # grey level, so a global brightness change is not taken for motion everywhere.
        level = float(np.median(cv2.cvtColor(small[::2, ::2], cv2.COLOR_BGR2GRAY)))
        self.level = self.level or max(level, 1.0)
        if abs(level - self.level) > 1.0:
            small = cv2.convertScaleAbs(small, alpha=self.level / max(level, 1.0))
        fg = self.model.apply(small)
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        # Foreground share over the padded cell grid: the padding (beyond the frame) is 0.
        ph, pw = round(hc * self.cfg.cell * scale), round(wc * self.cfg.cell * scale)
        fg = cv2.copyMakeBorder(fg, 0, max(0, ph - fg.shape[0]), 0, max(0, pw - fg.shape[1]), 0)
        share = cv2.resize(fg.astype(np.float32) / 255, (wc, hc), interpolation=cv2.INTER_AREA)
        return share

    def select(self, scores: np.ndarray) -> tuple[np.ndarray, float]:
        return scores >= self.video.motion_min * self.cfg.threshold, STRONG_SHARE


def box_cells(boxes: np.ndarray, shape: tuple[int, int], cell: int, margin: int) -> np.ndarray:
    """(Hc, Wc) bool: the cells of :func:`~sparse_yolo.video.reuse.box_rects` (boxes in image
    pixels, grown by ``margin`` cells on every side) on a grid of ``shape``."""
    out = np.zeros(shape, bool)
    for r0, r1, c0, c1 in box_rects(boxes, shape, cell, margin):
        out[r0:r1, c0:c1] = True
    return out


@dataclass
class FrameMask:
    """What one frame computes, and what it carries.

    Attributes:
        mask: the cells the engine computes.
        full: whether it ran the full-frame base mask (warm-up or refresh).
        carried: (M, 6) [x1, y1, x2, y2, score, class] detections carried from the frames
            that last computed their unchanged regions (empty without reuse).
        view: the frame's coarse grey copy that reuse compares (None without reuse).
    """

    mask: MaskResult
    full: bool
    carried: np.ndarray
    view: np.ndarray | None = None


class FrameMasks:
    """The per-frame mask of one stream (see the module docstring for the rule).

    Args:
        cfg: the detector's mask settings (cell size, context, budget, ...).
        video: warm-up, refresh, mask names, persistence and reuse settings.
        conf: the output threshold (detections below it are never carried).
        iou: overlap at which a computed and a carried box are one object.
        **context: passed to still-image masks (e.g. ``detector=`` for ``coarse``).

    Raises:
        ValueError: an unknown mask name (the message lists the known ones).
    """

    def __init__(
        self,
        cfg: MaskConfig,
        video: VideoConfig,
        conf: float = 0.25,
        iou: float = 0.5,
        **context: Any,
    ) -> None:
        self.cfg = cfg
        self.video = video
        self.iou = iou
        self.masks = [self._make(name, context) for name in video.masks.split("+")]
        self.base = self._make(video.base, context)
        self.frames = 0
        self.persist = Persistence(video)
        self.reuse: Reuse | None = None
        self._conf = conf

    def _make(self, name: str, context: dict[str, Any]) -> CellMask:
        if name == MotionMask.name:
            return MotionMask(self.cfg, self.video, **context)
        return make_mask(dataclasses.replace(self.cfg, name=name), **context)

    def is_full(self, index: int) -> bool:
        """Whether the ``index``-th frame fed (0-based) runs the full-frame base mask."""
        v = self.video
        return index < v.warmup or (v.refresh > 0 and index % v.refresh == 0)

    def __call__(self, image: np.ndarray) -> FrameMask:
        """Mask of the next frame, (H, W, 3) uint8 BGR, and the detections it carries.

        Every mask sees every frame, so background models keep learning on full frames.
        """
        if self.frames == 0 and _reuses(self.video, image.shape[:2]):
            self.reuse = Reuse(self.cfg.cell, self._conf, self.video)
        full = self.is_full(self.frames)
        self.frames += 1
        parts = [m(image) for m in self.masks]
        if full:
            parts.append(self.base(image))
        cells = np.logical_or.reduce([p.cells for p in parts])
        scores = np.maximum.reduce([p.scores for p in parts])
        kept = self.persist.boxes
        carried, view = np.zeros((0, 6), np.float32), None
        # Nothing stored or kept: nothing could be carried, and what enters moves.
        idle = not full and not len(kept) and (self.reuse is None or not len(self.reuse.dets))
        if self.reuse is not None and not idle:
            view = self.reuse.coarse(image)
        if self.reuse is not None and not full:
            if view is not None:
                cells |= self.reuse.changed(view, cells.shape)
            cells, carried = self.reuse.split(cells, kept)
        else:
            cells |= box_cells(kept, cells.shape, self.cfg.cell, self.video.persist_margin)
        return FrameMask(MaskResult(cells, scores, self.cfg.cell), full, carried, view)

    def update(
        self, frame: FrameMask, dets: np.ndarray, computed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Learn from the frame just run; returns its detections, carried ones included.

        Args:
            frame: what :meth:`__call__` returned for it.
            dets: (N, 6) [x1, y1, x2, y2, score, class] computed, frame pixels (all the
                candidates: persistence keeps objects alive down to ``persist_keep``).
            computed: (Hc', Wc') bool cells the engine computed (at least the mask's;
                padded grids are cut to the mask's); None: the mask's.

        Returns:
            (K, 6) detections sorted by descending score, and (K,) bool: carried.
        """
        out, carried = merge_carried(dets, frame.carried, self.iou)
        self.persist.update(out[:, :4], out[:, 4])
        if self.reuse is not None:
            h, w = frame.mask.cells.shape
            cells = frame.mask.cells if computed is None else computed[:h, :w]
            self.reuse.update(cells, out[~carried], frame.full, frame.view)
        return out, carried


def _reuses(video: VideoConfig, hw: tuple[int, int]) -> bool:
    """Whether a stream of (H, W) frames reuses (``video.reuse``; None: by frame size)."""
    if video.reuse is None:
        return hw[0] * hw[1] >= REUSE_MIN_PIXELS
    return video.reuse


class Persistence:
    """The objects kept examined across frames, with hysteresis on their score.

    Every box scoring at least ``persist_conf`` (the output threshold) is kept, in place of
    the kept objects it overlaps (IoU >= ``SAME_OBJECT_IOU``: the same object, moved). A
    kept object that no such box replaces stays where it was while some box scoring at
    least ``persist_keep`` overlaps it, so a score that dips below the output threshold
    does not drop it; after ``persist_frames`` frames in a row without one it is dropped.
    Weak boxes only keep objects alive, they never add or move one, so the weak boxes of a
    cluttered background cannot grow the mask frame after frame.

    Args:
        video: ``persist_conf``, ``persist_keep`` and ``persist_frames``.
    """

    def __init__(self, video: VideoConfig) -> None:
        self.video = video
        self.boxes = np.zeros((0, 4), np.float32)  # (K, 4) xyxy in frame pixels
        self.misses = np.zeros(0, np.int64)  # (K,) frames in a row without an overlapping box

    def update(self, boxes: np.ndarray, scores: np.ndarray) -> None:
        """One frame's boxes, (N, 4) xyxy pixels, and their (N,) scores."""
        v = self.video
        strong = scores >= v.persist_conf
        overlap = np.zeros((len(self.boxes), len(boxes)), bool)
        if len(self.boxes) and len(boxes):
            iou = box_iou(torch.from_numpy(self.boxes), torch.from_numpy(boxes)).numpy()
            overlap = iou >= SAME_OBJECT_IOU
        replaced = (overlap & strong).any(1)
        seen = (overlap & (scores >= v.persist_keep)).any(1)
        misses = np.where(seen, 0, self.misses + 1)[~replaced]
        alive = misses < v.persist_frames
        old = self.boxes[~replaced][alive]
        self.boxes = np.concatenate([boxes[strong], old]).astype(np.float32)
        self.misses = np.concatenate([np.zeros(int(strong.sum()), np.int64), misses[alive]])
