"""``sparse-yolo compare``: table and JSON structure, analytic GFLOPs, baselines, synthetic scenes.

Fast and timing-free: latencies are only checked to be positive.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import SHARED, blob_cells, scene, tiny_model

from sparse_yolo.bench.flops import FlopCounter
from sparse_yolo.bench.runners import (
    DenseModel,
    DenseRunner,
    ResizedRunner,
    UltralyticsRunner,
    fused_copy,
)
from sparse_yolo.cli import main
from sparse_yolo.commands.compare import expand_multi_values
from sparse_yolo.config import ModelConfig, WindowConfig
from sparse_yolo.detector import Detector
from sparse_yolo.eval.labels import COCO_NAMES
from sparse_yolo.eval.metrics import match_recall
from sparse_yolo.masks import cell_grid
from sparse_yolo.model.loading import load_model
from sparse_yolo.model.windows import plan_windows
from sparse_yolo.model.yolo import SparseYOLO

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]
METHODS = ["sparse", "dense@128", "dense@160", "dense-full", "sahi-128", "sparse@0.1"]
# VisDrone rows in a 320 x 256 frame: one small, one medium, one large object (COCO sizes),
# an ignore region (category 0) and an "others" object (11, dropped).
VISDRONE = """\
10,10,12,14,1,1,0,0
100,50,40,40,1,4,0,0
180,100,120,110,1,9,0,0
0,200,30,30,0,0,0,0
250,10,20,20,1,11,0,0
"""


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def compared(tmp_path_factory, tiny_weights):
    """One compare run covering every row kind: (stdout, JSON report, chart path)."""
    torch.set_num_threads(2)
    tmp = tmp_path_factory.mktemp("compare")
    image, labels = tmp / "frame.png", tmp / "frame.txt"
    cv2.imwrite(str(image), scene(256, 320))
    labels.write_text(VISDRONE)
    out, chart = tmp / "out.json", tmp / "sweep.png"
    res = run(
        "compare", image, "--weights", tiny_weights, "--labels", labels, "--conf", "0.05",
        "--imgsz", 128, 160, "--slice", 128, "--runs", 1, "--json", out,
        "--sweep-active", 0.1, "--plot", chart,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return res.stdout, json.loads(out.read_text()), out.read_text(), chart


def test_compare_prints_one_table(compared):
    stdout, *_ = compared
    lines = stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("method"))
    columns = lines[head].split()
    for col in ("input", "ms", "GFLOPs", "MiB", "dets", "R@full", "R", "Rs", "Rm", "Rl", "P"):
        assert col in columns
    assert {"Ps", "Pm", "Pl", "AP50", "AP50s", "AP50m", "AP50l"} <= set(columns)
    rows = lines[head + 2 : head + 2 + len(METHODS)]
    assert [r.split()[0] for r in rows] == METHODS
    assert lines[head + 2 + len(METHODS)].startswith("ms: median")


def test_compare_json_rows_and_metrics(compared):
    _, data, text, _ = compared
    assert "NaN" not in text and "Infinity" not in text  # undefined metrics are null
    assert data["image_size"] == [320, 256] and "multiply" in data["conventions"]["gflops"]
    rows = data["rows"] + data["sweep"]
    assert [r["method"] for r in rows] == METHODS
    for r in rows:
        assert r["latency_ms"] > 0 and len(r["latencies_ms"]) == 1
        assert r["gflops"] > 0 and r["peak_mib"] >= 0 and r["n_det"] >= 0
        assert set(r["metrics"]) == {"all", "small", "medium", "large"}
        for bucket in r["metrics"].values():
            assert {"recall", "precision", "map50", "n_gt", "tp", "fp"} <= set(bucket)
        # GT wiring: 3 objects (others dropped, ignore region not an object), one per size
        assert [r["metrics"][b]["n_gt"] for b in ("all", "small", "medium", "large")] == [
            3,
            1,
            1,
            1,
        ]
    by = {r["method"]: r for r in rows}
    assert by["dense-full"]["recall_vs_full"] == 1.0 and by["dense-full"]["n_det"] > 0
    assert by["sparse"]["gflops"] <= by["dense-full"]["gflops"] * 1.001
    assert (
        by["sparse"]["info"]["mask"] == "gradient" and by["sparse@0.1"]["info"]["max_active"] == 0.1
    )
    assert by["sparse@0.1"]["info"]["active_fraction"] <= 0.1 + 1e-9
    assert by["sahi-128"]["info"]["slices"] == 9  # 3 x 3 slices of 128 px at 0.2 overlap
    assert by["dense@160"]["info"]["input"] == "160x128"  # letterboxed, padded to 32


def test_compare_writes_sweep_chart(compared):
    chart = cv2.imread(str(compared[3]))
    assert chart.shape == (round(4.5 * 110), round(7.5 * 110), 3)  # figsize x dpi
    ink = (chart < 200).any(-1)  # axes, labels and the plotted sweep on a white canvas
    assert 0.01 < ink.mean() < 0.5
    coloured = chart.astype(int).max(-1) - chart.astype(int).min(-1) > 60  # the data lines
    assert coloured.sum() > 100


def test_compare_usage_errors(tmp_path, tiny_weights):
    image = tmp_path / "f.png"
    cv2.imwrite(str(image), scene(64, 64))
    res = run("compare", image, "--weights", tiny_weights, "--plot", tmp_path / "p.png")
    assert res.exit_code == 2 and "--sweep-active" in res.output
    res = run("compare", image, "--weights", tiny_weights, "--slice", 100)
    assert res.exit_code == 2 and "multiple of 32" in res.output
    assert not (tmp_path / "p.png").exists()


def test_multi_value_options_take_several_numbers():
    args = ["a.png", "--imgsz", "640", "1280", "b.png", "--sweep-active", ".1", ".2", "--runs", "2"]
    assert expand_multi_values(args) == [
        "a.png", "--imgsz", "640", "--imgsz", "1280", "b.png",
        "--sweep-active", ".1", "--sweep-active", ".2", "--runs", "2",
    ]  # fmt: skip
    assert expand_multi_values(["--imgsz", "640", "--", "7"]) == ["--imgsz", "640", "--", "7"]


# ----------------------------------------------------------------------------- GFLOPs
def test_dense_gflops_follow_the_ultralytics_convention():
    """YOLOv8n at 640 x 640 is Ultralytics' published 8.7 GFLOPs (2 x conv MACs)."""
    counter = FlopCounter(SparseYOLO(ModelConfig("n")).eval())
    assert counter.dense(640, 640) == pytest.approx(8.74, abs=0.05)


