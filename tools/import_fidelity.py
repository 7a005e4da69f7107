"""Does the imported sparse model reproduce Ultralytics' dense YOLOv8 predictions?

Runs on the real shared VisDrone images with ../shared/weights/yolov8n.pt and prints:
* mask=all: max |box difference| against Ultralytics' own DetectionModel forward + NMS on the
  same zero-padded full-resolution tensor (should be ~0: same function, same weights);
* mask=gradient: the fraction of the dense detections the sparse run recovers (IoU >= 0.5,
  same class) and how many of the misses lie outside the active cells or near a window edge.

Usage: python tools/import_fidelity.py [--weights W] [IMAGE ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision
from ultralytics import YOLO
from ultralytics.utils.nms import non_max_suppression

from sparse_yolo import Detector

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def ultralytics_reference(weights: Path, image: np.ndarray, conf: float, iou: float) -> np.ndarray:
    """(N, 6) detections of Ultralytics' dense model on the zero-padded image."""
    model = YOLO(str(weights)).model.float().eval()
    h, w = image.shape[:2]
    x = torch.from_numpy(image[:, :, ::-1].copy()).permute(2, 0, 1).float()[None] / 255
    x = torch.nn.functional.pad(x, (0, -w % 32, 0, -h % 32))
    with torch.inference_mode():
        preds = model(x)[0]
    return non_max_suppression(preds, conf, iou, max_det=3000)[0].numpy()


def match(a: np.ndarray, b: np.ndarray, iou: float = 0.5) -> np.ndarray:
    """Bool per row of b: recovered by a box of a (same class, IoU >= iou)."""
    if not len(a) or not len(b):
        return np.zeros(len(b), bool)
    ious = torchvision.ops.box_iou(torch.from_numpy(b[:, :4]), torch.from_numpy(a[:, :4])).numpy()
    ious[b[:, 5:6] != a[None, :, 5]] = 0
    return ious.max(1) >= iou


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("images", nargs="*", type=Path)
    ap.add_argument("--weights", type=Path, default=SHARED / "weights" / "yolov8n.pt")
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--iou", type=float, default=0.7)
    args = ap.parse_args()
    torch.set_num_threads(2)
    images = args.images or sorted((SHARED / "data" / "visdrone" / "images").glob("*.jpg"))
    over = {"post.conf": args.conf, "post.iou": args.iou}
    for path in images:
        image = cv2.imread(str(path))
        ref = ultralytics_reference(args.weights, image, args.conf, args.iou)
        full = Detector(args.weights, backend="gather", mask="all", **over).predict(image)
        got = np.concatenate([full.boxes, full.scores[:, None], full.classes[:, None]], 1)
        same = len(got) == len(ref) and np.array_equal(got[:, 5], ref[:, 5])
        diff = np.abs(got[:, :5] - ref[:, :5]).max() if same and len(ref) else float("nan")
        print(
            f"{path.name}: mask=all {len(got)} vs ultralytics {len(ref)} dets, "
            f"same classes/order={same}, max |diff| (box px, score) = {diff:.2e}"
        )
        sparse = Detector(args.weights, backend="gather", mask="gradient", **over).predict(image)
        got = np.concatenate([sparse.boxes, sparse.scores[:, None], sparse.classes[:, None]], 1)
        hit = match(got, ref)
        cells = sparse.mask.cells
        c = sparse.mask.cell
        cy = ((ref[:, 1] + ref[:, 3]) / 2 // c).astype(int)
        cx = ((ref[:, 0] + ref[:, 2]) / 2 // c).astype(int)
        inactive = ~cells[cy, cx]
        print(
            f"  mask=gradient: active {sparse.stats.active_fraction:.1%}, windows "
            f"{sparse.stats.n_windows} ({sparse.stats.window_fraction:.1%} of frame), "
            f"recovers {hit.mean():.1%} of {len(ref)} dense dets; misses: "
            f"{int((~hit & inactive).sum())} centred on inactive cells, "
            f"{int((~hit & ~inactive).sum())} on active cells (border/context effects)"
        )


if __name__ == "__main__":
    main()
