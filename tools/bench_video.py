"""Video throughput and recall: default video settings vs dense and per-frame gradient.

In one process, frame by frame in lockstep (so machine load hits every method alike),
each frame goes through

* ``video``: the default video path (motion + persistence + refresh, ``stream``) with
  reuse of unchanged regions' detections; ``video_noreuse``: the same without reuse
  (``--reuse both``, the default, runs both in lockstep; left to itself the video path
  reuses on frames of 1920x1080 and larger),
* ``dense``: every cell at full resolution (``--mask all``), the reference,
* ``gradient``: the per-frame still-image ``gradient`` mask,

on (a) the real indoor clip (768x432) and (b) a 3840x2160 surveillance-style clip
composed from real imagery (a static real background, real object crops moving over it,
under 5% of the area moving), under each sensor noise model of ``--noise``: ``camera``
(a real static camera's: most pixels exactly unchanged between frames), ``iid`` (fresh
noise on every pixel of every frame, the harder case) or ``none`` (a perfectly still
background). Dense and gradient are timed on every ``--every``-th frame (their cost per
frame is stationary); the video path runs every frame, warm-up and refreshes included. Times are compute only (decoding and composing
frames are shared and overlap inference).

Recall: share of dense detections (IoU >= 0.5, same class) each method finds on the
frames where dense ran; also among the confident ones (score >= ``CONFIDENT``), among the
steady ones (those dense also finds on the frame before), and the share of the video
path's detections that dense has too (so extra boxes show). The ceiling: dense on the
previous frame against dense on the frame (untimed), i.e. how steady the reference itself
is under the frames' sensor noise: a path that does not recompute every cell of every
frame cannot be expected to agree with dense better. ``frame_change_median``: how
consecutive frames differ (share of pixels exactly unchanged, mean and std of the
differences in grey levels, moving objects included).

    flock /tmp/sparse-yolo-bench.lock env PYTHONPATH=$PWD python tools/bench_video.py \\
        --real-frames 0 --uhd-frames 60 --noise camera,iid
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision.ops import box_iou
from tqdm import tqdm

from sparse_yolo.detector import Detector
from sparse_yolo.engine import Timer
from sparse_yolo.masks import MaskResult, cell_grid
from sparse_yolo.video import synth
from sparse_yolo.video.config import VideoConfig
from sparse_yolo.video.reader import Frame, VideoReader
from sparse_yolo.video.stream import StreamStats, stream

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
# VisDrone objects the real YOLOv8n finds at native size: (image, xyxy).
PEOPLE = "visdrone/images/0000072_00000_d_0000001.jpg"
CARS = "visdrone/images/0000300_00601_d_0000141.jpg"
CROPS = [
    (PEOPLE, (697, 349, 723, 405)),
    (PEOPLE, (629, 321, 646, 372)),
    (PEOPLE, (977, 285, 996, 339)),
    (CARS, (116, 242, 171, 268)),
    (CARS, (293, 246, 358, 274)),
    (CARS, (635, 503, 739, 591)),
    (CARS, (1018, 444, 1104, 504)),
    (CARS, (938, 383, 1017, 436)),
]


def uhd_clip(
    count: int, noise: str, seed: int = 0, objects: bool = True
) -> tuple[Iterator[Frame], float]:
    """3840x2160 frames: boats.jpg upscaled 2x, with the CROPS walking and driving across
    (two of them stop half-way; without ``objects`` the background alone), under the
    ``noise`` model of ``synth.frames`` (``none``: no noise). Returns the frames and the
    share of pixels moving."""
    data = SHARED / "data"
    bg = cv2.imread(str(data / "aerial" / "boats.jpg"))
    bg = cv2.resize(bg, (3840, 2160), interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng(seed)
    sprites = []
    for k, (name, box) in enumerate(CROPS):
        image, inner = synth.crop(cv2.imread(str(data / name)), box)
        start = rng.integers([100, 100], [3600, 1900])
        end = np.clip(start + rng.integers(-8, 9, 2) * count, 0, [3700, 2000])
        stop = count // 2 if k in (3, 0) else None
        sprites.append(
            synth.Sprite(image, inner, synth.line(tuple(start), tuple(end), count, stop))
        )
    moving = sum(s.image.shape[0] * s.image.shape[1] for s in sprites) / (3840 * 2160)
    model = None if noise == "none" else noise
    images = synth.frames(bg, sprites if objects else [], count, noise=model, seed=seed)
    return (Frame(i, i / 25.0, img) for i, img in enumerate(images)), moving


def real_clip(count: int) -> Iterator[Frame]:
    src = SHARED / "data" / "video" / "one-by-one-person-detection.mp4"
    return itertools.islice(iter(VideoReader(src)), count)


# Dense detections at least this confident are the steady ones (reported apart).
CONFIDENT = 0.5


def hits(ref, boxes: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """(N,) bool: which of the dense detections ``ref`` are found (IoU >= 0.5, same class)."""
    if not len(ref.boxes) or not len(boxes):
        return np.zeros(len(ref.boxes), bool)
    iou = box_iou(torch.from_numpy(ref.boxes), torch.from_numpy(boxes)).numpy()
    iou[ref.classes[:, None] != classes[None, :]] = 0
    return iou.max(1) >= 0.5


def matched(ref, boxes: np.ndarray, classes: np.ndarray) -> int:
    """How many of the dense detections ``ref`` are found (IoU >= 0.5, same class)."""
    return int(hits(ref, boxes, classes).sum())


class Tally:
    """Times and matches of every method over one clip (see the module docstring)."""

    def __init__(self, videos: dict[str, VideoConfig]) -> None:
        self.videos = videos
        self.seconds = dict.fromkeys(["dense", "gradient", *videos], 0.0)
        self.per_frame: dict[str, list[float]] = {k: [] for k in ["dense", *videos]}
        self.found = dict.fromkeys(["gradient", "dense_prev", *videos], 0)
        self.confident_found = dict.fromkeys(videos, 0)
        self.steady_found = dict.fromkeys(videos, 0)
        self.dets = {k: [0, 0] for k in videos}  # detections, of which dense has them too
        self.stats = {k: StreamStats() for k in videos}
        self.total = self.confident = self.prev_total = self.steady_total = 0
        self.change: list[dict[str, float]] = []

    def add_video(self, results: tuple) -> None:
        """One frame's result of every video path, in ``videos`` order."""
        for k, r in zip(self.videos, results, strict=True):
            self.stats[k].add(r)
            t = r.seconds["total"] - r.seconds["decode"]
            self.seconds[k] += t
            self.per_frame[k].append(t)

    def timed(self, method: str, det: Detector, image: np.ndarray):
        """``det`` on ``image``, timed as ``method``."""
        t0 = time.perf_counter()
        out = det.predict_array(image)
        self.seconds[method] += time.perf_counter() - t0
        if method == "dense":
            self.per_frame["dense"].append(time.perf_counter() - t0)
        return out

    def add_sample(self, ref, results: tuple, gradient) -> dict[str, np.ndarray]:
        """Match a sampled frame's paths against dense ``ref``; returns each path's hits."""
        self.found["gradient"] += matched(ref, gradient.boxes, gradient.classes)
        self.total += len(ref)
        sure = ref.scores >= CONFIDENT
        self.confident += int(sure.sum())
        gots = {}
        for k, r in zip(self.videos, results, strict=True):
            got = gots[k] = hits(ref, r.detections.boxes, r.detections.classes)
            self.found[k] += int(got.sum())
            self.confident_found[k] += int(got[sure].sum())
            self.dets[k][0] += len(r)
            self.dets[k][1] += int(hits(r.detections, ref.boxes, ref.classes).sum())
        return gots

    def add_previous(self, ref, prev, gots: dict[str, np.ndarray], change: dict) -> None:
        """Dense on the frame before (``prev``) against dense on the frame (``ref``)."""
        steady = hits(ref, prev.boxes, prev.classes)
        self.found["dense_prev"] += int(steady.sum())
        self.prev_total += len(ref)
        self.steady_total += int(steady.sum())
        for k, got in gots.items():
            self.steady_found[k] += int((got & steady).sum())
        self.change.append(change)

    def report(self, name: str, every: int) -> dict:
        videos, seconds, per_frame = self.videos, self.seconds, self.per_frame
        n = self.stats[next(iter(videos))].frames
        sampled = len(range(0, n, every))
        fps = {k: sampled / seconds[k] for k in ("dense", "gradient")}
        fps.update({k: n / seconds[k] for k in videos})
        dense_median = float(np.median(per_frame["dense"]))
        ms = lambda v: round(1e3 * v)  # noqa: E731
        share = lambda found, of: {k: round(v / max(1, of), 4) for k, v in found.items()}  # noqa: E731
        changes = {
            k: round(float(np.median([c[k] for c in self.change])), 3)
            for k in (self.change[0] if self.change else {})
        }
        return {
            "clip": name,
            "frames": n,
            "dense_frames": sampled,
            "dense_detections": self.total,
            "dense_confident": self.confident,
            "dense_ms_per_frame": {
                "mean": ms(seconds["dense"] / sampled),
                "min": ms(min(per_frame["dense"])),
                "max": ms(max(per_frame["dense"])),
            },
            "frame_change_median": changes,
            "fps": {k: round(v, 2) for k, v in fps.items()},
            "speedup_vs_dense": {k: round(v / fps["dense"], 2) for k, v in fps.items()},
            "median_frame_speedup": {
                k: round(dense_median / float(np.median(per_frame[k])), 2) for k in videos
            },
            "video_ms_per_frame": {
                k: {
                    "first": ms(per_frame[k][0]),
                    "median": ms(float(np.median(per_frame[k]))),
                    "max": ms(max(per_frame[k])),
                }
                for k in videos
            },
            "share_of_dense": share(self.found, self.total)
            | {"dense_prev": round(self.found["dense_prev"] / max(1, self.prev_total), 4)},
            "share_of_confident": share(self.confident_found, self.confident),
            "share_of_steady": share(self.steady_found, self.steady_total),
            "video_dets_dense_has": {
                k: round(v[1] / max(1, v[0]), 4) for k, v in self.dets.items()
            },
            "video_stats": {k: s.as_dict() for k, s in self.stats.items()},
            "configs": {k: dataclasses.asdict(c) for k, c in videos.items()},
        }


