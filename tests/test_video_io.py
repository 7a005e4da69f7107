"""Video sources, writers and bad input, with a tiny random model (logic only)."""

from __future__ import annotations

import functools
import http.server
import json
import threading

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from sparse_yolo.cli import main
from sparse_yolo.config import MaskConfig
from sparse_yolo.errors import SparseYoloError
from sparse_yolo.video import synth
from sparse_yolo.video.config import VideoConfig
from sparse_yolo.video.motion import FrameMasks, Persistence, box_cells
from sparse_yolo.video.reader import StreamInterrupted, VideoReader, is_video_source
from sparse_yolo.video.reuse import Reuse, box_rects, grow_through, merge_carried

FRAMES = 12


def _frames(n: int = FRAMES) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    bg = cv2.GaussianBlur(rng.integers(0, 255, (128, 160, 3), dtype=np.uint8), (5, 5), 0)
    obj = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
    sprite = synth.Sprite(
        obj, np.array([0, 0, 24, 24], np.float32), synth.line((0, 50), (130, 60), n)
    )
    return list(synth.frames(bg, [sprite], n))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("io") / "clip.avi"
    synth.write(path, iter(_frames()), fps=10.0)
    return path


@pytest.fixture(scope="module")
def truncated(clip):
    data = clip.read_bytes()
    path = clip.with_name("truncated.avi")
    path.write_bytes(data[: len(data) // 2])
    return path


def _detect(tiny_weights, *args):
    base = ["detect", "--weights", str(tiny_weights), "--device", "cpu", "--conf", "0.3"]
    return CliRunner().invoke(main, [*base, *map(str, args)])


def test_reader_frames_in_order_with_timestamps(clip, tmp_path):
    frames = list(VideoReader(clip))
    assert [f.index for f in frames] == list(range(FRAMES))
    assert frames[3].timestamp_s == pytest.approx(0.3, abs=1e-3)
    folder = tmp_path / "seq"
    folder.mkdir()
    for i, img in reversed(list(enumerate(_frames()))):  # written last first; names set order
        cv2.imwrite(str(folder / f"f{i:03d}.png"), img)
    seq = list(VideoReader(folder, fps=4.0))
    assert len(seq) == FRAMES and seq[2].timestamp_s == pytest.approx(0.5)
    first = cv2.imread(str(folder / "f000.png"))
    assert np.array_equal(seq[0].image, first)
    assert len(list(VideoReader(str(folder / "f00*.png")))) == 10


def test_video_sources_are_recognised():
    assert is_video_source("clip.MP4") and is_video_source("rtsp://cam/1")
    assert not is_video_source("scene.tif") and is_video_source("frames/", frames=True)


def test_refresh_and_persistence_rule():
    video = VideoConfig(warmup=2, refresh=3, persist_frames=2, reuse=False)
    masks = FrameMasks(MaskConfig(), video)
    assert [masks.is_full(i) for i in range(9)] == [1, 1, 0, 1, 0, 0, 1, 0, 0]
    still = _frames(1)[0]  # no object moves: after warm-up only persistence marks cells
    for _ in range(4):  # frames 0-3, of which 0, 1 and 3 full
        masks(still)
    boxes = np.array([[40.0, 40.0, 56.0, 56.0]], np.float32)
    kept = box_cells(boxes, (8, 10), 16, VideoConfig().persist_margin)

    def update(frame, boxes, scores):
        dets = np.concatenate([boxes, np.array(scores, np.float32)[:, None]], 1)
        masks.update(frame, np.pad(dets, ((0, 0), (0, 1))))

    frame = masks(still)
    update(frame, boxes, [0.5])
    update(frame, boxes[:0], [])  # missed once: still kept
    frame = masks(still)
    assert not frame.full and np.array_equal(frame.mask.cells, kept)
    assert not len(frame.carried)  # no reuse
    update(frame, boxes[:0], [])  # missed persist_frames times: gone
    update(frame, boxes, [0.05])  # below persist_conf
    assert not len(masks.persist.boxes)
    refresh = masks(still)  # frame 6: the base mask, every cell by default
    assert refresh.full and refresh.mask.cells.all()


def test_persistence_hysteresis():
    """An object enters at persist_conf, survives dips down to persist_keep, follows strong
    boxes, and is dropped after persist_frames frames without an overlapping box; weak boxes
    elsewhere never enter."""
    persist = Persistence(VideoConfig(persist_conf=0.25, persist_keep=0.1, persist_frames=3))
    boat = np.array([[100.0, 100.0, 160.0, 140.0]], np.float32)
    clutter = np.array([[400.0, 300.0, 470.0, 380.0]], np.float32)

    def frame(boxes, scores):
        persist.update(np.concatenate(boxes), np.array(scores, np.float32))
        return persist.boxes

    assert np.array_equal(frame([boat, clutter], [0.6, 0.2]), boat)  # clutter is too weak
    for _ in range(10):  # the boat's score dips under the output threshold: kept in place
        assert np.array_equal(frame([boat + 4, clutter], [0.12, 0.2]), boat)
    moved = boat + np.array([20, 0, 20, 0], np.float32)
    assert np.array_equal(frame([moved], [0.4]), moved)  # a strong box moves it
    for _ in range(2):  # not seen twice: still kept
        assert np.array_equal(frame([clutter], [0.24]), moved)
    assert len(frame([clutter, moved], [0.24, 0.05])) == 0  # third miss (0.05 < keep): gone
    with pytest.raises(ValueError, match="persist_keep <= persist_conf"):
        VideoConfig(persist_conf=0.25, persist_keep=0.3)


def test_batched_stream_matches_frame_by_frame_and_keeps_frames_before_a_drop(tiny_weights):
    """Frames run ``batch`` at a time give each frame the detections it gets alone (same
    masks here: refresh every frame, no persistence lag); a source that drops mid-batch
    still yields the frames read before the error."""
    from sparse_yolo.detector import Detector  # noqa: PLC0415
    from sparse_yolo.video.reader import Frame  # noqa: PLC0415
    from sparse_yolo.video.stream import stream  # noqa: PLC0415

    det = Detector(tiny_weights, device="cpu", **{"post.conf": 0.12})
    images = _frames(7)

    def source():
        yield from (Frame(i, i / 10, img) for i, img in enumerate(images))
        raise StreamInterrupted("stream ended after 7 of 12 frames", "cam")

    every = {"refresh": 1, "masks": "all", "batch": 1}
    alone = list(
        stream(det, (Frame(i, i / 10, im) for i, im in enumerate(images)), VideoConfig(**every))
    )
    got = []
    with pytest.raises(StreamInterrupted):
        for r in stream(det, source(), VideoConfig(**{**every, "batch": 3})):
            got.append(r)
    assert [r.frame_index for r in got] == list(range(7))
    assert sum(len(r) for r in alone) > 0
    for a, b in zip(alone, got, strict=True):
        np.testing.assert_allclose(b.detections.boxes, a.detections.boxes, atol=1e-3)
        np.testing.assert_allclose(b.detections.scores, a.detections.scores, atol=1e-4)
    assert got[1].seconds["total"] > 0 and got[1].seconds == got[3].seconds  # batch's share
    assert got[0].seconds != got[1].seconds  # the warm-up frame ran alone


def test_cli_bad_inputs_one_line_each(tiny_weights, tmp_path):
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video")
    cases = {
        notes: "not a video OpenCV can read",
        tmp_path / "missing.mp4": "no such file",
        "rtsp://127.0.0.1:9/none": "cannot open the stream",
    }
    for source, problem in cases.items():
        res = _detect(tiny_weights, source, "-o", tmp_path / "out.jsonl")
        assert res.exit_code == 1
        assert res.output.strip().splitlines() == [f"Error: {source}: {problem}"]
        assert not (tmp_path / "out.jsonl").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    res = _detect(tiny_weights, empty, "--frames", "-o", tmp_path / "out.jsonl")
    assert res.exit_code == 1 and "no image frames found" in res.output


def test_cli_bad_output_suffix(tiny_weights, clip, tmp_path):
    res = _detect(tiny_weights, clip, "-o", tmp_path / "out.geojson")
    assert res.exit_code == 1 and "video output must end in .jsonl or .txt" in res.output
    assert not (tmp_path / "out.geojson").exists()


def test_truncated_file_keeps_records_and_fails(tiny_weights, truncated, tmp_path):
    out = tmp_path / "out.jsonl"
    res = _detect(tiny_weights, truncated, "-o", out)
    assert res.exit_code == 1
    error = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert error == [f"Error: {truncated}: stream ended after 6 of {FRAMES} frames"]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(6))


def test_http_stream_that_drops(truncated):
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(truncated.parent)
    )
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{truncated.name}"
    got = []
    try:
        with pytest.raises(StreamInterrupted, match="stream ended after 6 of"):
            for frame in VideoReader(url):
                got.append(frame.index)
    finally:
        server.shutdown()
    assert got == list(range(6))


