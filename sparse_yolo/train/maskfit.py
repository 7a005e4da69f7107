"""Mask recall, and calibrating the learned mask's threshold on held-out frames.

Mask recall is the fraction of objects whose cells are active: an object counts as covered
when at least ``min_cover`` (default half) of its box area lies on active cells, so a small
object straddling a cell edge is covered by either cell, and a large object needs most of
its extent computed. Active fraction is the share of the frame's cells that are active.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from sparse_yolo.config import MaskConfig
from sparse_yolo.io.raster import FRAME_SUFFIXES
from sparse_yolo.masks import CellMask, LearnedMask, MaskResult, postprocess
from sparse_yolo.model.masknet import (
    MASK_NET_STRIDE,
    MaskNet,
    batch_features,
    build_mask_net,
    cell_targets,
    mask_net_loss,
)

MIN_COVER = 0.5


@dataclass
class Frame:
    """One full-resolution frame and its objects.

    Attributes:
        image: (H, W, 3) uint8 BGR.
        boxes: (N, 4) float32 xyxy in image pixels.
        name: file name, for reports.
    """

    image: np.ndarray
    boxes: np.ndarray
    name: str = ""


def object_coverage(cells: np.ndarray, cell: int, boxes: np.ndarray) -> np.ndarray:
    """(N,) fraction of each (N, 4) xyxy box's area that lies on active (Hc, Wc) cells."""
    if not len(boxes):
        return np.zeros(0, np.float32)
    active = np.kron(cells.astype(np.uint8), np.ones((cell, cell), np.uint8))
    integral = cv2.integral(active)  # (H + 1, W + 1) summed-area table
    h, w = active.shape
    b = np.round(np.asarray(boxes, np.float64)).astype(np.int64)
    x0, x1 = np.clip(b[:, 0], 0, w), np.clip(b[:, 2], 0, w)
    y0, y1 = np.clip(b[:, 1], 0, h), np.clip(b[:, 3], 0, h)
    x1, y1 = np.maximum(x1, x0 + 1).clip(max=w), np.maximum(y1, y0 + 1).clip(max=h)
    x0, y0 = np.minimum(x0, x1 - 1), np.minimum(y0, y1 - 1)
    inside = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return (inside / ((x1 - x0) * (y1 - y0))).astype(np.float32)


def mask_recall(result: MaskResult, boxes: np.ndarray, min_cover: float = MIN_COVER) -> float:
    """Fraction of boxes covered by a mask (nan without boxes)."""
    if not len(boxes):
        return float("nan")
    return float((object_coverage(result.cells, result.cell, boxes) >= min_cover).mean())


@dataclass
class RecallPoint:
    """Pooled mask quality over frames: objects covered / objects, active cells / cells."""

    recall: float
    active: float
    n_objects: int


def pooled_recall(
    results: list[MaskResult], frames: list[Frame], min_cover: float = MIN_COVER
) -> RecallPoint:
    """Recall over all objects of all frames, and active fraction over all their cells."""
    covered = n = active = cells = 0
    for res, frame in zip(results, frames, strict=True):
        cov = object_coverage(res.cells, res.cell, frame.boxes)
        covered += int((cov >= min_cover).sum())
        n += len(cov)
        active += int(res.cells.sum())
        cells += res.cells.size
    return RecallPoint(covered / n if n else float("nan"), active / max(cells, 1), n)


def sweep(
    make: Callable[[float], CellMask], frames: list[Frame], scales: list[float]
) -> list[RecallPoint]:
    """Recall and active fraction of ``make(scale)`` masks for each threshold scale.

    Cell scores are computed once per frame and re-thresholded for every scale, through the
    mask's own ``select`` and the shared post-processing chain.
    """
    base = make(1.0)
    scores = [base.scores(f.image).astype(np.float32) for f in frames]
    points = []
    for s in scales:
        mask = make(s)
        points.append(pooled_recall([finish(mask, sc) for sc in scores], frames))
    return points


def finish(mask: CellMask, scores: np.ndarray) -> MaskResult:
    """The mask of precomputed cell scores: ``select`` plus the shared post-processing."""
    cells, strong = mask.select(scores)
    return MaskResult(postprocess(cells, scores, strong, mask.cfg), scores, mask.cfg.cell)