def bench(
    name: str,
    frames: Iterator[Frame],
    count: int,
    every: int,
    weights: Path,
    videos: dict[str, VideoConfig],
) -> dict:
    """Every video configuration of ``videos`` in lockstep with dense and gradient."""
    base = Detector(weights, device="cpu")
    dense = Detector(base.model, device="cpu", mask="all")
    gradient = Detector(base.model, device="cpu", mask="gradient")
    video_dets = [Detector(base.model, device="cpu") for _ in videos]
    frames = _warm(frames, [dense, gradient, *video_dets])
    copies = itertools.tee(frames, len(videos))
    paths = [
        stream(det, c, cfg) for det, cfg, c in zip(video_dets, videos.values(), copies, strict=True)
    ]
    tally = Tally(videos)
    previous = None
    batch = min(v.batch for v in videos.values())
    for rs in tqdm(_rotating(paths, batch), total=count, unit="frame", desc=name):
        image = rs[0].image
        tally.add_video(rs)
        if rs[0].frame_index % every == 0:
            ref = tally.timed("dense", dense, image)
            gots = tally.add_sample(ref, rs, tally.timed("gradient", gradient, image))
            if previous is not None:  # the ceiling: dense against itself one frame apart
                prev = dense.predict_array(previous)
                tally.add_previous(ref, prev, gots, synth.frame_change(image, previous))
        previous = image
    return tally.report(name, every)


