"""The batch driver: plan units, stream them through an engine, then merge the outputs.

The stages, in order: find the tiles, skip what ``--resume`` finds done, split each huge
raster into ranges of its tile windows, run every unit on the engine (workers write
per-tile outputs atomically as they finish; only small outcomes reach the driver), merge
the parts of each huge raster, write ``errors.json``, then merge all per-tile outputs.
"""

from __future__ import annotations

import glob
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparse_yolo.atomic import write_json
from sparse_yolo.batch.work import ENGINES, BatchSpec, Outcome, Unit, reason
from sparse_yolo.errors import SparseYoloError


@dataclass
class BatchReport:
    """What a batch did: counts for the summary line, the failures by source."""

    n_tiles: int
    n_skipped: int
    n_written: int
    errors: dict[str, str]


def expand_sources(spec: str) -> list[Path]:
    """A folder (its images, sorted) or a glob pattern."""
    from sparse_yolo.io.raster import IMAGE_SUFFIXES  # noqa: PLC0415 - GDAL only when run

    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
    if not files:
        raise SparseYoloError(f"no images match {spec!r}")
    return files


def run_batch(spec: BatchSpec, echo: Callable[[str], None] = print) -> BatchReport:
    """Run a batch end to end (see the module docstring)."""
    from sparse_yolo.batch.merge import merge_outputs  # noqa: PLC0415
    from sparse_yolo.commands.options import build_config  # noqa: PLC0415

    files = expand_sources(spec.inputs)
    outputs = tile_outputs(files, spec.outdir)
    spec.outdir.mkdir(parents=True, exist_ok=True)
    sweep_partials(spec.outdir)  # left by workers killed mid-write in an earlier run
    todo = [f for f in files if not (spec.resume and outputs[f].is_file())]
    echo(f"{len(files)} tiles, {len(files) - len(todo)} already done, {len(todo)} to run")
    cfg = build_config(spec.opts)
    errors: dict[str, str] = {}
    if todo:
        units = plan_units(todo, outputs, cfg, spec.tiles_per_task)
        engine = importlib.import_module(ENGINES[spec.engine])
        errors = collect(engine.execute(units, spec), units, cfg, spec)
    sweep_partials(spec.outdir)
    _write_errors(spec.outdir / "errors.json", errors)
    done = [f for f in files if outputs[f].is_file()]
    wgs84 = bool(spec.opts.get("to_wgs84"))
    merge_outputs([outputs[f] for f in done], done, spec.merged_path, cfg.post.iou, wgs84)
    return BatchReport(len(files), len(files) - len(todo), len(done), errors)


def tile_outputs(files: list[Path], outdir: Path) -> dict[Path, Path]:
    """``<outdir>/<stem>.geojson`` per tile; two tiles with one stem are refused."""
    owner: dict[Path, Path] = {}
    for f in files:
        out = owner.setdefault(outdir / f"{f.stem}.geojson", f)
        if out != f:
            name = f"{f.stem}.geojson"
            raise SparseYoloError(
                f"{out} and {f} would both write {name}; give tiles distinct names"
            )
    outputs = {f: o for o, f in owner.items()}
    return outputs


def plan_units(
    files: list[Path], outputs: dict[Path, Path], cfg, tiles_per_task: int
) -> list[Unit]:
    """One unit per file; rasters with more than ``tiles_per_task`` tile windows get one
    unit per range of that many windows."""
    units = []
    for f in files:
        n = _n_windows(f, cfg)
        if n <= tiles_per_task:
            units.append(Unit(f, outputs[f]))
            continue
        for part, start in enumerate(range(0, n, tiles_per_task)):
            units.append(Unit(f, outputs[f], (start, min(n, start + tiles_per_task)), part))
    return units


def _n_windows(path: Path, cfg) -> int:
    """How many tile windows a raster has; 1 for plain images (decoded whole, never split)
    and for unreadable files (their worker reports the problem)."""
    import rasterio  # noqa: PLC0415

    from sparse_yolo.io.raster import PLAIN_SUFFIXES  # noqa: PLC0415
    from sparse_yolo.io.tiles import tile_windows  # noqa: PLC0415

    if path.suffix.lower() in PLAIN_SUFFIXES:
        return 1
    try:
        with rasterio.open(path) as ds:
            width, height = ds.width, ds.height
        return len(tile_windows(width, height, cfg.tiling.tile, cfg.tiling.overlap))
    except Exception:
        return 1


def collect(outcomes: Iterable[Outcome], units: list[Unit], cfg, spec: BatchSpec) -> dict[str, str]:
    """Consume outcomes as they arrive: progress, errors, and merging huge rasters' parts."""
    from tqdm import tqdm  # noqa: PLC0415

    n_parts: dict[Path, int] = {}
    for u in units:
        n_parts[u.source] = n_parts.get(u.source, 0) + 1
    parts: dict[Path, dict[int, Outcome]] = {}
    errors: dict[str, str] = {}
    bar = tqdm(total=len(units), unit="task", desc="batch")
    for out in outcomes:
        bar.update()
        src = out.unit.source
        if str(src) in errors:
            continue  # another part of this raster already failed
        if out.error is None and out.unit.tiles is not None:
            parts.setdefault(src, {})[out.unit.part] = out
            if len(parts[src]) < n_parts[src]:
                continue
            out = _finish_parts(parts.pop(src), cfg, spec.opts.get("to_wgs84", False))
        if out.error is not None:
            errors[str(src)] = out.error
            parts.pop(src, None)
            bar.write(f"error: {out.error}")
        for note in out.warnings:
            bar.write(f"warning: {note}")
    bar.close()
    return errors


def _finish_parts(parts: dict[int, Outcome], cfg, to_wgs84: bool) -> Outcome:
    """Merge the parts of one huge raster (in tile order, as one run would) and write it."""
    import torch  # noqa: PLC0415

    from sparse_yolo.io.raster import open_source  # noqa: PLC0415
    from sparse_yolo.io.writers import write_detections  # noqa: PLC0415
    from sparse_yolo.pipeline import merge_source  # noqa: PLC0415

    ordered = [parts[i] for i in sorted(parts)]
    unit = Unit(ordered[0].unit.source, ordered[0].unit.output)
    try:
        dets = torch.from_numpy(np.concatenate([p.dets for p in ordered]))
        with open_source(unit.source) as src:
            result = merge_source(src, dets, cfg, ordered[0].names or {})
        write_detections(unit.output, [result], to_wgs84=to_wgs84)
    except Exception as exc:
        return Outcome(unit, error=reason(exc))
    return Outcome(unit, n_detections=len(result), warnings=result.warnings)


def sweep_partials(outdir: Path) -> None:
    """Delete temporary files that a killed worker left (outputs are renamed into place)."""
    for tmp in outdir.glob(".*.tmp*"):
        tmp.unlink(missing_ok=True)


def _write_errors(path: Path, errors: dict[str, str]) -> None:
    if errors:
        write_json(path, errors)
    else:
        path.unlink(missing_ok=True)