def test_folder_with_a_bad_frame_mid_way(tiny_weights, tmp_path):
    folder = tmp_path / "seq"
    folder.mkdir()
    for i, img in enumerate(_frames(6)):
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), img)
    (folder / "003.jpg").write_bytes(b"garbage")
    out = tmp_path / "seq.txt"
    res = _detect(tiny_weights, folder, "--frames", "-o", out)
    assert res.exit_code == 1
    assert f"Error: {folder / '003.jpg'}: frame 3 is not a readable image" in res.output
    rows = out.read_text().splitlines()
    assert all(int(r.split(",")[0]) <= 3 for r in rows)  # MOT frames 1..3 only


def test_reader_errors_are_sparse_yolo_errors(tmp_path):
    with pytest.raises(SparseYoloError, match="no image frames found"):
        VideoReader(str(tmp_path / "*.png"))


def test_engine_reuses_plan_while_active_set_unchanged(tiny):
    from helpers import blob_cells  # noqa: PLC0415

    from sparse_yolo.config import DetectorConfig  # noqa: PLC0415
    from sparse_yolo.engine import SparseEngine  # noqa: PLC0415
    from sparse_yolo.masks import MaskResult  # noqa: PLC0415

    engine = SparseEngine(tiny, DetectorConfig(backend="gather"))
    cells = blob_cells((8, 10), 0.2)
    windows = engine.plan(MaskResult(cells, cells.astype(np.float32), 16)).windows
    pyramid = engine.active_pyramid(cells, 16)
    pyramid.level(8).neighbours()  # tables built by the first frame's stem
    again = engine.plan(MaskResult(cells.copy(), cells.astype(np.float32), 16)).windows
    same = engine.active_pyramid(cells.copy(), 16)
    assert same is pyramid and again is windows and "subm" in same.level(8)._tables
    moved = np.roll(cells, 1, axis=1)
    other = engine.active_pyramid(moved, 16)
    assert other is not pyramid and np.array_equal(other.cells.numpy(), moved)