def test_dense_gflops_scale_like_a_count_at_the_actual_size():
    model = tiny_model()
    counter = FlopCounter(model)
    actual = FlopCounter.during(lambda: model(torch.zeros(1, 3, 96, 160)), model)
    assert counter.dense(96, 160) == pytest.approx(actual, rel=1e-9)
    assert counter.dense(96, 160, batch=3) == pytest.approx(3 * actual, rel=1e-9)


def test_sparse_gflops_equal_dense_with_every_cell_active():
    counter = FlopCounter(tiny_model())
    cells = np.ones(cell_grid(256, 320, 16), bool)
    sparse = counter.stem(cells, 16) + counter.remainder(plan_windows(cells, 16, WindowConfig()))
    assert sparse == pytest.approx(counter.dense(256, 320), rel=0.01)


def test_sparse_gflops_shrink_with_the_active_fraction():
    counter = FlopCounter(tiny_model())
    shape = cell_grid(1024, 1024, 16)
    dense, stem_all = counter.dense(1024, 1024), counter.stem(np.ones(shape, bool), 16)
    previous = 0.0
    for fraction in (0.05, 0.1, 0.2, 0.4):
        cells = blob_cells(shape, fraction, seed=1)
        windows = plan_windows(cells, 16, WindowConfig())
        stem = counter.stem(cells, 16)
        assert stem == pytest.approx(cells.mean() * stem_all)  # exactly the active sites
        window_fraction = (windows[:, 2] * windows[:, 3]).sum() / (shape[0] * shape[1] * 4)
        total = (stem + counter.remainder(windows)) / dense
        assert cells.mean() - 1e-9 <= total <= window_fraction + 1e-9
        assert stem > previous
        previous = stem
    assert counter.stem(cells, 16, dense=True) == pytest.approx(stem_all)


# ----------------------------------------------------------------------------- baselines
def test_dense_full_agrees_with_detector_with_mask_all(tiny_weights):
    """Same preprocessing, padding and post-processing as the sparse engine at 100% active.

    NMS at IoU 1 keeps every candidate above conf, so neither side depends on which of two
    random-init boxes with equal scores NMS keeps: both must return the same set of boxes.
    Candidates within 1e-3 of the threshold may fall on either side and are left out.
    """
    model = load_model(tiny_weights)
    image = scene(256, 320)
    post = {"post.conf": 0.05, "post.iou": 1.0}
    ref = Detector(model, backend="dense", mask="all", device="cpu", **post)
    theirs = ref.predict_array(image).detections
    ours = DenseRunner(DenseModel(model, ref.config.post, FlopCounter(model)))(image)
    assert 0 < len(theirs) < ref.config.post.max_det
    firm = [_above(d, 0.05 + 1e-3) for d in (ours, theirs)]
    assert len(firm[0]) == len(firm[1]) > 0
    assert match_recall(firm[0], theirs, iou=0.99) == 1.0
    assert match_recall(firm[1], ours, iou=0.99) == 1.0


def _above(d, conf: float):
    keep = d.scores > conf
    return type(d)(d.boxes[keep], d.scores[keep], d.classes[keep], d.names)


