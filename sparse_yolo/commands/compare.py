"""``sparse-yolo compare``: the sparse pipeline against dense baselines on one image."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from sparse_yolo.commands.options import build_detector, model_options, write_json

MULTI_VALUE_FLAGS = ("--imgsz", "--sweep-active")
SIZE_BUCKETS = ("all", "small", "medium", "large")
METRICS = (("recall", "R"), ("precision", "P"), ("map50", "AP50"))
LEGEND = (
    "ms: median of interleaved timed rounds after a warm-up. GFLOPs: 2 x conv multiply-adds / 1e9 "
    "(sparse: active sites of the stem + windowed area of the rest). peak MiB: peak RSS above "
    "the level before the runs (CUDA: allocated memory). R@full: share of the dense "
    "full-resolution detections found."
)
LEGEND_LABELS = (
    "R / P / AP50: recall, precision, mAP@0.5 against the labels; suffix s / m / l: objects of "
    "area < 32², 32²-96², > 96² px (COCO sizes). '-': undefined (no such objects or predictions)."
)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def expand_multi_values(args: Sequence[str], flags: Sequence[str] = MULTI_VALUE_FLAGS) -> list:
    """Rewrite ``--imgsz 640 1280`` as ``--imgsz 640 --imgsz 1280`` for click.

    Numbers after one of ``flags`` are taken as its values until the first token that is not
    a number, so a positional argument after them stays positional.
    """
    out: list[str] = []
    flag, first = None, False
    for i, arg in enumerate(args):
        if arg == "--":
            return out + list(args[i:])
        if arg in flags:
            flag, first = arg, True
            out.append(arg)
        elif flag and _is_number(arg):
            out += [arg] if first else [flag, arg]
            first = False
        else:
            flag = None
            out.append(arg)
    return out


class MultiValueCommand(click.Command):
    """A command whose ``multiple`` options in ``MULTI_VALUE_FLAGS`` take several values."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, expand_multi_values(args))


