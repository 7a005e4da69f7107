"""Train the learned mask by distillation from the dense detector; judge it on unseen pixels.

Targets: the cells of each frame's labelled objects and of the dense teacher's detections
(YOLOv8n at full resolution, ``--mask all``, conf --teacher-conf, so borderline objects
count). The textures (forest, snowy hills, Landsat) are object-free: the teacher finds
nothing on them even at conf 0.1, and the OSBS tree-crown labels are not objects of the
detector, so their cells are background.

Split (nothing of an eval region is used in any form: not for training, pasting or
calibration):

* ``train``: the whole frame trains (VisDrone 0000072);
* ``eval``: the whole frame is held out (VisDrone 0000300, small-vehicles1.jpeg);
* ``halves``: the left half (to a 32 px boundary) trains, the right half is held out (DOTA
  P1888, boats.jpg, OSBS_029, cogeo, RGB.byte, sample_pan16).

Training crops are random crops of the train regions and synthetic crops
(:mod:`sparse_yolo.train.synth`): the train regions' objects (labelled or teacher-found)
pasted on the textures' train halves. The threshold is calibrated to --target recall on the
train regions and fresh synthetic frames. Prints, for every held-out region, cells marked
and objects covered (box centre in an active cell; objects are the labels plus the dense
detections at conf 0.25) by the learned mask and by ``gradient`` (same process), and the
pooled coverage against cells marked over a sweep of cell probabilities. Writes the net to
-o (``sparse-yolo detect --mask learned:PATH``).

Usage:
  nice -n 19 env PYTHONPATH=$PWD python tools/mask_learn.py [--steps 2500] [-o masknet.pt]
  nice -n 19 env PYTHONPATH=$PWD python tools/mask_learn.py --evaluate sparse_yolo/masks/masknet.pt
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from _shared import shared_dir
from mask_bench import read_frames

from sparse_yolo.config import MaskConfig
from sparse_yolo.detector import Detector
from sparse_yolo.masks import make_mask
from sparse_yolo.masks.measure import centres_covered
from sparse_yolo.model.loading import load_model
from sparse_yolo.model.masknet import load_mask_net, save_mask_net
from sparse_yolo.train.maskfit import FitConfig, Frame, calibrate_threshold, finish, fit_mask_net
from sparse_yolo.train.synth import Composer, object_crops

SPLIT = {
    "0000072_00000": "train",
    "0000300_00601": "eval",
    "small-vehicles1": "eval",
    "P1888": "halves",
    "boats": "halves",
    "OSBS_029": "halves",
    "cogeo": "halves",
    "RGB.byte": "halves",
    "sample_pan16": "halves",
}
TEXTURES = ("OSBS_029", "cogeo", "RGB.byte")  # the teacher finds nothing there at conf 0.1
NOT_OBJECTS = ("OSBS_029",)  # tree-crown labels: not objects of the detector
PROBS = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]  # cell probabilities of the sweep


@dataclass
class Region:
    """Part of a frame: (H, W, 3) uint8 BGR, (H, W) bool valid, (N, 4) xyxy training targets
    and references."""

    name: str
    image: np.ndarray
    valid: np.ndarray
    targets: np.ndarray
    refs: np.ndarray
    texture: bool

    def cut(self, name: str, x0: int, x1: int, y0: int = 0, y1: int | None = None) -> Region:
        """Columns [x0, x1) and rows [y0, y1); boxes whose centre lies inside, shifted and
        clipped."""
        y1 = self.image.shape[0] if y1 is None else y1

        def inside(b: np.ndarray) -> np.ndarray:
            cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
            keep = (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)
            b = b[keep] - np.array([x0, y0, x0, y0], np.float32)
            b[:, [0, 2]] = b[:, [0, 2]].clip(0, x1 - x0)
            b[:, [1, 3]] = b[:, [1, 3]].clip(0, y1 - y0)
            return b

        image = np.ascontiguousarray(self.image[y0:y1, x0:x1])
        valid = np.ascontiguousarray(self.valid[y0:y1, x0:x1])
        return Region(name, image, valid, inside(self.targets), inside(self.refs), self.texture)


def regions(data: Path, weights: Path, conf: float) -> tuple[list[Region], list[Region]]:
    """(train-side regions, held-out regions) of the frames in :data:`SPLIT`."""
    teacher = Detector(load_model(weights), mask="all", device="cpu", **{"post.conf": conf})
    train, held = [], []
    for f in read_frames(data):
        key = next((k for k in SPLIT if k in f.name), None)
        if key is None:
            continue
        dets = teacher.predict_array(f.image, None if f.valid.all() else f.valid).detections
        labels = np.zeros((0, 4), np.float32)
        if f.boxes is not None and key not in NOT_OBJECTS:
            labels = f.boxes.astype(np.float32)
        targets = np.concatenate([labels, dets.boxes.astype(np.float32)])
        refs = np.concatenate([labels, dets.boxes[dets.scores >= 0.25].astype(np.float32)])
        frame = Region(f.name, f.image, f.valid, targets, refs, key in TEXTURES)
        w = f.image.shape[1]
        mid = (w // 2) // 32 * 32
        if SPLIT[key] in ("train", "eval"):
            (train if SPLIT[key] == "train" else held).append(frame)
        else:
            train.append(frame.cut(f.name + " [left]", 0, mid))
            held.append(frame.cut(f.name + " [right]", mid, w))
        print(f"{f.name}: {SPLIT[key]}, {len(labels)} labels, {len(dets)} teacher boxes")
    return train, held


def evaluate(net, held: list[Region], cell: int) -> None:
    """Per held-out region, then pooled: cells marked and references covered."""
    learned = make_mask(MaskConfig(name="learned", cell=cell), mask_net=net)
    gradient = make_mask(MaskConfig(name="gradient", cell=cell))
    print("\n| held-out region | objects | learned cells | covered | gradient cells | covered |")
    print("|---|---|---|---|---|---|")
    scores = []
    for r in held:
        row = [r.name, str(len(r.refs))]
        valid = None if r.valid.all() else r.valid
        for m in (learned, gradient):
            res = m(r.image, valid)
            hit = centres_covered(res.cells, cell, r.refs)
            row += [f"{res.active_fraction:.1%}", f"{hit.mean():.1%}" if len(hit) else "-"]
        scores.append(learned.valid_scores(r.image, valid))
        print("| " + " | ".join(row) + " |")
    print("\npooled over held-out regions: cell probability -> objects covered, cells marked")
    print("(all regions; texture regions only)")
    for p in PROBS:
        m = make_mask(
            MaskConfig(name="learned", cell=cell, threshold=p / float(net.threshold)), mask_net=net
        )
        hits = n = act = tot = tex_act = tex_tot = 0
        for r, sc in zip(held, scores, strict=True):
            cells = finish(m, sc).cells
            hits += int(centres_covered(cells, cell, r.refs).sum())
            n += len(r.refs)
            act, tot = act + int(cells.sum()), tot + cells.size
            if r.texture:
                tex_act, tex_tot = tex_act + int(cells.sum()), tex_tot + cells.size
        print(
            f"  {p:4.2f}  covered {hits / max(n, 1):.3f} of {n}, cells {act / tot:.3f}; "
            f"texture cells {tex_act / max(tex_tot, 1):.3f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=shared_dir() / "data")
    ap.add_argument("--weights", type=Path, default=shared_dir() / "weights" / "yolov8n.pt")
    ap.add_argument("--teacher-conf", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--pos-weight", type=float, default=4.0)
    ap.add_argument("--synthetic", type=float, default=0.5, help="share of synthetic crops")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--target", type=float, default=0.97, help="calibrated recall")
    ap.add_argument("--cell", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("-o", "--output", type=Path, default=Path("masknet.pt"))
    ap.add_argument(
        "--evaluate",
        type=Path,
        metavar="NET",
        help="only judge this saved net (e.g. the shipped one)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    train_side, held = regions(args.data, args.weights, args.teacher_conf)
    if args.evaluate:
        evaluate(load_mask_net(args.evaluate), held, args.cell)
        return
    train, calib_strips = [], []
    for r in train_side:  # the bottom quarter calibrates the threshold, unseen by training
        h, w = r.image.shape[:2]
        cut_at = (h * 3 // 4) // 32 * 32
        train.append(r.cut(r.name, 0, w, 0, cut_at))
        calib_strips.append(r.cut(r.name + " [calibration]", 0, w, cut_at, h))
    frames = [Frame(r.image, r.targets, r.name) for r in train]
    textures = [r.image for r in train if r.texture]
    crops = object_crops(frames)
    print(f"{len(crops)} objects from {len(frames)} train regions; {len(textures)} textures")
    cfg = FitConfig(
        steps=args.steps,
        batch=args.batch,
        pos_weight=args.pos_weight,
        synthetic=args.synthetic,
        scale=(0.6, 1.6),
    )
    t0 = time.perf_counter()
    from sparse_yolo.model.masknet import MaskNet  # noqa: PLC0415

    net = fit_mask_net(frames, cfg, Composer(textures, crops), net=MaskNet(args.width))
    calib = [Frame(r.image, r.targets, r.name) for r in calib_strips]
    thr = calibrate_threshold(net, calib, MaskConfig(cell=args.cell), target=args.target)
    print(f"trained {args.steps} steps in {time.perf_counter() - t0:.0f} s; threshold {thr:.3f}")
    save_mask_net(
        net, args.output, split=SPLIT, textures=list(TEXTURES), teacher_conf=args.teacher_conf
    )
    evaluate(net, held, args.cell)


if __name__ == "__main__":
    main()
