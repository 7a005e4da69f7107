"""Multi-object tracking with Ultralytics' ByteTrack or BoT-SORT, configured by their YAMLs."""

from __future__ import annotations

import numpy as np

from sparse_yolo.errors import SparseYoloError
from sparse_yolo.video.config import TRACKERS


class Tracker:
    """Assigns a ``track_id`` to each detection of consecutive frames.

    Args:
        name: ``bytetrack`` or ``botsort``; settings come from Ultralytics'
            ``cfg/trackers/<name>.yaml`` (``track_buffer``: frames a lost track is kept).

    Raises:
        ValueError: unknown tracker name.
    """

    def __init__(self, name: str) -> None:
        if name not in TRACKERS:
            raise ValueError(f"unknown tracker {name!r}; known: {', '.join(TRACKERS)}")
        try:
            from ultralytics.trackers.track import TRACKER_MAP  # noqa: PLC0415 - imports lap
        except ModuleNotFoundError as exc:
            raise SparseYoloError(f"tracking needs {exc.name} (pip install lap)") from exc
        from ultralytics.utils import ROOT, YAML, IterableSimpleNamespace  # noqa: PLC0415

        args = IterableSimpleNamespace(**YAML.load(ROOT / "cfg" / "trackers" / f"{name}.yaml"))
        args.device = "cpu"  # only used by a ReID encoder, which the default YAMLs switch off
        self.tracker = TRACKER_MAP[name](args=args)

    def update(self, dets: np.ndarray, image: np.ndarray) -> np.ndarray:
        """Track one frame.

        Args:
            dets: (N, 6) [x1, y1, x2, y2, score, class] in image pixels.
            image: (H, W, 3) uint8 BGR frame (BoT-SORT's camera-motion compensation reads it).

        Returns:
            (N,) int64 track id per detection; -1 where the tracker did not (yet) confirm one.
        """
        from ultralytics.engine.results import Boxes  # noqa: PLC0415

        ids = np.full(len(dets), -1, np.int64)
        tracks = self.tracker.update(Boxes(dets.astype(np.float32), image.shape[:2]), image)
        if len(tracks):
            ids[tracks[:, -1].astype(np.int64)] = tracks[:, 4].astype(np.int64)
        return ids
