"""Surveillance-style clips composed from real imagery, for tests and benchmarks.

A static real background with real object crops pasted along paths: some still from the
first frame, some crossing the frame, some stopping mid-way. Each frame gets sensor noise
like a real static camera's (most pixels exactly unchanged from frame to frame), or, as a
harder case, fresh noise on every pixel. The composer takes arrays; it reads no files.
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


class IidNoise:
    """Independent Gaussian noise on every pixel of every frame (at a quarter of the
    resolution, upsampled: cheap at 4K). Harder than a real camera, whose encoder leaves
    most pixels exactly unchanged between frames (see :class:`CameraNoise`)."""

    def __init__(self, shape: tuple[int, int], rng: np.random.Generator, sigma: float = 2.0):
        self.shape, self.rng, self.sigma = shape, rng, sigma

    def __call__(self, t: int) -> np.ndarray:
        """(H, W, 1) float32 noise of frame ``t``."""
        return _quarter_res(self.shape, self.rng, self.sigma)


class CameraNoise:
    """A static camera's noise as its video encoder leaves it: a fixed sensor pattern, a
    fresh residual on key frames, and between them small steps in a few blocks, so most
    pixels are exactly unchanged from frame to frame.

    Frame ``t`` is the scene plus the fixed pattern (Gaussian, ``fixed`` grey levels, at a
    quarter of the resolution) plus a residual field. Every ``gop``-th frame is a key
    frame: every pixel gets a fresh residual (Gaussian, ``key`` grey levels, rounded). On
    the frames between, a share ``blocks`` of the ``block`` x ``block`` pixel blocks is
    re-encoded: in those, a share ``pixels`` of the pixels steps by a rounded Gaussian of
    ``step`` grey levels (most steps round to 1 or 2 levels, some to 0). The defaults
    follow the real static indoor clip (docs/video.md, "Sensor noise").
    """

    def __init__(
        self,
        shape: tuple[int, int],
        rng: np.random.Generator,
        fixed: float = 2.0,
        key: float = 1.7,
        step: float = 1.0,
        block: int = 16,
        blocks: float = 0.15,
        pixels: float = 0.42,
        gop: int = 10,
    ):
        self.shape, self.rng, self.key, self.step = shape, rng, key, step
        self.block, self.blocks, self.pixels, self.gop = block, blocks, pixels, gop
        self.fixed = _quarter_res(shape, rng, fixed)
        self.residual = np.zeros((*shape, 1), np.float32)

    def __call__(self, t: int) -> np.ndarray:
        """(H, W, 1) float32 noise of frame ``t`` (frames in order)."""
        h, w = self.shape
        if self.gop and t % self.gop == 0:
            self.residual = np.round(self.rng.normal(0, self.key, (h, w, 1))).astype(np.float32)
        else:
            b = self.block
            coded = self.rng.random((-(-h // b), -(-w // b))) < self.blocks
            coded = np.repeat(np.repeat(coded, b, 0), b, 1)[:h, :w]
            change = coded & (self.rng.random((h, w), dtype=np.float32) < self.pixels)
            steps = np.round(self.rng.normal(0, self.step, int(change.sum())))
            self.residual[change, 0] += steps.astype(np.float32)
        return self.fixed + self.residual


def _quarter_res(shape: tuple[int, int], rng: np.random.Generator, sigma: float) -> np.ndarray:
    """(H, W, 1) float32 Gaussian noise drawn at a quarter of the resolution, upsampled."""
    h, w = shape
    small = rng.normal(0, sigma, (-(-h // 4), -(-w // 4), 1)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)[..., None]


NOISE = {"camera": CameraNoise, "iid": IidNoise}


def frames(
    background: np.ndarray,
    sprites: list[Sprite],
    count: int,
    noise: str | None = "camera",
    seed: int = 0,
) -> Iterator[np.ndarray]:
    """Compose ``count`` frames: ``background`` with each sprite pasted at its position.

    Args:
        background: (H, W, 3) uint8 BGR.
        sprites: pasted in order (later ones on top); parts outside the frame are cut.
        count: frames to make (each sprite's path has at least this many rows).
        noise: sensor noise model: ``camera`` (a real static camera's, :class:`CameraNoise`),
            ``iid`` (fresh noise on every pixel of every frame, :class:`IidNoise`) or None.
        seed: noise seed (deterministic clips).

    Raises:
        ValueError: an unknown noise name (the message lists the known ones).
    """
    if noise is not None and noise not in NOISE:
        raise ValueError(f"unknown noise {noise!r}; known: {', '.join(NOISE)}")
    h, w = background.shape[:2]
    model = NOISE[noise]((h, w), np.random.default_rng(seed)) if noise else None
    for t in range(count):
        img = background.copy()
        for s in sprites:
            x, y = (int(v) for v in s.path[t])
            sh, sw = s.image.shape[:2]
            r0, c0, r1, c1 = max(0, y), max(0, x), min(h, y + sh), min(w, x + sw)
            if r1 > r0 and c1 > c0:
                img[r0:r1, c0:c1] = s.image[r0 - y : r1 - y, c0 - x : c1 - x]
        if model is not None:
            img = np.clip(img + model(t), 0, 255).astype(np.uint8)
        yield img


def frame_change(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """How two consecutive (H, W, 3) uint8 frames differ, over all pixels and channels.

    Returns:
        ``unchanged`` (share of pixels identical in every channel), ``mean_abs`` and
        ``std`` (of the signed differences, grey levels).
    """
    d = a.astype(np.int16) - b.astype(np.int16)
    return {
        "unchanged": float((d == 0).all(2).mean()),
        "mean_abs": float(np.abs(d).mean()),
        "std": float(d.std()),
    }


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
