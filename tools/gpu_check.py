"""CUDA check: every backend computes the same stem on the GPU (YOLOv8n, 4K frame).

Runs gather, spconv and dense on random blob masks at 5/25/60% active cells and prints the
max |difference| against the dense reference (TF32 off, so float32 is float32), plus the
device name. Exit status 1 if any backend differs by more than --atol.

Usage: python tools/gpu_check.py [--weights W] [--atol 1e-3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from sparse_yolo.config import ModelConfig
from sparse_yolo.model.yolo import SparseYOLO
from sparse_yolo.sparse.active import ActivePyramid
from sparse_yolo.sparse.backends import make_backend, spconv_available
from sparse_yolo.sparse.stem import run_stem


def blobs(shape: tuple[int, int], fraction: float, rng: np.random.Generator) -> np.ndarray:
    cells = np.zeros(shape, bool)
    while cells.mean() < fraction:
        h, w = rng.integers(2, 24, 2)
        y, x = rng.integers(0, shape[0] - h), rng.integers(0, shape[1] - w)
        cells[y : y + h, x : x + w] = True
    return cells


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--atol", type=float, default=1e-3)
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    print(
        f"device: {torch.cuda.get_device_name(dev)}, torch {torch.__version__}, "
        f"spconv available: {spconv_available()}"
    )
    model = (
        SparseYOLO.from_ultralytics(args.weights) if args.weights else SparseYOLO(ModelConfig("n"))
    )
    model = model.to(dev).eval()
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.integers(0, 256, (2160, 3840, 3), dtype=np.uint8)).to(dev)
    names = ["gather"] + (["spconv"] if spconv_available() else [])
    worst = 0.0
    with torch.inference_mode():
        for frac in (0.05, 0.25, 0.6):
            cells = torch.from_numpy(blobs((136, 240), frac, rng)).to(dev)
            ref_be = make_backend("dense", dev)
            ref = ref_be.grid(run_stem(model.stem, ref_be, image, ActivePyramid(cells, 16))[-1])
            for name in names:
                be = make_backend(name, dev)
                out = be.grid(run_stem(model.stem, be, image, ActivePyramid(cells, 16))[-1])
                err = (out - ref).abs().max().item()
                worst = max(worst, err)
                print(f"active {frac:4.0%} {name:>7}: max |diff| vs dense = {err:.2e}")
    ok = worst <= args.atol
    print("PASS" if ok else f"FAIL: {worst:.2e} > {args.atol}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