def calibrate_threshold(
    net: MaskNet,
    frames: list[Frame],
    cfg: MaskConfig | None = None,
    target: float = 0.95,
) -> float:
    """Set ``net.threshold`` to the highest probability that still covers ``target`` of objects.

    The recall is measured through the full learned-mask chain (``cfg`` sets cell, context,
    min_blob; its ``threshold`` scale is taken as 1). Returns the chosen threshold.
    """
    cfg = replace(cfg or MaskConfig(), name="learned", threshold=1.0, max_active=None)
    grid = np.concatenate([np.geomspace(0.01, 0.2, 12), np.linspace(0.22, 0.9, 35)])
    net.threshold.fill_(1.0)
    mask = LearnedMask(cfg, mask_net=net)
    scores = [mask.scores(f.image) for f in frames]
    best = float(grid[0])
    for thr in grid:
        net.threshold.fill_(float(thr))
        point = pooled_recall([finish(mask, s) for s in scores], frames)
        if point.n_objects and point.recall >= target:
            best = float(thr)
    net.threshold.fill_(best)
    return best


def read_frame(path: Path) -> np.ndarray | None:
    """(H, W, 3) uint8 BGR pixels of an image file, or None when OpenCV cannot read it."""
    return cv2.imread(str(path), cv2.IMREAD_COLOR)


def list_images(source: str | Path | list) -> list[Path]:
    """Image files of a folder (recursively), an Ultralytics list file, or a list of those."""
    if isinstance(source, (list, tuple)):
        return [p for s in source for p in list_images(s)]
    source = Path(source)
    if source.is_file() and source.suffix == ".txt":
        base = source.parent
        lines = [ln.strip() for ln in source.read_text().splitlines() if ln.strip()]
        return [(base / ln).resolve() if not Path(ln).is_absolute() else Path(ln) for ln in lines]
    if source.is_file():
        return [source]
    return sorted(p for p in source.rglob("*") if p.suffix.lower() in FRAME_SUFFIXES)


def labelled_frames(source: str | Path | list, limit: int = 200) -> list[Frame]:
    """Frames of an Ultralytics image split with their YOLO labels, at native resolution."""
    from ultralytics.data.utils import img2label_paths  # noqa: PLC0415

    frames = []
    images = list_images(source)[:limit]
    for img_path, lbl_path in zip(images, img2label_paths([str(p) for p in images]), strict=True):
        image = read_frame(img_path)
        if image is None:
            continue
        h, w = image.shape[:2]
        rows = np.zeros((0, 5), np.float32)
        if Path(lbl_path).is_file():
            rows = np.loadtxt(lbl_path, ndmin=2, dtype=np.float32).reshape(-1, 5)[:, :5]
        xywh = rows[:, 1:5] * np.array([w, h, w, h], np.float32)
        xyxy = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
        frames.append(Frame(image, xyxy, img_path.name))
    return frames


@dataclass(frozen=True)
class FitConfig:
    """How :func:`fit_mask_net` trains.

    Attributes:
        steps: optimisation steps.
        crop: crop edge in pixels (a multiple of 32).
        batch: crops per step.
        lr: AdamW learning rate (cosine decay).
        seed: random seed.
        pos_weight: weight of an object cell against a background cell in the loss (a missed
            object costs recall; a false active cell only a little compute).
        synthetic: share of synthetic crops (when :func:`fit_mask_net` gets a synthesizer).
        scale: range of the random zoom of real crops (log-uniform).
    """

    steps: int = 300
    crop: int = 256
    batch: int = 8
    lr: float = 3e-3
    seed: int = 0
    pos_weight: float = 2.0
    synthetic: float = 0.0
    scale: tuple[float, float] = (0.75, 1.33)


