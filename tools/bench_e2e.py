"""End-to-end detect latency of the sparse pipeline against dense baselines on synthetic 4K frames.

One process, the same weights and post-processing for every method. Two 3840x2160 frames from
:mod:`sparse_yolo.bench.scenes` (real labelled crops pasted onto a low-texture background):

* ``sparse``: crops on about --coverage of the frame (default 10%)
* ``urban``: crops tiled over about 89% of the frame
* ``water``: a 4096x4096 tile of real water texture (mirror-tiled from a marina aerial in
  ``../shared/data/aerial/boats.jpg``) with about 3,000 small bright specks, one in every
  85x65 patch, like whitecaps or buoys: texture and thousands of mask components, no labels

For each frame it prints the ``sparse-yolo compare`` table (sparse, dense@--imgsz, dense-full,
sahi-640, sparse --mask all) and the ratios:

* sparse vs dense full resolution: speed-up, and recall relative to the dense full-res detections
* sparse vs SAHI slicing, and vs dense at --imgsz (1280)
* ``--mask all`` overhead vs dense full resolution (the cost of the sparse machinery at 100%)

Latency is the median of --runs interleaved rounds after one warm-up each (CUDA synchronised); recall vs GT uses the
scenes' pasted boxes. Runners, metering and the table come from ``sparse_yolo.bench`` and the
compare command.

Usage:
  python tools/bench_e2e.py [--weights ../shared/weights/yolov8n.pt | --model yolo11n.yaml]
      [--device cpu|cuda]
      [--half] [--backend auto|gather|spconv|dense] [--mask gradient] [--max-active F]
      [--runs 3] [--threads N] [--seed 0] [--coverage 0.1] [--scenes sparse urban]
      [--size 2160 3840] [--set window.fill=zero ...] [--json bench.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from _shared import shared_dir

from sparse_yolo import cli  # noqa: F401 - first: the command modules import the CLI group
from sparse_yolo.atomic import write_json
from sparse_yolo.bench.flops import GFLOPS_CONVENTION
from sparse_yolo.bench.measure import Row, json_safe, measure_all, score
from sparse_yolo.bench.runners import SparseRunner, build_runners
from sparse_yolo.bench.scenes import FRAME_HW, sparse_scene, urban_scene
from sparse_yolo.commands.compare import format_table
from sparse_yolo.detector import Detector
from sparse_yolo.eval.labels import GroundTruth

DEFAULT_WEIGHTS = shared_dir() / "weights" / "yolov8n.pt"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--weights", type=Path, default=DEFAULT_WEIGHTS if DEFAULT_WEIGHTS.is_file() else None
    )
    ap.add_argument(
        "--model",
        help="an Ultralytics model YAML (yolo11n.yaml, yolo26n.yaml, ...) built with RANDOM "
        "weights instead of --weights: for speed only, detections and recall mean nothing",
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--half", action="store_true", help="fp16 for every method (CUDA)")
    ap.add_argument("--backend", default="auto", choices=["auto", "gather", "spconv", "dense"])
    ap.add_argument("--mask", default="gradient")
    ap.add_argument("--max-active", type=float)
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--coverage", type=float, default=0.10, help="crop coverage of the sparse frame"
    )
    ap.add_argument("--imgsz", type=int, default=1280, help="the downsampled dense baseline")
    ap.add_argument("--slice", type=int, default=640)
    ap.add_argument("--slice-overlap", type=float, default=0.2)
    ap.add_argument(
        "--scenes",
        nargs="+",
        default=["sparse", "urban", "water"],
        choices=["sparse", "urban", "water"],
    )
    ap.add_argument("--water-size", type=int, default=4096, help="edge of the water tile")
    ap.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=list(FRAME_HW),
        metavar=("H", "W"),
        help="frame size (smaller for a quick smoke run)",
    )
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted config override, repeatable, e.g. --set window.fill=zero",
    )
    ap.add_argument("--json", type=Path, help="write every row as JSON")
    return ap.parse_args()


WATER_CROP = (slice(620, 1060), slice(900, 1200))  # boats.jpg: open water, no boats
SPECK_PATCH = (65, 85)  # (h, w) px: one speck in each


def mirror_tile(src: np.ndarray, height: int, width: int) -> np.ndarray:
    """(height, width, 3) uint8: ``src`` tiled with every other copy mirrored (no seams)."""
    block = np.concatenate([src, src[:, ::-1]], 1)
    block = np.concatenate([block, block[::-1]], 0)
    reps = (-(-height // block.shape[0]), -(-width // block.shape[1]), 1)
    return np.ascontiguousarray(np.tile(block, reps)[:height, :width])


def water_tile(seed: int, side: int = 4096) -> np.ndarray:
    """(side, side, 3) uint8 BGR: real water texture, mirror-tiled, with bright specks."""
    src = cv2.imread(str(shared_dir() / "data" / "aerial" / "boats.jpg"))[WATER_CROP]
    image = mirror_tile(src, side, side)
    rng = np.random.default_rng(seed)
    ph, pw = SPECK_PATCH
    for y0 in range(0, side - ph + 1, ph):
        for x0 in range(0, side - pw + 1, pw):
            y, x = y0 + int(rng.integers(4, ph - 4)), x0 + int(rng.integers(4, pw - 4))
            axes = (int(rng.integers(1, 4)), int(rng.integers(1, 3)))
            colour = tuple(int(c) for c in rng.integers(170, 256, 3))
            cv2.ellipse(image, (x, y), axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
    return image


def scene_frame(name: str, args: argparse.Namespace):
    """(image, boxes, classes) of a benchmark frame; the water tile has no labels (None)."""
    hw = tuple(args.size)
    if name == "sparse":
        return sparse_scene(args.seed, args.coverage, hw, data_dir=shared_dir())
    if name == "water":
        return water_tile(args.seed, args.water_size), None, None
    return urban_scene(args.seed, hw, data_dir=shared_dir())


def run_scene(detector: Detector, args: argparse.Namespace, name: str) -> list[Row]:
    """Every method on one synthetic frame, scored against its boxes and dense full-res."""
    image, boxes, classes = scene_frame(name, args)
    slices = args.slice if name != "water" else 0  # SAHI's 4096^2 run adds minutes, no goal
    runners = build_runners(detector, args.weights, (args.imgsz,), slices, args.slice_overlap)
    cfg = detector.config.replace(**{"mask.name": "all", "mask.max_active": None})
    all_cells = Detector(detector.model, config=cfg, device=detector.engine.device)
    runners.append(SparseRunner(all_cells, runners[0].counter, name="sparse mask=all"))
    announce = lambda method: print(f"  {name}: {method} ...", flush=True)  # noqa: E731
    rows = measure_all(runners, image, args.runs, detector.engine.device, announce)
    full = next(r for r in rows if r.method == "dense-full")
    score(rows, None if boxes is None else GroundTruth(boxes, classes), full.detections)
    return rows


def policy_lines(detector: Detector, image: np.ndarray, rows: list[Row]) -> list[str]:
    """What ``auto`` chose and predicted for this frame, beside what the rows measured."""
    res = detector.predict_array(image)
    by = {r.method: r.latency_ms for r in rows}
    sec = res.stats.seconds
    engine_ms = 1e3 * sum(v for k, v in sec.items() if k not in ("total", "mask", "upload"))
    predicted = res.engine.predicted_ms
    lines = [
        f"auto chose {res.engine.path} ({res.engine.backend}); predicted ms: "
        + ", ".join(f"{k} {v:.0f}" for k, v in sorted(predicted.items(), key=lambda kv: kv[1])),
        f"measured ms: engine after the mask {engine_ms:.0f} (mask {1e3 * sec.get('mask', 0):.0f}), "
        f"sparse row {by['sparse']:.0f}, every cell (mask=all) {by['sparse mask=all']:.0f}, "
        f"dense-full {by['dense-full']:.0f}",
    ]
    return lines


def ratio_lines(rows: list[Row]) -> list[str]:
    """The headline ratios of one frame's rows."""
    by = {r.method: r for r in rows}
    sparse = by["sparse"]
    recall = sparse.metrics["all"]["recall"] if sparse.metrics else float("nan")
    lines = [
        f"sparse (default) vs dense-full: {sparse.latency_ms / by['dense-full'].latency_ms:.2f}x "
        "the time (goal <= 1.1x)"
    ]
    for other in rows:
        if other.method in ("sparse", "sparse mask=all"):
            continue
        other_recall = other.metrics["all"]["recall"] if other.metrics else float("nan")
        ratio = recall / other_recall if other_recall else float("nan")
        lines.append(
            f"sparse vs {other.method}: speed-up {other.latency_ms / sparse.latency_ms:.2f}x "
            f"({other.latency_ms:.1f} / {sparse.latency_ms:.1f} ms), "
            f"GFLOPs {other.gflops / max(sparse.gflops, 1e-9):.2f}x, "
            f"GT recall {recall:.3f} vs {other_recall:.3f} (ratio {ratio:.3f})"
        )
    lines.append(
        f"sparse recall of the dense full-res detections: {sparse.recall_vs_full:.3f} "
        f"(active {sparse.info['active_fraction']:.1%}, windows {sparse.info['window_fraction']:.1%})"
    )
    overhead = by["sparse mask=all"].latency_ms / by["dense-full"].latency_ms
    lines.append(f"--mask all overhead vs dense-full: {overhead:.2f}x latency")
    return lines


