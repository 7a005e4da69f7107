"""Window planning time against the number of mask components, and the masks' own cost.

* random components (1-cell specks, seeded) on a 4K frame's grid of 16 px and 8 px cells
  and on an 8K one: components, windows, total window area, planning ms (best of --runs);
  on the 4K grids the boxes cover most of the frame (the early exit), on the 8K one the
  merge rounds run
* the speckled-water tile of ``bench_e2e.py``: gradient mask ms, active cells, components,
  planning ms

Usage:
  python tools/bench_plan.py [--components 5000] [--runs 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import torch
from bench_e2e import water_tile

from sparse_yolo.config import MaskConfig, WindowConfig
from sparse_yolo.engine.windows import plan_windows
from sparse_yolo.masks import make_mask

GRIDS = {"4K, 16 px cells": ((136, 240), 16), "4K, 8 px cells": ((272, 480), 8)}
GRIDS["8K, 16 px cells"] = ((512, 512), 16)


def best_ms(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def components(cells: np.ndarray) -> int:
    return cv2.connectedComponents(cells.astype(np.uint8), connectivity=8)[0] - 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--components", type=int, default=5000, help="specks placed per grid")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = WindowConfig()
    rng = np.random.default_rng(1)
    for name, (shape, cell) in GRIDS.items():
        cells = np.zeros(shape, bool)
        cells[
            rng.integers(0, shape[0], args.components), rng.integers(0, shape[1], args.components)
        ] = True
        win = plan_windows(cells, cell, cfg)
        area = (win[:, 2] * win[:, 3]).sum() / (cells.size * (cell // 8) ** 2)
        ms = best_ms(lambda c=cells, k=cell: plan_windows(c, k, cfg), args.runs)
        print(
            f"{name}: {components(cells)} components, {len(win)} windows "
            f"({area:.0%} of the frame), plan {ms:.1f} ms"
        )
    image = water_tile(0)
    mask = make_mask(MaskConfig())
    res = mask(image)
    mask_ms = best_ms(lambda: mask(image), max(1, args.runs // 2))
    plan_ms = best_ms(lambda: plan_windows(res.cells, res.cell, cfg), args.runs)
    print(
        f"water 4096^2: gradient mask {mask_ms:.0f} ms, {res.active_fraction:.0%} of cells active "
        f"in {components(res.cells)} components, plan {plan_ms:.1f} ms"
    )


if __name__ == "__main__":
    main()
