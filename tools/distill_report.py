"""Report on a distilled slim-neck checkpoint against its teacher (no labels needed).

Prints, on the given images (use images the student did not train on):

* agreement: recall of the teacher's full-resolution detections (conf 0.25, IoU >= 0.5, same
  class) by the student, dense (mask ``all``) and with its learned mask; the teacher with the
  ``gradient`` mask for comparison;
* the learned mask's recall of the teacher's detections and active fraction, next to the
  ``gradient`` mask's (the stored threshold is used unless ``--calibrate``);
* GFLOPs and parameters of the slim neck against the pan neck at 640 x 640.

``sparse-yolo distill`` prints the same report at the end of a run and stores it in the
checkpoint (``torch.load(path)["distill"]``).

Usage: python tools/distill_report.py --teacher yolov8n.pt --student slim.pt IMAGE [IMAGE ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from sparse_yolo.model.loading import load_model
from sparse_yolo.train.distill import DistillConfig
from sparse_yolo.train.distill_report import build_report
from sparse_yolo.train.spec import fetch_weights

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("images", nargs="*", type=Path)
    ap.add_argument("--teacher", type=Path, default=SHARED / "weights" / "yolov8n.pt")
    ap.add_argument("--student", type=Path, required=True)
    ap.add_argument("--calibrate", action="store_true", help="re-calibrate the mask threshold")
    args = ap.parse_args()
    torch.set_num_threads(2)
    images = args.images or sorted((SHARED / "data" / "visdrone" / "images").glob("*.jpg"))
    teacher, student = load_model(fetch_weights(args.teacher)), load_model(args.student)
    cfg = DistillConfig(teacher=str(args.teacher), images="", out="")
    build_report(teacher, student, images, cfg, held_out=True, calibrate=args.calibrate)


if __name__ == "__main__":
    main()
