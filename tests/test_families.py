"""Any Ultralytics detector: YOLOv8, YOLO11, YOLO26, P2 and P6 heads, any class count.

Each family is built from Ultralytics' own YAML with random weights (BatchNorm randomised,
class convs scaled so scores spread), saved as Ultralytics saves it (fp16), and loaded as a
user's ``best.pt`` would be.
"""

from __future__ import annotations

import zlib

import cv2
import numpy as np
import pytest
import torch
from families import match, random_checkpoint, ultralytics_predict
from helpers import blob_cells, scene

from sparse_yolo import Detector
from sparse_yolo.masks import MaskResult
from sparse_yolo.model.loading import load_model
from sparse_yolo.sparse.active import ActivePyramid
from sparse_yolo.sparse.backends import make_backend, spconv_available
from sparse_yolo.sparse.stem import run_stem

SPARSE = ["gather"] + (["spconv"] if spconv_available() else [])
# (model, nc, end2end): every family and size the issue names, class counts spread over them.
# The s and m sizes repeat the n graphs wider; they run with -m slow.
SLOW = pytest.mark.slow
FAMILIES = [
    pytest.param("yolov8n.yaml", 80, None, id="yolov8n-80"),
    pytest.param("yolov8s.yaml", 10, None, id="yolov8s-10", marks=SLOW),
    pytest.param("yolov8n-p2.yaml", 1, None, id="yolov8n-p2-1"),
    pytest.param("yolov8n-p6.yaml", 10, None, id="yolov8n-p6-10"),
    pytest.param("yolo11n.yaml", 1, None, id="yolo11n-1"),
    pytest.param("yolo11s.yaml", 80, None, id="yolo11s-80", marks=SLOW),
    pytest.param("yolo11m.yaml", 10, None, id="yolo11m-10", marks=SLOW),
    # end-to-end: the one-to-one head, top-k, no NMS; then the same family with NMS
    pytest.param("yolo26n.yaml", 80, True, id="yolo26n-e2e-80"),
    pytest.param("yolo26n.yaml", 10, False, id="yolo26n-nms-10"),
    pytest.param("yolo26s.yaml", 1, True, id="yolo26s-e2e-1", marks=SLOW),
]
IMAGE_HW = (128, 192)  # multiples of 64: the zero-padded tensor is the image for P6 too
POST = {"post.iou": 0.7, "post.max_det": 1000, "post.conf": 0.25}  # below max_det


def _image(seed: int = 1) -> np.ndarray:
    """Textured everywhere (blurred noise under the objects): a flat background gives equal
    scores at shifted anchors, and NMS would then depend on tie-breaking."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.integers(0, 256, (*IMAGE_HW, 3), dtype=np.uint8), (5, 5), 0)
    return cv2.addWeighted(scene(*IMAGE_HW, n_objects=10, seed=seed), 0.5, noise, 0.5, 0)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Saved random-weight checkpoints, built once per module."""
    root = tmp_path_factory.mktemp("families")
    cache = {}

    def get(name: str, nc: int, e2e: bool | None):
        key = (name, nc, e2e)
        if key not in cache:
            path = root / f"{name.removesuffix('.yaml')}-{nc}-{e2e}.pt"
            seed = zlib.crc32(path.name.encode()) % 1000  # the same whichever test asks first
            random_checkpoint(path, name, nc, [_image()], seed=seed, end2end=e2e)
            cache[key] = path
        return cache[key]

    return get


@pytest.mark.parametrize(("name", "nc", "e2e"), FAMILIES)
def test_mask_all_equals_ultralytics(checkpoints, name, nc, e2e):
    """--mask all computes Ultralytics' forward and post-processing on the same tensor, with
    the dense reference and with the gather kernel over every cell: in float64 (the same
    function: boxes within 1e-3 px) and in float32 (the same detections, boxes within the
    1e-2 px that float32 rounding of random weights leaves)."""
    path = checkpoints(name, nc, e2e)
    image = _image()
    model = load_model(path)
    assert model.cfg.nc == nc and model.end2end == bool(e2e)
    for dtype, atol, score_atol in ((torch.float64, 1e-3, 1e-6), (torch.float32, 1e-2, 1e-4)):
        ref, outside = ultralytics_predict(path, image, dtype)
        assert len(ref) >= 3, "random weights must give detections to compare"
        assert outside <= max(2, 0.2 * len(ref))  # centred beyond the image: ultralytics_predict
        for backend in ("dense", "gather"):
            det = Detector(model.to(dtype), backend=backend, mask="all", device="cpu", **POST)
            res = det.predict(image)
            ours = np.concatenate([res.boxes, res.scores[:, None], res.classes[:, None]], 1)
            match(ours, ref, atol, score_atol)


