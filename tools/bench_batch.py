"""Batch throughput, tiles per minute: the local engine against Ray, at 1 and 2 workers.

A folder of 512x512 GeoTIFF tiles is cut from the shared aerial frames (or, without
../shared, from a synthetic scene, with a random-init model). Every configuration runs
``sparse-yolo batch`` on it in a fresh process (as a user runs it) into a fresh folder, in
interleaved rounds. One local Ray instance (no dashboard) is started once by this script and
joined with ``--address``, so the Ray rows pay for their actors (each loads the Detector) but
not for starting Ray itself (printed once).

Per run it reports:
* ``tiles/min``: all tiles over the whole run, worker start-up included;
* ``steady tiles/min``: from each worker's first output to the last, what an archive of
  thousands of tiles sees once the workers are up.
The ratios compare each configuration with the local engine at the same worker count,
medians over the rounds. The goal: Ray at 2 workers >= 0.9x the local engine.

Usage (through the bench lock, see PROTOCOL):
  flock /tmp/sparse-yolo-bench.lock env PYTHONPATH=$PWD python tools/bench_batch.py \\
      [--tiles 64] [--rounds 2] [--weights ../shared/weights/yolov8n.pt] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import rasterio
from rasterio.transform import from_origin

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FRAMES = ["data/aerial/boats.jpg", "data/aerial/small-vehicles1.jpeg"]
CONFIGS = [("local", 1), ("ray", 1), ("local", 2), ("ray", 2)]


def write_tiles(folder: Path, n: int, side: int = 512) -> None:
    """``n`` side x side GeoTIFFs cut from the shared aerial frames (synthetic without them)."""
    folder.mkdir(parents=True)
    frames = [cv2.imread(str(SHARED / f)) for f in FRAMES if (SHARED / f).is_file()]
    if not frames:
        rng = np.random.default_rng(0)
        frames = [rng.integers(60, 120, (1024, 1536, 3), dtype=np.uint8)]
    crops = [
        f[r : r + side, c : c + side]
        for f in frames
        for r in range(0, f.shape[0] - side + 1, side // 2)
        for c in range(0, f.shape[1] - side + 1, side // 2)
    ]
    for i in range(n):
        rgb = np.ascontiguousarray(crops[i % len(crops)][..., ::-1].transpose(2, 0, 1))
        profile = {"driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8"}
        t = from_origin(500000 + i * side * 0.1, 5000000, 0.1, 0.1)
        with rasterio.open(
            folder / f"t{i:03d}.tif", "w", crs="EPSG:32633", transform=t, **profile
        ) as ds:
            ds.write(rgb)


def run_once(tiles: Path, out: Path, engine: str, workers: int, extra: list[str]) -> dict:
    """One ``sparse-yolo batch`` in a fresh process, as a user runs it."""
    cmd = [sys.executable, "-m", "sparse_yolo", "batch", str(tiles), "-o", str(out)]
    cmd += ["--engine", engine, "--workers", str(workers), *extra]
    t0 = time.time()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    stamps = sorted(p.stat().st_mtime for p in out.glob("t*.geojson"))
    first = stamps[min(workers, len(stamps)) - 1]  # every worker has produced one output
    steady = (len(stamps) - workers) / max(stamps[-1] - first, 1e-6)
    return {"wall_s": wall, "tiles_per_min": 60 * len(stamps) / wall, "steady_per_min": 60 * steady}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tiles", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--weights", default=str(SHARED / "weights/yolov8n.pt"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import ray

    work = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    write_tiles(work / "tiles", args.tiles)
    weights = args.weights if Path(args.weights).is_file() else str(work / "tiny.pt")
    if not Path(weights).is_file():
        from sparse_yolo.config import ModelConfig
        from sparse_yolo.model.yolo import SparseYOLO

        SparseYOLO(ModelConfig(scale="tiny", nc=3, names=("a", "b", "c"))).save(weights)
    t0 = time.time()
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    address = ray.get_runtime_context().gcs_address
    print(f"{args.tiles} tiles of 512x512, weights {weights}; ray.init {time.time() - t0:.1f} s")
    runs: dict[str, list[dict]] = {f"{e}-{w}": [] for e, w in CONFIGS}
    for r in range(args.rounds):
        for engine, workers in CONFIGS:
            extra = ["--weights", weights, "--device", "cpu"]
            extra += ["--address", address] if engine == "ray" else []
            out = work / f"out_{engine}{workers}_{r}"
            res = run_once(work / "tiles", out, engine, workers, extra)
            runs[f"{engine}-{workers}"].append(res)
            print(
                f"round {r} {engine}-{workers}: "
                + ", ".join(f"{k} {v:.1f}" for k, v in res.items())
            )
    ray.shutdown()
    med = {k: {m: statistics.median(x[m] for x in v) for m in v[0]} for k, v in runs.items()}
    print(
        f"\n{'config':10} {'wall s':>8} {'tiles/min':>10} {'steady/min':>11} {'vs local':>9} {'steady vs local':>16}"
    )
    for name, m in med.items():
        base = med[f"local-{name.split('-')[1]}"]
        print(
            f"{name:10} {m['wall_s']:8.1f} {m['tiles_per_min']:10.1f} {m['steady_per_min']:11.1f} "
            f"{m['tiles_per_min'] / base['tiles_per_min']:8.2f}x "
            f"{m['steady_per_min'] / base['steady_per_min']:15.2f}x"
        )
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "median": med}, indent=2))


if __name__ == "__main__":
    main()
