"""Timing runners in interleaved rounds, and scoring their detections."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sparse_yolo.bench.memory import PeakMemory, synchronize
from sparse_yolo.bench.runners import Runner
from sparse_yolo.eval.labels import GroundTruth
from sparse_yolo.eval.metrics import evaluate, match_recall
from sparse_yolo.types import Detections


@dataclass
class Row:
    """One method's measurements on one image.

    Attributes:
        latency_ms: median over the timed runs, after one warm-up run.
        peak_mib: peak memory above the level before the timed runs (see :class:`PeakMemory`).
        metrics: :func:`~sparse_yolo.eval.metrics.evaluate` against labels, by size bucket.
        recall_vs_full: share of the dense full-resolution detections this method recovers.
    """

    method: str
    latency_ms: float
    gflops: float
    peak_mib: float
    n_det: int
    info: dict[str, Any]
    latencies_ms: list[float]
    detections: Detections = field(repr=False)
    metrics: dict[str, dict[str, float | int]] | None = None
    recall_vs_full: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k != "detections"}
        return json_safe(out)


def measure(
    runner: Runner, image: np.ndarray, runs: int = 3, device: torch.device | str = "cpu"
) -> Row:
    """Time one runner: :func:`measure_all` with a single method."""
    return measure_all([runner], image, runs, device)[0]


def measure_all(
    runners: Sequence[Runner],
    image: np.ndarray,
    runs: int = 3,
    device: torch.device | str = "cpu",
    announce: Callable[[str], Any] | None = None,
) -> list[Row]:
    """Time every runner on ``image``: one warm-up each, then ``runs`` rounds, median per runner.

    Rounds are interleaved (A B C, A B C, ...) so that a slow drift of the machine (thermal,
    a neighbour's load) spreads over every method instead of landing on whichever ran last.
    Peak memory comes from one more call per runner after the timed rounds: metering trims
    the heap first, and the page faults that follow would otherwise be timed too.

    Args:
        announce: called with each runner's name before its warm-up (progress).
    """
    device = torch.device(device)
    for runner in runners:
        if announce is not None:
            announce(runner.name)
        runner(image)
        synchronize(device)
    times: list[list[float]] = [[] for _ in runners]
    for _ in range(max(1, runs)):
        for i, runner in enumerate(runners):
            t0 = time.perf_counter()
            runner(image)
            synchronize(device)
            times[i].append((time.perf_counter() - t0) * 1e3)
    rows = []
    for runner, t in zip(runners, times, strict=True):
        with PeakMemory(device) as mem:
            dets = runner(image)
            synchronize(device)
        gflops, info = runner.cost(image)
        rows.append(
            Row(runner.name, statistics.median(t), gflops, mem.peak_mib, len(dets), info, t, dets)
        )
    return rows


def score(rows: Sequence[Row], gt: GroundTruth | None, reference: Detections | None) -> None:
    """Fill ``metrics`` (against labels) and ``recall_vs_full`` (against ``reference``)."""
    for row in rows:
        if gt is not None:
            row.metrics = evaluate(row.detections, gt)
        if reference is not None:
            row.recall_vs_full = match_recall(row.detections, reference)


def json_safe(obj: Any) -> Any:
    """Plain JSON data: NaN and infinities become None, numpy scalars Python numbers."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
