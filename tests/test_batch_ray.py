"""``batch --engine ray`` on a local Ray instance (2 CPUs, no dashboard) against the local engine.

One Ray instance serves the whole module, and the local engine's outputs are computed once,
so each test pays only for its own actors.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner
from mosaic import assert_same_dets, mosaic_bands, read_dets, write_tiles
from rasters import truncated

from sparse_yolo.batch import BatchSpec, run_batch
from sparse_yolo.cli import main

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

OPTS = ["--conf", "0.05", "--tile", "128", "--overlap", "32"]


def batch(*args) -> object:
    return CliRunner().invoke(main, ["batch", *map(str, args)], catch_exceptions=False)


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def tiles(tmp_path_factory, tiny_weights):
    """8 abutting 128-px tiles and a corrupt tile; the local engine's outputs."""
    root = tmp_path_factory.mktemp("ray_batch")
    write_tiles(root / "tiles", mosaic_bands(256, 512), 128)
    truncated(root / "tiles", "z_bad.tif")
    res = batch(root / "tiles", "-o", root / "local_tiles", "--weights", tiny_weights, *OPTS)
    assert res.exit_code == 1, res.output
    return root


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_ray_matches_local_with_a_corrupt_tile_and_a_resumed_run(ray_cluster, tiles, tiny_weights):
    out = tiles / "ray_tiles"
    args = ["--weights", tiny_weights, *OPTS, "--engine", "ray", "--workers", "2"]
    res = batch(tiles / "tiles", "-o", out, *args)
    assert res.exit_code == 1, res.output
    local = tiles / "local_tiles"
    assert _names(out) == _names(local)  # 8 tiles, all.geojson, errors.json; nothing else
    for name in _names(local):
        if name.endswith(".geojson"):
            assert_same_dets(out / name, local / name)
    assert (out / "errors.json").read_text() == (local / "errors.json").read_text()
    assert sum(len(read_dets(out / f"r{r}c{c}.geojson")) for r in range(2) for c in range(4)) > 0
    # A resumed run: two outputs lost, the bad tile still bad: only those two run again.
    stamp = (out / "r0c0.geojson").stat().st_mtime_ns
    for name in ("r1c1.geojson", "r1c3.geojson"):
        (out / name).unlink()
    res = batch(tiles / "tiles", "-o", out, *args, "--resume")
    assert res.exit_code == 1 and "9 tiles, 6 already done, 3 to run" in res.output
    assert (out / "r0c0.geojson").stat().st_mtime_ns == stamp
    assert _names(out) == _names(local)
    for name in ("r1c1.geojson", "r1c3.geojson", "all.geojson"):
        assert_same_dets(out / name, local / name)
    assert json.loads((out / "errors.json").read_text()) == json.loads(
        (local / "errors.json").read_text()
    )


def test_huge_raster_windows_across_ray_tasks_match_the_local_run(ray_cluster, tmp_path, shared):
    """One real aerial GeoTIFF, its 8 windows as 4 Ray tasks == one local detect run."""
    import cv2
    from rasters import write_raster

    from sparse_yolo.io.tiles import tile_windows

    bgr = cv2.imread(str(shared / "data/aerial/small-vehicles1.jpeg"))[128:448, 256:]  # cars
    (tmp_path / "in").mkdir()
    rgb = np.ascontiguousarray(bgr[..., ::-1].transpose(2, 0, 1))
    src = write_raster(tmp_path / "in" / "cars.tif", rgb)
    args = ["--weights", shared / "weights/yolov8n.pt", "--tile", "256", "--overlap", "64"]
    ref = tmp_path / "local.geojson"  # one run over every window, seams merged
    res = CliRunner().invoke(main, ["detect", str(src), "-o", str(ref), *map(str, args)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "out"
    ray_args = ["--engine", "ray", "--workers", "2", "--tiles-per-task", "2"]
    res = batch(tmp_path / "in", "-o", out, *args, *ray_args)
    assert res.exit_code == 0, res.output
    dets = read_dets(ref)
    windows = tile_windows(bgr.shape[1], bgr.shape[0], 256, 64)
    edges = {w.col_off for w in windows} | {w.col_off + w.width for w in windows}
    seams = [e for e in edges if 0 < e < bgr.shape[1]]
    assert len(windows) == 8 and len(dets) > 5
    assert any(d[0] < e < d[2] for d in dets for e in seams)  # boxes across tile seams
    assert_same_dets(out / "cars.geojson", ref)


def test_killed_actor_is_retried_and_every_tile_is_written_once(ray_cluster, tiles, tiny_weights):
    out = tiles / "ray_fault"
    opts = {"weights": tiny_weights, "conf": 0.05, "tile": 128, "overlap": 32}
    spec = BatchSpec(str(tiles / "tiles" / "r*.tif"), out, opts, engine="ray", workers=2)
    report = {}
    runner = threading.Thread(target=lambda: report.update(r=run_batch(spec, echo=lambda _: 0)))
    runner.start()
    victim, done_at_kill = None, None
    deadline = time.monotonic() + 120
    while runner.is_alive() and time.monotonic() < deadline and victim is None:
        written = list(out.glob("r*.geojson")) if out.is_dir() else []
        actors = [p for p in psutil.Process().children(recursive=True) if _is_tile_worker(p)]
        if written and actors:
            done_at_kill = len(written)
            victim = actors[0]
            victim.send_signal(signal.SIGKILL)
        time.sleep(0.005)
    runner.join(timeout=300)
    assert victim is not None and done_at_kill < 8, "the batch ended before an actor was killed"
    assert not victim.is_running()
    assert report["r"].errors == {} and report["r"].n_written == 8
    local = tiles / "local_tiles"
    written = [n for n in _names(out) if n.startswith("r")]
    assert written == [n for n in _names(local) if n.startswith("r")]  # once each, no temp file
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    for name in written:
        assert_same_dets(out / name, local / name)


def _is_tile_worker(proc) -> bool:
    try:
        return "TileWorker" in " ".join(proc.cmdline())
    except psutil.Error:
        return False


@pytest.mark.slow
def test_rerun_with_resume_after_the_driver_is_killed_finishes_the_rest(
    ray_cluster, tiles, tiny_weights
):
    """A driver joining the cluster (--address) is killed mid-batch; --resume finishes."""
    out = tiles / "ray_driver"
    args = [str(a) for a in ("--weights", tiny_weights, *OPTS, "--engine", "ray", "--workers", "2")]
    cmd = [
        sys.executable,
        "-m",
        "sparse_yolo",
        "batch",
        str(tiles / "tiles" / "r*.tif"),
        "-o",
        str(out),
    ]
    driver = subprocess.Popen([*cmd, *args, "--address", ray_cluster], env=os.environ.copy())
    deadline = time.monotonic() + 180
    while driver.poll() is None and time.monotonic() < deadline:
        if out.is_dir() and any(out.glob("r*.geojson")):
            break
        time.sleep(0.01)
    assert driver.poll() is None, "the driver finished before it could be killed"
    driver.kill()
    driver.wait()
    before = len(list(out.glob("r*.geojson")))
    assert 0 < before < 8 and not (out / "all.geojson").exists()
    res = batch(tiles / "tiles" / "r*.tif", "-o", out, *args, "--resume")
    assert res.exit_code == 0, res.output
    assert f"8 tiles, {before} already done, {8 - before} to run" in res.output
    local = tiles / "local_tiles"
    for name in [n for n in _names(local) if n.startswith("r")]:
        assert_same_dets(out / name, local / name)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
