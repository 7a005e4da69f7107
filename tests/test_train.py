"""Training through Ultralytics' machinery: model YAMLs, the wrapper, VisDrone, a smoke run."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import scene, tiny_model
from torch import nn
from ultralytics.cfg import get_cfg

from sparse_yolo import Detector, SparseYoloError
from sparse_yolo.cli import main
from sparse_yolo.config import MaskConfig, ModelConfig
from sparse_yolo.model.loading import load_model
from sparse_yolo.model.yolo import SparseYOLO
from sparse_yolo.train.model import SparseDetectionModel
from sparse_yolo.train.spec import ModelSpec, build_model, load_model_spec
from sparse_yolo.train.trainer import TrainConfig, train
from sparse_yolo.train.visdrone import build_visdrone_dataset

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
VISDRONE_NAMES = ("pedestrian", "people", "bicycle", "car", "van")


@pytest.mark.parametrize("name", ["sparse-yolov8n.yaml", "sparse-yolov8n-slim.yaml"])
def test_shipped_model_yamls_load(name: str) -> None:
    spec = load_model_spec(CONFIGS / name)
    assert spec.scale == "n" and spec.nc is None
    assert spec.model_config(VISDRONE_NAMES).nc == len(VISDRONE_NAMES)


def test_model_yaml_rejects_unknown_keys(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("scale: n\nneck: pan\nwidth: 3\n")
    with pytest.raises(SparseYoloError, match="unknown keys"):
        load_model_spec(bad)
    bad.write_text("scale: q\n")
    with pytest.raises(SparseYoloError, match="has no scale .q."):
        load_model_spec(bad)


def test_new_classes_reinit_only_the_class_branch() -> None:
    source = tiny_model(nc=3)
    model, fresh = build_model(ModelSpec(scale="tiny"), VISDRONE_NAMES, source)
    assert model.cfg.nc == 5 and model.names[4] == "van"
    src, own = source.state_dict(), model.state_dict()
    for key, value in own.items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.startswith("head.cv3."):
            assert src[key].shape != value.shape or not torch.equal(src[key], value)
        else:
            assert torch.equal(src[key], value), key
    same, none_fresh = build_model(ModelSpec(scale="tiny"), tuple(source.cfg.names), source)
    assert all(
        torch.equal(a, b) for a, b in zip(src.values(), same.state_dict().values(), strict=True)
    )
    assert none_fresh == [] and fresh and all(k.startswith("head.cv3.") for k in fresh)


def _wrapper(mask: str = "gradient", mask_net: bool = False) -> SparseDetectionModel:
    torch.manual_seed(0)
    net = SparseYOLO(ModelConfig(scale="tiny", nc=3, mask_net=mask_net))
    model = SparseDetectionModel(net, MaskConfig(name=mask))
    model.args = get_cfg()
    return model


def _batch() -> dict:
    img = np.stack([scene(128, 160, seed=s) for s in range(2)])
    x = torch.from_numpy(img[..., ::-1].copy()).permute(0, 3, 1, 2).float() / 255
    boxes = torch.tensor([[0.3, 0.3, 0.1, 0.1], [0.6, 0.5, 0.12, 0.1], [0.5, 0.5, 0.2, 0.2]])
    return {
        "img": x,
        "bboxes": boxes,
        "cls": torch.tensor([[0.0], [1.0], [2.0]]),
        "batch_idx": torch.tensor([0.0, 0.0, 1.0]),
    }


def test_wrapper_quacks_like_a_detection_model() -> None:
    model = _wrapper(mask_net=True)
    assert model.model[-1] is model.net.head and model.nc == 3
    model.train()
    stem_bn = [m for m in model.net.stem.modules() if isinstance(m, nn.BatchNorm2d)]
    assert stem_bn and not any(m.training for m in stem_bn)  # sparse stem: running stats
    assert model.net.neck.training
    raw = model(_batch()["img"])
    assert set(raw) == {"boxes", "scores", "feats"}
    loss, items = model(_batch())
    assert loss.shape == (4,) and set(items) == {"box_loss", "cls_loss", "dfl_loss", "mask_loss"}
    model.eval()
    decoded, raw = model(_batch()["img"])
    assert decoded.shape[:2] == (2, 4 + 3)
    clone = pickle.loads(pickle.dumps(model))
    assert isinstance(clone, SparseDetectionModel) and copy.deepcopy(model).net is not model.net


def test_training_sees_the_sparse_function() -> None:
    """Inactive cells contribute nothing: the masked forward ignores pixels outside them."""
    model = _wrapper("gradient").eval()
    x = _batch()["img"][:1]
    cells = model.batch_cells([np.zeros((128, 160, 3), np.uint8)], x.device)
    assert not cells.any()  # a flat frame activates no cell
    out = model.net(x, cells=cells)[0]
    noisy = model.net(x + torch.rand_like(x), cells=cells)[0]
    torch.testing.assert_close(out, noisy)


def test_loss_decreases_on_a_fixed_batch(shared: Path) -> None:
    """yolov8n imported for 3 new classes, masked by the gradient mask, on two real crops."""
    torch.manual_seed(0)
    net, _ = build_model(ModelSpec(scale="n"), ("a", "b", "c"), shared / "weights" / "yolov8n.pt")
    model = SparseDetectionModel(net, MaskConfig(name="gradient"))
    model.args = get_cfg()
    model.train()
    frame = cv2.imread(str(shared / "data" / "visdrone" / "images" / "0000072_00000_d_0000001.jpg"))
    crops = np.stack([frame[:256, :256], frame[-256:, -256:]])
    batch = {**_batch(), "img": torch.from_numpy(crops[..., ::-1].copy()).permute(0, 3, 1, 2) / 255}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(6):
        loss, _ = model(batch)
        losses.append(float(loss.sum().detach()))
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
    assert all(b < a for a, b in zip(losses[:-1], losses[1:], strict=True)), losses
    assert losses[-1] < 0.7 * losses[0], losses


def test_visdrone_conversion_matches_the_raw_annotations(tmp_path: Path, shared: Path) -> None:
    raw = shared / "data" / "visdrone"
    data = build_visdrone_dataset(
        sorted((raw / "images").glob("*.jpg")), raw / "annotations", tmp_path
    )
    for ann in sorted((raw / "annotations").glob("*.txt")):
        width, height = cv2.imread(str(raw / "images" / f"{ann.stem}.jpg")).shape[1::-1]
        rows = [[int(v) for v in r.split(",")[:6]] for r in ann.read_text().split()]
        kept = [r for r in rows if r[4] != 0 and 1 <= r[5] <= 10]  # as Ultralytics' visdrone2yolo
        labels = (tmp_path / "labels" / "train" / ann.name).read_text().splitlines()
        assert len(labels) == len(kept) > 0
        got = np.array([[float(v) for v in ln.split()] for ln in labels])
        x, y, w, h, _, cat = np.array(kept, np.float64).T
        want = np.stack(
            [cat - 1, (x + w / 2) / width, (y + h / 2) / height, w / width, h / height], 1
        )
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert "download" not in data.read_text()


@pytest.fixture
def mini_visdrone(tmp_path: Path, shared: Path) -> Path:
    raw = shared / "data" / "visdrone"
    images = sorted((raw / "images").glob("*.jpg"))
    return build_visdrone_dataset(images, raw / "annotations", tmp_path / "VisDrone")


def test_one_epoch_smoke_then_detect(tmp_path: Path, shared: Path, mini_visdrone: Path) -> None:
    cfg = TrainConfig(
        data=str(mini_visdrone),
        model=str(CONFIGS / "sparse-yolov8n.yaml"),
        weights=str(shared / "weights" / "yolov8n.pt"),
        epochs=1,
        imgsz=256,
        batch=2,
        workers=0,
        device="cpu",
        project=str(tmp_path / "runs"),
        ultralytics={"plots": False},
    )
    result = train(cfg)
    assert result.checkpoint == tmp_path / "runs" / "train" / "weights" / "sparse_best.pt"
    model = load_model(result.checkpoint)
    assert model.cfg.nc == 10 and model.names[0] == "pedestrian"
    image = shared / "data" / "visdrone" / "images" / "0000072_00000_d_0000001.jpg"
    res = Detector(result.checkpoint, device="cpu", **{"post.conf": 0.0}).predict(image)
    assert res.stats.image_size == (1360, 765) and len(res) > 0
    assert (res.boxes[:, :2] >= 0).all() and (res.boxes[:, 2] <= 1360).all()
    assert set(res.classes.tolist()) <= set(range(10))
    out = tmp_path / "dets.geojson"
    res = CliRunner().invoke(
        main, ["detect", str(image), "--weights", str(result.checkpoint), "-o", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert out.is_file()


def test_commands_are_registered() -> None:
    for command in ("train", "distill"):
        res = CliRunner().invoke(main, [command, "--help"])
        assert res.exit_code == 0 and "Example" in res.output
    res = CliRunner().invoke(
        main,
        [
            "train",
            "--data",
            "x.yaml",
            "--model",
            str(CONFIGS / "sparse-yolov8n.yaml"),
            "--mask",
            "nope",
        ],
    )
    assert res.exit_code == 1 and "unknown training mask" in res.output


@pytest.mark.parametrize(
    ("name", "arch"),
    [("yolo11n.yaml", "yolo11"), ("yolo26n.yaml", "yolo26"), ("yolov8n-p2.yaml", "yolov8-p2")],
)
def test_other_families_train_from_their_yaml_and_checkpoints(
    tmp_path: Path, name: str, arch: str
) -> None:
    """`--model yolo11n.yaml` (and YOLO26, P2): the spec comes from Ultralytics' YAML name,
    weights import from a saved Ultralytics checkpoint of that family (every tensor but the
    class branches transfers to new classes), and the trainer's loss (YOLO26: its
    end-to-end loss) runs and back-propagates through the masked sparse stem."""
    from families import random_checkpoint

    spec = load_model_spec(name)
    assert (spec.arch, spec.scale) == (arch, "n")
    weights = tmp_path / "best.pt"
    random_checkpoint(weights, name, 80, [scene(128, 160)])
    net, fresh = build_model(spec, ("a", "b", "c"), weights)
    assert fresh and all(k.startswith(("head.cv3.", "head.one2one_cv3.")) for k in fresh)
    source = load_model(weights).state_dict()
    kept = [k for k in net.state_dict() if k not in fresh]
    assert kept and all(torch.equal(net.state_dict()[k], source[k]) for k in kept)
    model = SparseDetectionModel(net, MaskConfig(name="gradient"))
    model.args = get_cfg()
    model.train()
    loss, _ = model(_batch())
    loss.sum().backward()
    stem_grads = [p.grad for p in net.stem.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in stem_grads)
    with pytest.raises(SparseYoloError, match="asks for yolov8 scale"):
        build_model(ModelSpec(scale="n"), ("a",), weights)
