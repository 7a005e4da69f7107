"""``sparse-yolo batch``: a folder or glob of tiles, on this machine or a Ray cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sparse_yolo.batch.work import ENGINES
from sparse_yolo.commands.options import model_options, tiling_options


@click.command()
@click.argument("inputs")
@click.option(
    "-o",
    "--output",
    "outdir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder: one <tile>.geojson per tile, errors.json, the merged file.",
)
@click.option(
    "--merged",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("all.geojson"),
    show_default=True,
    help="Merged output (a bare name goes inside OUTPUT); format by suffix: .geojson, "
    ".parquet (GeoParquet), .gpkg, .fgb, .csv.",
)
@click.option(
    "--engine",
    type=click.Choice(list(ENGINES)),
    default="local",
    show_default=True,
    help="local: processes on this machine. ray: Ray actors, here or on a cluster "
    "(pip install 'sparse-yolo[ray]').",
)
@click.option(
    "--workers",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Parallel workers (processes, or Ray actors), each with its own Detector.",
)
@click.option(
    "--address",
    help="Ray cluster to join (e.g. 10.0.0.1:6379 or auto); default: start Ray here.",
)
@click.option(
    "--gpus-per-worker",
    type=click.FloatRange(0),
    default=0.0,
    help="GPUs each Ray actor reserves (fractions share a GPU).",
)
@click.option(
    "--tiles-per-task",
    type=click.IntRange(1),
    default=8,
    show_default=True,
    help="A raster with more tile windows than this is split into tasks of this many, "
    "so the windows of one huge raster run on several workers.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Skip tiles whose output already exists (outputs are written atomically).",
)
@model_options
@tiling_options
def batch(inputs: str, outdir: Path, resume: bool, **opts: Any) -> None:
    """Detect objects in a folder or glob of tiles: one GeoJSON per tile plus a merged file.

    One bad tile never stops the batch: its one-line reason goes to OUTPUT/errors.json and
    the exit status is 1. With --resume, tiles already done are skipped, so a batch that
    was interrupted (even killed) finishes the rest when run again. The merged file
    keeps one copy of an object seen by overlapping tiles, and joins the two parts of an
    object cut by the edge between abutting tiles.

    \b
    Examples:
      sparse-yolo batch 'scenes/**/*.tif' -o out/ --workers 2 --resume
      sparse-yolo batch tiles/ -o out/ --merged all.gpkg --engine ray --workers 8
      sparse-yolo batch /data/tiles -o /data/out --engine ray --address auto \\
          --workers 16 --gpus-per-worker 0.5
    """
    from sparse_yolo.batch import BatchSpec, run_batch  # noqa: PLC0415

    keys = ("merged", "engine", "workers", "address", "gpus_per_worker", "tiles_per_task")
    spec = BatchSpec(inputs, outdir, opts, resume=resume, **{k: opts.pop(k) for k in keys})
    report = run_batch(spec, echo=click.echo)
    click.echo(
        f"{report.n_written} tiles written, {len(report.errors)} failed -> {outdir} "
        f"(merged: {spec.merged_path})"
    )
    if report.errors:
        raise SystemExit(1)
