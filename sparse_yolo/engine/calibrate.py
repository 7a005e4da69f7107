"""Measure a :class:`~sparse_yolo.engine.policy.CostTable` on the device at hand, and cache it.

The table is measured once per (device, model architecture, dtype, torch version, CPU
threads) on a synthetic frame, in a few seconds, and kept as JSON in the user's cache
directory: ``$SPARSE_YOLO_CACHE``, else ``$XDG_CACHE_HOME/sparse-yolo``, else
``~/.cache/sparse-yolo``. ``sparse-yolo calibrate`` measures it again. ``$SPARSE_YOLO_COSTS``
names a table file to use instead (identical machines, tests).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from sparse_yolo.atomic import write_json
from sparse_yolo.engine.policy import CostTable, Linear, StemCost
from sparse_yolo.errors import SparseYoloError
from sparse_yolo.imageops import padded
from sparse_yolo.sparse.active import ActivePyramid
from sparse_yolo.sparse.backends import make_backend
from sparse_yolo.sparse.stem import densify, run_stem

if TYPE_CHECKING:
    from sparse_yolo.engine.runner import SparseEngine

log = logging.getLogger("sparse_yolo")

CACHE_ENV = "SPARSE_YOLO_CACHE"
COSTS_ENV = "SPARSE_YOLO_COSTS"
# (H, W) of the calibration frames: big enough that per-pixel costs dominate fixed ones.
FRAME = {"cpu": (768, 1024), "cuda": (2176, 3840)}
SMALL = {"cpu": (384, 512), "cuda": (1088, 1920)}
ACTIVE = (0.1, 0.5)  # active fractions of the two stem measurements per backend
WINDOWS = ((8, 8), (64, 96))  # (h, w) stride-8 cells of the two remainder measurements
CELL = 16


def cache_dir() -> Path:
    """Where cost tables are kept (see the module docstring)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sparse-yolo"


def cost_key(engine: SparseEngine) -> str:
    """What a table depends on: device, model architecture and dtype, torch, threads."""
    dev = engine.device
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
    else:
        name = f"{_cpu_name()} x{os.cpu_count()} threads={torch.get_num_threads()}"
    shapes = [(k, tuple(v.shape)) for k, v in engine.model.state_dict().items()]
    arch = hashlib.sha1(repr(shapes).encode()).hexdigest()[:12]
    return f"{dev.type}:{name}|model={arch}|{engine.model.dtype}|torch={torch.__version__}"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def table_path(key: str) -> Path:
    return cache_dir() / "costs" / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.json"


def load_costs(engine: SparseEngine) -> CostTable:
    """The engine's cost table: ``$SPARSE_YOLO_COSTS``, else the cache, else calibrate now.

    Raises:
        SparseYoloError: ``$SPARSE_YOLO_COSTS`` names a missing or malformed file.
    """
    if os.environ.get(COSTS_ENV):
        return read_table(Path(os.environ[COSTS_ENV]))
    key = cost_key(engine)
    path = table_path(key)
    if path.is_file():
        try:
            table = read_table(path)
            if table.key == key:
                return table
        except SparseYoloError:
            pass  # a stale or damaged cache entry: measure again
    log.warning("calibrating the engine for %s (once; cached in %s)", key.split("|")[0], path)
    return calibrate(engine, save=True)


def read_table(path: Path) -> CostTable:
    try:
        return CostTable.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SparseYoloError(f"not a cost table ({exc})", path) from exc


def calibrate(engine: SparseEngine, save: bool = True) -> CostTable:
    """Measure the engine's cost table (a few seconds) and, with ``save``, cache it."""
    key = cost_key(engine)
    kind = "cuda" if engine.device.type == "cuda" else "cpu"
    t0 = time.perf_counter()
    with torch.inference_mode():
        image = _frame(FRAME[kind])
        small = _frame(SMALL[kind])
        px, small_px = image.shape[0] * image.shape[1], small.shape[0] * small.shape[1]
        dense = _fit(
            small_px,
            _time(engine, lambda: engine.dense_path(small)),
            px,
            _time(engine, lambda: engine.dense_path(image)),
        )
        every = _fit(
            small_px,
            _time(engine, lambda: _stem(engine, "dense", small, 1.0)),
            px,
            _time(engine, lambda: _stem(engine, "dense", image, 1.0)),
        )
        stem = {b: _stem_cost(engine, b, small, image) for b in engine.sparse_backends()}
        remainder = _remainder_cost(engine, image)
    table = CostTable(
        key,
        dense,
        every.per_unit,
        stem,
        remainder,
        meta={"seconds": round(time.perf_counter() - t0, 2), "frame": list(FRAME[kind])},
        every_fixed=every.fixed,
    )
    if save:
        path = table_path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, table.to_dict())
        except (OSError, SparseYoloError) as exc:
            log.warning("could not cache the cost table in %s: %s", path, exc)
    return table


