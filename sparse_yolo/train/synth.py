"""Synthetic mask-training frames: real labelled objects pasted onto real object-free texture.

A mask net trained on objects over a blank background learns "anything with edges"; pasted
over real forest, water or fields it has to learn objects *against texture*. Each object is
cut from a labelled frame (its box plus a few pixels), scaled, rotated by any angle, and
alpha-blended with a feathered edge at a random place of a random texture crop; its target
box is the rotated box's bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from sparse_yolo.train.maskfit import Frame

CROP_MARGIN = 2  # px of the object's own surroundings cut with it
FEATHER = 2.0  # px: sigma of the alpha edge


@dataclass
class ObjectCrop:
    """(h, w, 3) uint8 BGR patch and its object's (4,) xyxy box in patch pixels."""

    patch: np.ndarray
    box: np.ndarray


def object_crops(frames: list[Frame], min_side: int = 3, max_side: int = 192) -> list[ObjectCrop]:
    """Every labelled object of ``frames`` whose box sides lie in [min_side, max_side] px."""
    out = []
    for f in frames:
        h, w = f.image.shape[:2]
        for x0, y0, x1, y1 in np.asarray(f.boxes, np.float64).reshape(-1, 4):
            if not (min_side <= min(x1 - x0, y1 - y0) and max(x1 - x0, y1 - y0) <= max_side):
                continue
            c0, r0 = max(int(x0) - CROP_MARGIN, 0), max(int(y0) - CROP_MARGIN, 0)
            c1, r1 = min(int(np.ceil(x1)) + CROP_MARGIN, w), min(int(np.ceil(y1)) + CROP_MARGIN, h)
            box = np.array([x0 - c0, y0 - r0, x1 - c0, y1 - r0], np.float32)
            out.append(ObjectCrop(f.image[r0:r1, c0:c1].copy(), box))
    return out


def _transform(
    crop: ObjectCrop, scale: float, angle: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scaled and rotated patch, its (h, w) float32 alpha, and the object's new xyxy box."""
    h, w = crop.patch.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    moved = corners @ m[:, :2].T + m[:, 2]
    lo = np.floor(moved.min(0))
    size = np.ceil(moved.max(0) - lo).astype(int) + 1
    m[:, 2] -= lo
    patch = cv2.warpAffine(
        crop.patch, m, tuple(size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    alpha = cv2.warpAffine(np.ones((h, w), np.float32), m, tuple(size), flags=cv2.INTER_LINEAR)
    alpha = cv2.GaussianBlur(alpha, (0, 0), FEATHER) * (alpha > 0)
    x0, y0, x1, y1 = crop.box
    box_corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)
    b = box_corners @ m[:, :2].T + m[:, 2]
    return patch, alpha, np.array([*b.min(0), *b.max(0)], np.float32)


def paste_frame(
    texture: np.ndarray,
    crops: list[ObjectCrop],
    rng: np.random.Generator,
    size: int = 512,
    max_objects: int = 12,
    scale: tuple[float, float] = (0.7, 1.4),
) -> Frame:
    """A ``size`` px crop of ``texture`` with 0..max_objects random objects pasted on it.

    Args:
        texture: (H, W, 3) uint8 BGR object-free imagery (reflect-padded when smaller).
        crops: objects to paste.
        rng: random generator (the frame is a function of its state).
        size: frame edge in pixels.
        max_objects: most objects per frame; a quarter of frames get none.
        scale: range of the objects' random scale factor.

    Returns:
        The frame and its objects' (N, 4) xyxy boxes.
    """
    th, tw = texture.shape[:2]
    if th < size or tw < size:
        texture = cv2.copyMakeBorder(
            texture, 0, max(size - th, 0), 0, max(size - tw, 0), cv2.BORDER_REFLECT_101
        )
        th, tw = texture.shape[:2]
    y, x = int(rng.integers(0, th - size + 1)), int(rng.integers(0, tw - size + 1))
    n = 0 if rng.random() < 0.25 else int(rng.integers(1, max_objects + 1))
    return paste_objects(texture[y : y + size, x : x + size], crops, rng, n, scale)


def paste_objects(
    image: np.ndarray,
    crops: list[ObjectCrop],
    rng: np.random.Generator,
    n: int,
    scale: tuple[float, float] = (0.7, 1.4),
) -> Frame:
    """``n`` random objects pasted at random places of a copy of (H, W, 3) uint8 ``image``.

    Returns:
        The frame and its objects' (N, 4) xyxy boxes (objects too large for it are skipped).
    """
    frame = image.astype(np.float32)
    h, w = frame.shape[:2]
    boxes = []
    for i in rng.integers(0, len(crops), n):
        patch, alpha, box = _transform(
            crops[i], float(rng.uniform(*scale)), float(rng.uniform(0, 360))
        )
        ph, pw = patch.shape[:2]
        if ph >= h or pw >= w:
            continue
        py, px = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
        region = frame[py : py + ph, px : px + pw]
        region += alpha[..., None] * (patch.astype(np.float32) - region)
        boxes.append(box + np.array([px, py, px, py], np.float32))
    image = np.clip(frame, 0, 255).astype(np.uint8)
    return Frame(image, np.array(boxes, np.float32).reshape(-1, 4), "synthetic")


@dataclass
class Composer:
    """Synthetic frames on demand (:func:`paste_frame` on a random texture): the
    ``synthesize`` callable of :func:`sparse_yolo.train.maskfit.fit_mask_net`.

    Attributes:
        textures: (H, W, 3) uint8 BGR object-free images.
        crops: objects to paste on them.
        max_objects: most objects per frame.
    """

    textures: list[np.ndarray]
    crops: list[ObjectCrop]
    max_objects: int = 8

    def __call__(self, rng: np.random.Generator, size: int) -> Frame:
        texture = self.textures[int(rng.integers(0, len(self.textures)))]
        return paste_frame(texture, self.crops, rng, size, self.max_objects)


def synthetic_frames(
    textures: list[np.ndarray], crops: list[ObjectCrop], n: int, seed: int = 0, size: int = 512
) -> list[Frame]:
    """``n`` frames from :func:`paste_frame`, textures drawn in turn."""
    rng = np.random.default_rng(seed)
    return [paste_frame(textures[i % len(textures)], crops, rng, size) for i in range(n)]
