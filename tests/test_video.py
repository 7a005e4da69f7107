"""The video path on short clips composed from real imagery, and on the real indoor clip."""

from __future__ import annotations

import itertools
import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from videos import FRAMES, STOP, found, make_clip

from sparse_yolo.cli import main
from sparse_yolo.detector import Detector
from sparse_yolo.engine import Timer
from sparse_yolo.engine.background import Background
from sparse_yolo.engine.runner import Frame as EngineFrame
from sparse_yolo.masks import MaskResult, cell_grid
from sparse_yolo.video import synth
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
    """Every frame of the clip through the default video settings, with ByteTrack and reuse
    (which a frame this small leaves off by default)."""
    return list(stream(yolo, clip.path, VideoConfig(refresh=0, track="bytetrack", reuse=True)))


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


def test_moving_object_detected_like_dense_with_the_default_settings(clip, yolo, dense):
    """Without reuse (the default at this frame size): wherever dense finds the walker, the
    video path finds it too."""
    runs = stream(yolo, clip.path, VideoConfig(refresh=0))
    for r, ref in zip(runs, dense, strict=True):
        truth = clip.walker.box_at(r.frame_index)
        if found(ref.boxes, truth) >= 0:
            assert found(r.detections.boxes, truth) >= 0, r.frame_index


def test_moving_object_covered_and_detected_like_dense(clip, tracked, dense):
    """The walker's cells are computed on every frame; where dense finds it clear of the
    threshold (>= 0.5), so does the video path, and on most frames where dense finds it at
    all (windows give it less context than the full frame, so a walker dense scores just
    above the threshold can fall just under it)."""
    cell = tracked[0].mask.cell
    dense_found = video_found = clear = 0
    for r, ref in zip(tracked, dense, strict=True):
        truth = clip.walker.box_at(r.frame_index)
        under = box_cells(truth[None], r.mask.cells.shape, cell, 0)
        assert r.mask.cells[under].all(), r.frame_index
        j = found(r.detections.boxes, truth)
        assert j < 0 or not r.carried[j], r.frame_index  # it moves: always computed
        i = found(ref.boxes, truth)
        if i >= 0:
            dense_found += 1
            video_found += j >= 0
            if ref.scores[i] >= 0.5:
                clear += 1
                assert found(r.detections.boxes, truth) >= 0, r.frame_index
    assert clear >= FRAMES // 3 and video_found >= 2 * dense_found / 3
    # Sparse after warm-up: the frame is small, so margins weigh; at 4K it is a few %.
    assert np.mean([r.mask.active_fraction for r in tracked[WARMUP:]]) < 0.7


def test_static_object_carried_while_its_region_is_still(clip, tracked):
    """After warm-up the static car is carried on the frames where nothing moves near it:
    the box and score of an earlier frame that computed it (with ``batch`` frames run
    together, the last one before the batch), its cells not computed."""
    carried = 0
    computed = []  # (box, score) of the static car on the frames that computed it
    for r in tracked:
        i = found(r.detections.boxes, clip.static.box_at(r.frame_index))
        box, score = r.detections.boxes[i], r.detections.scores[i]
        if not r.carried[i]:
            computed.append((box, score))
            continue
        carried += 1
        assert any(np.array_equal(box, b) and score == s for b, s in computed), r.frame_index
        under = box_cells(box[None], r.mask.cells.shape, r.mask.cell, 0)
        assert not r.mask.cells[under].any(), r.frame_index
    assert carried >= FRAMES // 3


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


@pytest.mark.shared
def test_background_fill_scores_objects_beside_a_moving_one_nearer_dense(shared):
    """The real indoor clip: a person (class 0) stands on a board that dense takes for a
    skateboard at 0.44-0.59. Computing only the person's cells (box plus 2 cells), the
    windows that read the skipped sites from the empty room of frame 0 find every dense
    detection, nearer dense's scores than the flat colour fill does."""
    src = shared / "data" / "video" / "one-by-one-person-detection.mp4"
    wanted = (0, 543, 560, 590)
    frames = {
        f.index: f.image for f in itertools.islice(VideoReader(src), 591) if f.index in wanted
    }
    detector = Detector(shared / "weights" / "yolov8n.pt", device="cpu")
    dense = Detector(detector.model, device="cpu", mask="all")
    engine = detector.engine
    grid = cell_grid(*frames[0].shape[:2], 16)
    every = np.ones(grid, bool)
    error = {"background": [], "flat": []}
    for k in wanted[1:]:
        ref = dense.predict_array(frames[k])
        assert len(ref) == 2 and set(ref.classes.tolist()) == {0, 36}, k
        cells = box_cells(ref.boxes[ref.classes == 0], grid, 16, 2)
        for fill in error:
            background = Background() if fill == "background" else None
            if background is not None:  # frame 0, every cell: the empty room is kept
                all_cells = MaskResult(every, every.astype(np.float32), 16)
                first = EngineFrame(frames[0], all_cells, background=background)
                engine.run_batch([first], Timer(engine.device))
                assert background.maps is not None
            person = MaskResult(cells, cells.astype(np.float32), 16)
            frame = EngineFrame(frames[k], person, background=background)
            ((dets, run),) = engine.run_batch([frame], Timer(engine.device))
            assert run.path == "windows" and run.fill == fill
            for box, score, cls in zip(ref.boxes, ref.scores, ref.classes, strict=True):
                mine = dets[dets[:, 5] == cls].numpy()
                i = found(mine[:, :4], box)
                error[fill].append(abs(mine[i, 4] - score) if i >= 0 else score)
    assert all(e < 0.2 for e in error["background"]), error
    assert sum(error["background"]) < 0.75 * sum(error["flat"]), error