def test_reuse_carries_still_regions_and_recomputes_what_motion_reaches():
    """Stored detections are carried while no motion reaches their region (box + margin);
    motion next to one makes its region computed, and, through it, any region it touches;
    computing a region replaces what was stored there; a full frame replaces everything."""
    reuse = Reuse(16, 0.25, VideoConfig(persist_margin=1))
    view = reuse.coarse(np.zeros((320, 480, 3), np.uint8))
    boat = [100.0, 100.0, 140.0, 130.0, 0.4, 8.0]  # cells rows 6-8, cols 6-8
    moored = [150.0, 100.0, 190.0, 130.0, 0.3, 8.0]  # cells cols 9-11: touches boat's margin
    far = [400.0, 300.0, 440.0, 330.0, 0.6, 2.0]
    weak = [20.0, 20.0, 40.0, 40.0, 0.2, 0.0]
    grid = np.zeros((20, 30), bool)
    reuse.update(~grid, np.array([boat, moored, far, weak], np.float32), True, view)
    assert len(reuse.dets) == 3  # under the output threshold: never carried

    cells, carried = reuse.split(grid, np.zeros((0, 4), np.float32))
    assert not cells.any() and len(carried) == 3  # nothing moves: all carried, none computed

    moving = grid.copy()
    moving[9, 5] = True  # a walker at the corner of the boat's margin
    cells, carried = reuse.split(moving, np.zeros((0, 4), np.float32))
    assert np.array_equal(carried, np.array([far], np.float32))  # boat and, via it, moored
    assert cells[6:9, 6:12].all() and not cells[15:, 20:].any()
    assert cells.sum() == 5 * 8  # the two regions: rows 5-9, cols 5-12

    found = np.array([[101.0, 99.0, 141.0, 131.0, 0.45, 8.0]], np.float32)
    reuse.update(cells, found, False, view)  # the boat recomputed, moored not found again
    assert sorted(reuse.dets[:, 4].tolist()) == pytest.approx([0.45, 0.6])
    kept = np.array([[405.0, 300.0, 445.0, 330.0]], np.float32)  # a kept object by far
    moving = grid.copy()
    moving[19, 29] = True
    cells, carried = reuse.split(moving, kept)
    assert len(carried) == 2 and cells.sum() == 1  # the object's region is still: not computed
    moving[19, 28] = True  # now inside the kept object's margin (and far's)
    cells, carried = reuse.split(moving, kept)
    assert carried[:, 4].tolist() == pytest.approx([0.45]) and cells.sum() == 1 + 3 * 5
    reuse.update(grid, np.zeros((0, 6), np.float32), True, view)
    assert not len(reuse.dets)