def fit_mask_net(
    frames: list[Frame],
    cfg: FitConfig | None = None,
    synthesize: Callable[[np.random.Generator, int], Frame] | None = None,
    net: MaskNet | None = None,
) -> MaskNet:
    """Train a mask net from labelled frames, and optionally synthetic ones.

    Every crop gets a right-angle rotation or flip and a photometric jitter (aerial frames
    have no up, and archives differ in exposure and colour balance).

    Args:
        frames: full-resolution frames with their object boxes.
        cfg: training settings.
        synthesize: ``(rng, size) -> Frame`` making one synthetic (size, size) crop, e.g.
            :class:`sparse_yolo.train.synth.Composer`.
        net: continue training this net instead of a fresh one.

    Returns:
        The trained net in eval mode (threshold not calibrated).
    """
    cfg = cfg or FitConfig()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net = net or build_mask_net()
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(cfg.steps, 1))
    synth = cfg.synthetic if synthesize is not None else 0.0

    def sample() -> tuple[np.ndarray, torch.Tensor]:
        if rng.random() < synth:
            f = synthesize(rng, cfg.crop)
            image, boxes = f.image, f.boxes
        else:
            frame = frames[int(rng.integers(0, len(frames)))]
            image, boxes = _labelled_crop(frame, cfg.crop, rng, cfg.scale)
        image, boxes = augment(image, boxes, rng)
        s = MASK_NET_STRIDE
        return image, cell_targets(boxes, (cfg.crop // s, cfg.crop // s), s)

    for _ in tqdm(range(cfg.steps), desc="mask net", unit="step", mininterval=5):
        images, targets = zip(*(sample() for _ in range(cfg.batch)), strict=True)
        logits = net(batch_features(list(images)))
        loss = mask_net_loss(logits, torch.stack(targets), cfg.pos_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    batches = [batch_features([sample()[0] for _ in range(cfg.batch)]) for _ in range(8)]
    return settle_batchnorm(net, batches)


@torch.no_grad()
def settle_batchnorm(net: MaskNet, batches: list[torch.Tensor]) -> MaskNet:
    """Re-estimate BatchNorm statistics as the plain average over ``batches`` of
    (B, 12, h, w) inputs, for the final weights: running averages lag weights that moved fast
    (a short or high learning-rate training), and the eval-mode net then drifts from what
    was trained. Returns the net in eval mode."""
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    net.train()
    for x in batches:
        net(x)
    for m, momentum in zip(bns, saved, strict=True):
        m.momentum = momentum
    return net.eval()


def _labelled_crop(
    frame: Frame, size: int, rng: np.random.Generator, scale: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """A random (size, size) crop zoomed by a random factor in ``scale``, and its (N, 4)
    xyxy boxes in crop pixels."""
    h, w = frame.image.shape[:2]
    zoom = float(np.exp(rng.uniform(np.log(scale[0]), np.log(scale[1]))))
    src = min(int(round(size / zoom)), h, w)
    y = int(rng.integers(0, h - src + 1))
    x = int(rng.integers(0, w - src + 1))
    k = size / src
    interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
    out = cv2.resize(frame.image[y : y + src, x : x + src], (size, size), interpolation=interp)
    boxes = (frame.boxes.reshape(-1, 4) - np.array([x, y, x, y], np.float32)) * k
    inside = (boxes[:, 2] > 0) & (boxes[:, 3] > 0) & (boxes[:, 0] < size) & (boxes[:, 1] < size)
    return out, boxes[inside].reshape(-1, 4)


def augment(
    image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A random right-angle rotation, flip and colour jitter of an (S, S, 3) uint8 crop and
    its (N, 4) xyxy boxes."""
    size = image.shape[0]
    out, boxes = image, boxes.reshape(-1, 4)
    for _ in range(int(rng.integers(0, 4))):  # rotate 90 degrees clockwise
        out = np.rot90(out, -1)
        boxes = np.stack([size - boxes[:, 3], boxes[:, 0], size - boxes[:, 1], boxes[:, 2]], 1)
    if rng.random() < 0.5:
        out = out[:, ::-1]
        boxes = np.stack([size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0], boxes[:, 3]], 1)
    out = np.ascontiguousarray(out).astype(np.float32)
    out *= rng.uniform(0.6, 1.4) * rng.uniform(0.85, 1.15, 3).astype(np.float32)  # colour
    out += rng.uniform(-30, 30)
    if rng.random() < 0.2:  # softer optics or another ground sampling
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.2))
    if rng.random() < 0.3:
        out += rng.normal(0, rng.uniform(1, 6), out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8), boxes.astype(np.float32)
