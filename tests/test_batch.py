"""``sparse-yolo batch`` on the local engine, and merging per-tile outputs across files."""

from __future__ import annotations

import json
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pytest
from click.testing import CliRunner
from mosaic import assert_same_dets, mosaic_bands, read_dets, write_tiles, write_whole
from rasterio.transform import from_origin
from rasters import rgb_utm, truncated

from sparse_yolo.batch.driver import plan_units
from sparse_yolo.batch.merge import merge_outputs
from sparse_yolo.cli import main
from sparse_yolo.config import DetectorConfig
from sparse_yolo.postprocess import join_cut_boxes


def batch(*args) -> object:
    return CliRunner().invoke(main, ["batch", *map(str, args)], catch_exceptions=False)


def test_batch_survives_a_corrupt_tile_and_resumes(tmp_path, tiny_weights):
    tiles = tmp_path / "tiles"
    write_tiles(tiles, mosaic_bands(256, 384), 128)
    truncated(tiles, "z_bad.tif")
    out = tmp_path / "out"
    res = batch(tiles, "-o", out, "--weights", tiny_weights, "--conf", "0.05")
    assert res.exit_code == 1, res.output
    names = sorted(p.name for p in out.glob("*.geojson") if p.name != "all.geojson")
    assert names == [f"r{r}c{c}.geojson" for r in range(2) for c in range(3)]
    errors = json.loads((out / "errors.json").read_text())
    assert (
        list(errors) == [str(tiles / "z_bad.tif")] and "\n" not in errors[str(tiles / "z_bad.tif")]
    )
    merged = gpd.read_file(out / "all.geojson")
    assert merged.crs.to_epsg() == 32633 and len(merged) > 0
    stamp = (out / "r0c0.geojson").stat().st_mtime_ns
    (out / "r1c2.geojson").unlink()
    (tiles / "z_bad.tif").unlink()
    res = batch(tiles, "-o", out, "--weights", tiny_weights, "--conf", "0.05", "--resume")
    assert res.exit_code == 0, res.output
    assert "6 tiles, 5 already done, 1 to run" in res.output
    assert (out / "r0c0.geojson").stat().st_mtime_ns == stamp and (out / "r1c2.geojson").is_file()
    assert not (out / "errors.json").exists()


