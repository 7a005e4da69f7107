"""Video throughput and recall: default video settings vs dense and per-frame gradient.

In one process, frame by frame in lockstep (so machine load hits every method alike),
each frame goes through

* ``video``: the default video path (motion + persistence + refresh, ``stream``),
* ``dense``: every cell at full resolution (``--mask all``), the reference,
* ``gradient``: the per-frame still-image ``gradient`` mask,

on (a) the real indoor clip (768x432) and (b) a 3840x2160 surveillance-style clip
composed from real imagery (a static real background, real object crops moving over it,
under 5% of the area moving). Dense and gradient are timed on every ``--every``-th frame
(their cost per frame is stationary); the video path runs every frame, warm-up and
refreshes included. Times are compute only (decoding is shared and overlaps inference).
Recall: share of dense detections (IoU >= 0.5, same class) each method finds on the
frames where dense ran; also among the confident ones (score >= ``CONFIDENT``), and the
share of the video path's detections that dense has too (so extra boxes show). The
ceiling: dense on the previous frame against dense on the frame (untimed), i.e. how
steady the reference itself is under the frames' sensor noise: a path that does not
recompute every cell of every frame cannot be expected to agree with dense better.

    flock /tmp/sparse-yolo-bench.lock env PYTHONPATH=$PWD python tools/bench_video.py \\
        --real-frames 1394 --uhd-frames 150 --every 10
"""

from __future__ import annotations

import argparse
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


def uhd_clip(count: int, seed: int = 0) -> tuple[Iterator[Frame], float]:
    """3840x2160 frames: boats.jpg upscaled 2x, with the CROPS walking and driving across
    (two of them stop half-way). Returns the frames and the mean share of pixels moving."""
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
    images = synth.frames(bg, sprites, count, seed=seed)
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


def bench(
    name: str,
    frames: Iterator[Frame],
    count: int,
    every: int,
    weights: Path,
    video_cfg: VideoConfig,
) -> dict:
    video = Detector(weights, device="cpu")
    dense = Detector(video.model, device="cpu", mask="all")
    gradient = Detector(video.model, device="cpu", mask="gradient")
    seconds = {"video": 0.0, "dense": 0.0, "gradient": 0.0}
    per_frame: dict[str, list[float]] = {"video": [], "dense": []}
    found = dict.fromkeys(["video", "gradient", "dense_prev", "video_confident"], 0)
    total = confident = video_dets = video_true = prev_total = 0
    stats = StreamStats()
    frames = _warm(frames, dense)
    previous = None
    bar = tqdm(stream(video, frames, video_cfg), total=count, unit="frame", desc=name)
    for r in bar:
        stats.add(r)
        seconds["video"] += r.seconds["total"] - r.seconds["decode"]
        per_frame["video"].append(r.seconds["total"] - r.seconds["decode"])
        if r.frame_index % every:
            previous = r.image
            continue
        for method, det in (("dense", dense), ("gradient", gradient)):
            t0 = time.perf_counter()
            out = det.predict_array(r.image)
            seconds[method] += time.perf_counter() - t0
            if method == "dense":
                ref = out
                per_frame["dense"].append(time.perf_counter() - t0)
            else:
                found[method] += matched(ref, out.boxes, out.classes)
        got = hits(ref, r.detections.boxes, r.detections.classes)
        total += len(ref)
        found["video"] += int(got.sum())
        confident += int((ref.scores >= CONFIDENT).sum())
        found["video_confident"] += int(got[ref.scores >= CONFIDENT].sum())
        video_dets += len(r)
        video_true += int(hits(r.detections, ref.boxes, ref.classes).sum())
        if previous is not None:  # the ceiling: dense against itself one frame apart
            prev = dense.predict_array(previous)
            found["dense_prev"] += matched(ref, prev.boxes, prev.classes)
            prev_total += len(ref)
        previous = r.image
    n = stats.frames
    sampled = len(range(0, n, every))
    fps = {
        "video": n / seconds["video"],
        "dense": sampled / seconds["dense"],
        "gradient": sampled / seconds["gradient"],
    }
    share = {k: round(v / max(1, total), 4) for k, v in found.items()}
    share["video_confident"] = round(found["video_confident"] / max(1, confident), 4)
    share["dense_prev"] = round(found["dense_prev"] / max(1, prev_total), 4)
    return {
        "clip": name,
        "batch": video_cfg.batch,
        "frames": n,
        "dense_frames": sampled,
        "dense_detections": total,
        "dense_confident": confident,
        "fps": {k: round(v, 2) for k, v in fps.items()},
        "speedup_vs_dense": {k: round(v / fps["dense"], 2) for k, v in fps.items()},
        "median_frame_speedup": round(
            float(np.median(per_frame["dense"]) / np.median(per_frame["video"])), 2
        ),
        "share_of_dense": share,
        "video_dets_dense_has": round(video_true / max(1, video_dets), 4),
        "video_stats": stats.as_dict(),
    }


def _warm(frames: Iterator[Frame], dense: Detector) -> Iterator[Frame]:
    """The same frames, after one untimed dense pass on the first: the first run of each
    input shape pays for kernel selection, which would otherwise be charged to one method."""
    first = next(frames)
    dense.predict_array(first.image)
    return itertools.chain([first], frames)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--real-frames", type=int, default=1394)
    p.add_argument("--uhd-frames", type=int, default=150)
    p.add_argument("--every", type=int, default=10, help="Time dense/gradient every N frames.")
    p.add_argument("--weights", type=Path, default=SHARED / "weights" / "yolov8n.pt")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=VideoConfig.batch, help="Video frames per batch.")
    p.add_argument("--out", type=Path, help="Also write the report as JSON here.")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    reports = []
    cfg = VideoConfig(batch=args.batch)
    if args.real_frames:
        clip = real_clip(args.real_frames)
        reports.append(bench("real-768x432", clip, args.real_frames, args.every, args.weights, cfg))
    if args.uhd_frames:
        clip, moving = uhd_clip(args.uhd_frames)
        report = bench("uhd-3840x2160", clip, args.uhd_frames, args.every, args.weights, cfg)
        reports.append({**report, "moving_area": round(moving, 4)})
    for r in reports:
        print(json.dumps(r))
    if args.out:
        args.out.write_text(json.dumps(reports, indent=2))


if __name__ == "__main__":
    main()
