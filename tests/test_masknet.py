"""The learned foreground mask: features, net, registry, checkpoint, recall metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import scene

from sparse_yolo import Detector, SparseYoloError
from sparse_yolo.config import MaskConfig, ModelConfig
from sparse_yolo.masks import MASKS, cell_grid, learned, make_mask
from sparse_yolo.masks.learned import LearnedMask
from sparse_yolo.model.loading import load_model
from sparse_yolo.model.masknet import (
    MASK_NET_FORMAT,
    MaskNet,
    batch_features,
    cell_targets,
    half_frame,
    load_mask_net,
    mask_features,
    mask_features_torch,
    mask_net_loss,
    save_mask_net,
)
from sparse_yolo.model.yolo import SparseYOLO
from sparse_yolo.train.maskfit import (
    Frame,
    calibrate_threshold,
    mask_recall,
    object_coverage,
    pooled_recall,
    settle_batchnorm,
)


def test_features_pad_like_the_cell_grid() -> None:
    img = scene(250, 300)
    feats = mask_features(img)
    hc, wc = cell_grid(250, 300, 16)
    assert feats.shape == (hc * 8, wc * 8, 3) and feats.dtype == np.float32
    # the padding mirrors the frame (no black band for the net to mark)
    np.testing.assert_array_equal(feats[125:128], feats[123:120:-1])
    np.testing.assert_array_equal(feats[:, 150:152], feats[:, 148:146:-1])
    flat = mask_features(np.full((250, 300, 3), 77, np.uint8))
    assert np.allclose(flat, 77 / 255)


def test_net_input_pairs_half_resolution_pixels() -> None:
    """Channel dx * 3 + c at (y, x) holds colour c of half-resolution pixel (y, 2x + dx)."""
    img = np.zeros((64, 64, 3), np.uint8)
    img[4:6, 10:12] = (10, 20, 30)  # half-resolution pixel (2, 5): position (2, 2), dx 1
    feats = batch_features([img])[0].numpy() * 255
    assert feats.shape == (6, 32, 16)
    np.testing.assert_allclose(feats[3:6, 2, 2], [10, 20, 30], atol=1e-3)
    feats[3:6, 2, 2] = 0
    assert np.abs(feats).max() < 1e-3


def test_torch_features_match_opencv() -> None:
    """CUDA inference computes the input with torch; it agrees with OpenCV's."""
    img = scene(250, 300, n_objects=12)
    ref = batch_features([img])
    got = mask_features_torch(torch.from_numpy(img))
    assert got.shape == ref.shape
    np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=0.6 / 255)