@pytest.fixture(scope="module")
def passing(clip, tmp_path_factory):
    """The static car of ``clip``, and a pedestrian walking up to just below it."""
    from helpers import SHARED  # noqa: PLC0415

    data = SHARED / "data"
    background = cv2.imread(str(data / "aerial" / "boats.jpg"))[0:256, 0:384]
    people = cv2.imread(str(data / "visdrone" / "images" / "0000072_00000_d_0000001.jpg"))
    walker = synth.Sprite(
        *synth.crop(people, (697, 349, 723, 405)), synth.line((20, 170), (340, 56), FRAMES)
    )
    path = tmp_path_factory.mktemp("passing") / "passing.avi"
    synth.write(path, synth.frames(background, [clip.static, walker], FRAMES), fps=10.0)
    return path, clip.static, walker


def test_object_moving_next_to_a_carried_one_gets_it_recomputed(passing, yolo):
    """The static car is carried while the walker is far, recomputed (its cells in the
    mask, a fresh score) once the walker comes within the car's margin, found throughout;
    and the same clip gives the same results twice."""
    path, car, walker = passing
    runs = [list(stream(yolo, path, VideoConfig(refresh=0, reuse=True))) for _ in range(2)]
    for a, b in zip(*runs, strict=True):
        assert np.array_equal(a.detections.boxes, b.detections.boxes)
        assert np.array_equal(a.detections.scores, b.detections.scores)
        assert np.array_equal(a.carried, b.carried)
    margin = VideoConfig().persist_margin * runs[0][0].mask.cell
    carried = near = 0
    for r in runs[0][WARMUP:]:
        i = found(r.detections.boxes, car.box_at(r.frame_index))
        assert i >= 0, r.frame_index
        gap = np.maximum(car.box_at(r.frame_index)[:2] - walker.box_at(r.frame_index)[2:], 0)
        gap = np.maximum(gap, walker.box_at(r.frame_index)[:2] - car.box_at(r.frame_index)[2:])
        if gap.max() < margin:  # the walker is inside the car's margin: recomputed
            near += 1
            under = box_cells(car.box_at(r.frame_index)[None], r.mask.cells.shape, 16, 0)
            assert not r.carried[i] and r.mask.cells[under].all(), r.frame_index
        carried += bool(r.carried[i])
    assert near >= 3 and carried >= 5


@pytest.mark.shared
def test_camera_noise_changes_frames_like_the_real_clip(shared):
    """The synthetic clips' ``camera`` noise leaves pixels unchanged between frames as the
    real static camera's encoder does (measured on its first 40 frames, before anyone
    walks in): most pixels exactly unchanged between frames, nearly all on key frames
    (every 10th); ``iid`` changes most pixels of every frame."""
    src = shared / "data" / "video" / "one-by-one-person-detection.mp4"
    real = [f.image for f in itertools.islice(VideoReader(src), 41)]
    background = cv2.imread(str(shared / "data" / "aerial" / "boats.jpg"))[:432, :768]

    def changes(images):
        pairs = [synth.frame_change(b, a) for a, b in itertools.pairwise(images)]
        key = [c["unchanged"] for t, c in enumerate(pairs, 1) if t % 10 == 0]
        other = [c["unchanged"] for t, c in enumerate(pairs, 1) if t % 10]
        return np.median(other), np.median(key), np.median([c["mean_abs"] for c in pairs])

    camera = changes(list(synth.frames(background, [], 41, noise="camera")))
    measured = changes(real)
    assert measured[0] > 0.9 and measured[1] < 0.3  # the real camera: key frames every 10
    assert abs(camera[0] - measured[0]) < 0.05 and abs(camera[1] - measured[1]) < 0.15
    assert camera[2] == pytest.approx(measured[2], abs=0.15)
    iid = changes(list(synth.frames(background, [], 21, noise="iid")))
    assert iid[0] < 0.3 and iid[2] > 1.5
