"""The Ray engine: a pool of actors, each loading the Detector once, fed tile by tile.

Without ``address`` a local Ray instance starts (no dashboard) and stops at the end; with
one, the batch joins that cluster (``ray start --head`` on one machine, ``ray start
--address=HEAD:6379`` on the others; inputs, weights and the output folder on storage
every node sees). Actors write per-tile outputs atomically themselves and return only
small :class:`~sparse_yolo.batch.work.Outcome` records, so results stream instead of
collecting in the driver. An actor whose process dies is restarted by Ray and its
in-flight units are retried (``max_restarts``, ``max_task_retries``); an output is
renamed into place whole, so a retried unit cannot leave a duplicate or a half-written
file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from sparse_yolo.batch.work import BatchSpec, Outcome, TileWorker, Unit, reason, threads_per_worker
from sparse_yolo.errors import SparseYoloError

IN_FLIGHT = 2  # units queued per actor, so an actor never waits for the driver
RETRIES = 3  # restarts of a dead actor, and retries of each unit it was running


def execute(units: list[Unit], spec: BatchSpec) -> Iterator[Outcome]:
    """Run ``units`` on ``spec.workers`` Ray actors; yield outcomes as they finish."""
    ray = _ray()
    started = _connect(ray, spec.address)
    actors: list = []
    try:
        actors = start_actors(ray, spec)
        yield from _stream(ray, actors, units)
    finally:  # free the cluster's CPUs/GPUs now, also on Ctrl-C
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()


def start_actors(ray, spec: BatchSpec) -> list:
    """``spec.workers`` TileWorker actors, each with its share of the cluster's CPUs."""
    cpus = _cpus_per_worker(ray, spec.workers)
    remote = ray.remote(TileWorker).options(
        num_cpus=cpus,
        num_gpus=spec.gpus_per_worker,
        max_restarts=RETRIES,
        max_task_retries=RETRIES,
    )
    to_wgs84 = bool(spec.opts.get("to_wgs84"))
    return [remote.remote(spec.opts, cpus, to_wgs84) for _ in range(spec.workers)]


def _stream(ray, actors: list, units: list[Unit]) -> Iterator[Outcome]:
    """Keep ``IN_FLIGHT`` units on each actor; yield each outcome when it is ready."""
    pending = iter(units)
    running: dict = {}  # ObjectRef -> (actor, unit)

    def submit(actor) -> None:
        unit = next(pending, None)
        if unit is not None:
            running[actor.run.remote(unit)] = (actor, unit)

    for actor in actors:
        for _ in range(IN_FLIGHT):
            submit(actor)
    while running:
        [ref], _ = ray.wait(list(running), num_returns=1)
        actor, unit = running.pop(ref)
        try:
            yield ray.get(ref)
        except Exception as exc:  # the actor died more often than Ray retries
            yield Outcome(unit, error=reason(exc))
        submit(actor)


def _cpus_per_worker(ray, workers: int) -> int:
    """Torch threads (and Ray CPUs) per actor: the cluster's CPUs shared out, at most a node's."""
    total = int(ray.cluster_resources().get("CPU", 1))
    biggest = max(
        (int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=1
    )
    return max(1, min(biggest, threads_per_worker(total, workers)))


def _connect(ray, address: str | None) -> bool:
    """Join ``address``, or start a local instance; True when this call started Ray."""
    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address, configure_logging=False)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise SparseYoloError(f"cannot start or join Ray ({' '.join(str(exc).split())})") from exc
    return True


def _ray():
    try:
        import ray  # noqa: PLC0415
    except ImportError as exc:
        raise SparseYoloError(
            "--engine ray needs Ray: pip install 'sparse-yolo[ray]' (or 'ray[default]')"
        ) from exc
    return ray