def _multiple_of_32(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    values = value if isinstance(value, tuple) else (value,)
    bad = [v for v in values if v % 32]
    if bad:
        raise click.BadParameter(f"{bad[0]} is not a multiple of 32 px")
    return value


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def table_columns(labels: bool) -> list[tuple[str, Any]]:
    """(header, row -> text) of each column; the label metrics only with ``labels``."""
    cols: list[tuple[str, Any]] = [
        ("method", lambda r: r.method),
        ("input", lambda r: str(r.info.get("input", ""))),
        ("ms", lambda r: _fmt(r.latency_ms, 1)),
        ("GFLOPs", lambda r: _fmt(r.gflops, 2)),
        ("peak MiB", lambda r: _fmt(r.peak_mib, 0)),
        ("dets", lambda r: str(r.n_det)),
        ("R@full", lambda r: _fmt(r.recall_vs_full)),
    ]
    if labels:
        for key, short in METRICS:
            for size in SIZE_BUCKETS:
                head = short if size == "all" else f"{short}{size[0]}"
                cols.append((head, lambda r, k=key, s=size: _fmt((r.metrics or {})[s][k])))
    return cols


def format_table(rows: Sequence, labels: bool = False) -> str:
    """One text table of :class:`~sparse_yolo.bench.measure.Row` objects, with its legend."""
    cols = table_columns(labels)
    cells = [[head for head, _ in cols]] + [[fn(r) for _, fn in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]

    def line(row: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    text = [line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]]
    return "\n".join(text + [LEGEND] + ([LEGEND_LABELS] if labels else []))


def read_image(path: Path):
    """(H, W, 3) uint8 BGR pixels of an image or raster (nodata stays as read)."""
    from sparse_yolo.io.raster import open_source  # noqa: PLC0415

    with open_source(path) as src:
        image, _ = src.read(src.full_window)
    return image


def sweep_runners(detector, counter, budgets: Sequence[float]) -> list:
    """Sparse runners sharing ``detector``'s model, one per ``mask.max_active`` budget."""
    from sparse_yolo.bench.runners import SparseRunner  # noqa: PLC0415
    from sparse_yolo.detector import Detector  # noqa: PLC0415

    out = []
    for b in budgets:
        cfg = detector.config.replace(**{"mask.max_active": b})
        det = Detector(detector.model, config=cfg, device=detector.engine.device)
        out.append(SparseRunner(det, counter, name=f"sparse@{b:g}"))
    return out


def write_plot(path: Path, sweep: Sequence, references: Sequence, labels: bool) -> None:
    """PNG: latency (solid) and recall (open markers) of the sweep against the budget.

    The ``references`` (e.g. dense-full, sahi) are horizontal lines: latency dashed, recall dotted.
    """
    from matplotlib.figure import Figure  # noqa: PLC0415 - Agg canvas, no pyplot state

    from sparse_yolo.atomic import atomic_open  # noqa: PLC0415

    x = [r.info["max_active"] for r in sweep]
    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.subplots()
    ax.plot(x, [r.latency_ms for r in sweep], "o-", color="C0", label="sparse latency")
    for i, ref in enumerate(references):
        ax.axhline(ref.latency_ms, ls="--", color=f"C{i + 1}", label=f"{ref.method} latency")
    ax.set_xlabel("active budget (mask.max_active)")
    ax.set_ylabel("latency (ms)")
    ax.set_ylim(bottom=0)
    ax2 = ax.twinx()
    what = "recall vs labels" if labels else "recall vs dense full-res"
    ax2.plot(
        x, [_recall(r, labels) for r in sweep], "s-", color="C0", mfc="w", label=f"sparse {what}"
    )
    for i, ref in enumerate(references):
        ax2.axhline(_recall(ref, labels), ls=":", color=f"C{i + 1}", label=f"{ref.method} recall")
    ax2.set_ylabel(what)
    ax2.set_ylim(0, 1.05)
    handles = ax.get_legend_handles_labels()
    more = ax2.get_legend_handles_labels()
    ax.legend(handles[0] + more[0], handles[1] + more[1], loc="best", fontsize=8)
    fig.tight_layout()
    with atomic_open(path, binary=True) as f:
        fig.savefig(f, format="png", dpi=110)


def _recall(row, labels: bool) -> float:
    value = row.metrics["all"]["recall"] if labels and row.metrics else row.recall_vs_full
    return float("nan") if value is None else value


def run_rows(runners: Sequence, image, runs: int, device) -> list:
    """Measure the runners in interleaved rounds, telling the user which one warms up (stderr)."""
    from sparse_yolo.bench.measure import measure_all  # noqa: PLC0415

    announce = lambda name: click.echo(f"running {name} ...", err=True)  # noqa: E731
    return measure_all(runners, image, runs, device, announce)


def _report(image_path: Path, image, detector, weights, labels, runs: int, rows, sweep) -> dict:
    import torch  # noqa: PLC0415

    from sparse_yolo.bench.flops import GFLOPS_CONVENTION  # noqa: PLC0415
    from sparse_yolo.bench.measure import json_safe  # noqa: PLC0415

    return json_safe(
        {
            "image": str(image_path),
            "image_size": [int(image.shape[1]), int(image.shape[0])],
            "weights": str(weights),
            "labels": str(labels) if labels else None,
            "device": str(detector.engine.device),
            "torch_threads": torch.get_num_threads(),
            "runs": runs,
            "conventions": {"gflops": GFLOPS_CONVENTION, "legend": LEGEND},
            "config": dataclasses.asdict(detector.config),
            "rows": [r.to_dict() for r in rows],
            "sweep": [r.to_dict() for r in sweep],
        }
    )


@click.command(cls=MultiValueCommand)
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--labels",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Ground truth of IMAGE: COCO instances JSON, YOLO, VisDrone or DOTA txt (VisDrone and "
    "DOTA classes are mapped to COCO-80). Adds recall, precision and mAP50 by object size.",
)
@click.option(
    "--label-format",
    type=click.Choice(["auto", "coco", "yolo", "visdrone", "dota"]),
    default="auto",
    show_default=True,
    help="Label format; auto guesses from the suffix and first line.",
)
@click.option(
    "--imgsz",
    type=click.IntRange(32),
    multiple=True,
    default=(640, 1280),
    show_default=True,
    metavar="PX [PX ...]",
    callback=_multiple_of_32,
    help="Input sizes of the plain dense baseline (the frame downsampled, letterboxed).",
)
@click.option(
    "--slice",
    "slice_size",
    type=click.IntRange(0),
    default=640,
    show_default=True,
    callback=_multiple_of_32,
    help="SAHI-style slice edge in px (a multiple of 32); 0 skips slicing.",
)
@click.option(
    "--slice-overlap",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.2,
    show_default=True,
    help="Overlap of neighbouring slices, as a fraction of the slice.",
)
@click.option(
    "--slice-merge",
    type=click.Choice(["greedy", "nms"]),
    default="greedy",
    show_default=True,
    help="Merge of slice detections: greedy (SAHI's greedy merging) or nms.",
)
@click.option(
    "--slice-batch", type=click.IntRange(1), default=8, show_default=True, help="Slices per batch."
)
@click.option(
    "--runs",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Timed runs per method after one warm-up; the median is reported.",
)
@click.option(
    "--sweep-active",
    type=click.FloatRange(0, 1, min_open=True),
    multiple=True,
    metavar="F [F ...]",
    help="Also run the sparse pipeline at each active-cell budget (mask.max_active).",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write every row (and the sweep) as JSON; undefined metrics are null.",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PNG chart of latency and recall against the --sweep-active budget (recall vs "
    "--labels, else vs the dense full-resolution detections).",
)
@model_options
def compare(
    image: Path,
    labels: Path | None,
    label_format: str,
    imgsz: tuple[int, ...],
    slice_size: int,
    slice_overlap: float,
    slice_merge: str,
    slice_batch: int,
    runs: int,
    sweep_active: tuple[float, ...],
    json_path: Path | None,
    plot: Path | None,
    **opts: Any,
) -> None:
    """Compare the sparse pipeline with dense baselines on IMAGE, same weights, one process.

    Rows: the sparse pipeline (configured mask and backend); plain dense YOLO at each --imgsz
    (Ultralytics' predictor for Ultralytics weights); dense at full resolution; SAHI-style
    slicing. Each row gives median latency, GFLOPs, peak memory, detections and, with
    --labels, recall, precision and mAP50 overall and by object size.

    \b
    Examples:
      sparse-yolo compare frame.jpg --labels frame.txt --json cmp.json
      sparse-yolo compare frame.jpg --imgsz 640 1280 --slice 640 --slice-overlap 0.2
      sparse-yolo compare frame.jpg --sweep-active 0.05 0.1 0.2 0.4 --plot sweep.png
    """
    from sparse_yolo.bench.measure import score  # noqa: PLC0415
    from sparse_yolo.bench.runners import build_runners  # noqa: PLC0415
    from sparse_yolo.eval.labels import load_labels  # noqa: PLC0415
    from sparse_yolo.model.loading import resolve_weights  # noqa: PLC0415

    if plot and not sweep_active:
        raise click.UsageError("--plot charts the --sweep-active runs; pass --sweep-active too")
    frame = read_image(image)
    size = (int(frame.shape[1]), int(frame.shape[0]))
    gt = load_labels(labels, size, label_format, image.name) if labels else None
    weights = resolve_weights(opts.get("weights"))
    detector = build_detector({**opts, "weights": weights})
    runners = build_runners(
        detector, weights, imgsz, slice_size, slice_overlap, slice_merge, slice_batch
    )
    device = detector.engine.device
    rows = run_rows(runners, frame, runs, device)
    sweep = run_rows(sweep_runners(detector, runners[0].counter, sweep_active), frame, runs, device)
    full = next(r for r in rows if r.method == "dense-full")
    score(rows + sweep, gt, full.detections)
    click.echo(format_table(rows + sweep, labels=gt is not None))
    if json_path:
        write_json(json_path, _report(image, frame, detector, weights, labels, runs, rows, sweep))
        click.echo(f"rows -> {json_path}")
    if plot:
        refs = [r for r in rows if r.method == "dense-full" or r.method.startswith("sahi-")]
        write_plot(plot, sweep, refs, labels=gt is not None)
        click.echo(f"chart -> {plot}")
