"""The tool on real imagery: the shared GeoTIFFs and VisDrone frames with the shared weights."""

from __future__ import annotations

import json

import cv2
import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner

from sparse_yolo import Detector
from sparse_yolo.cli import main
from sparse_yolo.eval.labels import load_labels
from sparse_yolo.eval.metrics import evaluate, match_recall

VISDRONE_300 = "0000300_00601_d_0000141.jpg"
GEOTIFFS = ["cogeo.tif", "RGB.byte.tif", "RGBA.byte.tif", "OSBS_029.tif", "sample_pan16.tif"]


@pytest.mark.parametrize("name", GEOTIFFS)
def test_detect_real_geotiffs(shared, tmp_path, name):
    src = shared / "data" / "geotiff" / name
    out = tmp_path / "out.geojson"
    res = CliRunner().invoke(
        main,
        [
            "detect",
            str(src),
            "-o",
            str(out),
            "--weights",
            str(shared / "weights" / "yolov8n.pt"),
            "--conf",
            "0.1",
            "--stats",
            str(tmp_path / "s.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    frame = gpd.read_file(out)
    with rasterio.open(src) as ds:
        assert frame.crs == ds.crs
        left, bottom, right, top = ds.bounds
        stats = json.loads((tmp_path / "s.json").read_text())
        assert stats["image_size"] == [ds.width, ds.height]
    if len(frame):  # every polygon lies on the raster
        x0, y0, x1, y1 = frame.total_bounds
        assert left - 1 <= x0 and x1 <= right + 1 and bottom - 1 <= y0 and y1 <= top + 1
        assert frame["class_name"].map(type).eq(str).all()


def test_visdrone_detections_match_ground_truth(shared):
    image = sorted((shared / "data" / "visdrone" / "images").glob("*.jpg"))[0]
    labels = shared / "data" / "visdrone" / "annotations" / f"{image.stem}.txt"
    det = Detector(shared / "weights" / "yolov8n.pt", mask="gradient", **{"post.conf": 0.2})
    res = det.predict(image)
    gt = load_labels(labels, image_size=tuple(res.stats.image_size))
    metrics = evaluate(res.detections, gt)
    # COCO-trained YOLOv8n on drone imagery: modest but real recall, and mostly right.
    assert metrics["all"]["recall"] > 0.15 and metrics["all"]["precision"] > 0.5
    assert np.isfinite(res.boxes).all() and res.stats.mask_fraction < 1


def test_half_detects_what_float_detects(shared):
    """``--half`` end to end (fused fp16 engine, candidate head decoding in float32): the same
    objects as float32 on a real VisDrone frame (IoU >= 0.9 both ways)."""
    image = cv2.imread(str(sorted((shared / "data" / "visdrone" / "images").glob("*.jpg"))[0]))
    weights = shared / "weights" / "yolov8n.pt"
    ref = Detector(weights, "gather", "gradient", device="cpu").predict_array(image).detections
    det = Detector(weights, "gather", "gradient", device="cpu", half=True)
    assert det.model.dtype == torch.float16
    got = det.predict_array(image).detections
    assert len(ref) > 10
    assert match_recall(got, ref, iou=0.9) > 0.95 and match_recall(ref, got, iou=0.9) > 0.95


def test_windows_grown_to_shared_shapes_find_the_same_objects(shared, monkeypatch):
    """Windows grown to one shared shape (CUDA's batching) against each window its own: the
    grown windows only add real context around each planned window, so the detections stay
    the same objects."""
    from sparse_yolo.bench.scenes import sparse_scene  # noqa: PLC0415
    from sparse_yolo.engine import runner  # noqa: PLC0415

    image = sparse_scene(0, 0.1, (1088, 1920), data_dir=shared)[0]
    det = Detector(shared / "weights" / "yolov8n.pt", "gather", "gradient", device="cpu")
    forwards = []
    real_remainder = det.engine.remainder
    monkeypatch.setattr(
        det.engine, "remainder", lambda p3: forwards.append(len(p3)) or real_remainder(p3)
    )
    monkeypatch.setitem(runner.FORWARD_CELLS, "cpu", 0)  # every window its own shape
    ref = det.predict_array(image)
    n_ref = len(forwards)
    monkeypatch.setitem(runner.FORWARD_CELLS, "cpu", 64 * 1024)
    got = det.predict_array(image)
    assert n_ref > 1 and len(forwards) == n_ref + 1  # one forward instead of one per shape
    assert len(ref.detections) > 10
    assert match_recall(got.detections, ref.detections, iou=0.7) > 0.95
    assert match_recall(ref.detections, got.detections, iou=0.7) > 0.95


@pytest.mark.parametrize("mask", ["all", "gradient"])
def test_tiled_raster_finds_what_one_tile_finds(shared, tmp_path, mask):
    """A real frame as a GeoTIFF: 512 px tiles agree with one tile (F1 >= 0.97 at IoU 0.7).

    Tiles start on the model's stride lattice and each object comes from the tile that owns
    its centre, so neither the tile grid nor a second copy's score changes what is found.
    """
    image = cv2.imread(str(shared / "data" / "visdrone" / "images" / VISDRONE_300))
    path = tmp_path / "frame.tif"
    profile = {"driver": "GTiff", "count": 3, "dtype": "uint8", "crs": "EPSG:32633"}
    h, w = image.shape[:2]
    transform = rasterio.transform.from_origin(500000, 4e6, 0.1, 0.1)
    with rasterio.open(path, "w", width=w, height=h, transform=transform, **profile) as ds:
        ds.write(image[:, :, ::-1].transpose(2, 0, 1))
    weights = shared / "weights" / "yolov8n.pt"
    tiled = {"tiling.tile": 512, "tiling.overlap": 128}
    a = Detector(weights, mask=mask, device="cpu", **tiled).predict(path)
    assert a.stats.n_tiles > 4
    b = Detector(weights, mask=mask, device="cpu", **{"tiling.tile": 8192}).predict(path)
    assert len(b.detections) > 20
    p, r = (
        match_recall(b.detections, a.detections, 0.7),
        match_recall(a.detections, b.detections, 0.7),
    )
    assert 2 * p * r / (p + r) >= 0.97, (p, r)


def test_remainder_lanes_find_what_one_lane_finds(shared, monkeypatch):
    """Small windows run side by side on one thread each: the same boxes and scores (up to
    the summation order) as one after another on every thread."""
    from sparse_yolo.bench.scenes import sparse_scene  # noqa: PLC0415
    from sparse_yolo.engine import lanes, runner  # noqa: PLC0415

    image = sparse_scene(0, data_dir=shared)[0]  # 4K: nine windows
    det = Detector(shared / "weights" / "yolov8n.pt", "gather", "gradient", device="cpu")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    used = []
    real_plan = lanes.plan_lanes
    monkeypatch.setattr(lanes, "plan_lanes", lambda s, w: used.append(real_plan(s, w)) or used[-1])
    two = det.predict_array(image).detections
    assert any(u is not None for u in used)  # the windows did run in lanes
    monkeypatch.setattr(runner, "run_in_lanes", lambda fn, items, sizes, w: [fn(x) for x in items])
    one = det.predict_array(image).detections
    assert len(one) > 10 and len(two) == len(one)
    np.testing.assert_allclose(two.boxes, one.boxes, atol=1e-3)
    np.testing.assert_allclose(two.scores, one.scores, atol=1e-5)
