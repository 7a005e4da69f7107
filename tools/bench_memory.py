"""Peak memory and time of `sparse-yolo detect` on a 20000 x 20000 3-band GeoTIFF.

Writes the raster block by block (tiled, DEFLATE: a smooth low-texture background with a
few hundred small textured objects), then runs the CLI in a child process and reports its
peak RSS (getrusage of the child) and wall time. Goal: <= 2 GB peak RSS.

Usage: python tools/bench_memory.py [--size 20000] [--keep DIR] [-- extra detect options]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

BLOCK = 1024


def write_big_raster(path: Path, size: int, seed: int = 0) -> int:
    """Write a (3, size, size) uint8 GeoTIFF in EPSG:32633; returns the number of objects."""
    rng = np.random.default_rng(seed)
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:32633",
        "transform": from_origin(500000, 5000000, 0.3, 0.3),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
    }
    n_objects = 0
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, BLOCK):
            for col in range(0, size, BLOCK):
                h, w = min(BLOCK, size - row), min(BLOCK, size - col)
                yy, xx = np.mgrid[row : row + h, col : col + w]
                base = 90 + 20 * np.sin(yy / 3000.0) + 15 * np.cos(xx / 2500.0)
                block = np.repeat(base[None], 3, 0) + rng.normal(0, 1.5, (3, h, w))
                for _ in range(rng.poisson(0.6)):
                    oh, ow = rng.integers(8, 24, 2)
                    y, x = rng.integers(0, h - oh), rng.integers(0, w - ow)
                    block[:, y : y + oh, x : x + ow] = rng.integers(0, 255, (3, oh, ow))
                    n_objects += 1
                dst.write(np.clip(block, 0, 255).astype(np.uint8), window=Window(col, row, w, h))
    return n_objects


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", type=int, default=20000)
    ap.add_argument("--keep", type=Path, help="write the raster and outputs here")
    ap.add_argument("extra", nargs="*", help="extra options for sparse-yolo detect")
    args = ap.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="bench_memory_"))
    workdir.mkdir(parents=True, exist_ok=True)
    raster = workdir / f"big{args.size}.tif"
    if not raster.exists():
        t0 = time.perf_counter()
        n = write_big_raster(raster, args.size)
        print(
            f"wrote {raster} ({raster.stat().st_size / 2**20:.0f} MiB, {n} objects) "
            f"in {time.perf_counter() - t0:.0f} s"
        )
    cmd = [
        sys.executable,
        "-m",
        "sparse_yolo",
        "detect",
        str(raster),
        "-o",
        str(workdir / "big.geojson"),
        "--stats",
        str(workdir / "stats.json"),
        *args.extra,
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    uncompressed = 3 * args.size**2 / 2**30
    print(
        f"{args.size}x{args.size} raster ({uncompressed:.2f} GiB of pixels): "
        f"peak RSS {peak_kib / 2**20:.2f} GiB, wall {wall:.0f} s"
    )


if __name__ == "__main__":
    main()
