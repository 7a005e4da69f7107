"""Stem time per backend against the dense stem on a 3840x2160 frame, one process.

The dense baseline is the stem layers as plain convolutions over the whole (padded)
frame, BN folded, channels-last, given an already-normalised float tensor (its best case). Each sparse backend
runs the same layers on a compact active area of 5/10/25% of the cells (a few blobs)
starting from the uint8 BGR frame. Reports the median of --runs after one warm-up.

The stem is the checkpoint's layers up to stride 8 (YOLOv8: layers 0-4; YOLO11/26: C3k2).

Usage: python tools/bench_stem.py [--threads 2] [--runs 5] [--weights W | --model yolo11n.yaml]
    [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from sparse_yolo.config import ModelConfig
from sparse_yolo.model.yolo import SparseYOLO
from sparse_yolo.sparse.active import ActivePyramid
from sparse_yolo.sparse.backends import make_backend, spconv_available
from sparse_yolo.sparse.stem import run_stem

H, W, CELL = 2160, 3840, 16


def compact_cells(fraction: float, seed: int = 0) -> np.ndarray:
    """(Hc, Wc) cells: a handful of square blobs covering ``fraction`` of the frame."""
    hc, wc = -(-H // 32) * 2, W // CELL
    cells = np.zeros((hc, wc), bool)
    rng = np.random.default_rng(seed)
    side = int(np.sqrt(fraction * hc * wc / 6)) + 1
    while cells.mean() < fraction:
        y, x = rng.integers(0, hc - side), rng.integers(0, wc - side)
        cells[y : y + side, x : x + side] = True
    return cells


def timed(fn, runs: int, sync) -> float:
    fn()
    sync()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--model", default="yolov8n.yaml", help="Ultralytics YAML (random weights)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.10, 0.25])
    ap.add_argument("--half", action="store_true", help="fp16 dense baseline (CUDA)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    if args.weights:
        model = SparseYOLO.from_ultralytics(args.weights)
    else:  # random weights: the stem's cost does not depend on them
        model = SparseYOLO(ModelConfig.from_name(args.model))
    model = model.fused().to(dev).to(memory_format=torch.channels_last)  # as the engine runs
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).to(dev)
    x = torch.rand(1, 3, -(-H // 32) * 32, W, device=dev)
    x = x.contiguous(memory_format=torch.channels_last)
    stem = model.stem
    dense_model = stem.half() if args.half else stem
    xin = x.half() if args.half else x

    def dense_stem():
        h = xin
        for layer in dense_model:
            h = layer(h)

    with torch.inference_mode():
        base = timed(dense_stem, args.runs, sync)
        if args.half:
            stem.float()
        print(f"device={dev} threads={args.threads} frame={W}x{H} cell={CELL}")
        print(f"dense stem (full frame{', fp16' if args.half else ''}): {base * 1e3:8.1f} ms")
        backends = ["gather", "dense"] + (["spconv"] if spconv_available() else [])
        print(f"{'active':>7} " + " ".join(f"{b:>20}" for b in backends))
        for frac in args.fractions:
            cells = torch.from_numpy(compact_cells(frac)).to(dev)
            row = []
            for name in backends:
                backend = make_backend(name, dev)

                def run(backend=backend, cells=cells):
                    run_stem(stem, backend, image, ActivePyramid(cells, CELL))

                t = timed(run, args.runs, sync)
                row.append(f"{t * 1e3:8.1f} ms ({base / t:4.1f}x)")
            print(f"{frac:>7.0%} " + " ".join(f"{r:>20}" for r in row))


if __name__ == "__main__":
    main()
