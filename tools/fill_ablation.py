"""What the background fill and the window margin buy: recall with a perfect mask.

The mask is made of the dense full-resolution detections themselves (the cells their boxes
touch, plus ``context`` cells), so every miss comes from how skipped sites are represented,
not from the mask. For each fill (``zero``: skipped sites read zeros; ``flat``: the stem's
response to a flat image of the frame's mean colour) and window margin, it prints the active
and windowed shares, the share of the dense detections recovered (R@full) and the GT-recall
ratio against dense, on the synthetic 4K frames of :mod:`sparse_yolo.bench.scenes`, and the speed-up
over the engine computing every cell (``mask=all``, ``backend=dense``; itself faster than plain
dense YOLOv8 through the candidate-only head): what an object-selective mask would buy.

Usage: python tools/fill_ablation.py [--scene urban|sparse] [--seed 0] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import torch
from _shared import shared_dir

from sparse_yolo.bench.scenes import sparse_scene, urban_scene
from sparse_yolo.detector import Detector
from sparse_yolo.eval.labels import GroundTruth
from sparse_yolo.eval.metrics import evaluate, match_recall
from sparse_yolo.masks import MaskResult, cell_grid

CELL = 16


def oracle_cells(boxes: np.ndarray, hw: tuple[int, int], context: int) -> np.ndarray:
    """(Hc, Wc) bool: cells touched by ``boxes`` (xyxy px), dilated by ``context`` cells."""
    cells = np.zeros(cell_grid(hw[0], hw[1], CELL), np.uint8)
    for x1, y1, x2, y2 in boxes:
        cells[int(y1 // CELL) : int(y2 // CELL) + 1, int(x1 // CELL) : int(x2 // CELL) + 1] = 1
    if context:
        cells = cv2.dilate(cells, np.ones((3, 3), np.uint8), iterations=context)
    return cells.astype(bool)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scene", choices=["urban", "sparse"], default="urban")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    weights = shared_dir() / "weights" / "yolov8n.pt"
    scene = urban_scene if args.scene == "urban" else sparse_scene
    image, boxes, classes = scene(args.seed, data_dir=shared_dir())
    gt = GroundTruth(boxes, classes)
    dense = Detector(weights, "dense", "all", device="cpu")
    dense.predict_array(image)  # warm-up
    t0 = time.perf_counter()
    ref = dense.predict_array(image).detections
    dense_ms = (time.perf_counter() - t0) * 1e3
    ref_recall = evaluate(ref, gt)["all"]["recall"]
    print(
        f"{args.scene} frame, seed {args.seed}: dense full resolution finds {len(ref)} objects "
        f"in {dense_ms:.0f} ms (speed-up: one timed run after a warm-up, same process)"
    )
    print("context  fill  margin  active  windows  R@full  GT-recall ratio  speed-up")
    for context in (0, 1, 2):
        cells = oracle_cells(ref.boxes, image.shape[:2], context)
        for fill in ("zero", "flat"):
            for margin in (8, 2):
                cfg = {"window.fill": fill, "window.margin": margin, "mask.cell": CELL}
                det = Detector(dense.model, "gather", device="cpu", **cfg)
                det.mask = lambda img, valid=None, c=cells: MaskResult(
                    c, c.astype(np.float32), CELL
                )
                det.predict_array(image)  # warm-up
                t0 = time.perf_counter()
                res = det.predict_array(image)
                speed = dense_ms / ((time.perf_counter() - t0) * 1e3)
                ratio = evaluate(res.detections, gt)["all"]["recall"] / ref_recall
                print(
                    f"{context:7d}  {fill:4s}  {margin:6d}  {cells.mean():6.1%}  "
                    f"{res.stats.window_fraction:7.1%}  {match_recall(res.detections, ref):6.3f}"
                    f"  {ratio:15.3f}  {speed:7.2f}x",
                    flush=True,
                )


if __name__ == "__main__":
    main()