def random_weights(name: str) -> Path:
    """Ultralytics' random initialisation of a model YAML, saved as Ultralytics saves it."""
    import tempfile  # noqa: PLC0415

    from sparse_yolo.model.graph import build_detection_model, split_model_name  # noqa: PLC0415

    arch, scale = split_model_name(name)
    path = Path(tempfile.mkdtemp()) / f"{Path(name).stem}-random.pt"
    torch.save({"model": build_detection_model(arch, scale or "n", 80).half()}, path)
    return path


def main() -> None:
    args = parse_args()
    if args.model:
        args.weights = random_weights(args.model)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {"post.conf": args.conf, "mask.max_active": args.max_active, "half": args.half}
    for item in args.overrides:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    detector = Detector(args.weights, args.backend, args.mask, device=args.device, **overrides)
    print(
        f"device {detector.engine.device}, threads {torch.get_num_threads()}, weights "
        f"{args.weights}, half {args.half}, runs {args.runs}"
    )
    report = {"gflops": GFLOPS_CONVENTION, "device": str(detector.engine.device), "scenes": {}}
    for name in args.scenes:
        rows = run_scene(detector, args, name)
        print(f"\n== {name} frame ==")
        print(format_table(rows, labels=name != "water"))
        print(
            "\n".join(ratio_lines(rows) + policy_lines(detector, scene_frame(name, args)[0], rows))
        )
        print()
        report["scenes"][name] = [r.to_dict() for r in rows]
    if args.json:
        write_json(args.json, json_safe(report))


if __name__ == "__main__":
    main()
