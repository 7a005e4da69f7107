"""Mask recall against active fraction: ``learned`` vs ``gradient`` on labelled frames.

Recall is the fraction of labelled objects whose cells are active (at least half of the box
area on active cells, see ``sparse_yolo.train.maskfit``); active fraction is the share of
cells computed. Each mask is swept over its threshold scale; the table lists every operating
point, then the best recall at <= 25% active and the least active area at >= 95% recall.
The "labels" row is the oracle: exactly the cells the boxes overlap.

Frames: the ``../shared`` VisDrone frames (raw VisDrone labels) and the DOTA frame (DOTA
labels), each through ``sparse_yolo.eval.labels.load_labels``.

Learned masks come from ``--weights`` (a checkpoint with a mask net, e.g. from
``sparse-yolo distill``), and/or with ``--loo`` from labels, leave-one-out: for each frame a
net is trained on the labels of the others and evaluated on it alone.

Usage: python tools/mask_recall.py [--weights slim.pt] [--loo] [--context 0] [--cell 16]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from sparse_yolo.bench.scenes import labelled_pairs
from sparse_yolo.config import MaskConfig
from sparse_yolo.eval.labels import load_labels
from sparse_yolo.masks import MaskResult, make_mask
from sparse_yolo.model.loading import load_model
from sparse_yolo.train.maskfit import (
    FitConfig,
    Frame,
    RecallPoint,
    calibrate_threshold,
    fit_mask_net,
    pooled_recall,
    read_frame,
    sweep,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SCALES = [float(s) for s in np.geomspace(0.05, 4.0, 25)]


def shared_frames() -> list[Frame]:
    """The labelled frames of ../shared (VisDrone and DOTA)."""
    frames = []
    for img_path, lbl_path in labelled_pairs(SHARED):
        image = read_frame(img_path)
        gt = load_labels(lbl_path, (image.shape[1], image.shape[0]))
        frames.append(Frame(image, gt.boxes, img_path.name))
    return frames


def oracle(frames: list[Frame], cfg: MaskConfig) -> RecallPoint:
    """Cells the labelled boxes overlap, post-processed like any mask (context dilation)."""
    import cv2  # noqa: PLC0415

    from sparse_yolo.model.masknet import cell_targets  # noqa: PLC0415

    results = []
    for f in frames:
        shape = make_mask(MaskConfig(name="all", cell=cfg.cell))(f.image).cells.shape
        cells = cell_targets(f.boxes, shape, cfg.cell).numpy().astype(np.uint8)
        if cfg.context:
            cells = cv2.dilate(cells, np.ones((3, 3), np.uint8), iterations=cfg.context)
        results.append(MaskResult(cells.astype(bool), cells.astype(np.float32), cfg.cell))
    return pooled_recall(results, frames)


def summarise(
    name: str, points: list[RecallPoint], budget: float = 0.25, goal: float = 0.95
) -> str:
    within = [p for p in points if p.active <= budget]
    best = max(within, key=lambda p: (p.recall, -p.active)) if within else None
    enough = [p for p in points if p.recall >= goal]
    least = min(enough, key=lambda p: p.active) if enough else None
    a = f"best recall at <= {budget:.0%} active: " + (
        f"{best.recall:.3f} (active {best.active:.3f})" if best else "none that small"
    )
    b = f"least active at >= {goal:.0%} recall: " + (
        f"{least.active:.3f} (recall {least.recall:.3f})" if least else "never reached"
    )
    return f"{name:>10s}  {a}; {b}"


def table(name: str, points: list[RecallPoint]) -> None:
    print(f"{name}: threshold scale -> recall / active")
    for s, p in zip(SCALES, points, strict=True):
        print(f"   {s:6.3f}  {p.recall:.3f} / {p.active:.3f}")


def evaluate(
    frames: list[Frame], nets: list, cfg: MaskConfig, label: str, verbose: bool
) -> list[str]:
    """Sweep gradient and (one net per frame, or one for all) learned masks on ``frames``."""

    def make(name, net=None):
        return lambda s: make_mask(
            MaskConfig(name=name, cell=cfg.cell, context=cfg.context, threshold=s), mask_net=net
        )

    grad = sweep(make("gradient"), frames, SCALES)
    lines = [summarise("labels", [oracle(frames, cfg)]), summarise("gradient", grad)]
    if nets:
        per_frame = [
            sweep(make("learned", n), [f], SCALES) for n, f in zip(nets, frames, strict=True)
        ]
        learned = [_pool(col, frames) for col in zip(*per_frame, strict=True)]
        lines.append(summarise(label, learned))
        calibrated = [
            sweep(make("learned", n), [f], [1.0])[0] for n, f in zip(nets, frames, strict=True)
        ]
        p = _pool(calibrated, frames)
        lines.append(
            f"{'':>10s}  at its stored threshold: recall {p.recall:.3f}, active {p.active:.3f}"
        )
        if verbose:
            table(label, learned)
    if verbose:
        table("gradient", grad)
    return lines


def _pool(points: list[RecallPoint], frames: list[Frame]) -> RecallPoint:
    """Pool per-frame points (objects and cells weighted by frame)."""
    n = sum(p.n_objects for p in points)
    cells = [f.image.shape[0] * f.image.shape[1] for f in frames]
    recall = sum(p.recall * p.n_objects for p in points) / max(n, 1)
    active = sum(p.active * c for p, c in zip(points, cells, strict=True)) / sum(cells)
    return RecallPoint(recall, active, n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--weights", type=Path, help="checkpoint with a trained mask net")
    ap.add_argument("--loo", action="store_true", help="also train from labels, leave-one-out")
    ap.add_argument("--steps", type=int, default=400, help="--loo training steps per frame")
    ap.add_argument("--cell", type=int, default=16)
    ap.add_argument("--context", type=int, default=0)
    ap.add_argument("-v", "--verbose", action="store_true", help="print the whole sweep")
    ap.add_argument(
        "--only", nargs="+", help="keep frames whose name contains one of these (held-out ones)"
    )
    args = ap.parse_args()
    torch.set_num_threads(2)
    frames = shared_frames()
    if args.only:
        frames = [f for f in frames if any(key in f.name for key in args.only)]
    cfg = MaskConfig(cell=args.cell, context=args.context)
    print(
        f"{len(frames)} frames, {sum(len(f.boxes) for f in frames)} objects; "
        f"cell {cfg.cell}, context {cfg.context}"
    )
    for f in frames:
        print(f"  {f.name}: {f.image.shape[1]}x{f.image.shape[0]}, {len(f.boxes)} objects")
    lines = evaluate(frames, [], cfg, "", args.verbose)
    if args.weights:
        net = load_model(args.weights).mask_net
        if net is None:
            raise SystemExit(f"{args.weights}: no mask net in this checkpoint")
        lines += evaluate(frames, [net] * len(frames), cfg, "learned", args.verbose)[2:]
    if args.loo and len(frames) < 2:
        raise SystemExit("--loo needs at least two frames")
    if args.loo:
        nets = []
        for i in range(len(frames)):
            others = frames[:i] + frames[i + 1 :]
            net = fit_mask_net(others, FitConfig(steps=args.steps, seed=i))
            calibrate_threshold(net, others, cfg)  # the held-out frame never sets the threshold
            nets.append(net)
        lines += evaluate(frames, nets, cfg, "learnedLOO", args.verbose)[2:]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
