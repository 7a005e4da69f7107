"""The command line end to end: outputs QGIS/geopandas read, and clear one-line errors."""

from __future__ import annotations

import json

import cv2
import geopandas as gpd
import numpy as np
import pytest
from click.testing import CliRunner
from helpers import scene
from rasters import TRANSFORM, all_nodata, no_crs, truncated, two_band, write_raster

from sparse_yolo.cli import main
from sparse_yolo.geo import crs_to_pixel


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def utm_scene(tmp_path):
    bands = np.ascontiguousarray(scene(256, 256, 8, seed=3)[..., ::-1].transpose(2, 0, 1))
    return write_raster(tmp_path / "scene.tif", bands)


def test_detect_geotiff_writes_georeferenced_geojson(tmp_path, tiny_weights, utm_scene):
    out = tmp_path / "out.geojson"
    stats = tmp_path / "stats.json"
    res = run(
        "detect",
        utm_scene,
        "-o",
        out,
        "--weights",
        tiny_weights,
        "--conf",
        "0.05",
        "--stats",
        stats,
        "--preview",
        tmp_path / "p.png",
        "--save-mask",
        tmp_path / "m.png",
    )
    assert res.exit_code == 0, res.output
    frame = gpd.read_file(out)
    assert frame.crs.to_epsg() == 32633
    assert len(frame) > 0
    assert set(frame.columns) >= {
        "class_id",
        "class_name",
        "score",
        "bbox_px",
        "source",
        "geometry",
    }
    assert (frame["source"] == "scene.tif").all()
    for geom, bbox in zip(frame.geometry, frame["bbox_px"], strict=True):
        bbox = json.loads(bbox) if isinstance(bbox, str) else bbox
        corners = crs_to_pixel(np.asarray(geom.exterior.coords), TRANSFORM)
        np.testing.assert_allclose(corners.min(0), bbox[:2], atol=1.0)  # round trip within 1 px
        np.testing.assert_allclose(corners.max(0), bbox[2:], atol=1.0)
    s = json.loads(stats.read_text())
    assert s["image_size"] == [256, 256] and 0 < s["active_fraction"] <= 1
    assert {"mask", "stem", "remainder", "total"} <= set(s["seconds"])
    assert cv2.imread(str(tmp_path / "p.png")).shape[:2] == (256, 256)
    # The mask overlay is the image, with every skipped cell dimmed to 35% and nothing else.
    overlay = cv2.imread(str(tmp_path / "m.png")).astype(int)
    image = scene(256, 256, 8, seed=3).astype(int)
    kept = (overlay == image).all(-1)
    dimmed = (overlay == (image * 0.35).astype(int)).all(-1) & (image > 3).any(-1)
    assert (kept | dimmed | (image <= 3).all(-1)).all()
    assert dimmed.mean() > 0.0 and kept.mean() == pytest.approx(s["mask_fraction"], abs=0.1)


def test_detect_jpeg_in_pixels_and_other_formats(tmp_path, tiny_weights):
    img = tmp_path / "frame.jpg"
    cv2.imwrite(str(img), scene(200, 300, 6, seed=1))
    res = run(
        "detect", img, "-o", tmp_path / "d.geojson", "--weights", tiny_weights, "--conf", "0.05"
    )
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "d.geojson").read_text())
    assert "crs" not in data and data["features"]
    f = data["features"][0]
    x1, y1, x2, y2 = f["properties"]["bbox_px"]
    ring = np.asarray(f["geometry"]["coordinates"][0])
    np.testing.assert_allclose(ring.min(0), [x1, y1], atol=0.01)
    np.testing.assert_allclose(ring.max(0), [x2, y2], atol=0.01)
    assert (
        run(
            "detect", img, "-o", tmp_path / "d.csv", "--weights", tiny_weights, "--conf", "0.05"
        ).exit_code
        == 0
    )
    assert (tmp_path / "d.csv").read_text().startswith("source,class_id,class_name,score")
    assert (
        run(
            "detect", img, "-o", tmp_path / "d.json", "--weights", tiny_weights, "--conf", "0.05"
        ).exit_code
        == 0
    )
    coco = json.loads((tmp_path / "d.json").read_text())
    assert coco and set(coco[0]) == {"image_id", "category_id", "bbox", "score"}


