"""The video half of ``sparse-yolo detect``: clips, image sequences and stream URLs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sparse_yolo.commands.options import build_detector, write_json
from sparse_yolo.errors import SparseYoloError


def video_options(f):
    """Options that only the video path reads (``detect`` carries them)."""
    options = [
        click.option(
            "--frames",
            is_flag=True,
            help="Take the source (a folder or a quoted glob of images) as the frames of one "
            "video, in name order. Files with a video suffix and rtsp/http URLs are videos "
            "without it.",
        ),
        click.option(
            "--track",
            type=click.Choice(["bytetrack", "botsort"]),
            help="Track objects across frames with Ultralytics' tracker (its YAML settings); "
            "adds track_id to every detection.",
        ),
        click.option(
            "--refresh",
            type=click.IntRange(0),
            help="Compute every cell of every N-th frame, so objects that never move are found "
            "and the camera's background follows the light (100; 0: only during warm-up).",
        ),
        click.option(
            "--reuse/--no-reuse",
            default=None,
            help="Carry the detections of regions that saw no motion or change since they were "
            "computed (parked cars, furniture) instead of recomputing them; motion or change "
            "near one recomputes it, refreshes recompute everything (default: on for frames of "
            "1920x1080 and larger; on small frames recomputing is as cheap).",
        ),
        click.option(
            "--background/--no-background",
            default=None,
            help="Windows read the sites a frame skips from the stem features of the last "
            "frame computed in full (the first, then every --refresh), as a fixed camera sees "
            "them, rather than a flat colour: objects beside moving ones score as in the full "
            "frame (default: on).",
        ),
        click.option(
            "--video-masks",
            help="Masks of ordinary frames, joined by + as a union: motion (default), "
            "motion+gradient, all, ...",
        ),
        click.option(
            "--video-batch",
            type=click.IntRange(1),
            help="Frames the engine runs together: equal-shaped windows of consecutive frames "
            "share forward passes (results come that many frames late).",
        ),
        click.option(
            "--save-video",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Write the frames with boxes and track ids drawn (.mp4 or .avi).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def video_config(opts: dict[str, Any]):
    """VideoConfig from the CLI options (defaults where not given)."""
    from sparse_yolo.video.config import VideoConfig  # noqa: PLC0415

    given = {"track": opts.get("track"), "refresh": opts.get("refresh")}
    given["masks"] = opts.get("video_masks")
    given["batch"] = opts.get("video_batch")
    given["reuse"] = opts.get("reuse")
    given["background"] = opts.get("background")
    try:
        return VideoConfig(**{k: v for k, v in given.items() if v is not None})
    except ValueError as exc:
        raise SparseYoloError(str(exc)) from exc


def run_video(source: str, output: Path | None, stats_path: Path | None, opts: dict[str, Any]):
    """Detect (and track) objects in every frame of ``source``; one record per frame.

    Records are written and flushed frame by frame, so a source that ends early keeps its
    records; the run then fails with a one-line message (exit status 1).
    """
    from tqdm import tqdm  # noqa: PLC0415

    from sparse_yolo.video.reader import VideoReader  # noqa: PLC0415
    from sparse_yolo.video.stream import StreamStats, stream  # noqa: PLC0415
    from sparse_yolo.video.writers import VideoWriter, open_writer, writer_for  # noqa: PLC0415

    video = video_config(opts)
    output = output or _default_output(source)
    writer_for(output)  # a bad suffix fails before anything is opened
    reader = VideoReader(source, video.fps)
    writers: list = []
    stats = StreamStats()
    try:
        detector = build_detector(opts)
        writers.append(open_writer(output))
        if opts.get("save_video"):
            writers.append(VideoWriter(opts["save_video"], reader.fps, reader.size))
        with tqdm(total=len(reader) or None, unit="frame", desc="detect") as bar:
            for r in stream(detector, reader, video):
                for w in writers:
                    w.write(r)
                stats.add(r)
                bar.update()
    finally:
        reader.close()
        for w in writers:
            w.close()
        if writers:
            if stats_path:
                write_json(stats_path, stats.as_dict())
            n = f"{stats.frames} frames, {stats.detections} detections"
            click.echo(f"{n} -> {output}", err=True)


def _default_output(source: str) -> Path:
    """``<source stem>.jsonl`` beside a clip or folder; in the working folder for a URL."""
    from sparse_yolo.video.reader import VIDEO_SUFFIXES  # noqa: PLC0415

    if "://" in source:
        base = source.rstrip("/").rsplit("/", 1)[-1]
    else:
        base = source.split("*")[0].rstrip("/")
    path = Path(base or "frames")
    stem = path.stem if path.suffix.lower() in VIDEO_SUFFIXES else path.name
    return path.with_name(f"{stem}.jsonl")
