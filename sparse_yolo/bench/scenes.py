"""Synthetic 4K test frames made of real, labelled object crops.

Object-dense crops of real aerial imagery (the VisDrone images and DOTA's P1888 in
``<shared>/data``) are pasted onto a low-texture background, a smooth colour gradient with mild
noise like water or fields, and their ground-truth boxes move with them:

* :func:`sparse_scene`: crops cover about ``coverage`` of the frame (the sparse pipeline's case).
* :func:`urban_scene`: crops tile most of the frame (the case where sparsity cannot win).

Labels are read with :func:`sparse_yolo.eval.labels.load_labels`, so classes are COCO-80 ids.
Ignore regions (VisDrone score 0, DOTA ``difficult``) are blurred out of the source images
before cropping, so no unlabelled object is pasted. Crops are feathered over a few pixels so
their borders do not look like objects to an edge-based mask.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sparse_yolo.errors import SparseYoloError
from sparse_yolo.eval.labels import load_labels

FRAME_HW = (2160, 3840)
BLOCK = 384  # px: the frame is a grid of blocks; each holds at most one crop
MIN_CROP = 192
FEATHER = 6  # px of alpha ramp at crop borders
MIN_VISIBLE = 0.6  # a box cut by a crop border is kept when this much of it is inside
# image (H, W, 3) uint8 BGR, boxes (N, 4) float32 xyxy in its pixels, classes (N,) int64 COCO-80
Scene = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class LabelledImage:
    """A source image and its objects: (N, 4) xyxy boxes in its pixels, (N,) COCO-80 ids."""

    image: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray


def labelled_pairs(root: Path) -> list[tuple[Path, Path]]:
    """(image, label file) pairs of the labelled frames under ``root/data`` (VisDrone, DOTA)."""
    data = root / "data"
    pairs = [
        (p, data / "visdrone" / "annotations" / f"{p.stem}.txt")
        for p in sorted((data / "visdrone" / "images").glob("*.jpg"))
    ]
    pairs.append((data / "dota" / "P1888.png", data / "dota" / "P1888.txt"))
    return pairs


def _blur_regions(image: np.ndarray, regions: np.ndarray) -> np.ndarray:
    if not len(regions):
        return image
    smooth = cv2.blur(image, (31, 31))
    out = image.copy()
    for x0, y0, x1, y1 in regions.round().astype(int):
        out[y0:y1, x0:x1] = smooth[y0:y1, x0:x1]
    return out


@functools.lru_cache(maxsize=2)
def load_sources(root: str) -> tuple[LabelledImage, ...]:
    """The labelled source images under ``root/data`` (VisDrone images, DOTA P1888).

    Raises:
        SparseYoloError: none found.
    """
    sources = []
    for image_path, label_path in labelled_pairs(Path(root)):
        image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        if image is None or not label_path.is_file():
            continue
        gt = load_labels(label_path, (image.shape[1], image.shape[0]))
        if len(gt):
            sources.append(LabelledImage(_blur_regions(image, gt.ignore), gt.boxes, gt.classes))
    if not sources:
        raise SparseYoloError(f"no labelled VisDrone or DOTA images under {Path(root) / 'data'}")
    return tuple(sources)


def background(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 BGR: a smooth gradient between a few earthy or watery colours + noise."""
    palette = np.array([[70, 120, 90], [120, 110, 70], [90, 100, 105], [60, 95, 110]], np.float32)
    base = palette[rng.integers(len(palette))]
    coarse = base + rng.uniform(-18, 18, (3, 5, 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC)
    noise = rng.standard_normal((hw[0], hw[1], 3), dtype=np.float32) * 2.0
    return np.clip(smooth + noise, 0, 255).astype(np.uint8)


def _area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _crop_boxes(
    src: LabelledImage, x0: int, y0: int, w: int, h: int
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes mostly inside the crop, clipped and shifted to crop pixels."""
    b = src.boxes - np.array([x0, y0, x0, y0], np.float32)
    clipped = np.clip(b, 0, [w, h, w, h]).astype(np.float32)
    keep = _area(clipped) >= MIN_VISIBLE * np.maximum(_area(b), 1e-6)
    return clipped[keep], src.classes[keep]


def pick_crop(
    rng: np.random.Generator, sources: tuple[LabelledImage, ...], side: int, tries: int = 6
) -> Scene:
    """The most object-dense of a few crops of one random source, each around an object.

    Returns:
        (h, w, 3) uint8 crop, (N, 4) boxes in crop pixels and (N,) classes; flipped at random.
    """
    src = sources[rng.integers(len(sources))]  # one source per crop, for variety
    ih, iw = src.image.shape[:2]
    h, w = min(side, ih), min(side, iw)
    best = None
    for _ in range(tries):
        box = src.boxes[rng.integers(len(src.boxes))]
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        x0 = int(np.clip(cx - rng.uniform(0.2, 0.8) * w, 0, iw - w))
        y0 = int(np.clip(cy - rng.uniform(0.2, 0.8) * h, 0, ih - h))
        boxes, classes = _crop_boxes(src, x0, y0, w, h)
        if best is None or len(boxes) > len(best[1]):
            best = (src.image[y0 : y0 + h, x0 : x0 + w], boxes, classes)
    crop, boxes, classes = best
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
        boxes = np.stack(
            [crop.shape[1] - boxes[:, 2], boxes[:, 1], crop.shape[1] - boxes[:, 0], boxes[:, 3]], 1
        )
    return np.ascontiguousarray(crop), boxes.reshape(-1, 4), classes


def _paste(frame: np.ndarray, crop: np.ndarray, x: int, y: int) -> None:
    """Alpha-blend ``crop`` into ``frame`` at (x, y), its border feathered over FEATHER px."""
    h, w = crop.shape[:2]
    ramp_y = np.minimum(np.arange(h), np.arange(h)[::-1]) + 1
    ramp_x = np.minimum(np.arange(w), np.arange(w)[::-1]) + 1
    alpha = np.minimum(np.minimum.outer(ramp_y, ramp_x) / FEATHER, 1.0)[..., None]
    region = frame[y : y + h, x : x + w].astype(np.float32)
    frame[y : y + h, x : x + w] = (alpha * crop + (1 - alpha) * region).astype(np.uint8)


def compose(
    rng: np.random.Generator,
    hw: tuple[int, int],
    coverage: float,
    full_blocks: bool,
    sources: tuple[LabelledImage, ...],
) -> Scene:
    """Paste crops into random blocks of a BLOCK px grid until ``coverage`` of the frame is used.

    Args:
        hw: frame (height, width).
        coverage: target fraction of the frame covered by crops.
        full_blocks: every crop fills its block (else sides vary in [MIN_CROP, BLOCK]).

    Returns:
        (H, W, 3) uint8 BGR, (N, 4) float32 xyxy boxes in frame pixels, (N,) int64 classes.
    """
    h, w = hw
    block = min(BLOCK, h, w)
    rows, cols = h // block, w // block
    oy, ox = (h - rows * block) // 2, (w - cols * block) // 2
    frame = background(rng, hw)
    boxes, classes, covered = [], [], 0
    for k in rng.permutation(rows * cols):
        if covered >= coverage * h * w:
            break
        side = block if full_blocks else int(rng.integers(min(MIN_CROP, block), block + 1))
        crop, b, c = pick_crop(rng, sources, side)
        ch, cw = crop.shape[:2]
        y = oy + (k // cols) * block + int(rng.integers(0, block - ch + 1))
        x = ox + (k % cols) * block + int(rng.integers(0, block - cw + 1))
        _paste(frame, crop, x, y)
        boxes.append(b + np.array([x, y, x, y], np.float32))
        classes.append(c)
        covered += ch * cw
    if not boxes:
        return frame, np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    return frame, np.concatenate(boxes).astype(np.float32), np.concatenate(classes).astype(np.int64)


def sparse_scene(
    seed: int,
    coverage: float = 0.10,
    hw: tuple[int, int] = FRAME_HW,
    *,
    data_dir: str | Path,
) -> Scene:
    """A 4K frame, mostly empty background, with real object crops on about ``coverage`` of it.

    Args:
        seed: random seed; the same seed gives the same frame.
        coverage: fraction of the frame covered by pasted crops.
        hw: frame (height, width); 2160 x 3840 by default.
        data_dir: the folder holding ``data/visdrone`` and ``data/dota`` (the project's
            ``shared`` folder).

    Returns:
        image (H, W, 3) uint8 BGR, boxes (N, 4) float32 xyxy in frame pixels, classes (N,)
        int64 COCO-80 ids.
    """
    sources = load_sources(str(data_dir))
    return compose(np.random.default_rng(seed), hw, coverage, False, sources)


def urban_scene(seed: int, hw: tuple[int, int] = FRAME_HW, *, data_dir: str | Path) -> Scene:
    """A 4K frame tiled with real crops over most of its area (about 89% at 4K).

    Returns:
        Like :func:`sparse_scene`.
    """
    sources = load_sources(str(data_dir))
    return compose(np.random.default_rng(seed), hw, 1.0, True, sources)
