"""Short surveillance-style clips for the video tests, composed from ../shared imagery.

Import as ``from videos import ...`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sparse_yolo.video import synth

FRAMES = 30
STOP = 12  # the stopping car arrives on this frame and stays


@dataclass
class Clip:
    """A written clip and its objects (``synth.Sprite``: crop, box, per-frame path)."""

    path: Path
    frames: list[np.ndarray]
    static: synth.Sprite
    stopping: synth.Sprite
    walker: synth.Sprite


def make_clip(shared: Path, out: Path, frames: int = FRAMES) -> Clip:
    """384x256 rooftops (boats.jpg) with real crops: a car still from frame 0, a car that
    drives and stops on frame ``STOP``, and a pedestrian walking across (VisDrone)."""
    data = shared / "data"
    background = cv2.imread(str(data / "aerial" / "boats.jpg"))[0:256, 0:384]
    people = cv2.imread(str(data / "visdrone" / "images" / "0000072_00000_d_0000001.jpg"))
    cars = cv2.imread(str(data / "visdrone" / "images" / "0000300_00601_d_0000141.jpg"))
    static = synth.Sprite(
        *synth.crop(cars, (116, 242, 171, 268)), synth.line((250, 20), (250, 20), frames)
    )
    stopping = synth.Sprite(
        *synth.crop(cars, (293, 246, 358, 274)), synth.line((300, 200), (120, 180), frames, STOP)
    )
    walker = synth.Sprite(
        *synth.crop(people, (697, 349, 723, 405)), synth.line((20, 95), (170, 100), frames)
    )
    images = list(synth.frames(background, [static, stopping, walker], frames))
    synth.write(out, iter(images), fps=10.0)
    return Clip(out, images, static, stopping, walker)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of (N, 4) xyxy boxes ``a`` with one (4,) box ``b``."""
    lo = np.maximum(a[:, :2], b[:2])
    hi = np.minimum(a[:, 2:], b[2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area = np.prod(a[:, 2:] - a[:, :2], axis=1) + np.prod(b[2:] - b[:2])
    return inter / np.maximum(area - inter, 1e-9)


def found(boxes: np.ndarray, truth: np.ndarray, thr: float = 0.5) -> int:
    """Index of the box matching ``truth`` best at IoU >= thr, or -1."""
    if not len(boxes):
        return -1
    v = iou(boxes, truth)
    return int(v.argmax()) if v.max() >= thr else -1