def _rotating(paths: list[Iterator], batch: int) -> Iterator[tuple]:
    """One result of every path per frame, in the paths' order; which path runs a batch
    first rotates from batch to batch. The path that runs first after the frames are made
    was measured 5-7% slower than an identical one run after it, so no path keeps that
    place."""
    for i in itertools.count():
        first = (i // batch) % len(paths)
        order = list(range(first, len(paths))) + list(range(first))
        got = {}
        for k in order:
            try:
                got[k] = next(paths[k])
            except StopIteration:
                return
        yield tuple(got[k] for k in range(len(paths)))


def _warm(frames: Iterator[Frame], detectors: list[Detector]) -> Iterator[Frame]:
    """The same frames, after untimed every-cell and windowed passes of each detector's
    engine on the first: the first run pays for kernel selection and the remainder's trace
    (made once per engine on first use), which would otherwise be charged to one method's
    first frame."""
    first = next(frames)
    cell = detectors[0].config.mask.cell
    every = np.ones(cell_grid(*first.image.shape[:2], cell), bool)
    window = np.zeros_like(every)
    window[:8, :8] = True  # and a windowed frame, in case the every-cell path runs densely
    for det in detectors:
        for cells in (every, window):
            mask = MaskResult(cells, cells.astype(np.float32), cell)
            det.engine.run(first.image, mask, Timer(det.engine.device))
    return itertools.chain([first], frames)


def noise_stats(frames: Iterator[np.ndarray], gop: int = 10) -> dict:
    """How consecutive frames differ, split into pairs into a key frame (index a multiple
    of ``gop``) and the others, and the others with nothing moving (no pixel differs by
    more than 8 grey levels): medians of the share of pixels unchanged (all channels),
    the mean abs difference, the std of the differences up to 8 levels, the share of
    16x16 blocks with a change and the share of changed pixels in those blocks."""
    rows, prev = [], None
    for t, image in enumerate(frames):
        cur = image.astype(np.int16)
        if prev is not None:
            d = cur - prev
            a = np.abs(d).max(2)
            h, w = (s // 16 * 16 for s in a.shape)
            blocks = a[:h, :w].reshape(h // 16, 16, w // 16, 16).max((1, 3)) > 0
            small = a <= 8
            in_blocks = np.repeat(np.repeat(blocks, 16, 0), 16, 1)
            changed = ((a > 0) & small)[:h, :w][in_blocks].mean() if blocks.any() else 0.0
            quiet = not (a > 8).any()
            row = [(a == 0).mean(), np.abs(d).mean(), d[small].std(), blocks.mean(), changed]
            rows.append((t % gop == 0, quiet, row))
        prev = cur
    names = ["unchanged", "mean_abs", "std_small", "blocks_changed", "changed_in_blocks"]
    out = {}
    for name, pick in (
        ("key", lambda k, q: k),
        ("other", lambda k, q: not k),
        ("other_still", lambda k, q: not k and q),
    ):
        sel = np.array([r for k, q, r in rows if pick(k, q)])
        out[name] = {"pairs": len(sel)} | (
            dict(zip(names, np.round(np.median(sel, 0), 3).tolist(), strict=True))
            if len(sel)
            else {}
        )
    return out


def variant(spec: str, batch: int) -> tuple[str, VideoConfig]:
    """``NAME:FIELD=VALUE,...`` -> (NAME, the default VideoConfig with those fields)."""
    name, _, fields = spec.partition(":")
    kinds = {f.name: f.type for f in dataclasses.fields(VideoConfig)}
    changes = {}
    for item in filter(None, fields.split(",")):
        key, _, value = item.partition("=")
        if key not in kinds:
            raise SystemExit(f"--variant {spec}: unknown field {key!r}; known: {', '.join(kinds)}")
        kind = kinds[key]
        if "bool" in kind:
            changes[key] = None if value == "none" else value.lower() in ("1", "true", "on")
        elif "int" in kind:
            changes[key] = int(value)
        elif "float" in kind:
            changes[key] = float(value)
        else:
            changes[key] = value
    return name, VideoConfig(**{"batch": batch, **changes})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--real-frames", type=int, default=1394)
    p.add_argument("--uhd-frames", type=int, default=150)
    p.add_argument("--every", type=int, default=10, help="Time dense/gradient every N frames.")
    p.add_argument("--weights", type=Path, default=SHARED / "weights" / "yolov8n.pt")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=VideoConfig.batch, help="Video frames per batch.")
    p.add_argument(
        "--noise",
        default="camera,iid",
        help="Sensor noise of the 4K clip, comma-separated: camera (a real static camera's: "
        "most pixels unchanged frame to frame), iid (fresh noise on every pixel), none (the "
        "composition alone: a perfectly still background).",
    )
    p.add_argument(
        "--reuse",
        choices=["on", "off", "both"],
        default="both",
        help="Video path with reuse of unchanged regions' detections, without, or both "
        "in lockstep.",
    )
    p.add_argument(
        "--noise-stats",
        action="store_true",
        help="Only measure how consecutive frames differ: the real clip (all frames) and "
        "the 4K clip's background under each --noise model (--uhd-frames frames).",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:FIELD=VALUE[,FIELD=VALUE]",
        help="Also run the video path with these VideoConfig fields changed, in lockstep "
        "(repeatable), e.g. quarter:motion_scale=0.25 or flat:background=false.",
    )
    p.add_argument("--out", type=Path, help="Also write the report as JSON here.")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.noise_stats:
        stats = {"real": noise_stats(f.image for f in real_clip(args.real_frames))}
        for noise in filter(None, args.noise.split(",")):
            clip, _ = uhd_clip(args.uhd_frames, noise, objects=False)
            stats[f"uhd-{noise}"] = noise_stats(f.image for f in clip)
        print(json.dumps(stats, indent=1))
        return
    reports = []
    reuse = {"on": [True], "off": [False], "both": [True, False]}[args.reuse]
    videos = {
        "video" if r else "video_noreuse": VideoConfig(batch=args.batch, reuse=r) for r in reuse
    }
    videos.update(variant(v, args.batch) for v in args.variant)
    if args.real_frames:
        clip = real_clip(args.real_frames)
        reports.append(
            bench("real-768x432", clip, args.real_frames, args.every, args.weights, videos)
        )
    for noise in filter(None, args.noise.split(",")) if args.uhd_frames else []:
        clip, moving = uhd_clip(args.uhd_frames, noise)
        name = f"uhd-3840x2160-{noise}"
        report = bench(name, clip, args.uhd_frames, args.every, args.weights, videos)
        reports.append({**report, "moving_area": round(moving, 4)})
        print(json.dumps(reports[-1]), flush=True)
    for r in reports:
        print(json.dumps(r))
    if args.out:
        args.out.write_text(json.dumps(reports, indent=2))


if __name__ == "__main__":
    main()
