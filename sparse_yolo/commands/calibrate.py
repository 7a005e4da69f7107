"""``sparse-yolo calibrate``: measure the costs ``--backend auto`` decides with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sparse_yolo.commands.options import build_detector

FRAME_4K = (2176, 3840)  # padded 3840 x 2160


@click.command()
@click.option(
    "--weights",
    type=click.Path(dir_okay=False, path_type=Path),
    help="sparse-yolo or Ultralytics YOLOv8 .pt (as for detect).",
)
@click.option("--device", help="torch device, e.g. cpu or cuda:0 (default: CUDA if any).")
@click.option("--half", is_flag=True, help="Calibrate fp16 inference (CUDA).")
@click.option("--threads", type=click.IntRange(1), help="torch CPU threads to calibrate for.")
def calibrate(weights: Path | None, device: str | None, half: bool, threads: int | None) -> None:
    """Measure this device's costs for the model and cache them (a few seconds).

    With --backend auto (the default), detect picks for each frame the cheapest of three
    paths: the sparse stem on the active cells plus windows around them, the engine over
    every cell, or the plain dense forward. It predicts their times from a cost table that
    is measured on first use per device, model, precision, torch version and CPU thread
    count, and cached ($SPARSE_YOLO_CACHE, else ~/.cache/sparse-yolo). This command
    measures it again, e.g. after a driver upgrade or on a machine that was busy the first
    time; see docs/engine.md.

    \b
    Examples:
      sparse-yolo calibrate
      sparse-yolo calibrate --weights best.pt --device cuda:0 --half
    """
    import torch  # noqa: PLC0415 - keep --help fast

    from sparse_yolo.engine.calibrate import calibrate as measure  # noqa: PLC0415
    from sparse_yolo.engine.calibrate import table_path  # noqa: PLC0415

    if threads:
        torch.set_num_threads(threads)
    detector = build_detector({"weights": weights, "device": device, "half": half})
    table = measure(detector.engine, save=True)
    click.echo(f"cost table for {table.key}")
    click.echo(f"saved to {table_path(table.key)} ({table.meta['seconds']} s to measure)")
    for line in _summary(table.to_dict()):
        click.echo(line)


def _summary(t: dict[str, Any]) -> list[str]:
    """Predicted milliseconds of each term on a 4K frame, to read the table at a glance."""
    px = FRAME_4K[0] * FRAME_4K[1]
    cells = px // 64
    rem = t["remainder"]
    lines = [
        f"  dense forward, 4K:           {1e3 * (t['dense']['fixed'] + t['dense']['per_unit'] * px):8.1f} ms",
        f"  every cell, 4K:              {1e3 * (t['every_px'] * px + rem['fixed'] + rem['per_unit'] * cells):8.1f} ms",
        f"  remainder per forward:       {1e3 * rem['fixed']:8.1f} ms",
        f"  remainder per 10% of 4K:     {1e3 * rem['per_unit'] * cells / 10:8.1f} ms",
    ]
    for name, s in t["stem"].items():
        ms = 1e3 * (s["per_px"] * px + s["per_active_px"] * px / 10)
        lines.append(f"  stem {name:<7} at 10% active: {ms:8.1f} ms")
    return lines
