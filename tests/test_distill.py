"""Slim-neck distillation: losses, the student, a short run, the report, the CLI."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import scene, tiny_model

from sparse_yolo import Detector
from sparse_yolo.cli import main
from sparse_yolo.model.loading import load_model
from sparse_yolo.train.distill import DistillConfig, Distiller, backbone_features, build_student
from sparse_yolo.train.images import CropSampler, split_holdout, to_tensor
from sparse_yolo.train.losses import box_kd, class_kd, mimic_loss
from sparse_yolo.train.report import neck_cost


def test_losses_vanish_when_the_student_is_the_teacher() -> None:
    torch.manual_seed(0)
    feats = [torch.randn(2, 8, 4, 4), torch.randn(2, 16, 2, 2)]
    assert float(mimic_loss(feats, feats)) == 0.0
    assert float(mimic_loss([f + 1 for f in feats], feats)) > 0.0
    scores, boxes = torch.randn(2, 3, 20), torch.randn(2, 64, 20)
    assert float(class_kd(scores, scores)) == pytest.approx(0.0, abs=1e-6)
    assert float(class_kd(-scores, scores)) > 0.0
    weight = torch.rand(2, 20)
    assert float(box_kd(boxes, boxes, weight)) == pytest.approx(0.0, abs=1e-6)
    assert float(box_kd(-boxes, boxes, weight)) > 0.0


def test_student_shares_backbone_and_head_not_the_neck() -> None:
    teacher = tiny_model()
    student = build_student(teacher)
    assert student.cfg.neck == "slim" and student.mask_net is not None
    t, s = teacher.state_dict(), student.state_dict()
    assert all(torch.equal(t[k], s[k]) for k in t if k.startswith(("backbone.", "head.")))
    assert not any(
        k.startswith("neck.")
        and k in t
        and t[k].shape == s[k].shape
        and torch.equal(t[k], s[k])
        and t[k].numel() > 1
        for k in s
    )


def test_distillation_reduces_the_mimic_loss() -> None:
    torch.manual_seed(0)
    teacher = tiny_model()
    cfg = DistillConfig(teacher="", images="", out="", lr=3e-3)
    distiller = Distiller(teacher, build_student(teacher), cfg, "cpu")
    fixed = [scene(128, 128, seed=s) for s in range(2)]
    history = [distiller.step(fixed) for _ in range(12)]  # each: the losses before its update
    first, last = history[0], history[-1]
    assert set(first) == {"mimic", "kd_cls", "kd_box", "mask"}
    assert last["mimic"] < 0.7 * first["mimic"], (first, last)
    assert last["mask"] < first["mask"]
    # The frozen backbone did not move: teacher and student still share its features.
    x = to_tensor(fixed)
    torch.testing.assert_close(
        backbone_features(distiller.student, x)[0], backbone_features(teacher, x)[0]
    )


def test_slim_neck_is_cheaper_than_pan() -> None:
    teacher = tiny_model()
    slim, pan = neck_cost(build_student(teacher)), neck_cost(teacher)
    assert slim.kind == "slim" and pan.kind == "pan"
    assert 0 < slim.gflops < pan.gflops and 0 < slim.params < pan.params


def test_holdout_split_and_crops(tmp_path: Path) -> None:
    paths = [tmp_path / f"{i}.png" for i in range(5)]
    train, held = split_holdout(paths, 0.2)
    assert len(held) == 1 and sorted(train + held) == sorted(paths)
    assert split_holdout(paths, 0.2) == (train, held)
    assert split_holdout(paths[:1], 0.5) == (paths[:1], [])
    cv2.imwrite(str(paths[0]), scene(100, 300))
    crops = CropSampler(paths[:1], 128).batch(3)
    assert [c.shape for c in crops] == [(128, 128, 3)] * 3


def test_distill_command_end_to_end(tmp_path: Path, shared: Path) -> None:
    """Real teacher, the two real VisDrone frames (one held out), a few steps."""
    images = tmp_path / "frames"
    images.mkdir()
    for p in (shared / "data" / "visdrone" / "images").glob("*.jpg"):
        (images / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "slim.pt"
    args = [
        "distill",
        "--teacher",
        str(shared / "weights" / "yolov8n.pt"),
        "--images",
        str(images),
        "-o",
        str(out),
        "--steps",
        "2",
        "--imgsz",
        "256",
        "--batch",
        "2",
        "--device",
        "cpu",
    ]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "agreement" in res.output and "GFLOPs" in res.output
    ckpt = torch.load(out, map_location="cpu", weights_only=False)
    report = ckpt["distill"]["report"]
    assert report["held_out"] and len(report["images"]) == 1
    assert report["neck"]["slim"]["gflops"] < report["neck"]["pan"]["gflops"]
    assert 0.0 <= report["mask_learned"]["active"] <= 1.0
    model = load_model(out)
    assert model.cfg.neck == "slim" and model.mask_net is not None
    frame = cv2.imread(str(next(images.glob("*.jpg"))))
    result = Detector(out, mask="learned", device="cpu").predict(frame)
    assert result.stats.mask == "learned" and np.isfinite(result.stats.active_fraction)


def test_slim_student_of_a_yolo11_teacher(tmp_path: Path) -> None:
    """Any backbone width: a YOLO11n teacher (a saved Ultralytics checkpoint) gets a slim
    neck built for its channels; the student runs, learns and round-trips a checkpoint."""
    from families import random_checkpoint

    weights = tmp_path / "yolo11n.pt"
    random_checkpoint(weights, "yolo11n.yaml", 5, [scene(128, 128)])
    teacher = load_model(weights)
    student = build_student(teacher, mask_net=False)
    assert student.neck.kind == "slim" and student.cfg.arch == "yolo11"
    assert [f["num_chs"] for f in student.feature_info] == [128, 128, 256]
    torch.manual_seed(0)
    cfg = DistillConfig(teacher="", images="", out="", lr=3e-3, mask=False)
    distiller = Distiller(teacher, student, cfg, "cpu")
    fixed = [scene(128, 128, seed=s) for s in range(2)]
    history = [distiller.step(fixed) for _ in range(6)]
    assert history[-1]["mimic"] < history[0]["mimic"]
    path = tmp_path / "slim.pt"
    student.eval().save(path)
    loaded = load_model(path)
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x)[0], student(x)[0])
