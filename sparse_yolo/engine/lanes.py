"""Remainder passes of small windows side by side on CPU, one intra-op thread each.

A batch-1 forward over a small window keeps two threads poorly busy (per-layer overheads and
small tensors dominate), so several windows run faster in parallel lanes, each on one thread,
than one after another on all of them. The arithmetic is the same; only which thread sums
each tensor changes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}  # by (process, workers): a forked
# child inherits the parent's pool object but not its threads, so it makes its own
_LOCK = threading.Lock()


def _one_thread() -> None:
    torch.set_num_threads(1)  # per worker thread: the caller keeps its own count


def _pool(workers: int) -> ThreadPoolExecutor:
    key = (os.getpid(), workers)
    with _LOCK:
        if key not in _POOLS:
            _POOLS[key] = ThreadPoolExecutor(
                workers, thread_name_prefix="sparse-yolo-lane", initializer=_one_thread
            )
        return _POOLS[key]


def plan_lanes(sizes: Sequence[int], workers: int) -> list[list[int]] | None:
    """Indices of ``sizes`` dealt to ``workers`` lanes, largest first onto the lightest lane.

    Returns None when lanes would not pay: fewer than two items or threads, or one item
    holding more than half of the work (it alone would then run on one thread).
    """
    total = sum(sizes)
    if workers < 2 or len(sizes) < 2 or max(sizes) * 2 > total:
        return None
    lanes: list[list[int]] = [[] for _ in range(workers)]
    load = [0] * workers
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        k = load.index(min(load))
        lanes[k].append(i)
        load[k] += sizes[i]
    return [lane for lane in lanes if lane]


def run_in_lanes(fn: Callable, items: Sequence, sizes: Sequence[int], workers: int) -> list:
    """``[fn(x) for x in items]``, in parallel lanes when :func:`plan_lanes` finds them
    worthwhile; results in the order of ``items``. ``fn`` runs under inference mode."""
    lanes = plan_lanes(sizes, workers)
    if lanes is None:
        return [fn(x) for x in items]

    def lane(indices: list[int]) -> list:
        with torch.inference_mode():  # grad mode is per thread
            return [fn(items[i]) for i in indices]

    futures = [_pool(workers).submit(lane, ix) for ix in lanes]
    out: list = [None] * len(items)
    for ix, fut in zip(lanes, futures, strict=True):
        for i, res in zip(ix, fut.result(), strict=True):
            out[i] = res
    return out
