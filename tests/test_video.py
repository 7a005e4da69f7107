"""The video path on short clips composed from real imagery, and on the real indoor clip."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from click.testing import CliRunner
from videos import FRAMES, STOP, found, make_clip

from sparse_yolo.cli import main
from sparse_yolo.detector import Detector
from sparse_yolo.video.config import VideoConfig
from sparse_yolo.video.motion import box_cells
from sparse_yolo.video.reader import VideoReader
from sparse_yolo.video.stream import stream

WARMUP = VideoConfig().warmup


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from helpers import SHARED, SHARED_WEIGHTS  # noqa: PLC0415

    if not SHARED_WEIGHTS.is_file():
        pytest.skip("../shared (real weights and imagery) is absent")
    return make_clip(SHARED, tmp_path_factory.mktemp("clip") / "clip.avi")


@pytest.fixture(scope="module")
def yolo(clip):
    from helpers import SHARED_WEIGHTS  # noqa: PLC0415

    return Detector(SHARED_WEIGHTS, device="cpu")


@pytest.fixture(scope="module")
def tracked(clip, yolo):
    """Every frame of the clip through the default video settings, with ByteTrack."""
    return list(stream(yolo, clip.path, VideoConfig(refresh=0, track="bytetrack")))


@pytest.fixture(scope="module")
def dense(clip, yolo):
    """Dense per-frame detections of the decoded frames (every cell computed)."""
    ref = Detector(yolo.model, device="cpu", mask="all")
    return [ref.predict_array(f.image) for f in VideoReader(clip.path)]


def test_static_object_found_every_frame(clip, tracked):
    assert len(tracked) == FRAMES
    assert [r.frame_index for r in tracked] == list(range(FRAMES))
    assert all(found(r.detections.boxes, clip.static.box_at(r.frame_index)) >= 0 for r in tracked)
    # Refresh is off: after warm-up only motion and persistence keep it examined.
    assert not any(r.full for r in tracked[WARMUP:])


def test_stopping_object_still_found(clip, tracked):
    for r in tracked[STOP:]:
        assert found(r.detections.boxes, clip.stopping.box_at(r.frame_index)) >= 0, r.frame_index


def test_moving_object_covered_and_detected_like_dense(clip, tracked, dense):
    cell = tracked[0].mask.cell
    for r, ref in zip(tracked, dense, strict=True):
        truth = clip.walker.box_at(r.frame_index)
        under = box_cells(truth[None], r.mask.cells.shape, cell, 0)
        assert r.mask.cells[under].all(), r.frame_index
        if found(ref.boxes, truth) >= 0:  # what dense finds, the video path finds
            assert found(r.detections.boxes, truth) >= 0, r.frame_index
    # Sparse after warm-up: the frame is small, so margins weigh; at 4K it is a few %.
    assert np.mean([r.mask.active_fraction for r in tracked[WARMUP:]]) < 0.7


def test_track_ids_stable(clip, tracked):
    def ids(sprite, frames):
        out = []
        for r in frames:
            i = found(r.detections.boxes, sprite.box_at(r.frame_index))
            if i >= 0 and r.track_ids[i] >= 0:
                out.append(int(r.track_ids[i]))
        return out

    static = ids(clip.static, tracked)
    assert len(static) == FRAMES and len(set(static)) == 1
    walker = ids(clip.walker, tracked[FRAMES // 2 :])
    assert len(walker) >= FRAMES // 4 and len(set(walker)) == 1
    assert set(walker).isdisjoint(static)


def test_detector_stream_carries_index_and_time(clip, yolo):
    out = list(itertools.islice(yolo.stream(clip.path, masks="motion+gradient"), 3))
    assert [r.frame_index for r in out] == [0, 1, 2]
    assert [r.timestamp_s for r in out] == pytest.approx([0.0, 0.1, 0.2], abs=1e-3)


def test_cli_writes_jsonl_mot_and_video(clip, tmp_path):
    from helpers import SHARED_WEIGHTS  # noqa: PLC0415

    args = ["detect", str(clip.path), "--weights", str(SHARED_WEIGHTS), "--device", "cpu"]
    args += ["--track", "bytetrack", "--refresh", "10"]
    jsonl, mot, video, stats = (tmp_path / n for n in ("d.jsonl", "d.txt", "v.avi", "s.json"))
    res = CliRunner().invoke(main, [*args, "-o", str(jsonl), "--save-video", str(video)])
    assert res.exit_code == 0, res.output
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(FRAMES))
    assert records[1]["timestamp_s"] == pytest.approx(0.1, abs=1e-3)
    det = records[-1]["detections"][0]
    assert set(det) == {"bbox_px", "class_id", "class_name", "score", "track_id"}
    assert det["class_name"] in {"car", "person", "truck"} and len(det["bbox_px"]) == 4
    assert VideoReader(video).size == (384, 256) and len(list(VideoReader(video))) == FRAMES

    res = CliRunner().invoke(main, [*args, "-o", str(mot), "--stats", str(stats)])
    assert res.exit_code == 0, res.output
    rows = np.loadtxt(mot, delimiter=",", ndmin=2)
    assert rows.shape[1] == 10 and (rows[:, 7:] == -1).all()
    assert rows[:, 0].min() == 1 and rows[:, 0].max() == FRAMES  # MOT frames are 1-based
    assert (rows[:, 4:6] > 0).all() and (rows[:, 1] >= -1).all()
    assert len(rows) == sum(len(r["detections"]) for r in records)
    s = json.loads(stats.read_text())
    assert s["frames"] == FRAMES and 0 < s["mean_active_fraction"] < 1
    assert {"decode", "mask", "stem", "remainder", "track"} <= set(s["seconds"])


@pytest.mark.shared
def test_real_clip_finds_dense_detections(shared):
    """The indoor clip's first 100 frames, a person walking in from frame ~57: the default
    video settings find >= 95% of the dense detections (dense run on every 3rd frame)."""
    src = shared / "data" / "video" / "one-by-one-person-detection.mp4"
    detector = Detector(shared / "weights" / "yolov8n.pt", device="cpu")
    ref = Detector(detector.model, device="cpu", mask="all")
    matched = total = 0
    for r in itertools.islice(stream(detector, src), 100):
        if r.frame_index < 54 or r.frame_index % 3:
            continue
        d = ref.predict_array(r.image)
        total += len(d)
        for box, cls in zip(d.boxes, d.classes, strict=True):
            same = r.detections.boxes[r.detections.classes == cls]
            matched += found(same, box) >= 0
    assert total >= 15  # the person is in view
    assert matched / total >= 0.95
