"""Options and helpers shared by the commands: one definition each.

Every command module imports from here; ``sparse_yolo.cli`` only assembles the group, so
nothing imports back up into it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sparse_yolo.atomic import write_json
from sparse_yolo.errors import SparseYoloError

__all__ = ["build_config", "build_detector", "model_options", "tiling_options", "write_json"]


def model_options(f):
    """Options shared by every command that runs the detector."""
    options = [
        click.option(
            "--weights",
            type=click.Path(dir_okay=False, path_type=Path),
            help="sparse-yolo or Ultralytics YOLOv8 .pt; default $SPARSE_YOLO_WEIGHTS, "
            "then Ultralytics' yolov8n.pt (downloaded).",
        ),
        click.option(
            "--config",
            "config_path",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Pipeline YAML (see configs/); command-line options override it.",
        ),
        click.option(
            "--backend",
            type=click.Choice(["auto", "gather", "spconv", "dense"]),
            help="Sparse stem kernels. auto: per frame, whichever of sparse windows, every "
            "cell or plain dense a cost model of this device predicts cheapest (see "
            "'sparse-yolo calibrate').",
        ),
        click.option(
            "--mask",
            help="Cell mask: all, gradient, coarse, learned (the checkpoint's mask net, else "
            "the one shipped: fewest cells on forest, snow and fields), or learned:PATH (a "
            "mask net file or another checkpoint's, e.g. from distill --images); default "
            "gradient.",
        ),
        click.option(
            "--roi",
            type=click.Path(path_type=Path),
            help="Vector file (GeoPackage, GeoJSON, Shapefile, ...): examine only cells "
            "inside its features, e.g. roads or water. Needs a raster with a CRS.",
        ),
        click.option("--roi-buffer", type=click.FloatRange(0), help="Metres added around the ROI."),
        click.option("--roi-layer", help="Layer of a multi-layer ROI file."),
        click.option("--roi-where", help="SQL filter on ROI features, e.g. \"highway='primary'\"."),
        click.option(
            "--max-active",
            type=click.FloatRange(0, 1, min_open=True),
            help="Keep at most this fraction of cells (the best-scoring), for predictable latency.",
        ),
        click.option("--conf", type=click.FloatRange(0, 1), help="Confidence threshold (0.25)."),
        click.option("--iou", type=click.FloatRange(0, 1, min_open=True), help="NMS IoU (0.5)."),
        click.option("--device", help="torch device, e.g. cpu or cuda:0 (default: CUDA if any)."),
        click.option(
            "--half",
            is_flag=True,
            help="fp16 inference on CUDA (tensor cores); compare runs every method in fp16.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def build_config(opts: dict[str, Any]):
    """The pipeline config from shared options: config file first, then CLI overrides."""
    from sparse_yolo.config import load_config  # noqa: PLC0415 - keep --help fast

    try:
        cfg = load_config(opts.get("config_path"))
    except (ValueError, TypeError, OSError) as exc:
        raise SparseYoloError(f"bad config ({exc})", opts.get("config_path")) from exc
    overrides = {
        "backend": opts.get("backend"),
        "mask.name": opts.get("mask"),
        "post.conf": opts.get("conf"),
        "post.iou": opts.get("iou"),
        "tiling.tile": opts.get("tile"),
        "tiling.overlap": opts.get("overlap"),
        "tiling.merge": opts.get("merge"),
        "mask.roi": str(opts["roi"]) if opts.get("roi") else None,
        "mask.roi_buffer": opts.get("roi_buffer"),
        "mask.roi_layer": opts.get("roi_layer"),
        "mask.roi_where": opts.get("roi_where"),
    }
    if opts.get("max_active") is not None:
        overrides["mask.max_active"] = opts["max_active"]
    if opts.get("half"):
        overrides["half"] = True
    try:
        return cfg.replace(**{k: v for k, v in overrides.items() if v is not None})
    except ValueError as exc:  # unknown mask/backend names, out-of-range values
        raise SparseYoloError(str(exc)) from exc


def build_detector(opts: dict[str, Any]):
    """Detector from shared options (config file first, then CLI overrides)."""
    from sparse_yolo.detector import Detector  # noqa: PLC0415

    cfg = build_config(opts)
    try:
        detector = Detector(opts.get("weights"), config=cfg, device=opts.get("device"))
    except ValueError as exc:  # unknown mask/backend names, out-of-range values
        raise SparseYoloError(str(exc)) from exc
    device = detector.engine.device  # the Detector's own choice when --device is not given
    if cfg.half and device.type != "cuda":
        raise SparseYoloError(f"--half (fp16) needs a CUDA device, not {str(device)!r}")
    return detector


def tiling_options(f):
    for option in reversed(
        [
            click.option(
                "--tile", type=click.IntRange(64), help="Tile edge in px for big rasters (4096)."
            ),
            click.option("--overlap", type=click.IntRange(0), help="Tile overlap in px (128)."),
            click.option(
                "--merge",
                type=click.Choice(["nms", "greedy"]),
                help="Across tiles: nms drops seam-cut boxes then suppresses duplicates; "
                "greedy fuses seam-cut boxes SAHI-style.",
            ),
            click.option("--to-wgs84", is_flag=True, help="Write RFC 7946 EPSG:4326 lon/lat."),
        ]
    ):
        f = option(f)
    return f
