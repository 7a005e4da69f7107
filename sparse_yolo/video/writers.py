"""Per-frame outputs of the video path, written as frames arrive.

Unlike still-image outputs (written atomically, all or nothing), these are streams: each
record is flushed as soon as it is written, so an interrupted run leaves every frame done
so far, as valid lines. Writers are looked up by suffix in ``WRITERS``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, ClassVar

import cv2
import numpy as np

from sparse_yolo.errors import SparseYoloError
from sparse_yolo.video.stream import FrameResult


class FrameWriter:
    """Base class: one record per frame, appended and flushed."""

    suffix: ClassVar[str] = ""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.file: IO[str] = open(self.path, "w", encoding="utf-8", newline="\n")  # noqa: SIM115
        except OSError as exc:
            raise SparseYoloError(f"cannot write: {exc.strerror or exc}", self.path) from exc

    def write(self, r: FrameResult) -> None:
        self.file.write(self.format(r))
        self.file.flush()

    def format(self, r: FrameResult) -> str:
        raise NotImplementedError

    def close(self) -> None:
        self.file.close()


class JsonLinesWriter(FrameWriter):
    """JSON Lines: ``{"frame", "timestamp_s", "detections": [{"bbox_px": [x1, y1, x2, y2],
    "class_id", "class_name", "score", "track_id"?}]}`` per frame, in frame pixels."""

    suffix = ".jsonl"

    def format(self, r: FrameResult) -> str:
        d = r.detections
        dets = []
        for i in range(len(d)):
            rec = {
                "bbox_px": [round(float(v), 2) for v in d.boxes[i]],
                "class_id": int(d.classes[i]),
                "class_name": d.names.get(int(d.classes[i]), str(int(d.classes[i]))),
                "score": round(float(d.scores[i]), 4),
            }
            if r.track_ids is not None:
                rec["track_id"] = int(r.track_ids[i])
            dets.append(rec)
        record = {
            "frame": r.frame_index,
            "timestamp_s": round(r.timestamp_s, 4),
            "detections": dets,
        }
        return json.dumps(record) + "\n"


class MotWriter(FrameWriter):
    """MOTChallenge text: ``frame,id,x,y,w,h,conf,-1,-1,-1`` per detection.

    Frames are 1-based as MOTChallenge counts them; ``id`` is the track id (-1 untracked).
    """

    suffix = ".txt"

    def format(self, r: FrameResult) -> str:
        d = r.detections
        ids = r.track_ids if r.track_ids is not None else np.full(len(d), -1)
        lines = []
        for (x1, y1, x2, y2), score, tid in zip(d.boxes, d.scores, ids, strict=True):
            lines.append(
                f"{r.frame_index + 1},{int(tid)},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},"
                f"{score:.4f},-1,-1,-1\n"
            )
        return "".join(lines)


WRITERS: dict[str, type[FrameWriter]] = {w.suffix: w for w in (JsonLinesWriter, MotWriter)}


def writer_for(path: str | Path) -> type[FrameWriter]:
    """The writer class for ``path``'s suffix (``.jsonl`` or ``.txt``).

    Raises:
        SparseYoloError: unknown suffix (the message lists the known ones).
    """
    suffix = Path(path).suffix.lower()
    if suffix not in WRITERS:
        raise SparseYoloError(f"video output must end in {' or '.join(WRITERS)}", path)
    return WRITERS[suffix]


def open_writer(path: str | Path) -> FrameWriter:
    """Open the writer for ``path``'s suffix (see :func:`writer_for`)."""
    return writer_for(path)(path)


class VideoWriter:
    """``--save-video``: the frames with boxes, class names, scores and track ids drawn.

    Args:
        path: output file; ``.mp4`` (mp4v) or ``.avi`` (MJPG).
        fps: frame rate of the output.
        size: (width, height) of the frames.
    """

    CODECS: ClassVar[dict[str, str]] = {".mp4": "mp4v", ".avi": "MJPG"}

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]) -> None:
        self.path = Path(path)
        codec = self.CODECS.get(self.path.suffix.lower())
        if codec is None:
            raise SparseYoloError(f"--save-video must end in {' or '.join(self.CODECS)}", path)
        self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*codec), fps, size)
        if not self.writer.isOpened():
            raise SparseYoloError("cannot write this video file", path)

    def write(self, r: FrameResult) -> None:
        from ultralytics.utils.plotting import Annotator, colors  # noqa: PLC0415

        assert r.image is not None
        annotator = Annotator(r.image.copy(), line_width=2)
        d = r.detections
        for i in range(len(d)):
            cls = int(d.classes[i])
            label = f"{d.names.get(cls, cls)} {d.scores[i]:.2f}"
            if r.track_ids is not None and r.track_ids[i] >= 0:
                label = f"#{int(r.track_ids[i])} {label}"
            key = int(r.track_ids[i]) if r.track_ids is not None else cls
            annotator.box_label(d.boxes[i].tolist(), label, color=colors(key, True))
        self.writer.write(annotator.result())

    def close(self) -> None:
        self.writer.release()
