"""Where the time of one sparse detect goes, stage by stage, on the synthetic 4K frames.

For each frame and backend it runs ``Detector.predict_array`` (--runs times after two
warm-ups, CUDA synchronised at every stage) and prints the median seconds of each stage:
``upload`` (the frame to the GPU), ``mask`` (cell mask), ``plan`` (windows), ``stem``,
``densify`` (fill and window crops), ``remainder`` (dense rest of the network and candidate
head), ``merge`` (NMS) and ``total``. bench_e2e gives the ratios; this says what to fix.

Usage:
  python tools/bench_stages.py [--device cpu|cuda] [--half] [--backends gather dense]
      [--mask gradient] [--runs 5] [--threads N] [--scenes sparse urban] [--seed 0]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from _shared import shared_dir

from sparse_yolo.bench.scenes import sparse_scene, urban_scene
from sparse_yolo.detector import Detector

STAGES = ("upload", "mask", "plan", "stem", "densify", "remainder", "merge", "total")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--weights", type=Path, default=shared_dir() / "weights" / "yolov8n.pt")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--half", action="store_true", help="fp16 (CUDA)")
    ap.add_argument("--backends", nargs="+", default=["auto"])
    ap.add_argument("--mask", default="gradient")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenes", nargs="+", default=["sparse", "urban"], choices=["sparse", "urban"])
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{'frame':<7} {'backend':<8} " + " ".join(f"{s:>9}" for s in STAGES) + "   (ms)")
    for name in args.scenes:
        image = (sparse_scene if name == "sparse" else urban_scene)(
            args.seed, data_dir=shared_dir()
        )[0]
        for backend in args.backends:
            det = Detector(args.weights, backend, args.mask, device=args.device, half=args.half)
            for _ in range(2):
                det.predict_array(image)
            runs = [det.predict_array(image).stats for _ in range(args.runs)]
            ms = {
                s: statistics.median(r["seconds"].get(s, 0.0) for r in runs) * 1e3 for s in STAGES
            }
            used = runs[-1]["backend"]
            print(f"{name:<7} {used:<8} " + " ".join(f"{ms[s]:9.1f}" for s in STAGES))


if __name__ == "__main__":
    main()
