"""Settings of the video path, validated when built."""

from __future__ import annotations

from dataclasses import dataclass

SUBTRACTORS = ("mog2", "knn")
# With ``reuse=None``, frames of at least this many pixels (1920 x 1080) reuse.
REUSE_MIN_PIXELS = 1920 * 1080
TRACKERS = ("bytetrack", "botsort")


@dataclass(frozen=True)
class VideoConfig:
    """How each frame's cell mask is chosen, and how frames are tracked.

    A frame's mask is the union of (see :mod:`sparse_yolo.video.motion`):

    * on warm-up frames (the first ``warmup``) and every ``refresh``-th frame (frame
      indices that are multiples of it), the full-frame ``base`` mask; on the other frames the masks named in ``masks``,
      joined by ``+`` (``motion+gradient`` is the union of both);
    * persistence: the cells of the objects found so far, grown by ``persist_margin``
      cells, so an object that stops moving, or never moved, stays examined. An object
      enters at ``persist_conf`` and is kept while a box of at least ``persist_keep``
      overlaps it (:class:`~sparse_yolo.video.motion.Persistence`).

    With ``reuse``, ordinary frames compute only what motion reaches (the moving cells and
    the kept objects and last detections their regions touch) and carry the detections of
    unchanged regions (:mod:`sparse_yolo.video.reuse`).

    Attributes:
        masks: ``+``-joined mask names for ordinary frames: ``motion`` or any still-image
            mask (``gradient``, ``all``, ...).
        base: full-frame mask of warm-up and refresh frames (``all``, ``gradient``, ...).
            ``all`` computes every cell: those frames find static objects as dense does,
            and renew the camera's background (``background``) as the light changes.
        warmup: frames at the start that run ``base`` while the background model learns
            (its first frame marks every cell as moving, so frame 0 computes them all).
        refresh: run ``base`` on every frame whose index is a multiple of this; 0 never.
        persist_conf: a detection at or above this score starts being kept examined (the
            output threshold: a lower one lets the weak boxes of a cluttered background in,
            whose cells yield more weak boxes the next frame).
        persist_keep: a kept object stays while a box at or above this score overlaps it,
            so a score that dips below the output threshold for a while does not drop it.
        persist_margin: cells added around a persisted box (objects move between frames,
            and the detector needs some real context around an object).
        persist_frames: a kept object with no overlapping box for this many frames in a
            row is dropped.
        reuse: carry detections whose region (box and ``persist_margin`` cells) saw no
            motion or change since the frame that computed them, instead of recomputing
            them; full frames recompute everything. None (default): on for frames of at
            least ``REUSE_MIN_PIXELS`` (Full HD), where it saves most; on small frames
            its bookkeeping can cost more than recomputing the few kept objects saves.
        background: windows read the sites a frame skips from the stem features of the
            stream's last frame computed at every site (the first frame, and any other the
            engine runs in full), instead of a flat colour
            (:mod:`sparse_yolo.engine.background`): borderline objects beside moving ones
            then score as in the full frame.
        subtractor: OpenCV background model, ``mog2`` or ``knn``.
        motion_size: the background model runs at a long side of at most this many pixels
            and at most ``motion_scale`` of the frame's resolution.
        motion_scale: see ``motion_size``: objects are as many pixels across in a small
            frame as in a large one, so a small frame needs no more of its resolution for
            its motion to be seen (and the background model's cost grows with its pixels).
            A quarter still gives each 16-pixel cell 4x4 pixels of the model, more than a
            4K frame at 640 pixels gets (a sixth).
        motion_min: a cell is moving when this share of its pixels is foreground
            (scaled by the mask's ``threshold``).
        motion_context: cells of dilation around moving cells: the background model marks
            the changing parts of an object, the detector needs all of it and some context.
        batch: consecutive frames the engine runs together: their equal-shaped windows
            share the remainder's forward passes (fewer, larger passes); persistence of a
            frame sees the detections of the batches before its own, and results come
            ``batch`` frames late.
        track: ``bytetrack`` or ``botsort`` (Ultralytics' trackers and YAML settings), or
            None for no tracking.
        fps: frame rate assumed for image sequences and containers that state none.
    """

    masks: str = "motion"
    base: str = "all"
    warmup: int = 1
    refresh: int = 100
    persist_conf: float = 0.25
    persist_keep: float = 0.1
    persist_margin: int = 2
    persist_frames: int = 5
    reuse: bool | None = None
    background: bool = True
    subtractor: str = "mog2"
    motion_size: int = 640
    motion_scale: float = 0.25
    motion_min: float = 0.05
    motion_context: int = 2
    batch: int = 8
    track: str | None = None
    fps: float = 25.0

    def __post_init__(self) -> None:
        if not self.masks or any(not n for n in self.masks.split("+")):
            raise ValueError(f"bad video masks {self.masks!r}; e.g. motion or motion+gradient")
        if min(self.warmup, self.persist_frames, self.batch) < 1:
            raise ValueError("warmup, persist_frames and batch must be >= 1")
        if min(self.refresh, self.persist_margin, self.motion_context) < 0:
            raise ValueError("refresh, persist_margin and motion_context must be >= 0")
        if not 0.0 <= self.persist_keep <= self.persist_conf <= 1.0:
            raise ValueError("need 0 <= persist_keep <= persist_conf <= 1")
        if not 0.0 < self.motion_min <= 1.0 or not 0.0 < self.motion_scale <= 1.0:
            raise ValueError("motion_min and motion_scale must be in (0, 1]")
        if self.subtractor not in SUBTRACTORS:
            raise ValueError(f"unknown subtractor {self.subtractor!r}; known: mog2, knn")
        if self.track is not None and self.track not in TRACKERS:
            raise ValueError(f"unknown tracker {self.track!r}; known: {', '.join(TRACKERS)}")
        if self.motion_size < 32 or self.fps <= 0:
            raise ValueError("motion_size must be >= 32 and fps > 0")
