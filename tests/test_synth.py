"""Synthetic mask-training frames: pasted objects land inside their boxes, texture stays."""

from __future__ import annotations

import numpy as np

from sparse_yolo.train.maskfit import Frame
from sparse_yolo.train.synth import object_crops, paste_frame, synthetic_frames


def labelled_frame() -> Frame:
    image = np.full((200, 300, 3), 60, np.uint8)
    image[40:60, 50:90] = (250, 240, 230)  # a 40 x 20 bright "car"
    image[120:126, 200:204] = (20, 20, 220)  # a 4 x 6 red "person"
    image[10:15, 10:300] = 255  # a 5 px high line: too thin for min_side=6 below
    boxes = np.array([[50, 40, 90, 60], [200, 120, 204, 126], [0, 10, 300, 15]], np.float32)
    return Frame(image, boxes, "toy")


def test_object_crops_keep_the_box_in_patch_pixels():
    crops = object_crops([labelled_frame()], min_side=3, max_side=100)
    assert len(crops) == 2  # the 300 px line is over max_side
    car = crops[0]
    x0, y0, x1, y1 = car.box.astype(int)
    assert (car.patch[y0:y1, x0:x1] == (250, 240, 230)).all()
    assert (car.patch[: y0 - 1] == 60).all() and (car.patch[y1 + 1 :] == 60).all()


def test_pasted_objects_lie_inside_their_boxes_and_texture_is_untouched():
    crops = object_crops([labelled_frame()], min_side=3, max_side=100)
    rng = np.random.default_rng(4)
    texture = np.full((600, 700, 3), 100, np.uint8)
    seen = 0
    for _ in range(12):
        frame = paste_frame(texture, crops, rng, size=256)
        changed = np.abs(frame.image.astype(int) - 100).max(-1) > 40  # object pixels
        inside = np.zeros_like(changed)
        for x0, y0, x1, y1 in frame.boxes:
            inside[
                max(int(y0) - 1, 0) : int(np.ceil(y1)) + 1,
                max(int(x0) - 1, 0) : int(np.ceil(x1)) + 1,
            ] = True
        assert not (changed & ~inside).any()
        seen += len(frame.boxes)
        for x0, y0, x1, y1 in frame.boxes:  # every box holds its object
            assert changed[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))].any()
    assert seen > 12


def test_synthetic_frames_are_deterministic():
    crops = object_crops([labelled_frame()])
    tex = [np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)]
    a, b = (
        synthetic_frames(tex, crops, 3, seed=7, size=128),
        synthetic_frames(tex, crops, 3, seed=7, size=128),
    )
    for fa, fb in zip(a, b, strict=True):
        np.testing.assert_array_equal(fa.image, fb.image)
        np.testing.assert_array_equal(fa.boxes, fb.boxes)


def test_mask_net_trained_on_composites_finds_new_pasted_objects():
    """fit_mask_net with a Composer: objects pasted on a noisy texture are learned, and found
    on composites of another seed, while most of the texture stays unmarked."""
    import torch

    from sparse_yolo.config import MaskConfig
    from sparse_yolo.masks import make_mask
    from sparse_yolo.train.maskfit import (
        FitConfig,
        calibrate_threshold,
        fit_mask_net,
        pooled_recall,
    )
    from sparse_yolo.train.synth import Composer

    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    texture = (110 + rng.normal(0, 6, (512, 512, 3))).clip(0, 255).astype(np.uint8)
    patches = [rng.integers(0, 255, (10, 10, 3), dtype=np.uint8) for _ in range(8)]
    crops = object_crops([Frame(np.concatenate(patches, 1), _grid_boxes(len(patches)))])
    compose = Composer([texture], crops, max_objects=4)
    cfg = FitConfig(steps=80, crop=128, batch=8, lr=5e-3, pos_weight=4.0, synthetic=1.0)
    net = fit_mask_net([], cfg, compose)
    fresh = [compose(np.random.default_rng(100 + i), 256) for i in range(12)]  # 13 objects
    calibrate_threshold(net, fresh[:3], MaskConfig(context=0), target=0.9)
    mask = make_mask(MaskConfig(name="learned", context=0), mask_net=net)
    point = pooled_recall([mask(f.image) for f in fresh[3:]], fresh[3:])
    assert point.n_objects > 0 and point.recall >= 0.9 and point.active < 0.3


def _grid_boxes(n: int) -> np.ndarray:
    """Boxes of n 10 px patches laid side by side (xyxy)."""
    return np.array([[10 * i + 1, 1, 10 * i + 9, 9] for i in range(n)], np.float32)
