"""``sparse-yolo detect`` and ``sparse-yolo batch``."""

from __future__ import annotations

import glob
import json
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import click
import numpy as np

from sparse_yolo.commands.options import build_detector, model_options, tiling_options, write_json
from sparse_yolo.config import load_config
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


# ----------------------------------------------------------------------------------- batch
def expand_sources(spec: str) -> list[Path]:
    """A folder (its images, sorted) or a glob pattern."""
    from sparse_yolo.io.raster import IMAGE_SUFFIXES  # noqa: PLC0415

    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
    if not files:
        raise SparseYoloError(f"no images match {spec!r}")
    return files


_WORKER: dict[str, Any] = {}


def _init_worker(opts: dict[str, Any], threads: int) -> None:
    import torch  # noqa: PLC0415

    torch.set_num_threads(threads)
    _WORKER["detector"] = build_detector(opts)


def _process(src: Path, out: Path, to_wgs84: bool) -> tuple[int, list[str]]:
    """Detect one tile and write its output; returns (detections, warnings)."""
    from sparse_yolo.io.writers import write_detections  # noqa: PLC0415

    run = _WORKER["detector"].predict(src)
    write_detections(out, [run], to_wgs84=to_wgs84)
    return len(run), run.warnings


@click.command()
@click.argument("inputs")
@click.option(
    "-o",
    "--output",
    "outdir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder.",
)
@click.option(
    "--workers", type=click.IntRange(1), default=1, show_default=True, help="Parallel processes."
)
@click.option(
    "--resume",
    is_flag=True,
    help="Skip tiles whose output already exists (outputs are written atomically).",
)
@model_options
@tiling_options
def batch(inputs: str, outdir: Path, workers: int, resume: bool, **opts: Any) -> None:
    """Detect objects in a folder or glob of tiles: one GeoJSON per tile plus all.geojson.

    One bad tile never stops the batch: its one-line reason goes to OUTPUT/errors.json and
    the exit status is 1. With --resume, tiles already done are skipped.

    \b
    Example:
      sparse-yolo batch 'scenes/**/*.tif' -o out/ --workers 2 --resume
    """
    from tqdm import tqdm  # noqa: PLC0415

    files = expand_sources(inputs)
    outdir.mkdir(parents=True, exist_ok=True)
    outputs = {f: outdir / f"{f.stem}.geojson" for f in files}
    todo = [f for f in files if not (resume and outputs[f].is_file())]
    click.echo(f"{len(files)} tiles, {len(files) - len(todo)} already done, {len(todo)} to run")
    errors: dict[str, str] = {}
    opts = _with_tiling(opts)
    threads = max(1, (os.cpu_count() or 1) // workers)
    if todo:
        pool = None
        if workers == 1:
            _init_worker(opts, threads)
        else:
            pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(opts, threads))
        try:
            errors = _run_all(todo, outputs, opts["to_wgs84"], pool, tqdm)
        finally:
            if pool:
                pool.shutdown(cancel_futures=True)
    _write_errors(outdir / "errors.json", errors)
    done = [outputs[f] for f in files if outputs[f].is_file()]
    iou = opts.get("iou") or load_config(opts.get("config_path")).post.iou
    merge_geojson(done, outdir / "all.geojson", iou)
    click.echo(f"{len(done)} tiles written, {len(errors)} failed -> {outdir}")
    if errors:
        raise SystemExit(1)


def _run_all(
    todo: list[Path], outputs: dict[Path, Path], to_wgs84: bool, pool, tqdm
) -> dict[str, str]:
    errors: dict[str, str] = {}
    bar = tqdm(total=len(todo), unit="tile", desc="batch")
    if pool is None:
        jobs = ((f, lambda f=f: _process(f, outputs[f], to_wgs84)) for f in todo)
        results = ((f, _call(fn)) for f, fn in jobs)
    else:
        futures = {pool.submit(_process, f, outputs[f], to_wgs84): f for f in todo}
        results = ((futures[fut], _outcome(fut)) for fut in as_completed(futures))
    for f, (ok, value) in results:
        if not ok:
            errors[str(f)] = value
            bar.write(f"error: {value}")
        else:
            for note in value[1]:
                bar.write(f"warning: {note}")
        bar.update()
    bar.close()
    return errors


def _call(fn) -> tuple[bool, Any]:
    try:
        return True, fn()
    except Exception as exc:  # one bad tile never stops the batch
        return False, _reason(exc)


def _outcome(fut) -> tuple[bool, Any]:
    try:
        return True, fut.result()
    except Exception as exc:
        return False, _reason(exc)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, SparseYoloError) else f"{type(exc).__name__}: {text}"


def _write_errors(path: Path, errors: dict[str, str]) -> None:
    if errors:
        write_json(path, errors)
    else:
        path.unlink(missing_ok=True)


def merge_geojson(files: list[Path], out: Path, iou: float = 0.5) -> None:
    """Concatenate per-tile FeatureCollections; reproject to EPSG:4326 when CRSs differ.

    Georeferenced tiles that overlap see the same object twice: duplicates across tiles are
    suppressed by class-aware NMS on the features' CRS envelopes (``iou``). Pixel-coordinate
    tiles share no frame, so their features are only concatenated.
    """
    from rasterio.warp import transform_geom  # noqa: PLC0415

    collections = [json.loads(f.read_text()) for f in files]
    crs_members = {json.dumps(c.get("crs"), sort_keys=True) for c in collections}
    merged: dict[str, Any] = {"type": "FeatureCollection", "features": []}
    if len(crs_members) == 1:
        if collections and collections[0].get("crs"):
            merged["crs"] = collections[0]["crs"]
        for c in collections:
            merged["features"].extend(c["features"])
    else:
        for c in collections:
            if not c.get("crs"):
                raise SparseYoloError(
                    "cannot merge pixel-coordinate tiles with georeferenced ones", out
                )
            src = c["crs"]["properties"]["name"]
            for feat in c["features"]:
                feat = {**feat, "geometry": transform_geom(src, "EPSG:4326", feat["geometry"])}
                merged["features"].append(feat)
    georeferenced = any(c.get("crs") for c in collections)
    if georeferenced and len(files) > 1:
        merged["features"] = _dedupe(merged["features"], iou)
    write_json(out, merged)


def _dedupe(features: list[dict[str, Any]], iou: float) -> list[dict[str, Any]]:
    """Class-aware NMS over features by the envelopes of their geometries (best score kept)."""
    from sparse_yolo.postprocess import nms_boxes  # noqa: PLC0415

    boxes = []
    for feat in features:
        xy = np.asarray(feat["geometry"]["coordinates"][0], dtype=np.float64)
        boxes.append([*xy.min(0), *xy.max(0)])
    scores = [float(f["properties"]["score"]) for f in features]
    classes = [int(f["properties"]["class_id"]) for f in features]
    keep = nms_boxes(np.asarray(boxes).reshape(-1, 4), np.asarray(scores), np.asarray(classes), iou)
    return [features[i] for i in keep.tolist()]
