"""CUDA check and benchmark of the engine, as one short script (a few minutes on one GPU).

1. Every stem backend computes the same stride-8 features as the dense reference on random
   blob masks at 5/25/60% active cells (TF32 off, so float32 is float32).
2. CUDA graphs and pinned uploads change nothing: the engine with graphs finds the same
   objects as without, on the synthetic sparse and urban 4K frames.
3. Calibration: the cost table ``auto`` decides with, then for each frame the path it chose,
   its predicted milliseconds and the measured ones.
4. Latency at batch 1 (median of --runs after warm-ups, synchronised): dense full resolution
   as Ultralytics runs it (BN-fused, full decode), the same dense under a CUDA graph, the
   engine over every cell, and the default (``auto``, gradient mask).
5. Throughput of ``Detector.predict_batch`` on 8 frames against dense at batch 8 (eager and
   graphed).

It prints the goals of issue 12 with the measured ratios. Exit status 1 if a correctness check
fails. Then run ``python tools/bench_e2e.py --device cuda --half`` for the full table.

Usage: python tools/gpu_check.py [--weights W] [--half] [--runs 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _shared import shared_dir

from sparse_yolo.bench.runners import DenseModel, FlopCounter, fused_copy, to_batch
from sparse_yolo.bench.scenes import sparse_scene, urban_scene
from sparse_yolo.detector import Detector
from sparse_yolo.engine.calibrate import calibrate
from sparse_yolo.eval.metrics import match_recall
from sparse_yolo.sparse.active import ActivePyramid
from sparse_yolo.sparse.backends import make_backend, spconv_available
from sparse_yolo.sparse.stem import run_stem


def blobs(shape: tuple[int, int], fraction: float, rng: np.random.Generator) -> np.ndarray:
    cells = np.zeros(shape, bool)
    while cells.mean() < fraction:
        h, w = (int(rng.integers(2, max(3, min(24, n // 2)))) for n in shape)
        y, x = rng.integers(0, shape[0] - h), rng.integers(0, shape[1] - w)
        cells[y : y + h, x : x + w] = True
    return cells


def check_stems(det: Detector, atol: float, hw: tuple[int, int]) -> bool:
    """Step 1 (float32 weights): max |diff| of each backend's stem against dense."""
    dev, model = det.engine.device, det.engine.model.float()
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).to(dev)
    grid = (-(-hw[0] // 32) * 2, -(-hw[1] // 32) * 2)
    worst = 0.0
    with torch.inference_mode():
        for frac in (0.05, 0.25, 0.6):
            cells = torch.from_numpy(blobs(grid, frac, rng)).to(dev)
            ref_be = make_backend("dense", dev)
            ref = ref_be.grid(run_stem(model.stem, ref_be, image, ActivePyramid(cells, 16))[-1])
            for name in ["gather"] + (["spconv"] if spconv_available() else []):
                be = make_backend(name, dev)
                out = be.grid(run_stem(model.stem, be, image, ActivePyramid(cells, 16))[-1])
                err = (out - ref).abs().max().item()
                worst = max(worst, err)
                print(f"  stem active {frac:4.0%} {name:>7}: max |diff| vs dense = {err:.2e}")
    if det.config.half:
        model.half()
    return worst <= atol


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], runs: int, warmup: int = 5) -> float:
    """Median milliseconds of ``fn`` (CUDA synchronised)."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--weights", type=Path, default=shared_dir() / "weights" / "yolov8n.pt")
    ap.add_argument("--half", action="store_true", help="fp16 (the GPU goals are fp16)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--atol", type=float, default=1e-3)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run of this script's logic")
    ap.add_argument("--size", type=int, nargs=2, default=[2160, 3840], metavar=("H", "W"))
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"device: {name}, torch {torch.__version__}, half {args.half}")
    det = Detector(args.weights, device=dev, half=args.half)
    eager = Detector(det.model, device=dev, half=args.half)
    eager.engine.graphs, eager.engine._staging = None, None  # pageable uploads, no graphs
    report: dict = {"device": name, "half": args.half}

    print("1. stems (float32)")
    ok = check_stems(det, args.atol, tuple(args.size))
    data, hw = shared_dir(), tuple(args.size)
    frames = {
        "sparse": sparse_scene(0, 0.1, hw, data_dir=data)[0],
        "urban": urban_scene(0, hw, data_dir=data)[0],
    }
    print("2. CUDA graphs and pinned uploads find the same objects")
    for name, image in frames.items():
        a, b = det.predict_array(image).detections, eager.predict_array(image).detections
        recall = (
            1.0 if len(a) == len(b) == 0 else min(match_recall(a, b, 0.9), match_recall(b, a, 0.9))
        )
        ok &= recall >= 0.99
        print(f"  {name}: {len(a)} vs {len(b)} detections, mutual recall {recall:.3f}")

    print("3. calibration")
    t0 = time.perf_counter()
    det.engine._costs = calibrate(det.engine, save=True)
    print(f"  {time.perf_counter() - t0:.1f} s: {json.dumps(det.engine._costs.to_dict())}")
    report["costs"] = det.engine._costs.to_dict()

    print("4. batch 1 latency, ms (median of runs)")
    dense = DenseModel(
        fused_copy(det.model, dev, args.half), det.config.post, FlopCounter(det.model), args.half
    )
    every = Detector(det.model, mask="all", device=dev, half=args.half)
    every.engine._costs = det.engine._costs
    for name, image in frames.items():
        row = {
            "dense (Ultralytics)": timed(
                lambda im=image: dense.predict(to_batch(im, dev, args.half)), args.runs
            ),
            "dense (CUDA graph)": timed(lambda im=image: det.engine.dense_path(im), args.runs),
            "every cell": timed(lambda im=image: every.predict_array(im), args.runs),
            "default (auto)": timed(lambda im=image: det.predict_array(im), args.runs),
        }
        res = det.predict_array(image)
        stats, run = res.stats, res.engine
        base = row["dense (Ultralytics)"]
        print(f"  {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()))
        print(f"    auto chose {run.path} ({run.backend}), predicted {run.predicted_ms}")
        print(f"    stages ms: { ({k: round(v * 1e3, 2) for k, v in stats.seconds.items()}) }")
        print(
            f"    default / dense: {row['default (auto)'] / base:.2f}x "
            f"(vs graphed dense {row['default (auto)'] / row['dense (CUDA graph)']:.2f}x); "
            f"goal: <= 1.0x on urban, <= 0.5x on sparse"
        )
        report[name] = {"ms": row, "path": run.path, "predicted_ms": run.predicted_ms}

    print("5. batch 8 throughput, frames per second")
    batch = [sparse_scene(seed, 0.1, hw, data_dir=data)[0] for seed in range(8)]
    stacked = lambda: torch.cat([to_batch(im, dev, args.half) for im in batch])  # noqa: E731
    fps = {
        "dense batch 8 (Ultralytics)": 8e3
        / timed(lambda: dense.predict(stacked()), args.runs // 2, 2),
        "dense batch 8 (CUDA graph)": 8e3
        / timed(
            lambda: det.engine._dense_forward(det.engine._dense_input(batch)), args.runs // 2, 2
        ),
        "predict_batch 8 (auto)": 8e3 / timed(lambda: det.predict_batch(batch), args.runs // 2, 2),
    }
    print("  " + ", ".join(f"{k} {v:.1f}" for k, v in fps.items()))
    gain = fps["predict_batch 8 (auto)"] / fps["dense batch 8 (Ultralytics)"]
    print(f"  predict_batch / dense at batch 8: {gain:.2f}x (goal >= 2x)")
    report["batch8_fps"] = fps
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    print("PASS" if ok else "FAIL: a correctness check failed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