def _frame(hw: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8: smooth colour with grain, a stand-in for a real frame's pixels."""
    rng = np.random.default_rng(0)
    coarse = rng.uniform(40, 200, (6, 8, 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC)
    noise = rng.standard_normal((*hw, 3), dtype=np.float32) * 6
    return np.clip(smooth + noise, 0, 255).astype(np.uint8)


def _time(engine: SparseEngine, fn: Callable[[], object], repeats: int = 3) -> float:
    """Fastest of ``repeats`` runs of ``fn`` after two warm-ups (CUDA synchronised): the
    minimum, as other processes on a shared machine only ever add time."""
    sync = torch.cuda.synchronize if engine.device.type == "cuda" else lambda: None
    for _ in range(2):  # new shapes: kernels and buffers are made on the first runs
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def _fit(x1: float, y1: float, x2: float, y2: float) -> Linear:
    """The line through two measurements, with neither term negative."""
    slope = max(float((y2 - y1) / (x2 - x1)), 0.0)
    return Linear(max(float(y1 - slope * x1), 0.0), slope)


def _cells(hw: tuple[int, int], fraction: float) -> np.ndarray:
    """Blob-shaped random cells covering about ``fraction`` of the frame."""
    rng = np.random.default_rng(1)
    shape = (padded(hw[0]) // CELL, padded(hw[1]) // CELL)
    cells = np.zeros(shape, bool)
    while cells.mean() < fraction:
        h, w = rng.integers(1, 9, 2)
        y, x = rng.integers(0, shape[0] - h + 1), rng.integers(0, shape[1] - w + 1)
        cells[y : y + h, x : x + w] = True
    return cells


def _stem(engine: SparseEngine, backend: str, image: np.ndarray, fraction: float):
    cells = _cells(image.shape[:2], fraction) if fraction < 1 else None
    if cells is None:
        cells = np.ones((padded(image.shape[0]) // CELL, padded(image.shape[1]) // CELL), bool)
    pyramid = ActivePyramid(torch.from_numpy(cells).to(engine.device), CELL)
    frame = engine.upload(image)
    return run_stem(engine.model.stem, make_backend(backend, engine.device), frame, pyramid)


def _stem_cost(
    engine: SparseEngine, backend: str, small: np.ndarray, image: np.ndarray
) -> StemCost:
    """Two active fractions on the large frame give the cost per active pixel; the rest,
    on the large and the small frame, splits into per frame pixel and per call."""
    rest = []
    for frame, fractions in ((image, ACTIVE), (small, ACTIVE[1:])):
        px = frame.shape[0] * frame.shape[1]
        active, seconds = [], []
        for f in fractions:
            active.append(float(_cells(frame.shape[:2], f).mean()) * px)
            seconds.append(_time(engine, lambda im=frame, f=f: _stem(engine, backend, im, f)))
        if len(active) == 2:
            per_active = max((seconds[1] - seconds[0]) / (active[1] - active[0]), 0.0)
        rest.append((px, seconds[-1] - per_active * active[-1]))
    (px1, r1), (px0, r0) = rest
    line = _fit(px0, r0, px1, r1)
    return StemCost(per_px=line.per_unit, per_active_px=per_active, fixed=line.fixed)


def _remainder_cost(engine: SparseEngine, image: np.ndarray) -> Linear:
    """One forward on a small and on a large window, densified from real stem features."""
    feats = _stem(engine, "dense", image, 1.0)
    backend = make_backend("dense", engine.device)
    cells, seconds = [], []
    for h, w in WINDOWS:
        boxes = torch.tensor([[0, 0, h, w]], device=engine.device)
        seconds.append(_time(engine, lambda b=boxes: engine.remainder(densify(backend, feats, b))))
        cells.append(h * w)
    return _fit(cells[0], seconds[0], cells[1], seconds[1])