def test_to_wgs84_writes_lon_lat(tmp_path, tiny_weights, utm_scene):
    out = tmp_path / "w.geojson"
    assert (
        run(
            "detect",
            utm_scene,
            "-o",
            out,
            "--weights",
            tiny_weights,
            "--conf",
            "0.05",
            "--to-wgs84",
        ).exit_code
        == 0
    )
    data = json.loads(out.read_text())
    lon, lat = np.asarray(data["features"][0]["geometry"]["coordinates"][0]).mean(0)
    assert "crs" not in data and 14.9 < lon < 15.1 and 45.0 < lat < 45.2


def test_raster_without_crs_warns_and_writes_pixels(tmp_path, tiny_weights):
    src = no_crs(tmp_path)
    out = tmp_path / "n.geojson"
    res = CliRunner().invoke(
        main, ["detect", str(src), "-o", str(out), "--weights", str(tiny_weights)]
    )
    assert res.exit_code == 0
    assert "no CRS" in res.output
    assert "crs" not in json.loads(out.read_text())


def _zero_png(tmp_path):
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    return p


def _text_tif(tmp_path):
    p = tmp_path / "notes.tif"
    p.write_text("not an image\n")
    return p


@pytest.mark.parametrize("make", [truncated, two_band, all_nodata, _zero_png, _text_tif])
def test_bad_input_one_line_error_and_no_output(tmp_path, tiny_weights, make):
    src = make(tmp_path)
    out = tmp_path / "bad.geojson"
    res = CliRunner().invoke(
        main, ["detect", str(src), "-o", str(out), "--weights", str(tiny_weights)]
    )
    assert res.exit_code != 0
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and src.name in lines[0], res.output
    assert "Traceback" not in res.output
    assert not out.exists() and not list(tmp_path.glob(".bad.geojson*"))


@pytest.mark.parametrize("content", [None, b"garbage", "ultralytics-like"])
def test_missing_or_incompatible_weights(tmp_path, utm_scene, content):
    weights = tmp_path / "w.pt"
    if content == "ultralytics-like":
        import torch

        torch.save({"model": {"not": "a model"}}, weights)
    elif content is not None:
        weights.write_bytes(content)
    out = tmp_path / "o.geojson"
    res = CliRunner().invoke(
        main, ["detect", str(utm_scene), "-o", str(out), "--weights", str(weights)]
    )
    assert res.exit_code != 0
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "w.pt" in lines[0], res.output
    assert not out.exists()


def test_unknown_mask_lists_known_ones(tmp_path, tiny_weights, utm_scene):
    res = CliRunner().invoke(
        main, ["detect", str(utm_scene), "--weights", str(tiny_weights), "--mask", "magic"]
    )
    assert res.exit_code != 0 and "known: all, gradient" in res.output


def test_help_teaches():
    res = CliRunner().invoke(main, ["detect", "--help"])
    assert res.exit_code == 0 and "Examples:" in res.output and "--max-active" in res.output


def test_multi_tile_uint16_and_rgba_rasters(tmp_path, tiny_weights):
    """Odd-sized rasters cut into many tiles: 16-bit single band, and RGBA with an alpha hole."""
    from rasters import gray_uint16, rgba

    for src in (gray_uint16(tmp_path), rgba(tmp_path)):
        out = tmp_path / f"{src.stem}.geojson"
        res = run(
            "detect",
            src,
            "-o",
            out,
            "--weights",
            tiny_weights,
            "--conf",
            "0.05",
            "--tile",
            "100",
            "--overlap",
            "20",
            "--mask",  # every cell with data: the gradient threshold is the raster's, and
            "all",  # this random-noise raster has no cell above it
            "--save-mask",
            tmp_path / f"{src.stem}.png",
            "--stats",
            tmp_path / f"{src.stem}.json",
        )
        assert res.exit_code == 0, res.output
        stats = json.loads((tmp_path / f"{src.stem}.json").read_text())
        assert stats["n_tiles"] == 9
        frame = gpd.read_file(out)
        assert frame.crs.to_epsg() == 32633
        boxes = np.array([json.loads(b) if isinstance(b, str) else b for b in frame["bbox_px"]])
        assert len(boxes) and (boxes >= 0).all() and (boxes[:, 2:] <= 256).all()


def test_half_on_cpu_is_a_one_line_error(tmp_path, tiny_weights, utm_scene):
    out = tmp_path / "out.geojson"
    res = CliRunner().invoke(
        main,
        ["detect", str(utm_scene), "--weights", str(tiny_weights), "--device", "cpu", "--half",
         "-o", str(out)],
    )  # fmt: skip
    assert res.exit_code != 0 and not out.exists()
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--half" in lines[0] and "CUDA" in lines[0], res.output