def test_baselines_match_their_references_on_real_weights(shared):
    """dense-full equals the Detector at mask=all; dense@S equals Ultralytics' own predictor."""
    weights = shared / "weights" / "yolov8n.pt"
    det = Detector(weights, backend="dense", mask="all", device="cpu")
    image = cv2.imread(str(shared / "data" / "visdrone" / "images" / "0000072_00000_d_0000001.jpg"))
    dense = DenseModel(fused_copy(det.model, CPU), det.config.post, FlopCounter(det.model))
    crop = np.ascontiguousarray(image[:400, :600])
    ours, ref = DenseRunner(dense)(crop), det.predict_array(crop).detections
    assert len(ref) > 3
    assert match_recall(ours, ref, iou=0.9) > 0.95 and match_recall(ref, ours, iou=0.9) > 0.95
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:  # Ultralytics resets torch's threads; the runner must not leak that to later runs
        ours, ref = ResizedRunner(dense, 320)(image), UltralyticsRunner(dense, 320, weights)(image)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert len(ref) > 3
    assert match_recall(ours, ref, iou=0.9) > 0.95 and match_recall(ref, ours, iou=0.9) > 0.95


# ----------------------------------------------------------------------------- scenes
needs_data = pytest.mark.skipif(not (SHARED / "data").is_dir(), reason="no ../shared data")


@needs_data
def test_sparse_scene_shapes_and_boxes_inside():
    from sparse_yolo.bench.scenes import sparse_scene  # noqa: PLC0415

    image, boxes, classes = sparse_scene(0, data_dir=SHARED)
    assert image.shape == (2160, 3840, 3) and image.dtype == np.uint8
    assert len(boxes) > 10 and boxes.shape == (len(classes), 4)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 3840).all() and (boxes[:, 3] <= 2160).all()
    assert (boxes[:, 2:] > boxes[:, :2]).all()
    assert set(classes.tolist()) <= set(COCO_NAMES)


@needs_data
def test_scenes_are_seeded_and_urban_is_denser():
    from sparse_yolo.bench.scenes import sparse_scene, urban_scene  # noqa: PLC0415

    a = sparse_scene(3, hw=(540, 960), data_dir=SHARED)
    b = sparse_scene(3, hw=(540, 960), data_dir=str(SHARED))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    urban = urban_scene(3, hw=(540, 960), data_dir=SHARED)
    assert len(urban[1]) > len(a[1])


def test_measure_all_interleaves_rounds_after_warm_ups():
    """A slow drift of the machine must not land on whichever method runs last."""
    from sparse_yolo.bench.measure import measure_all
    from sparse_yolo.types import Detections

    calls = []

    class Fake:
        def __init__(self, name, n):
            self.name, self.n = name, n

        def __call__(self, image):
            calls.append(self.name)
            return Detections(
                np.zeros((self.n, 4), np.float32),
                np.ones(self.n, np.float32),
                np.zeros(self.n, np.int64),
                {0: "x"},
            )

        def cost(self, image):
            return 1.0, {"input": self.name}

    announced = []
    rows = measure_all([Fake("a", 2), Fake("b", 3)], scene(32, 32), 3, "cpu", announced.append)
    assert announced == ["a", "b"]
    assert calls == ["a", "b"] + ["a", "b"] * 3 + ["a", "b"]  # warm-ups, rounds, metered
    assert [r.method for r in rows] == ["a", "b"] and [r.n_det for r in rows] == [2, 3]
    assert all(len(r.latencies_ms) == 3 and r.latency_ms >= 0 for r in rows)


def test_engine_activations_in_place_baselines_as_ultralytics():
    """The engine's shortcuts (in-place SiLU, lean neck) are its own; the dense baselines keep
    Ultralytics' modules."""
    from torch import nn
    from ultralytics.nn.modules import Conv

    det = Detector(tiny_model(), device="cpu")
    baseline = fused_copy(det.model, CPU)

    def inplace(model):
        return {m.act.inplace for m in model.modules() if isinstance(m, Conv)}

    assert inplace(det.model) == {True} and inplace(baseline) == {False}
    assert det.model.neck.lean and not baseline.neck.lean
    assert all(isinstance(m.act, nn.SiLU) for m in baseline.modules() if isinstance(m, Conv))


def test_in_memory_detection_and_baselines_need_no_gdal(tiny_weights):
    """predict_array and every compare runner work with rasterio, pyproj and shapely absent
    (a GPU box or notebook without the GDAL stack); only files need them."""
    code = f"""
import sys
for name in ("rasterio", "pyproj", "shapely"):
    sys.modules[name] = None  # any import of them now raises ImportError
import numpy as np, torch
from sparse_yolo.bench.measure import measure_all
from sparse_yolo.bench.runners import build_runners
from sparse_yolo.detector import Detector
from helpers import scene
det = Detector({str(tiny_weights)!r}, "gather", "gradient", device="cpu", **{{"post.conf": 0.05}})
image = scene(256, 320)
assert len(det.predict_array(image).detections) > 0
runners = build_runners(det, {str(tiny_weights)!r}, (128,), 128, 0.2)
rows = measure_all(runners, image, 1, torch.device("cpu"), lambda method: None)
print(sorted((r.method, len(r.detections) > 0) for r in rows))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    methods = dict(ast.literal_eval(proc.stdout.strip().splitlines()[-1]))
    assert methods == {"sparse": True, "dense@128": True, "dense-full": True, "sahi-128": True}
