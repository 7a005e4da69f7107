"""Unlabeled images for distillation: a held-out split and random full-resolution crops.

Sparse inference runs at native resolution, so distillation never resizes: it samples
``size`` x ``size`` crops (zero-padded where a frame is smaller) with random flips.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from sparse_yolo.errors import SparseYoloError
from sparse_yolo.train.maskfit import list_images, read_frame


def split_holdout(paths: list[Path], fraction: float, seed: int = 0) -> tuple[list, list]:
    """Deterministic (train, held-out) split; at least one image each side when possible."""
    paths = sorted(paths)
    if len(paths) < 2 or fraction <= 0:
        return paths, []
    n_held = min(max(1, round(fraction * len(paths))), len(paths) - 1)
    order = np.random.default_rng(seed).permutation(len(paths))
    held = sorted(paths[i] for i in order[:n_held])
    return [p for p in paths if p not in held], held


def find_images(folder: str | Path) -> list[Path]:
    """Readable image files under ``folder``.

    Raises:
        SparseYoloError: the folder is missing or holds no images.
    """
    folder = Path(folder)
    if not folder.exists():
        raise SparseYoloError("image folder not found", folder)
    paths = list_images(folder)
    if not paths:
        raise SparseYoloError("no images (.jpg, .png, .tif, ...) found", folder)
    return paths


class CropSampler:
    """Random native-resolution crops of a set of frames.

    Args:
        paths: image files (read lazily, a few kept in memory).
        size: crop edge in pixels, a multiple of 32.
        seed: random seed.
        cache: frames kept decoded.
    """

    def __init__(self, paths: list[Path], size: int, seed: int = 0, cache: int = 16) -> None:
        if size % 32:
            raise ValueError(f"crop size must be a multiple of 32, got {size}")
        self.paths = list(paths)
        self.size = size
        self.rng = np.random.default_rng(seed)
        self._cache: OrderedDict[Path, np.ndarray] = OrderedDict()
        self._cache_size = cache

    def frame(self, path: Path) -> np.ndarray:
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        image = read_frame(path)
        if image is None:
            raise SparseYoloError("not a readable image", path)
        self._cache[path] = image
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return image

    def crop(self, image: np.ndarray) -> np.ndarray:
        """One random ``size`` x ``size`` uint8 BGR crop, rotated by a random right angle
        and flipped at random (aerial frames have no up)."""
        s = self.size
        h, w = image.shape[:2]
        y = int(self.rng.integers(0, max(h - s, 0) + 1))
        x = int(self.rng.integers(0, max(w - s, 0) + 1))
        out = np.zeros((s, s, 3), np.uint8)
        patch = image[y : y + s, x : x + s]
        out[: patch.shape[0], : patch.shape[1]] = patch
        out = np.rot90(out, int(self.rng.integers(0, 4)))
        if self.rng.random() < 0.5:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)

    def batch(self, n: int) -> list[np.ndarray]:
        """``n`` crops from frames drawn at random."""
        picks = self.rng.integers(0, len(self.paths), n)
        return [self.crop(self.frame(self.paths[i])) for i in picks]


def to_tensor(pixels: list[np.ndarray], device: torch.device | str = "cpu") -> torch.Tensor:
    """B (H, W, 3) uint8 BGR arrays -> (B, 3, H, W) float RGB in [0, 1] (the model input)."""
    arr = torch.from_numpy(np.stack(pixels)).to(device)
    return arr.flip(-1).permute(0, 3, 1, 2).float().div_(255)