@pytest.mark.parametrize(("name", "nc", "e2e"), FAMILIES)
def test_sparse_backends_equal_dense_reference_with_blob_masks(checkpoints, name, nc, e2e):
    """Every stem output (stride 4 and 8 for P2) of the sparse backends equals the dense
    reference on a random blob mask (2 threads, atol 1e-4), and so do the detections of
    the whole engine on the same mask."""
    model = load_model(checkpoints(name, nc, e2e)).fused()
    image = _image()
    cells = blob_cells((IMAGE_HW[0] // 16, IMAGE_HW[1] // 16), 0.35, seed=nc)
    pyramid = lambda: ActivePyramid(torch.from_numpy(cells), 16)  # noqa: E731
    frame = torch.from_numpy(image)
    with torch.inference_mode():
        dense_be = make_backend("dense")
        ref = [dense_be.grid(f) for f in run_stem(model.stem, dense_be, frame, pyramid())]
        for backend in SPARSE:
            be = make_backend(backend)
            outs = [be.grid(f) for f in run_stem(model.stem, be, frame, pyramid())]
            assert len(outs) == len(model.stem.outputs) == len(ref)
            for a, b in zip(outs, ref, strict=True):
                assert b.abs().max() > 0.01
                torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    fixed = MaskResult(cells, cells.astype(np.float32), 16)
    runs = {}
    for backend in ("gather", "dense"):
        det = Detector(model, backend=backend, device="cpu", **{**POST, "post.conf": 0.02})
        det.mask = lambda img, valid=None, frame=None: fixed
        runs[backend] = det.predict_array(image)
    a, b = (
        np.concatenate([r.boxes, r.scores[:, None], r.classes[:, None]], 1) for r in runs.values()
    )
    assert len(a) > 0
    match(a, b, atol=1e-3, score_atol=1e-4)


def test_p6_windows_align_to_stride_64(checkpoints):
    """A P6 head reads stride 64: windows start and end on the 64 px lattice (8 stride-8
    cells), cell masks are padded to it, and sparse detections run and agree across
    backends on a frame whose side is not a multiple of 64."""
    from sparse_yolo.config import WindowConfig
    from sparse_yolo.engine.windows import plan_windows
    from sparse_yolo.sparse.active import pad_cells

    cells = pad_cells(blob_cells((10, 14), 0.2, seed=3), 32, 64)  # 320 x 448 px -> 64 px
    assert cells.shape == (10, 14) and pad_cells(cells[:9], 32, 64).shape == (10, 14)
    for align in (4, 8):
        windows = plan_windows(cells, 32, WindowConfig(margin=1), align)
        assert len(windows) and (windows % align == 0).all()
    model = load_model(checkpoints("yolov8n-p6.yaml", 10, None))
    assert model.max_stride == 64
    image = cv2.resize(_image(), (440, 300))  # pads to 320 x 448
    cells = np.zeros((10, 14), bool)
    cells[2:4, 3:5] = cells[6:9, 10:12] = True
    fixed = MaskResult(cells, cells.astype(np.float32), 32)
    runs = []
    for backend in ("gather", "dense"):
        det = Detector(model, backend=backend, device="cpu", **{**POST, "post.conf": 0.02})
        det.mask = lambda img, valid=None, frame=None: fixed
        res = det.predict_array(image)
        assert res.stats.n_windows >= 1 and res.stats.window_fraction < 1
        runs.append(np.concatenate([res.boxes, res.scores[:, None], res.classes[:, None]], 1))
    assert len(runs[0]) > 0
    match(*runs, atol=1e-3, score_atol=1e-4)


def test_p2_windows_are_densified_at_stride_4_and_8_over_the_same_boxes(checkpoints):
    """A P2 head reads the stem's stride-4 output too: each window is cut from both levels
    over the same box (stride-4 crops twice the size), and equals the grids there."""
    from sparse_yolo.sparse.stem import densify

    model = load_model(checkpoints("yolov8n-p2.yaml", 1, None)).fused()
    assert model.stem.outputs == (2, 4) and model.stem_strides == (4, 8)
    cells = blob_cells((8, 12), 0.3, seed=5)
    boxes = torch.tensor([[0, 0, 8, 12], [4, 8, 8, 12]])
    frame = torch.from_numpy(_image())
    with torch.inference_mode():
        for name in ("gather", "dense"):
            be = make_backend(name)
            feats = run_stem(model.stem, be, frame, ActivePyramid(torch.from_numpy(cells), 16))
            wins = densify(be, feats, boxes)
            grids = [be.grid(f)[0] for f in feats]
            assert [tuple(w.shape[-2:]) for w in wins] == [(16, 24), (8, 12)]
            for win, grid, r in zip(wins, grids, (2, 1), strict=True):
                for (y0, x0, h, w), crop in zip((boxes * r).tolist(), win, strict=True):
                    torch.testing.assert_close(crop, grid[:, y0 : y0 + h, x0 : x0 + w])


def test_p2_background_keeps_both_stem_levels_and_windows_read_it(checkpoints):
    """A camera's background holds every stem output of a frame computed in full (stride
    4 and 8 for P2); a windowed frame's skipped sites read each level's map, and it keeps
    only detections centred on the cells it computed."""
    from sparse_yolo.engine import Timer
    from sparse_yolo.engine.background import Background
    from sparse_yolo.engine.runner import Frame

    weights = checkpoints("yolov8n-p2.yaml", 1, None)
    det = Detector(weights, backend="gather", device="cpu", **{**POST, "post.conf": 0.02})
    engine, image = det.engine, _image()
    every = np.ones((8, 12), bool)
    part = blob_cells((8, 12), 0.3, seed=5)
    background = Background()
    whole = Frame(image, MaskResult(every, every.astype(np.float32), 16), background=background)
    engine.run_batch([whole], Timer(engine.device))
    assert [tuple(m.shape[-2:]) for m in background.maps] == [(32, 48), (16, 24)]
    frame = Frame(image, MaskResult(part, part.astype(np.float32), 16), background=background)
    ((dets, run),) = engine.run_batch([frame], Timer(engine.device))
    assert run.path == "windows" and run.fill == "background" and len(dets)
    centre = ((dets[:, :2] + dets[:, 2:4]) / 2 / 16).long().numpy()
    assert part[centre[:, 1], centre[:, 0]].all()


@pytest.mark.parametrize("name", ["yolo11n.yaml", "yolov8n-p2.yaml"])
def test_detect_cli_end_to_end_on_shared_frames(shared, tmp_path, name):
    """`sparse-yolo detect` on the shared VisDrone frames with a user's saved checkpoint of
    another family (random weights, saved as Ultralytics saves them): valid GeoJSON with
    detections, with the default sparse mask and backend."""
    import json

    from click.testing import CliRunner

    from sparse_yolo.cli import main

    frames = sorted((shared / "data" / "visdrone" / "images").glob("*.jpg"))
    samples = [cv2.imread(str(f))[:736, :1344] for f in frames]  # multiples of 32
    weights = tmp_path / "best.pt"
    random_checkpoint(weights, name, 10, samples, seed=3)
    for f in frames:
        out = tmp_path / f"{f.stem}.geojson"
        args = ["detect", str(f), "-o", str(out), "--weights", str(weights), "--conf", "0.1"]
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 0, res.output
        data = json.loads(out.read_text())
        assert data["type"] == "FeatureCollection" and len(data["features"]) > 0
        assert {ft["properties"]["class_name"] for ft in data["features"]} <= {
            f"c{i}" for i in range(10)
        }


@pytest.mark.parametrize(
    ("name", "nc", "e2e", "chains"),
    [("yolo11n.yaml", 1, None, 2), ("yolo26n.yaml", 10, False, 2), ("yolov8n-p2.yaml", 1, None, 3)],
)
def test_lean_neck_chains_equal_ultralytics_modules(checkpoints, name, nc, e2e, chains):
    """The CPU lean path (no upsampled map, no concatenation) is found in every family's
    upsample -> concat -> C2f/C3k2 chains and computes what Ultralytics' modules compute."""
    model = load_model(checkpoints(name, nc, e2e)).fused().double()  # no float32 rounding
    neck = model.neck
    assert len(neck._plan) == chains
    x = torch.from_numpy(_image()).flip(-1).permute(2, 0, 1)[None].double() / 255
    with torch.no_grad():
        feats = model.backbone_features(model.dense_stem(x))
        feats = [f.contiguous(memory_format=torch.channels_last) for f in feats]
        neck.lean = False
        ref = neck(feats)
        neck.lean = True
        fast = neck(feats)
    for a, b in zip(fast, ref, strict=True):
        assert b.abs().max() > 0.1
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize(("name", "nc", "e2e"), FAMILIES)
def test_traced_remainder_equals_the_eager_network(checkpoints, name, nc, e2e):
    """The engine's CPU trace of the remainder's feature network (backbone after the stem,
    neck) gives the eager network's maps bit for bit on windows of other batch sizes and
    shapes than the one it was traced on; a family it cannot trace exactly (a layer reading
    its input's shape) would keep the eager network; every family here is traced."""
    from sparse_yolo.engine.traced import TracedFeatures

    model = load_model(checkpoints(name, nc, e2e)).fused().to(memory_format=torch.channels_last)
    be = make_backend("dense")
    traced = TracedFeatures(model)
    with torch.inference_mode():
        for hw, batch in (((128, 192), 1), ((64, 128), 3), ((192, 64), 2)):
            frame = torch.from_numpy(cv2.resize(_image(), hw[::-1]))
            cells = torch.ones(hw[0] // 16, hw[1] // 16, dtype=torch.bool)
            outs = [be.grid(f) for f in run_stem(model.stem, be, frame, ActivePyramid(cells, 16))]
            outs = [
                torch.cat([o] * batch).contiguous(memory_format=torch.channels_last) for o in outs
            ]
            want, got = model.features(outs), traced(outs)
            assert len(got) == len(want)
            assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    assert traced.traced
