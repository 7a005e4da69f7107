"""``sparse-yolo detect``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np

from sparse_yolo.commands.options import build_detector, model_options, tiling_options, write_json
from sparse_yolo.errors import SparseYoloError


@click.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Detections; format by suffix: .geojson (default), .json (COCO results), .csv. "
    "Default: <first source>.geojson beside it.",
)
@model_options
@tiling_options
@click.option(
    "--preview",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PNG with boxes drawn (downscaled).",
)
@click.option(
    "--save-mask",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PNG overlay of the examined cells.",
)
@click.option(
    "--stats",
    "stats_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON of stage timings and mask facts.",
)
def detect(
    sources: tuple[Path, ...], output: Path | None, preview, save_mask, stats_path, **opts: Any
) -> None:
    """Detect objects in images or rasters of any size at full resolution.

    SOURCES are JPEG/PNG frames or GeoTIFFs (any dtype, 1/3/4 bands, with or without a
    CRS). Big rasters are read tile by tile, so memory is bounded by --tile.

    \b
    Examples:
      sparse-yolo detect frame.jpg -o frame.geojson --stats stats.json
      sparse-yolo detect scene.tif --mask gradient --max-active 0.2 --preview p.png
      sparse-yolo detect a.tif b.tif -o both.csv --to-wgs84
    """
    from sparse_yolo.io.writers import write_detections, write_preview  # noqa: PLC0415

    if (preview or save_mask) and len(sources) > 1:
        raise SparseYoloError("--preview and --save-mask take a single source")
    output = output or sources[0].with_suffix(".geojson")
    detector = build_detector(_with_tiling(opts))
    runs = [detector.predict(src, progress=True) for src in sources]
    for run in runs:
        for note in run.warnings:
            click.echo(f"warning: {note}", err=True)
    write_detections(output, runs, to_wgs84=opts["to_wgs84"])
    n = sum(len(r) for r in runs)
    click.echo(f"{n} detections -> {output}")
    if preview or save_mask:
        _write_images(sources[0], runs[0], preview, save_mask, write_preview)
    if stats_path:
        write_json(
            stats_path,
            runs[0].stats.to_dict()
            if len(runs) == 1
            else {r.name: r.stats.to_dict() for r in runs},
        )


def _with_tiling(opts: dict[str, Any]) -> dict[str, Any]:
    merge = opts.pop("merge", None)
    if merge:
        opts = {**opts, "merge": merge}
    return opts


def _write_images(
    source: Path, run, preview: Path | None, save_mask: Path | None, write_preview
) -> None:
    import cv2  # noqa: PLC0415

    from sparse_yolo.io.raster import open_source  # noqa: PLC0415

    with open_source(source) as src:
        image, _, scale = src.read_overview(2048)
    d = run.detections
    if preview:
        write_preview(preview, image, d.boxes, d.classes, d.scores, d.names, scale=scale)
        click.echo(f"preview -> {preview}")
    if save_mask:
        mask = cv2.resize(
            run.mask_overview.astype(np.uint8),
            (image.shape[1], image.shape[0]),
            interpolation=cv2.INTER_NEAREST,
        )
        overlay = image.copy()
        overlay[mask == 0] = (overlay[mask == 0] * 0.35).astype(np.uint8)  # dim what was skipped
        write_preview(save_mask, overlay, np.zeros((0, 4)), np.zeros(0), np.zeros(0), {}, scale=1.0)
        click.echo(f"mask overlay -> {save_mask}")
