"""Several frames at once give each frame's own detections; the GPU batching logic on CPU."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from helpers import SHARED_WEIGHTS

from sparse_yolo.config import DetectorConfig
from sparse_yolo.detector import Detector
from sparse_yolo.engine.gpu import GraphCache, bucket, decode_candidates
from sparse_yolo.engine.runner import SparseEngine
from sparse_yolo.model.loading import load_model
from sparse_yolo.postprocess import window_nms


def frames(shared) -> list[np.ndarray]:
    """Real frames of three sizes: two VisDrone images, one cut down, one sparse scene."""
    from sparse_yolo.bench.scenes import sparse_scene

    paths = sorted((shared / "data" / "visdrone" / "images").glob("*.jpg"))
    a, b = (cv2.imread(str(p)) for p in paths[:2])
    a = np.ascontiguousarray(a[:544, :960])
    return [
        a,
        np.ascontiguousarray(b[:400, :600]),
        sparse_scene(0, 0.1, (544, 960), data_dir=shared)[0],
        a,
    ]


def assert_same(got, ref):
    assert len(got) == len(ref)
    order_g, order_r = np.lexsort(got.boxes.T), np.lexsort(ref.boxes.T)
    np.testing.assert_allclose(got.boxes[order_g], ref.boxes[order_r], atol=1e-2)
    np.testing.assert_allclose(got.scores[order_g], ref.scores[order_r], atol=1e-4)
    np.testing.assert_array_equal(got.classes[order_g], ref.classes[order_r])


def test_predict_batch_equals_each_frame_alone(shared, monkeypatch):
    det = Detector(SHARED_WEIGHTS, "auto", "gradient", device="cpu")
    images = frames(shared)
    alone = [det.predict_array(im) for im in images]
    forwards = []
    real = det.engine.remainder
    monkeypatch.setattr(det.engine, "remainder", lambda p3: forwards.append(len(p3)) or real(p3))
    together = det.predict_batch(images)
    assert sum(len(r) for r in alone) > 30
    assert {r.engine.path for r in alone} == {"windows", "every_cell"}
    for got, ref in zip(together, alone, strict=True):
        assert_same(got, ref)
        assert got.engine.path == ref.engine.path
    alone_forwards = []
    monkeypatch.setattr(
        det.engine, "remainder", lambda p3: alone_forwards.append(len(p3)) or real(p3)
    )
    for im in images:
        det.predict_array(im)
    assert len(forwards) < len(alone_forwards)  # windows of equal shape shared a forward
    assert det.predict_batch([]) == []


def test_bucketed_full_decode_equals_the_candidate_head(shared):
    """The CUDA graph path (batch padded to a power of two, Ultralytics' full decode, picked
    after the forward) gives the candidate head's detections; run eagerly on CPU."""
    model = load_model(SHARED_WEIGHTS)
    engine = SparseEngine(model, DetectorConfig(), "cpu")
    image = frames(shared)[0][:384, :640]
    x = engine._dense_input([image] * 3)
    with torch.inference_mode():
        p3 = engine.model.dense_stem(x)[-1]  # YOLOv8n: one stem output, stride 8
        ref = engine.model.detect_p3(p3, 0.25)
        got = GraphCache(capture=False).candidates("remainder", engine.model.forward_p3, p3, 0.25)
    boxes = torch.tensor([[0, 0, 48, 80]] * 3)
    post = DetectorConfig().post
    a, b = window_nms(got, boxes, post), window_nms(ref, boxes, post)
    assert len(a) > 10 and len(a) == len(b)
    assert set(got[:, 6].long().tolist()) == {0, 1, 2}  # padding rows never leak out
    torch.testing.assert_close(a[a[:, 4].argsort()], b[b[:, 4].argsort()], atol=1e-2, rtol=1e-4)


def test_engine_with_graph_batching_finds_the_same_objects(shared):
    """The engine's CUDA-only code paths switched on for CPU (graphs=True runs eagerly)."""
    model = load_model(SHARED_WEIGHTS)
    image = frames(shared)[2]
    ref = Detector(model, "gather", device="cpu").predict_array(image)
    det = Detector(model, "gather", device="cpu")
    det.engine.graphs = GraphCache(capture=False)
    assert_same(det.predict_array(image), ref)


def test_bucket_and_decode():
    assert [bucket(n) for n in (1, 2, 3, 5, 8, 9)] == [1, 2, 4, 8, 8, 16]
    y = torch.zeros((2, 6, 3))  # 2 rows, 2 classes, 3 anchors
    y[1, :4, 2] = torch.tensor([10.0, 20.0, 4.0, 6.0])
    y[1, 5, 2] = 0.9
    y[0, 4, 0] = 0.2  # below conf
    out = decode_candidates(y, 0.25)
    assert out.tolist() == [[8.0, 17.0, 12.0, 23.0, pytest.approx(0.9), 1.0, 1.0]]
