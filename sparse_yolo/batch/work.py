"""The work of a batch: its spec, its units (a whole tile file, or a range of one huge
raster's tiles) and the worker that runs them.

Both engines run the same units through the same :class:`TileWorker`, so they give the
same detections by construction; an engine only decides where the workers live.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sparse_yolo.errors import SparseYoloError

# Engine name -> module with ``execute(units, spec) -> Iterator[Outcome]``; imported on use
# so that the local engine never imports Ray.
ENGINES = {"local": "sparse_yolo.batch.local", "ray": "sparse_yolo.batch.ray_engine"}


@dataclass(frozen=True)
class BatchSpec:
    """One batch run.

    Attributes:
        inputs: a folder, or a glob pattern, of tiles.
        outdir: output folder (per-tile ``<stem>.geojson``, ``errors.json``, the merged file).
        opts: the shared model/tiling options (``commands/options.py``).
        merged: merged output's name (inside ``outdir``) or path; its suffix picks the format.
        engine: a key of ``ENGINES``.
        workers: parallel workers (processes or Ray actors).
        address: Ray cluster to join; None starts a local Ray instance.
        gpus_per_worker: GPUs each Ray actor reserves.
        tiles_per_task: a raster with more tile windows than this is split into tasks of
            this many windows.
        resume: skip tiles whose output exists.
    """

    inputs: str
    outdir: Path
    opts: dict[str, Any] = field(default_factory=dict)
    merged: Path = Path("all.geojson")
    engine: str = "local"
    workers: int = 1
    address: str | None = None
    gpus_per_worker: float = 0.0
    tiles_per_task: int = 8
    resume: bool = False

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise SparseYoloError(f"unknown engine {self.engine!r}; known: {', '.join(ENGINES)}")
        if self.engine != "ray" and (self.address or self.gpus_per_worker):
            raise SparseYoloError("--address and --gpus-per-worker need --engine ray")

    @property
    def merged_path(self) -> Path:
        return self.merged if self.merged.parent != Path(".") else self.outdir / self.merged


@dataclass(frozen=True)
class Unit:
    """One task.

    Attributes:
        source: the input raster or image.
        output: its per-tile output file (written by the worker for a whole-file unit).
        tiles: ``(start, stop)`` range of the source's tile windows for a part of a huge
            raster (the driver merges the parts and writes ``output``); None for the whole
            file.
        part: index of this part among the source's parts (0 for a whole file).
    """

    source: Path
    output: Path
    tiles: tuple[int, int] | None = None
    part: int = 0


@dataclass
class Outcome:
    """What a worker reports for one unit: small, so nothing big travels to the driver.

    Attributes:
        unit: the unit.
        error: the one-line reason it failed, or None.
        n_detections: detections written (whole file) or found (part).
        warnings: one-line notes for the user.
        dets: for a part of a huge raster, (N, 6) float32 [x1, y1, x2, y2, score, class]
            in full-raster pixels before the cross-tile merge; None otherwise.
        names: class id -> name (parts only, for the driver's merge).
    """

    unit: Unit
    error: str | None = None
    n_detections: int = 0
    warnings: list[str] = field(default_factory=list)
    dets: np.ndarray | None = None
    names: dict[int, str] | None = None


class TileWorker:
    """Loads the Detector once, then runs units; one per process (local) or actor (Ray).

    Args:
        opts: the command's shared model/tiling options (see ``commands/options.py``).
        threads: torch intra-op threads for this worker.
        to_wgs84: write per-tile outputs in EPSG:4326.
    """

    def __init__(self, opts: dict[str, Any], threads: int, to_wgs84: bool) -> None:
        import torch  # noqa: PLC0415

        from sparse_yolo.commands.options import build_detector  # noqa: PLC0415

        torch.set_num_threads(threads)
        self.detector = build_detector(opts)
        self.to_wgs84 = to_wgs84

    def run(self, unit: Unit) -> Outcome:
        """Run one unit; a failure becomes the outcome's one-line error, never a raise."""
        try:
            return self._run(unit)
        except Exception as exc:  # one bad tile never stops the batch
            return Outcome(unit, error=reason(exc))

    def _run(self, unit: Unit) -> Outcome:
        from sparse_yolo.io.raster import open_source  # noqa: PLC0415
        from sparse_yolo.io.writers import write_detections  # noqa: PLC0415

        if unit.tiles is not None:
            pipeline = self.detector.pipeline
            with open_source(unit.source) as src:
                windows = pipeline.tile_windows(src)[slice(*unit.tiles)]
                dets = pipeline.detect_tiles(src, windows).dets().numpy()
            return Outcome(unit, n_detections=len(dets), dets=dets, names=self.detector.names)
        result = self.detector.predict(unit.source)
        write_detections(unit.output, [result], to_wgs84=self.to_wgs84)
        return Outcome(unit, n_detections=len(result), warnings=result.warnings)


def reason(exc: BaseException) -> str:
    """One line for errors.json: the message of a SparseYoloError, else type and message."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, SparseYoloError) else f"{type(exc).__name__}: {text}"


def threads_per_worker(cpus: int, workers: int) -> int:
    """Torch threads per worker so that all workers together use ``cpus`` cores."""
    return max(1, math.floor(cpus / workers))
