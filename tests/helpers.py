"""Test helpers: tiny random-init models, blob masks, synthetic frames, the shared folder.

Fixtures live in ``conftest.py``; tests import these functions from here (``from helpers
import ...``; pytest puts this folder on ``sys.path``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from sparse_yolo.config import ModelConfig
from sparse_yolo.model.yolo import SparseYOLO

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_WEIGHTS = SHARED / "weights" / "yolov8n.pt"


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorm layers non-trivial statistics so the folded bias matters."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


def tiny_model(neck: str = "pan", nc: int = 3, seed: int = 0) -> SparseYOLO:
    torch.manual_seed(seed)
    model = SparseYOLO(
        ModelConfig(scale="tiny", nc=nc, names=("person", "car", "boat")[:nc], neck=neck)
    )
    return randomize_bn(model, seed)


def blob_cells(shape: tuple[int, int], fraction: float, seed: int = 0) -> np.ndarray:
    """(Hc, Wc) bool mask made of a few random rectangles (blob-shaped, like real masks)."""
    rng = np.random.default_rng(seed)
    cells = np.zeros(shape, bool)
    while cells.mean() < fraction:
        h, w = rng.integers(1, max(2, shape[0] // 3)), rng.integers(1, max(2, shape[1] // 3))
        y, x = rng.integers(0, shape[0] - h + 1), rng.integers(0, shape[1] - w + 1)
        cells[y : y + h, x : x + w] = True
    return cells


def scene(h: int = 256, w: int = 320, n_objects: int = 6, seed: int = 0) -> np.ndarray:
    """Plain, slightly noisy background with a few small textured objects (uint8 BGR)."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 90, np.uint8) + rng.integers(0, 3, (h, w, 3), dtype=np.uint8)
    for _ in range(n_objects):
        oh, ow = rng.integers(6, 20, 2)
        y, x = rng.integers(0, h - oh), rng.integers(0, w - ow)
        img[y : y + oh, x : x + ow] = rng.integers(0, 255, (oh, ow, 3), dtype=np.uint8)
    return img