def test_version_2_nets_load_with_their_scores(tmp_path) -> None:
    """A version-2 net (a 1 x 1 convolution over 2 x 2 blocks of the half frame, 12 channels
    ``(2 dy + dx) * 3 + c``) loads into this layout with the outputs it had."""
    torch.manual_seed(4)
    v2 = MaskNet().eval().state_dict()
    v2["body.0.conv.weight"] = torch.randn(8, 12, 1, 1)
    torch.save({"format": MASK_NET_FORMAT, "version": 2, "width": 32, "state_dict": v2},
               tmp_path / "v2.pt")  # fmt: skip
    net = load_mask_net(tmp_path / "v2.pt")
    img = scene(200, 330, n_objects=10)
    half = half_frame(img).astype(np.float32) / 255
    h, w = half.shape[:2]
    blocks = (
        half.reshape(h // 2, 2, w // 2, 2, 3).transpose(0, 2, 1, 3, 4).reshape(h // 2, w // 2, 12)
    )
    x = torch.from_numpy(np.ascontiguousarray(blocks.transpose(2, 0, 1)))[None]
    first = net.body[0]
    x = first.act(first.bn(torch.nn.functional.conv2d(x, v2["body.0.conv.weight"])))
    with torch.no_grad():
        want = net.out(net.body[1:](x))
        got = net(batch_features([img]))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", [8, 16, 32])
def test_net_scores_cover_the_cell_grid(cell: int) -> None:
    net = MaskNet().eval()
    probs = net.cell_probs(scene(200, 330), cell)
    assert probs.shape == cell_grid(200, 330, cell)
    assert ((probs > 0) & (probs < 1)).all()


def test_learned_mask_is_registered_and_thresholded() -> None:
    assert MASKS["learned"] is LearnedMask
    net = MaskNet().eval()
    net.threshold.fill_(0.0)  # every cell passes
    res = make_mask(MaskConfig(name="learned", context=0), mask_net=net)(scene())
    assert res.cells.all()
    net.threshold.fill_(1.0)  # none does
    assert not make_mask(MaskConfig(name="learned"), mask_net=net)(scene()).cells.any()


def test_learned_mask_needs_a_mask_net(tiny: SparseYOLO, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(learned, "SHIPPED_MASK_NET", tmp_path / "absent.pt")
    with pytest.raises(SparseYoloError, match="trained mask net"):
        Detector(tiny, mask="learned", device="cpu")


def test_learned_mask_falls_back_to_the_shipped_net(tiny: SparseYOLO, monkeypatch, tmp_path):
    torch.manual_seed(2)
    net = MaskNet(width=16).eval()
    net.threshold.fill_(0.25)
    save_mask_net(net, tmp_path / "shipped.pt")
    monkeypatch.setattr(learned, "SHIPPED_MASK_NET", tmp_path / "shipped.pt")
    image = scene()
    got = Detector(tiny, mask="learned", device="cpu").mask(image)
    want = make_mask(MaskConfig(name="learned"), mask_net=net)(image)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-6)
    np.testing.assert_array_equal(got.cells, want.cells)


def test_mask_net_files_of_an_unknown_version_are_refused(tmp_path) -> None:
    path = tmp_path / "v1.pt"
    torch.save({"format": MASK_NET_FORMAT, "width": 32, "state_dict": {}}, path)
    with pytest.raises(SparseYoloError, match="version 1"):
        load_mask_net(path)


def test_inference_copy_folds_batchnorm_without_changing_scores() -> None:
    torch.manual_seed(3)
    net = MaskNet().eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    image = scene(200, 330, n_objects=10)
    fused = net.for_inference()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    np.testing.assert_allclose(fused.cell_probs(image, 16), net.cell_probs(image, 16), atol=1e-5)


def test_checkpoint_carries_the_mask_net(tmp_path) -> None:
    torch.manual_seed(0)
    model = SparseYOLO(ModelConfig(scale="tiny", nc=2, mask_net=True)).eval()
    model.mask_net.threshold.fill_(0.123)
    path = tmp_path / "m.pt"
    model.save(path)
    loaded = load_model(path)
    assert loaded.mask_net is not None
    assert float(loaded.mask_net.threshold) == pytest.approx(0.123)
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    result = Detector(path, mask="learned", device="cpu").predict(scene())
    assert result.stats.mask == "learned"


def test_learned_path_adds_a_saved_mask_net_to_any_weights(tmp_path, tiny: SparseYOLO) -> None:
    torch.manual_seed(1)
    net = MaskNet(width=16).eval()
    net.threshold.fill_(0.4)
    save_mask_net(net, tmp_path / "net.pt", textures=["forest"])
    student = SparseYOLO(ModelConfig(scale="tiny", nc=2, mask_net=True)).eval()
    student.save(tmp_path / "student.pt")
    image = scene()
    want = make_mask(MaskConfig(name="learned"), mask_net=net)(image)
    det = Detector(tiny, mask=f"learned:{tmp_path / 'net.pt'}", device="cpu")  # no net of its own
    got = det.mask(image)
    np.testing.assert_array_equal(got.cells, want.cells)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-6)
    assert float(det.mask.net.threshold) == pytest.approx(0.4)
    other = Detector(tiny, mask=f"learned:{tmp_path / 'student.pt'}", device="cpu").mask.net
    for a, b in zip(
        other.state_dict().values(), student.mask_net.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    (tmp_path / "bad.pt").write_text("not a checkpoint")
    with pytest.raises(SparseYoloError, match="not a PyTorch checkpoint"):
        Detector(tiny, mask=f"learned:{tmp_path / 'bad.pt'}", device="cpu")
    tiny.save(tmp_path / "plain.pt")
    with pytest.raises(SparseYoloError, match="no mask net"):
        Detector(tiny, mask=f"learned:{tmp_path / 'plain.pt'}", device="cpu")


def test_cell_targets_mark_overlapped_cells() -> None:
    boxes = np.array(
        [[0, 0, 10, 10], [17, 33, 40, 34], [90, 50, 200, 200], [300, 0, 310, 10]], np.float32
    )
    t = cell_targets(boxes, (4, 6), 16)
    expected = np.zeros((4, 6), np.float32)
    expected[0, 0] = 1
    expected[2, 1:3] = 1
    expected[3, 5] = 1
    np.testing.assert_array_equal(t.numpy(), expected)


def test_object_coverage_and_recall() -> None:
    cells = np.zeros((4, 4), bool)
    cells[0, 0] = True
    boxes = np.array([[0, 0, 16, 16], [8, 0, 24, 16], [40, 40, 50, 50]], np.float32)
    np.testing.assert_allclose(object_coverage(cells, 16, boxes), [1.0, 0.5, 0.0])
    res = make_mask(MaskConfig(name="all"))(np.zeros((64, 64, 3), np.uint8))
    assert mask_recall(res, boxes) == 1.0
    point = pooled_recall([res], [Frame(np.zeros((64, 64, 3), np.uint8), boxes)])
    assert (point.recall, point.active, point.n_objects) == (1.0, 1.0, 3)


def _objects_scene(seed: int) -> Frame:
    rng = np.random.default_rng(seed)
    img = np.full((256, 256, 3), 100, np.uint8) + rng.integers(0, 4, (256, 256, 3), dtype=np.uint8)
    boxes = []
    for _ in range(6):
        y, x = rng.integers(8, 240, 2)
        img[y : y + 8, x : x + 8] = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        boxes.append([x, y, x + 8, y + 8])
    return Frame(img, np.array(boxes, np.float32))


def test_mask_net_learns_small_objects_and_calibrates() -> None:
    torch.manual_seed(0)
    frames = [_objects_scene(s) for s in range(4)]
    feats = batch_features([f.image for f in frames])
    targets = torch.stack([cell_targets(f.boxes, (16, 16), 16) for f in frames])
    net = MaskNet()
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    first = None
    for _ in range(60):
        loss = mask_net_loss(net(feats), targets)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first
    settle_batchnorm(net, [feats])
    thr = calibrate_threshold(net, frames, MaskConfig(context=0), target=0.95)
    assert float(net.threshold) == pytest.approx(thr)
    res = [make_mask(MaskConfig(name="learned", context=0), mask_net=net)(f.image) for f in frames]
    point = pooled_recall(res, frames)
    assert point.recall >= 0.95 and point.active < 0.5


def test_learned_scores_depend_on_nearby_pixels_only_not_on_the_tile() -> None:
    """The learned mask has no image-wide statistics: a cell's score is the same in a tile
    and in the whole frame once the tile edge is beyond the net's receptive field."""
    torch.manual_seed(0)
    net = MaskNet().eval()
    image = scene(640, 640, n_objects=40, seed=3)
    mask = make_mask(MaskConfig(name="learned"), mask_net=net)
    whole = mask(image).scores
    tile = mask(image[128:, 128:]).scores  # offset of 8 cells; same bottom/right edge
    np.testing.assert_allclose(tile[12:, 12:], whole[20:, 20:], atol=1e-5)
    assert not np.allclose(tile[0], whole[8, 8:])  # the tile's own edge does differ
