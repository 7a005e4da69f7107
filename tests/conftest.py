"""Shared fixtures: tiny random-init models, blob masks, and the optional ../shared data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import SHARED, SHARED_WEIGHTS, tiny_model

from sparse_yolo.model.yolo import SparseYOLO


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


@pytest.fixture
def tiny() -> SparseYOLO:
    return tiny_model()


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
