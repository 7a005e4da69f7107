"""Train the learned mask on real objects pasted over real texture; judge it on unseen frames.

Training data (:mod:`sparse_yolo.train.synth`): the labelled objects of the --objects frames,
cut out and pasted at random scales and angles onto random crops of the --textures frames
(object-free imagery), plus those labelled frames themselves. The threshold is calibrated
to --target recall on fresh synthetic frames (another seed). Every other frame under --data
(and the 4K urban mosaic) is unseen: for each, the reference objects are its labels, or the
dense detector's detections where it has none (the textured 4K frame's objects come from a
VisDrone frame and its texture from cogeo.tif, neither used in training), and an object counts as covered when its
centre lies in an active cell (as in ``tools/mask_bench.py``).

Prints, per unseen frame, cells marked and objects covered at the calibrated threshold, and
the pooled coverage against active fraction over a sweep of threshold scales. Writes the
net to -o (use it with ``sparse-yolo detect --mask learned:PATH``).

Usage:
  flock /tmp/sparse-yolo-bench.lock env PYTHONPATH=$PWD python tools/mask_learn.py \\
      [--steps 600] [--synthetic 96] [--threshold P] [-o masknet.pt]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from _shared import shared_dir
from mask_bench import Frame as BenchFrame
from mask_bench import mosaic_frame, read_frames, textured_frame

from sparse_yolo.config import MaskConfig
from sparse_yolo.detector import Detector
from sparse_yolo.masks import make_mask
from sparse_yolo.masks.measure import centres_covered
from sparse_yolo.model.loading import load_model
from sparse_yolo.model.masknet import save_mask_net
from sparse_yolo.train.maskfit import Frame, calibrate_threshold, finish, fit_mask_net
from sparse_yolo.train.synth import object_crops, synthetic_frames

OBJECTS = ["0000072_00000", "P1888"]
TEXTURES = ["OSBS_029", "RGB.byte"]
PROBS = [0.05, 0.1, 0.2, 0.3, 0.5, 0.7]  # cell probability thresholds of the sweep


def pick(frames: list[BenchFrame], keys: list[str]) -> list[BenchFrame]:
    return [f for f in frames if any(k in f.name for k in keys)]


def references(frames: list[BenchFrame], weights: Path) -> list[np.ndarray]:
    """Labels where a frame has them, else the dense detector's boxes."""
    dense = Detector(load_model(weights), mask="all", device="cpu")
    out = []
    for f in frames:
        if f.boxes is not None:
            out.append(f.boxes)
        else:
            out.append(
                dense.predict_array(f.image, None if f.valid.all() else f.valid).detections.boxes
            )
    return out


def evaluate(net, frames: list[BenchFrame], refs: list[np.ndarray], cell: int) -> None:
    mask = make_mask(MaskConfig(name="learned", cell=cell), mask_net=net)
    scores = []
    print("| unseen frame | cells | covered | mask ms |\n|---|---|---|---|")
    for f, ref in zip(frames, refs, strict=True):
        valid = None if f.valid.all() else f.valid
        t0 = time.perf_counter()
        res = mask(f.image, valid)
        ms = 1000 * (time.perf_counter() - t0)
        scores.append(res.scores)
        hit = centres_covered(res.cells, cell, ref)
        cov = f"{hit.mean():.1%} of {len(hit)}" if len(hit) else "-"
        print(f"| {f.name} | {res.active_fraction:.1%} | {cov} | {ms:.0f} |")
    print("\npooled over unseen frames: cell probability -> objects covered / cells marked")
    for p in PROBS:
        scale = p / float(net.threshold)
        m = make_mask(MaskConfig(name="learned", cell=cell, threshold=scale), mask_net=net)
        hits = n = act = tot = 0
        for ref, sc in zip(refs, scores, strict=True):
            cells = finish(m, sc).cells
            hits += int(centres_covered(cells, cell, ref).sum())
            n += len(ref)
            act += int(cells.sum())
            tot += cells.size
        print(f"  {p:5.2f}  {hits / max(n, 1):.3f} / {act / tot:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=shared_dir() / "data")
    ap.add_argument("--weights", type=Path, default=shared_dir() / "weights" / "yolov8n.pt")
    ap.add_argument("--objects", nargs="+", default=OBJECTS, help="labelled frames to cut from")
    ap.add_argument("--textures", nargs="+", default=TEXTURES, help="object-free frames")
    ap.add_argument("--synthetic", type=int, default=96, help="synthetic 512 px frames")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--target", type=float, default=0.97, help="calibrated recall")
    ap.add_argument(
        "--threshold", type=float, help="store this cell probability instead of calibrating"
    )
    ap.add_argument("--cell", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("-o", "--output", type=Path, default=Path("masknet.pt"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    frames = read_frames(args.data) + [mosaic_frame(0), textured_frame(args.data, 0)]
    labelled = [Frame(f.image, f.boxes, f.name) for f in pick(frames, args.objects)]
    textures = [f.image for f in pick(frames, args.textures)]
    seen = {f.name for f in pick(frames, args.objects + args.textures)}
    unseen = [f for f in frames if f.name not in seen and "RGBA" not in f.name]  # RGBA = RGB
    crops = object_crops(labelled)
    print(f"{len(crops)} objects from {len(labelled)} frames; {len(textures)} textures")
    train = synthetic_frames(textures, crops, args.synthetic, seed=0) + labelled
    t0 = time.perf_counter()
    net = fit_mask_net(train, steps=args.steps, seed=0)
    if args.threshold is None:
        calib = synthetic_frames(textures, crops, 32, seed=1)
        thr = calibrate_threshold(net, calib, MaskConfig(cell=args.cell), target=args.target)
    else:
        thr = args.threshold
        net.threshold.fill_(thr)
    print(f"trained {args.steps} steps in {time.perf_counter() - t0:.0f} s; threshold {thr:.3f}")
    save_mask_net(net, args.output, objects=args.objects, textures=args.textures)
    evaluate(net, unseen, references(unseen, args.weights), args.cell)


if __name__ == "__main__":
    main()
