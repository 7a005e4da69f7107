"""SparseYOLO: import fidelity on real data, checkpoints, necks, sparse == dense end to end."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from helpers import SHARED_WEIGHTS, randomize_bn, scene, tiny_model

from sparse_yolo import Detector, ModelConfig, SparseYOLO, SparseYoloError
from sparse_yolo.model.loading import load_model


def test_import_reproduces_ultralytics_dense_predictions(shared):
    """mask=all computes Ultralytics' own function on the real full-resolution image."""
    from ultralytics import YOLO
    from ultralytics.utils.nms import non_max_suppression

    image = cv2.imread(str(next((shared / "data" / "visdrone" / "images").glob("*.jpg"))))
    h, w = image.shape[:2]
    dense = YOLO(str(SHARED_WEIGHTS)).model.float().eval()
    x = torch.from_numpy(image[:, :, ::-1].copy()).permute(2, 0, 1).float()[None] / 255
    x = torch.nn.functional.pad(x, (0, -w % 32, 0, -h % 32))
    with torch.inference_mode():
        ref = non_max_suppression(dense(x)[0], 0.25, 0.7, max_det=3000)[0].numpy()
    for backend in ("gather", "dense"):
        det = Detector(SHARED_WEIGHTS, backend=backend, mask="all", **{"post.iou": 0.7})
        res = det.predict(image)
        assert len(ref) > 10 and len(res) == len(ref)
        np.testing.assert_array_equal(res.classes, ref[:, 5].astype(np.int64))
        np.testing.assert_allclose(res.boxes, ref[:, :4], atol=1e-2)
        np.testing.assert_allclose(res.scores, ref[:, 4], atol=1e-4)


def test_checkpoint_embeds_config_and_round_trips(tmp_path):
    model = tiny_model(neck="slim", nc=2)
    path = tmp_path / "m.pt"
    model.save(path)
    loaded = load_model(path)
    assert loaded.cfg == model.cfg and loaded.names == {0: "person", 1: "car"}
    x = torch.rand(1, 3, 64, 96)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x)[0], model(x)[0])


def test_bad_checkpoint_is_a_one_line_error(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(SparseYoloError, match="junk.pt: not a PyTorch checkpoint"):
        load_model(path)
    with pytest.raises(SparseYoloError, match="weights file not found"):
        load_model(tmp_path / "missing.pt")


@pytest.mark.parametrize("neck", ["pan", "slim"])
def test_every_neck_and_head_parameter_is_used(neck):
    """Detect reads the last neck blocks: no block (e.g. a final VoVGSCSP) is left unused."""
    model = tiny_model(neck=neck).train()
    out = model(torch.rand(2, 3, 64, 64))
    loss = sum(t.float().mean() for t in _tensors(out))
    loss.backward()
    unused = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.abs().sum())
    ]
    assert not unused


def _tensors(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _tensors(v)]
    return [t for v in out for t in _tensors(v)]


def test_slim_neck_is_lighter_than_pan():
    def n_params(m):
        return sum(p.numel() for p in m.parameters())

    pan = SparseYOLO(ModelConfig("n", neck="pan"))
    slim = SparseYOLO(ModelConfig("n", neck="slim"))
    assert n_params(slim.neck) < 0.8 * n_params(pan.neck)
    assert pan.feature_info[0] == {"num_chs": 64, "reduction": 8, "module": "backbone.4"}


@pytest.mark.parametrize("mask", ["gradient", "all"])
def test_sparse_pipeline_matches_dense_backend_on_real_image(shared, mask):
    """The whole Detector gives the same boxes with gather and with the dense reference."""
    image = cv2.imread(str(sorted((shared / "data" / "visdrone" / "images").glob("*.jpg"))[0]))
    results = [
        Detector(SHARED_WEIGHTS, backend=b, mask=mask).predict(image) for b in ("gather", "dense")
    ]
    a, b = results
    assert len(a) > 10 and len(a) == len(b)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
    assert a.stats.backend == "gather" and b.stats.backend == "dense"