def test_huge_raster_split_across_tasks_matches_one_run(tmp_path, tiny_weights):
    """The windows of one raster as several tasks (and two processes) == one detect run."""
    bands = mosaic_bands(256, 384)
    (tmp_path / "in").mkdir()
    whole = write_whole(tmp_path / "in" / "huge.tif", bands)
    tiling = ["--tile", "128", "--overlap", "32", "--conf", "0.05", "--weights", tiny_weights]
    ref = tmp_path / "ref.geojson"
    res = CliRunner().invoke(main, ["detect", str(whole), "-o", str(ref), *map(str, tiling)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "out"
    res = batch(tmp_path / "in", "-o", out, "--tiles-per-task", "4", *tiling)
    assert res.exit_code == 0, res.output
    cfg = DetectorConfig().replace(**{"tiling.tile": 128, "tiling.overlap": 32})
    units = plan_units([whole], {whole: out / "huge.geojson"}, cfg, tiles_per_task=4)
    assert [u.tiles for u in units] == [(0, 4), (4, 8), (8, 12)]  # 12 windows, 3 tasks
    assert len(read_dets(ref)) > 5
    assert_same_dets(out / "huge.geojson", ref)


@pytest.mark.parametrize("suffix", [".parquet", ".gpkg", ".fgb", ".csv"])
def test_merged_output_format_by_suffix(tmp_path, suffix):
    files, sources = _two_tile_outputs(tmp_path)
    out = tmp_path / f"all{suffix}"
    assert merge_outputs(files, sources, out) == 3
    if suffix == ".csv":
        assert out.read_text().splitlines()[0].endswith(",geometry_wkt")
        return
    frame = gpd.read_parquet(out) if suffix == ".parquet" else gpd.read_file(out)
    assert frame.crs.to_epsg() == 32633
    assert sorted(frame["score"].round(2)) == [0.6, 0.8, 0.9]
    assert set(frame.columns) >= {"source", "class_id", "class_name", "x1", "y1", "x2", "y2"}


def test_merge_keeps_one_copy_of_an_object_seen_by_overlapping_tiles(tmp_path):
    files, sources = _two_tile_outputs(tmp_path)
    out = tmp_path / "all.geojson"
    merge_outputs(files, sources, out)
    merged = json.loads(out.read_text())
    scores = sorted(f["properties"]["score"] for f in merged["features"])
    assert scores == [0.6, 0.8, 0.9]  # the 0.7 duplicate went; another class at the spot stays
    assert merged["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"


def test_merge_of_tiles_written_in_wgs84_still_drops_duplicates(tmp_path):
    files, sources = _two_tile_outputs(tmp_path, to_wgs84=True)
    assert "crs" not in json.loads(files[0].read_text())  # RFC 7946 lon/lat
    out = tmp_path / "all.geojson"
    assert merge_outputs(files, sources, out, wgs84=True) == 3
    assert "crs" not in json.loads(out.read_text()) and gpd.read_file(out).crs.to_epsg() == 4326


def test_merge_of_pixel_tiles_only_concatenates(tmp_path):
    files, sources = _two_tile_outputs(tmp_path, crs=None)
    out = tmp_path / "all.geojson"
    assert merge_outputs(files, sources, out) == 4  # no shared frame: nothing suppressed
    assert "crs" not in json.loads(out.read_text())


def test_merge_across_crs_reprojects_to_wgs84(tmp_path):
    files, sources = _two_tile_outputs(tmp_path)
    other = json.loads(files[1].read_text())
    other["crs"]["properties"]["name"] = "urn:ogc:def:crs:EPSG::32632"  # a zone to the west
    files[1].write_text(json.dumps(other))
    out = tmp_path / "all.gpkg"
    assert merge_outputs(files, sources, out) == 4  # different places now: nothing suppressed
    frame = gpd.read_file(out)
    assert frame.crs.to_epsg() == 4326
    lon = frame.geometry.bounds["minx"].to_numpy()  # zone 33 is centred on 15 E, zone 32 on 9 E
    assert ((lon > 14.9) & (lon < 15.1)).sum() == 2 and ((lon > 8.9) & (lon < 9.1)).sum() == 2


def test_merge_rejects_pixel_tiles_with_georeferenced_ones(tmp_path):
    from sparse_yolo.errors import SparseYoloError

    files, sources = _two_tile_outputs(tmp_path)
    plain = json.loads(files[1].read_text())
    del plain["crs"]
    files[1].write_text(json.dumps(plain))
    with pytest.raises(SparseYoloError, match="pixel-coordinate"):
        merge_outputs(files, sources, tmp_path / "all.geojson")
    assert not (tmp_path / "all.geojson").exists()


def _two_tile_outputs(tmp_path, crs="EPSG:32633", to_wgs84=False):
    """Per-tile outputs of two fully overlapping tiles: a car seen twice, a car, a truck."""
    from affine import Affine
    from rasterio.crs import CRS

    from sparse_yolo.io.writers import write_detections
    from sparse_yolo.types import Detections, GeoRef, Result, RunStats

    sources = [rgb_utm(tmp_path, "a.tif"), rgb_utm(tmp_path, "b.tif")]
    boxes = [[[40, 40, 48, 44], [140, 40, 148, 44]], [[40.4, 40, 48.2, 44], [40, 40, 48, 44]]]
    scores, classes = [[0.9, 0.8], [0.7, 0.6]], [[2, 2], [2, 7]]
    files = []
    for src, b, s, c in zip(sources, boxes, scores, classes, strict=True):
        transform = from_origin(500000, 5000000, 0.5, 0.5) if crs else Affine.identity()
        georef = GeoRef(256, 256, CRS.from_user_input(crs) if crs else None, transform)
        dets = Detections(np.array(b), np.array(s), np.array(c), {2: "car", 7: "truck"})
        item = Result(dets, RunStats(), str(src), georef)
        files.append(tmp_path / f"{src.stem}.geojson")
        write_detections(files[-1], [item], to_wgs84=to_wgs84)
    return files, sources


def test_join_cut_boxes_joins_pieces_across_abutting_tiles():
    foot = np.array(
        [[0, 0, 100, 100], [100, 0, 200, 100], [0, 100, 100, 200], [100, 100, 200, 200]]
    )
    boxes = np.array(
        [
            [90, 90, 100, 100],  # a box cut at the corner of four tiles: four pieces
            [100, 91, 108, 100],
            [89, 100, 100, 107],
            [100, 100, 109, 108],
            [60, 20, 99.5, 40],  # cut by the edge x=100 ...
            [100.5, 22, 130, 41],  # ... and its other half
            [100, 60, 110, 70],  # at the edge, but its class differs from its neighbour
            [92, 61, 100, 69],
            [10, 10, 20, 20],  # nowhere near an edge
        ]
    )
    owner = [0, 1, 2, 3, 0, 1, 1, 0, 0]
    scores = np.array([0.5, 0.9, 0.4, 0.3, 0.8, 0.6, 0.7, 0.6, 0.9])
    classes = np.array([1, 1, 1, 1, 2, 2, 2, 3, 1])
    keep, fused = join_cut_boxes(boxes, scores, classes, foot[owner])
    assert keep.tolist() == [1, 4, 6, 7, 8]
    np.testing.assert_allclose(fused[:2], [[89, 90, 109, 108], [60, 20, 130, 41]])
    np.testing.assert_allclose(fused[2:], boxes[[6, 7, 8]])
    moved = foot[owner].astype(np.float64)
    moved[np.array(owner) == 1] += 5  # tile 1 no longer abuts: its pieces join nothing
    assert join_cut_boxes(boxes, scores, classes, moved)[0].tolist() == [0, 1, 4, 5, 6, 7, 8]


def test_object_cut_by_the_edge_between_two_tile_files_comes_out_once(tmp_path, shared):
    """A real car cut in half by the edge between two abutting GeoTIFFs: one box in all.gpkg."""
    import cv2
    from rasters import write_raster

    bgr = cv2.imread(str(shared / "data/aerial/small-vehicles1.jpeg"))
    crop = np.ascontiguousarray(bgr[192:448, 192:512, ::-1].transpose(2, 0, 1))
    edge = 160  # crosses the car at x 130..190 of the crop
    (tmp_path / "tiles").mkdir()
    for name, cols, x0 in (("left", slice(0, edge), 0), ("right", slice(edge, None), edge)):
        t = from_origin(500000 + x0 * 0.5, 5000000, 0.5, 0.5)
        write_raster(
            tmp_path / "tiles" / f"{name}.tif", np.ascontiguousarray(crop[:, :, cols]), transform=t
        )
    whole = write_whole(tmp_path / "whole.tif", crop)
    weights = ["--weights", shared / "weights/yolov8n.pt", "--mask", "all"]
    res = batch(tmp_path / "tiles", "-o", tmp_path / "out", "--merged", "all.gpkg", *weights)
    assert res.exit_code == 0, res.output
    left, right = (read_dets(tmp_path / "out" / f"{n}.geojson") for n in ("left", "right"))
    assert (left[:, 2] >= edge - 2).sum() == 1 and (right[:, 0] <= 2).sum() == 1  # two parts
    ref = tmp_path / "whole.geojson"
    res = CliRunner().invoke(main, ["detect", str(whole), "-o", str(ref), *map(str, weights)])
    assert res.exit_code == 0, res.output
    car = next(d for d in read_dets(ref) if d[0] < edge < d[2])  # the car across the edge
    merged = gpd.read_file(tmp_path / "out" / "all.gpkg")
    env = merged.geometry.bounds.to_numpy()  # back to the crop's pixels
    px = (
        np.stack(
            [env[:, 0] - 500000, 5000000 - env[:, 3], env[:, 2] - 500000, 5000000 - env[:, 1]], 1
        )
        / 0.5
    )
    touching = (np.abs(px[:, 0] - edge) < 3) | (np.abs(px[:, 2] - edge) < 3)
    assert not touching.any()  # no half box left at the edge
    across = px[(px[:, 0] < edge) & (px[:, 2] > edge)]
    assert len(across) == 1
    np.testing.assert_allclose(across[0], car[:4], atol=3)


def test_local_engine_imports_nothing_from_ray(tmp_path, tiny_weights):
    tiles = tmp_path / "tiles"
    write_tiles(tiles, mosaic_bands(128, 128), 128)
    code = (
        "import sys; from click.testing import CliRunner; from sparse_yolo.cli import main; "
        f"r = CliRunner().invoke(main, ['batch', '{tiles}', '-o', '{tmp_path / 'out'}', "
        f"'--weights', '{tiny_weights}']); "
        "assert r.exit_code == 0, r.output; assert 'ray' not in sys.modules; print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip().endswith("ok"), done.stderr[-2000:]


def test_ray_engine_without_ray_and_ray_options_without_it_are_one_line_errors(
    tmp_path, tiny_weights, monkeypatch
):
    tiles = tmp_path / "tiles"
    write_tiles(tiles, mosaic_bands(128, 128), 128)
    res = batch(tiles, "-o", tmp_path / "out", "--address", "10.0.0.1:6379")
    assert res.exit_code != 0 and "need --engine ray" in res.output
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    res = batch(tiles, "-o", tmp_path / "out", "--weights", tiny_weights, "--engine", "ray")
    assert res.exit_code != 0 and "pip install 'sparse-yolo[ray]'" in res.output
    assert "Traceback" not in res.output and not list((tmp_path / "out").glob("*.geojson"))


def test_two_tiles_with_one_name_are_refused_before_any_work(tmp_path):
    for sub in ("a", "b"):
        write_tiles(tmp_path / "in" / sub, mosaic_bands(128, 128), 128)
    res = batch(str(tmp_path / "in" / "*" / "*.tif"), "-o", tmp_path / "out")
    assert res.exit_code != 0 and "would both write r0c0.geojson" in res.output
    assert not (tmp_path / "out").exists()
