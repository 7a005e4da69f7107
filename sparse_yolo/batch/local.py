"""The local engine: the units in this process, or in a pool of worker processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from sparse_yolo.batch.work import BatchSpec, Outcome, TileWorker, Unit, reason, threads_per_worker

_WORKER: dict[str, TileWorker] = {}  # this process's worker (a pool process has one)


def execute(units: list[Unit], spec: BatchSpec) -> Iterator[Outcome]:
    """Run ``units`` on ``spec.workers`` processes; yield outcomes as they finish."""
    threads = threads_per_worker(os.cpu_count() or 1, spec.workers)
    args = (spec.opts, threads, bool(spec.opts.get("to_wgs84")))
    if spec.workers == 1:
        _init(*args)
        for unit in units:
            yield _run(unit)
        return
    with ProcessPoolExecutor(spec.workers, initializer=_init, initargs=args) as pool:
        futures = {pool.submit(_run, unit): unit for unit in units}
        try:
            for fut in as_completed(futures):
                try:
                    yield fut.result()
                except Exception as exc:  # the pool itself broke (e.g. a worker was killed)
                    yield Outcome(futures[fut], error=reason(exc))
        finally:
            for fut in futures:
                fut.cancel()


def _init(opts: dict[str, Any], threads: int, to_wgs84: bool) -> None:
    _WORKER["worker"] = TileWorker(opts, threads, to_wgs84)


def _run(unit: Unit) -> Outcome:
    return _WORKER["worker"].run(unit)