def test_windowed_remainder_identical_across_backends(tiny):
    """Raw Detect outputs of every planned window agree between gather and dense."""
    from sparse_yolo.config import MaskConfig, WindowConfig
    from sparse_yolo.engine.windows import group_by_shape, plan_windows
    from sparse_yolo.masks import make_mask
    from sparse_yolo.sparse.active import ActivePyramid
    from sparse_yolo.sparse.backends import make_backend
    from sparse_yolo.sparse.stem import densify, run_stem

    image = scene(224, 320, 8, seed=2)
    mask = make_mask(MaskConfig())(image)
    windows = plan_windows(mask.cells, mask.cell, WindowConfig(margin=2))
    assert 0 < mask.active_fraction < 1 and len(windows) >= 1
    preds = {}
    with torch.inference_mode():
        for name in ("gather", "dense"):
            be = make_backend(name)
            pyr = ActivePyramid(torch.from_numpy(mask.cells), mask.cell)
            feats = run_stem(tiny.stem, be, torch.from_numpy(image), pyr)
            preds[name] = [
                tiny.forward_p3(densify(be, feats, g))[0] for g in group_by_shape(windows)
            ]
    for a, b in zip(preds["gather"], preds["dense"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("fill", ["flat", "zero"])
def test_masked_training_forward_equals_sparse_inference(fill):
    """forward(x, cells) (the training path) computes what sparse inference computes,
    inactive stride-8 sites included (filled the same way)."""
    from helpers import blob_cells

    from sparse_yolo.sparse.active import ActivePyramid
    from sparse_yolo.sparse.backends import make_backend
    from sparse_yolo.sparse.stem import densify, flat_response, run_stem

    model = tiny_model()
    image = torch.from_numpy(scene(64, 96, 4))
    cells = torch.from_numpy(blob_cells((4, 6), 0.4, 1))
    x = image.flip(-1).permute(2, 0, 1).float()[None] / 255
    with torch.inference_mode():
        train_path = model(x, cells[None], fill=fill)[0]
        g = make_backend("gather")
        feats = run_stem(model.stem, g, image, ActivePyramid(cells, 16))
        background = [f[0] for f in flat_response(model.stem, x.mean((2, 3)))]
        p3 = densify(
            g, feats, torch.tensor([[0, 0, 8, 12]]), background if fill == "flat" else None
        )
        sparse = model.forward_p3(p3)[0]
        zero_fill = model(x, cells[None], fill="zero")[0]
    torch.testing.assert_close(train_path, sparse, atol=1e-4, rtol=1e-4)
    if fill == "flat":  # the fill changes the output: the test would notice a missing fill
        assert not torch.allclose(sparse, zero_fill, atol=1e-3)


def test_auto_computes_every_cell_when_a_dense_stem_would_span_the_frame(shared):
    """auto + a near-full mask runs the exact dense network; an explicit backend does not."""
    from sparse_yolo.masks import MaskResult

    model = load_model(SHARED_WEIGHTS)
    image = cv2.imread(str(shared / "data" / "visdrone" / "images" / "0000072_00000_d_0000001.jpg"))
    image = np.ascontiguousarray(image[:384, :640])
    cells = np.ones((12, 20), bool)
    cells[4:8, 6:12] = False  # 90% active: a dense stem, windows over the whole frame
    fixed = MaskResult(cells, cells.astype(np.float32), 32)
    ref = Detector(model, "dense", "all", device="cpu").predict_array(image)
    runs = {}
    for backend in ("auto", "dense"):
        det = Detector(model, backend, device="cpu", **{"mask.cell": 32})
        det.mask = lambda img, valid=None, frame=None: fixed
        runs[backend] = det.predict_array(image)
    assert len(ref) > 3
    assert runs["auto"].stats.active_fraction == 1.0
    assert runs["auto"].stats.mask_fraction == pytest.approx(0.9)
    np.testing.assert_allclose(runs["auto"].boxes, ref.boxes, atol=1e-3)
    assert runs["dense"].stats.active_fraction == pytest.approx(0.9)
    assert len(runs["dense"]) < len(ref)  # the hole was not computed


def test_background_fill_takes_its_colour_from_valid_pixels_only(monkeypatch):
    """Nodata (black here) must not darken the background the skipped cells stand for."""
    import sparse_yolo.engine.runner as engine_mod
    from sparse_yolo.config import DetectorConfig
    from sparse_yolo.sparse.active import ActivePyramid

    colours = []
    real = engine_mod.flat_response
    monkeypatch.setattr(
        engine_mod, "flat_response", lambda layers, rgb: colours.append(rgb) or real(layers, rgb)
    )
    engine = engine_mod.SparseEngine(tiny_model(), DetectorConfig())
    image = np.zeros((64, 64, 3), np.uint8)
    image[:, 32:] = (200, 150, 100)  # BGR; the left half is nodata
    valid = np.zeros((64, 64), bool)
    valid[:, 32:] = True
    pyramid = ActivePyramid(torch.tensor([[True, False], [False, False]]), 32)
    with torch.inference_mode():
        fill = engine._fill(image, pyramid, valid)
        engine._fill(image, pyramid, None)
        frame = torch.from_numpy(image)  # the device path (a CUDA frame), run on CPU
        torch.testing.assert_close(engine._fill(image, pyramid, valid, frame), fill)
        engine._fill(image, pyramid, None, frame)
        everything = ActivePyramid(torch.ones(2, 2, dtype=torch.bool), 32)
        assert engine._fill(image, everything, valid) is None  # nothing to fill
    assert [f.shape for f in fill] == [(engine.model.stem[-1].cv2.conv.out_channels,)]
    torch.testing.assert_close(colours[0], torch.tensor([[100.0, 150.0, 200.0]]) / 255)
    torch.testing.assert_close(colours[1], torch.tensor([[50.0, 75.0, 100.0]]) / 255)
    torch.testing.assert_close(colours[2], colours[0])
    torch.testing.assert_close(colours[3], colours[1])


@pytest.mark.parametrize("channels_last", [True, False])
def test_pan_neck_inference_path_equals_its_training_path(channels_last):
    """Inference skips writing the upsampled top-down maps and their concatenations (the 1x1
    conv runs on the coarse map, then upsamples); autograd runs Ultralytics' modules on the
    concatenations. Same function, for a batch of windows, BN folded or not."""
    model = randomize_bn(tiny_model(seed=7), 7).eval()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():  # real P3-P5 of two 64 x 96 windows
        feats = model.backbone_features(model.dense_stem(torch.rand(2, 3, 64, 96, generator=g)))
    if channels_last:
        feats = [f.contiguous(memory_format=torch.channels_last) for f in feats]
    for neck in (model.neck, model.fused().neck):
        neck.lean = True
        with torch.no_grad():
            fast = neck(feats)
        with torch.enable_grad():
            ref = neck(feats)
        for a, b in zip(fast, ref, strict=True):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b.detach(), atol=1e-4, rtol=1e-4)


def test_lean_neck_is_a_cpu_shortcut():
    """On CUDA the lean neck's extra launches cost more than they save (H200), so only a CPU
    model turns it on; in-place activations apply everywhere."""
    model = tiny_model().set_lean_inference(True)
    assert model.lean and model.neck.lean
    model.to("meta").set_lean_inference(True)
    assert model.lean and not model.neck.lean
    assert not tiny_model().set_lean_inference(False).neck.lean


def test_checkpoint_with_an_old_mask_net_still_loads_the_detector(tmp_path):
    """A mask net of an earlier design (other shapes) is dropped with a warning; the
    detector's own weights load exactly."""
    torch.manual_seed(0)
    model = SparseYOLO(ModelConfig(scale="tiny", nc=1, names=("person",), mask_net=True))
    path = tmp_path / "old.pt"
    model.save(path)
    ckpt = torch.load(path, weights_only=False)
    first = next(k for k in ckpt["state_dict"] if k.startswith("mask_net."))
    ckpt["state_dict"][first] = torch.zeros(3, 1)  # a shape today's net does not have
    torch.save(ckpt, path)
    with pytest.warns(UserWarning, match="earlier design"):
        loaded = load_model(path)
    assert loaded.mask_net is None
    mine = {k: v for k, v in model.state_dict().items() if not k.startswith("mask_net.")}
    theirs = loaded.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_checkpoint_with_a_version_2_mask_net_keeps_it(tmp_path):
    """A mask net saved in the version-2 input layout (a 1 x 1 first layer over 12 block
    channels) is converted on load, not dropped: same weights, rearranged."""
    torch.manual_seed(0)
    model = SparseYOLO(ModelConfig(scale="tiny", nc=1, names=("person",), mask_net=True))
    path = tmp_path / "v2.pt"
    model.save(path)
    ckpt = torch.load(path, weights_only=False)
    key = "mask_net.body.0.conv.weight"
    w = ckpt["state_dict"][key]  # (o, 6, 2, 1): [o, dx * 3 + c, dy]
    ckpt["state_dict"][key] = w[..., 0].permute(0, 2, 1).reshape(w.shape[0], 12, 1, 1)
    torch.save(ckpt, path)
    loaded = load_model(path)
    assert loaded.mask_net is not None
    assert torch.equal(loaded.mask_net.body[0].conv.weight, w)
