"""What masks are judged by (covered centres, the perfect mask) and the benchmark's rows."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from sparse_yolo.masks import cell_grid
from sparse_yolo.masks.measure import box_cells, centres_covered, perfect_cells
from sparse_yolo.model.loading import load_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import mask_bench  # noqa: E402


def test_box_cells_perfect_mask_and_centres():
    boxes = np.array([[20, 20, 30, 30], [0, 60, 40, 64]], np.float32)
    cells = box_cells(boxes, (6, 6), 16)
    want = np.zeros((6, 6), bool)
    want[1, 1] = True  # 20..30 lies in cell 1
    want[3, 0:3] = True  # x 0..40 -> cells 0-2, y 60..64 -> row 3
    np.testing.assert_array_equal(cells, want)
    perfect = perfect_cells(boxes[:1], (6, 6), 16)
    assert perfect.sum() == 9 and perfect[0:3, 0:3].all()
    centres = centres_covered(
        want, 16, np.array([[20, 20, 30, 30], [40, 40, 50, 50], [0, 0, 500, 500]])
    )
    np.testing.assert_array_equal(centres, [True, False, False])  # the last centre is off-grid


def test_bench_rows_on_a_labelled_frame(tiny_weights):
    rng = np.random.default_rng(0)
    image = np.full((256, 320, 3), 90, np.uint8) + rng.integers(0, 3, (256, 320, 3), dtype=np.uint8)
    boxes = np.array([[40, 40, 56, 52], [200, 150, 214, 170]], np.float32)
    for x0, y0, x1, y1 in boxes.astype(int):
        image[y0:y1, x0:x1] = rng.integers(0, 255, (y1 - y0, x1 - x0, 3), dtype=np.uint8)
    frame = mask_bench.Frame("toy", image, np.ones(image.shape[:2], bool), boxes)
    model = load_model(tiny_weights)
    dets = mask_bench.detectors_for(frame, model, ["gradient", "perfect"], 16)
    rows = {r.mask: r for r in mask_bench.run_frame(frame, dets, rounds=1)}
    assert set(rows) == {"all", "gradient", "perfect"}
    assert rows["all"].cells == 1.0 and rows["all"].speedup == 1.0
    assert rows["perfect"].objects == (2, 2)
    shape = cell_grid(256, 320, 16)
    assert rows["perfect"].cells == pytest.approx(perfect_cells(boxes, shape, 16).mean())
    assert rows["gradient"].objects == (2, 2) and rows["gradient"].cells < 0.3
    assert "| toy | perfect |" in mask_bench.fmt(list(rows.values()))