def test_reuse_sees_changes_since_a_cell_was_computed():
    """A cell changed since it was last computed is flagged however slowly it changed (a
    background model would learn it); encoder noise and a global exposure change are not
    changes; computing a cell keeps its new look."""
    reuse = Reuse(16, 0.25, VideoConfig())
    rng = np.random.default_rng(0)
    frame = cv2.GaussianBlur(rng.integers(0, 255, (320, 480, 3), dtype=np.uint8), (5, 5), 0)
    grid = np.zeros((20, 30), bool)
    first = reuse.coarse(frame)
    assert reuse.changed(first, grid.shape).all()  # nothing kept yet
    reuse.update(~grid, np.zeros((0, 6), np.float32), True, first)
    noisy = np.clip(frame + rng.normal(0, 2.5, frame.shape) + 20, 0, 255).astype(np.uint8)
    assert not reuse.changed(reuse.coarse(noisy), grid.shape).any()
    drifted = frame.copy()
    for step in range(1, 5):  # a car rolls in by 8 px a frame, never computed
        drifted[100:140, 200 + 8 * step : 260 + 8 * step] = 30
        moved = reuse.changed(reuse.coarse(drifted), grid.shape)
        assert moved[6:9, 13 + step // 2 : 16].all() and moved.sum() <= 4 * (4 + step)
    computed = grid.copy()
    computed[6:9, 12:19] = True
    reuse.update(computed, np.zeros((0, 6), np.float32), False, reuse.coarse(drifted))
    assert not reuse.changed(reuse.coarse(drifted), grid.shape).any()


@pytest.mark.parametrize(("h", "w", "step"), [(2160, 3840, 6), (1080, 1920, 4), (1001, 1502, 4)])
def test_reuse_coarse_copy_is_every_step_th_pixel(h, w, step):
    """OpenCV picks the pixels when the frame is a multiple of the step (4K: step 6,
    Full HD: 4), numpy otherwise: the same grey copy either way."""
    reuse = Reuse(16, 0.25, VideoConfig())
    frame = np.random.default_rng(h).integers(0, 256, (h, w, 3), dtype=np.uint8)
    view = reuse.coarse(frame)
    assert reuse.step == step
    want = cv2.cvtColor(np.ascontiguousarray(frame[::step, ::step]), cv2.COLOR_BGR2GRAY)
    assert view.dtype == np.int16 and np.array_equal(view, want.astype(np.int16))


def test_reuse_by_default_on_full_hd_and_larger():
    small, large = np.zeros((432, 768, 3), np.uint8), np.zeros((1080, 1920, 3), np.uint8)
    for image, on in ((small, False), (large, True)):
        masks = FrameMasks(MaskConfig(), VideoConfig())
        masks(image)
        assert (masks.reuse is not None) is on
    masks = FrameMasks(MaskConfig(), VideoConfig(reuse=True))
    masks(small)
    assert masks.reuse is not None


def test_merge_carried_prefers_computed():
    computed = np.array([[0, 0, 10, 10, 0.3, 1], [50, 50, 60, 60, 0.2, 1]], np.float32)
    carried = np.array([[1, 0, 11, 10, 0.9, 1], [1, 0, 11, 10, 0.5, 2], [80, 80, 90, 90, 0.4, 1]])
    out, is_carried = merge_carried(computed, carried.astype(np.float32), 0.5)
    assert out[:, 4].tolist() == pytest.approx([0.5, 0.4, 0.3, 0.2])  # the 0.9 is the 0.3 again
    assert is_carried.tolist() == [True, True, False, False]


def test_cli_video_flags_reach_the_video_config():
    from sparse_yolo.commands.video import video_config  # noqa: PLC0415

    default = video_config({})
    assert default.background and default.reuse is None
    chosen = video_config({"background": False, "reuse": True, "refresh": 7})
    assert (chosen.background, chosen.reuse, chosen.refresh) == (False, True, 7)


def _grow_by_passes(active: np.ndarray, rects: np.ndarray) -> np.ndarray:
    """The rule by its definition: add every rectangle that touches the active cells, pass
    after pass, until a pass adds none."""
    added = np.zeros(len(rects), bool)
    while True:
        grew = False
        for i in np.flatnonzero(~added):
            r0, r1, c0, c1 = rects[i]
            if active[r0:r1, c0:c1].any():
                active[r0:r1, c0:c1] = added[i] = grew = True
        if not grew:
            return added


@pytest.mark.parametrize("seed", range(6))
def test_grow_through_follows_chains_of_boxes_as_the_passes_do(seed):
    """Stored boxes packed like a car park, some chained away from the motion: the one-pass
    components add exactly the boxes and cells that pass after pass adds."""
    rng = np.random.default_rng(seed)
    shape, n = (40, 60), int(rng.integers(1, 120))
    xy = rng.uniform(0, [940, 620], (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(8, 60, (n, 2))], 1)
    chain = np.array([[24.0 * i, 16.0 * i, 24.0 * i + 30, 16.0 * i + 20] for i in range(30)])
    rects = box_rects(np.concatenate([boxes, chain[::-1]]), shape, 16, int(rng.integers(0, 3)))
    active = rng.random(shape) < 0.01
    active[0, 0] = True  # the chain's far end moves
    ours, ref = active.copy(), active.copy()
    added = grow_through(ours, rects)
    assert np.array_equal(added, _grow_by_passes(ref, rects))
    assert np.array_equal(ours, ref) and added[-1]  # the whole chain, from its far end
