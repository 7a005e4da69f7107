"""Surveillance-style clips composed from real imagery, for tests and benchmarks.

A static real background with real object crops pasted along paths: some still from the
first frame, some crossing the frame, some stopping mid-way. Each frame gets a little
sensor noise, as a real camera does. The composer takes arrays; it reads no files.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sparse_yolo.errors import SparseYoloError


@dataclass
class Sprite:
    """An object crop and where its top-left corner is in each frame.

    Attributes:
        image: (h, w, 3) uint8 BGR crop (the object with a little of its own surroundings).
        box: (4,) xyxy of the object inside the crop, in crop pixels.
        path: (T, 2) int (x, y) of the crop's top-left corner per frame, in frame pixels.
    """

    image: np.ndarray
    box: np.ndarray
    path: np.ndarray

    def box_at(self, t: int) -> np.ndarray:
        """(4,) xyxy of the object in frame ``t``, in frame pixels."""
        x, y = self.path[t]
        return self.box + np.array([x, y, x, y], np.float32)


def crop(image: np.ndarray, box: tuple[float, float, float, float], pad: float = 0.3) -> tuple:
    """Cut an object out of a real image with ``pad`` of its size around it.

    Returns:
        (crop (h, w, 3) uint8, (4,) float32 xyxy of the object inside the crop).
    """
    x1, y1, x2, y2 = box
    px, py = (x2 - x1) * pad, (y2 - y1) * pad
    h, w = image.shape[:2]
    c0, r0 = int(max(0, x1 - px)), int(max(0, y1 - py))
    c1, r1 = int(min(w, x2 + px)), int(min(h, y2 + py))
    inner = np.array([x1 - c0, y1 - r0, x2 - c0, y2 - r0], np.float32)
    return image[r0:r1, c0:c1].copy(), inner


def line(start: tuple[int, int], end: tuple[int, int], frames: int, stop: int | None = None):
    """(frames, 2) int positions from ``start`` to ``end``; with ``stop``, the object arrives
    at ``end`` on frame ``stop`` and stays there."""
    moving = frames if stop is None else stop + 1
    t = np.minimum(np.arange(frames), moving - 1) / max(1, moving - 1)
    xy = np.asarray(start) + t[:, None] * (np.asarray(end) - np.asarray(start))
    return np.round(xy).astype(np.int64)


def frames(
    background: np.ndarray, sprites: list[Sprite], count: int, noise: float = 2.0, seed: int = 0
) -> Iterator[np.ndarray]:
    """Compose ``count`` frames: ``background`` with each sprite pasted at its position.

    Args:
        background: (H, W, 3) uint8 BGR.
        sprites: pasted in order (later ones on top); parts outside the frame are cut.
        count: frames to make (each sprite's path has at least this many rows).
        noise: standard deviation of per-pixel Gaussian sensor noise, in grey levels.
        seed: noise seed (deterministic clips).
    """
    rng = np.random.default_rng(seed)
    h, w = background.shape[:2]
    for t in range(count):
        img = background.copy()
        for s in sprites:
            x, y = (int(v) for v in s.path[t])
            sh, sw = s.image.shape[:2]
            r0, c0, r1, c1 = max(0, y), max(0, x), min(h, y + sh), min(w, x + sw)
            if r1 > r0 and c1 > c0:
                img[r0:r1, c0:c1] = s.image[r0 - y : r1 - y, c0 - x : c1 - x]
        if noise:
            # Noise at a quarter of the resolution, upsampled: cheap at 4K and still varied.
            small = rng.normal(0, noise, (-(-h // 4), -(-w // 4), 1)).astype(np.float32)
            grain = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)[..., None]
            img = np.clip(img + grain, 0, 255).astype(np.uint8)
        yield img


def write(path: str | Path, images: Iterator[np.ndarray], fps: float = 10.0) -> int:
    """Write frames to a video file (``.avi``: MJPG, ``.mp4``: mp4v); returns the count."""
    path = Path(path)
    codec = {".avi": "MJPG", ".mp4": "mp4v"}.get(path.suffix.lower())
    if codec is None:
        raise SparseYoloError("synthetic clips are .avi or .mp4", path)
    writer = None
    n = 0
    try:
        for img in images:
            if writer is None:
                size = (img.shape[1], img.shape[0])
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, size)
            writer.write(img)
            n += 1
    finally:
        if writer is not None:
            writer.release()
    return n
