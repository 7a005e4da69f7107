"""Shared fixtures: tiny random-init models, blob masks, and the optional ../shared data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sparse_yolo.config import ModelConfig
from sparse_yolo.model.yolo import SparseYOLO

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_WEIGHTS = SHARED / "weights" / "yolov8n.pt"


COST_STUB = Path(__file__).resolve().parent / "data" / "costs_cpu.json"


@pytest.fixture(autouse=True, scope="session")
def _stub_costs(tmp_path_factory):
    """``backend: auto`` decides with a fixed CPU cost table instead of calibrating, and no
    test writes to the user's cache (subprocesses inherit both)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("SPARSE_YOLO_COSTS", str(COST_STUB))
    patch.setenv("SPARSE_YOLO_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    patch.undo()


@pytest.fixture(autouse=True)
def _two_threads():
    """Run with 2 threads, like CI: multi-threaded CPU kernels can race."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def shared() -> Path:
    """The ../shared folder with real weights and imagery; skips when absent."""
    if not SHARED_WEIGHTS.is_file():
        pytest.skip("../shared (real weights and imagery) is absent")
    return SHARED


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


@pytest.fixture
def tiny() -> SparseYOLO:
    return tiny_model()


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


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A tiny random-init sparse-yolo checkpoint on disk."""
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    model = tiny_model()
    # Varied class logits around -2, so a random model emits boxes with distinct scores.
    g = torch.Generator().manual_seed(1)
    for conv in model.head.cv3:
        conv[-1].weight.data.normal_(0.0, 0.3, generator=g)
        conv[-1].bias.data.fill_(-2.0)
    model.save(path)
    return path
