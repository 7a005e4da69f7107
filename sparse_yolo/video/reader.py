"""Frames in order from a video file, a folder or glob of images, or a stream URL.

Frames are decoded in a background thread into a short queue, so decoding overlaps
inference. Every failure is a :class:`~sparse_yolo.errors.SparseYoloError` with one line:
a source that cannot be opened fails before the first frame; a source that ends early
(a truncated file, a live stream that drops, an unreadable image in a folder) fails after
the frames read so far were delivered, as :class:`StreamInterrupted`.
"""

from __future__ import annotations

import glob
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sparse_yolo.errors import SparseYoloError
from sparse_yolo.io.raster import FRAME_SUFFIXES

STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv"}
)
# FFmpeg's own log lines ("moov atom not found", ...) would bury the one-line error that
# this module reports instead; a user can still set the variable to see them.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
OPEN_TIMEOUT_MS = 5000  # a stream URL that does not answer fails instead of hanging
QUEUE_FRAMES = 4  # decoded frames held ahead of inference (memory: 4 x 24 MB at 4K)


class StreamInterrupted(SparseYoloError):
    """The source ended or dropped before its last frame; earlier frames were delivered."""


@dataclass
class Frame:
    """One decoded frame.

    Attributes:
        index: 0-based position in the source.
        timestamp_s: seconds from the start (the container's clock, else index / fps).
        image: (H, W, 3) uint8 BGR.
    """

    index: int
    timestamp_s: float
    image: np.ndarray


def is_stream_url(source: str | Path) -> bool:
    return str(source).lower().startswith(STREAM_SCHEMES)


def is_video_source(source: str | Path, frames: bool = False) -> bool:
    """Whether ``detect`` should take ``source`` as a video: a stream URL, a file with a
    video suffix, or (``frames``) a folder or glob of images."""
    if is_stream_url(source):
        return True
    return frames or Path(str(source)).suffix.lower() in VIDEO_SUFFIXES


class VideoReader:
    """Iterate over the frames of ``source`` (decoded in a background thread).

    Args:
        source: a video file, a stream URL, or a folder / glob pattern of images (taken in
            sorted name order; ``fps`` sets their timestamps).
        fps: frame rate for image sequences, and for containers that do not state one.

    Raises:
        SparseYoloError: the source cannot be opened, or holds no frame.
    """

    def __init__(self, source: str | Path, fps: float = 25.0) -> None:
        self.name = str(source)
        self._files: list[Path] | None = None
        self._cap: cv2.VideoCapture | None = None
        self.expected: int | None = None
        if not is_stream_url(source) and (Path(self.name).is_dir() or _is_glob(self.name)):
            self._files = _frame_files(self.name)
            self.fps = fps
            self.expected = len(self._files)
        else:
            self._cap = _open_capture(self.name)
            self.fps = self._cap.get(cv2.CAP_PROP_FPS) or fps
            count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
            self.expected = count if count > 0 else None
        # A stream of unknown length is live: it has no normal end.
        self.live = is_stream_url(source) and self.expected is None
        self._first = self._read_first()

    def _read_first(self) -> Frame:
        try:
            first = next(self._decode(), None)
        except SparseYoloError:
            self.close()
            raise
        if first is None:
            self.close()
            raise SparseYoloError("no frame could be decoded (not a video?)", self.name)
        return first

    def __len__(self) -> int:
        return self.expected or 0

    def __iter__(self) -> Iterator[Frame]:
        """Frames in order; raises :class:`StreamInterrupted` where the source ends early."""
        q: queue.Queue = queue.Queue(QUEUE_FRAMES)
        stop = threading.Event()
        worker = threading.Thread(target=self._produce, args=(q, stop), daemon=True)
        worker.start()
        try:
            while (item := q.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            stop.set()
            while worker.is_alive():  # unblock a producer waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    worker.join(0.05)
            self.close()

    def _produce(self, q: queue.Queue, stop: threading.Event) -> None:
        q.put(self._first)
        last = self._first.index
        try:
            for frame in self._decode(start=1):
                if stop.is_set():
                    return
                q.put(frame)
                last = frame.index
            if self.live or (self.expected is not None and last + 1 < self.expected):
                of = f" of {self.expected}" if self.expected else ""
                q.put(StreamInterrupted(f"stream ended after {last + 1}{of} frames", self.name))
        except SparseYoloError as exc:
            q.put(exc)
        except Exception as exc:  # noqa: BLE001 - one line for the user, never a traceback
            q.put(StreamInterrupted(f"decoding failed after frame {last}: {exc}", self.name))
        finally:
            q.put(None)

    def _decode(self, start: int = 0) -> Iterator[Frame]:
        """Frames from ``start`` on (a capture continues where it stands)."""
        if self._files is not None:
            for i in range(start, len(self._files)):
                image = cv2.imread(str(self._files[i]), cv2.IMREAD_COLOR)
                if image is None:
                    raise StreamInterrupted(f"frame {i} is not a readable image", self._files[i])
                yield Frame(i, i / self.fps, image)
            return
        assert self._cap is not None
        i = start
        while True:
            ok, image = self._cap.read()
            if not ok or image is None:
                return
            msec = self._cap.get(cv2.CAP_PROP_POS_MSEC)
            stamp = msec / 1000 if msec > 0 or i == 0 else i / self.fps
            yield Frame(i, stamp, image)
            i += 1

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frames."""
        return int(self._first.image.shape[1]), int(self._first.image.shape[0])


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _frame_files(spec: str) -> list[Path]:
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    else:
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
    if not files:
        raise SparseYoloError("no image frames found", spec)
    return files


def _open_capture(name: str) -> cv2.VideoCapture:
    if not is_stream_url(name) and not Path(name).is_file():
        raise SparseYoloError("no such file", name)
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS]
    params += [cv2.CAP_PROP_READ_TIMEOUT_MSEC, OPEN_TIMEOUT_MS]
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # no backend warnings
    try:
        cap = cv2.VideoCapture(name, cv2.CAP_FFMPEG, params)
    finally:
        cv2.utils.logging.setLogLevel(level)
    if not cap.isOpened():
        cap.release()
        what = "cannot open the stream" if is_stream_url(name) else "not a video OpenCV can read"
        raise SparseYoloError(what, name)
    return cap
