"""Tiling and merging across tiles: a box cut by a seam comes out once."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import torch
from rasters import write_raster

from sparse_yolo.config import DetectorConfig
from sparse_yolo.io.raster import open_source
from sparse_yolo.masks import make_mask
from sparse_yolo.pipeline import Pipeline
from sparse_yolo.postprocess import greedy_merge, merge_tiles
from sparse_yolo.types import Detections, Result, RunStats

OBJECT = (300, 230, 340, 262)  # x1, y1, x2, y2: straddles the seams of 256 px tiles


class BrightBoxPipeline(Pipeline):
    """The pipeline with a stand-in for mask + engine: one box around bright pixels.

    It sees only its tile, exactly like the real model, so the tiling and merge logic is
    what the test exercises.
    """

    def __init__(self, merge: str) -> None:
        cfg = DetectorConfig().replace(
            **{"tiling.tile": 256, "tiling.overlap": 96, "tiling.merge": merge}
        )
        model = SimpleNamespace(names={0: "object"})
        super().__init__(SimpleNamespace(model=model), make_mask(cfg.mask), cfg)
        self.calls = 0

    def run_array(self, image, valid=None, source_name=""):
        self.calls += 1
        ys, xs = np.nonzero(image[..., 0] > 200)
        boxes = np.zeros((0, 4), np.float32)
        if len(ys):
            boxes = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
        stats = RunStats(
            seconds={"stem": 0.0}, active_fraction=0.1, mask_fraction=0.1, n_windows=1, backend="x"
        )
        n = len(boxes)
        dets = Detections(boxes, np.full(n, 0.9), np.zeros(n), self.names)
        return Result(dets, stats, source_name)


@pytest.fixture
def seam_raster(tmp_path):
    data = np.full((3, 512, 512), 40, np.uint8)
    x1, y1, x2, y2 = OBJECT
    data[:, y1:y2, x1:x2] = 250
    data[:, 450:, 450:] = 0  # nodata corner
    return write_raster(tmp_path / "seam.tif", data, nodata=0)


@pytest.mark.parametrize("merge", ["nms", "greedy"])
def test_box_cut_by_a_seam_comes_out_once(seam_raster, merge):
    det = BrightBoxPipeline(merge)
    with open_source(seam_raster) as src:
        run = det.run_source(src)
    assert run.stats.n_tiles == 9
    boxes = run.boxes
    assert len(boxes) == 1
    np.testing.assert_allclose(boxes[0], OBJECT, atol=0.5)


def test_all_nodata_tiles_are_skipped_without_a_model_call(tmp_path):
    data = np.full((3, 512, 512), 40, np.uint8)
    data[:, :300, :] = 0  # the top row of tiles (rows 0-255) is all nodata
    path = write_raster(tmp_path / "half.tif", data, nodata=0)
    det = BrightBoxPipeline("nms")
    with open_source(path) as src:
        run = det.run_source(src)
    assert run.stats.tiles_skipped_nodata == 3
    assert det.calls == run.stats.n_tiles - 3


def test_greedy_merge_fuses_a_cut_box_into_its_union():
    dets = torch.tensor(
        [
            [0, 0, 10, 10, 0.9, 1],
            [8, 0, 20, 10, 0.8, 1],
            [50, 50, 60, 60, 0.7, 1],
            [9, 0, 19, 10, 0.6, 2],
        ]
    )
    out = greedy_merge(dets, dets[:, 5], 0.5)
    # boxes 0 and 1 overlap by 2/10 of the smaller one: below 0.5, so they stay apart
    assert len(out) == 4
    dets[1, 0] = 4  # now 6/10 of the smaller box: fused; box 3 is another class
    out = greedy_merge(dets, dets[:, 5], 0.5)
    assert out[:, :4].tolist() == [[0, 0, 20, 10], [50, 50, 60, 60], [9, 0, 19, 10]]


def test_merge_tiles_rejects_unknown_merge():
    with pytest.raises(ValueError, match="known: nms, greedy"):
        merge_tiles(torch.zeros((1, 6)), SimpleNamespace(agnostic=False, iou=0.5, max_det=10), "x")


def test_memory_bounded_by_tile_reads(seam_raster, monkeypatch):
    """Every read is one tile, never the whole raster."""
    reads = []
    orig = rasterio.DatasetReader.read

    def spy(self, *args, **kwargs):
        if kwargs.get("window") is not None:
            reads.append(kwargs["window"])
        return orig(self, *args, **kwargs)

    monkeypatch.setattr(rasterio.DatasetReader, "read", spy)
    with open_source(seam_raster) as src:
        BrightBoxPipeline("nms").run_source(src)
    assert reads and all(w.width <= 256 and w.height <= 256 for w in reads)
