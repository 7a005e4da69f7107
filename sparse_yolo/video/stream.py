"""The per-frame loop: frame -> mask (motion, persistence, refresh) -> engine -> tracker.

:func:`stream` is the one place that knows the order of the video stages; read it
top-down. Frames come decoded from a background thread (:mod:`.reader`), the mask of each
frame from :class:`~sparse_yolo.video.motion.FrameMasks`, detections from the detector's
engine (which reuses its window plan and neighbour tables while the active set is
unchanged), and track ids from :class:`~sparse_yolo.video.track.Tracker`.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from sparse_yolo.engine import SparseEngine, Timer
from sparse_yolo.engine.background import Background
from sparse_yolo.engine.runner import Frame as EngineFrame
from sparse_yolo.errors import SparseYoloError
from sparse_yolo.masks import MaskResult
from sparse_yolo.types import Detections, EngineRun
from sparse_yolo.video.config import VideoConfig
from sparse_yolo.video.motion import FrameMask, FrameMasks
from sparse_yolo.video.reader import Frame, VideoReader
from sparse_yolo.video.track import Tracker

if TYPE_CHECKING:
    from sparse_yolo.detector import Detector


@dataclass
class FrameResult:
    """Detections of one video frame.

    Attributes:
        frame_index: 0-based position in the source.
        timestamp_s: seconds from the start of the source.
        detections: boxes (N, 4) xyxy in frame pixels, scores, class ids and names.
        track_ids: (N,) int64 track ids (-1: not yet confirmed), or None without tracking.
        mask: the cells the frame's mask marked (what it computed: carried detections'
            cells are not in it).
        active_fraction: share of cells the stem computed (the engine may compute every
            cell when the mask's windows span the frame anyway).
        full: whether it ran the full-frame base mask (warm-up or refresh).
        seconds: seconds per stage (decode wait, mask, engine stages, track).
        image: the frame, (H, W, 3) uint8 BGR (for drawing).
        carried: (N,) bool, detections carried from an earlier frame (their region saw
            no motion since it was computed), None when not known.
    """

    frame_index: int
    timestamp_s: float
    detections: Detections
    track_ids: np.ndarray | None
    mask: MaskResult
    active_fraction: float
    full: bool
    seconds: dict[str, float] = field(default_factory=dict)
    image: np.ndarray | None = field(default=None, repr=False)
    carried: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.detections)


def stream(
    detector: Detector, source: str | Path | Iterable[Frame], video: VideoConfig | None = None
) -> Iterator[FrameResult]:
    """Detect (and track) objects in every frame of a video, stream or image sequence.

    Frames go to the engine ``video.batch`` at a time, so equal-shaped windows of
    consecutive frames share the remainder's forward passes; each frame's mask is
    still its own (persistence sees the detections of the batches before; the warm-up
    frames run before any other, so the objects they find are kept from the next frame on).

    Args:
        detector: the model and its settings; its mask settings (cell, context, budget)
            shape the per-frame masks, its ``post.conf`` filters the output.
        source: a video file, stream URL, folder or glob of frames, or frames in order
            (an open :class:`VideoReader`, or any iterable of :class:`Frame`).
        video: masks over time, batching and tracking (defaults: motion, every cell on
            warm-up/refresh).

    Yields:
        One :class:`FrameResult` per frame, in order.

    Raises:
        SparseYoloError: the source cannot be opened; ``StreamInterrupted`` when it ends
            early, after the frames read so far were yielded.
    """
    video = video or VideoConfig()
    reader = VideoReader(source, video.fps) if isinstance(source, str | Path) else source
    post = detector.config.post
    masks = FrameMasks(detector.config.mask, video, post.conf, post.iou, detector=detector)
    engine = _engine_with_conf(detector.engine, min(video.persist_keep, detector.config.post.conf))
    tracker = Tracker(video.track) if video.track else None
    background = Background() if video.background else None
    frames = iter(reader)
    done = 0
    while True:
        timer = Timer(engine.device)
        # warm-up frames run alone: the frames after them need their persisted objects
        size = video.batch if done >= video.warmup else min(video.batch, video.warmup - done)
        with timer.stage("decode"):  # time spent waiting on the decoding thread
            batch, ended = _next_batch(frames, size)
        done += len(batch)
        if not batch:
            if ended is not None:
                raise ended
            return
        t0 = time.perf_counter()
        with timer.stage("mask"):
            frame_masks = [masks(f.image) for f in batch]
        runs = engine.run_batch(
            [
                EngineFrame(f.image, m.mask, background=background)
                for f, m in zip(batch, frame_masks, strict=True)
            ],
            timer,
        )
        results = [
            _result(f, fm, dets, run, masks, tracker, detector, timer)
            for f, fm, (dets, run) in zip(batch, frame_masks, runs, strict=True)
        ]
        timer.seconds["total"] = time.perf_counter() - t0 + timer.seconds["decode"]
        share = {k: v / len(batch) for k, v in timer.seconds.items()}  # the batch's, per frame
        for r in results:
            r.seconds = dict(share)
            yield r
        if ended is not None:
            raise ended


def _result(
    f: Frame,
    fm: FrameMask,
    dets: torch.Tensor,
    run: EngineRun,
    masks: FrameMasks,
    tracker: Tracker | None,
    detector: Detector,
    timer: Timer,
) -> FrameResult:
    """One frame's result: its computed and carried detections; persistence learns from
    all of them (down to ``persist_keep``), the output keeps those at the detector's
    ``post.conf``, then tracks."""
    with timer.stage("mask"):
        d, carried = masks.update(fm, dets.numpy(), run.cells)
    out = d[:, 4] >= detector.config.post.conf
    d, carried = d[out], carried[out]
    ids = None
    if tracker is not None:
        with timer.stage("track"):
            ids = tracker.update(d, f.image)
    found = Detections(d[:, :4], d[:, 4], d[:, 5], detector.names)
    return FrameResult(
        f.index,
        f.timestamp_s,
        found,
        ids,
        fm.mask,
        run.active_fraction,
        fm.full,
        image=f.image,
        carried=carried,
    )


def _next_batch(frames: Iterator[Frame], size: int) -> tuple[list[Frame], Exception | None]:
    """Up to ``size`` next frames, and the error that ended the source early, if any (raised
    after the frames read before it were yielded)."""
    batch: list[Frame] = []
    try:
        for frame in itertools.islice(frames, size):
            batch.append(frame)
    except SparseYoloError as exc:
        return batch, exc
    return batch, None


def _engine_with_conf(engine: SparseEngine, conf: float) -> SparseEngine:
    """The same engine and model with a lower candidate threshold: detections between it and
    the output threshold feed persistence only."""
    view = copy.copy(engine)
    view.cfg = engine.cfg.replace(**{"post.conf": conf})
    view._last_plan = {}
    return view


@dataclass
class StreamStats:
    """Totals over a stream: per-stage seconds, frames, mean share of cells computed."""

    frames: int = 0
    full_frames: int = 0
    detections: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    active_sum: float = 0.0

    def add(self, r: FrameResult) -> None:
        self.frames += 1
        self.full_frames += int(r.full)
        self.detections += len(r)
        self.active_sum += r.active_fraction
        for k, v in r.seconds.items():
            self.seconds[k] = self.seconds.get(k, 0.0) + v

    def as_dict(self) -> dict:
        total = self.seconds.get("total", 0.0)
        return {
            "frames": self.frames,
            "full_frames": self.full_frames,
            "detections": self.detections,
            "fps": self.frames / total if total else None,
            "mean_active_fraction": self.active_sum / self.frames if self.frames else None,
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
        }
