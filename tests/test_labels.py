"""Ground-truth parsing: every format, auto-detection, ignore regions and malformed input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sparse_yolo.errors import SparseYoloError
from sparse_yolo.eval.labels import (
    DOTA_TO_COCO,
    VISDRONE_TO_COCO,
    GroundTruth,
    detect_format,
    load_labels,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


def _assert_gt(gt: GroundTruth, boxes: list, classes: list, ignore: list) -> None:
    np.testing.assert_array_equal(gt.boxes, np.array(boxes, np.float32).reshape(-1, 4))
    np.testing.assert_array_equal(gt.classes, np.array(classes, np.int64))
    np.testing.assert_array_equal(gt.ignore, np.array(ignore, np.float32).reshape(-1, 4))
    assert gt.boxes.dtype == np.float32 and gt.classes.dtype == np.int64
    assert gt.ignore.dtype == np.float32


def test_yolo(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.txt", "0 0.5 0.5 0.2 0.4\n\n2 0.1 0.1 0.2 0.2\n")
    gt = load_labels(path, image_size=(100, 50))
    _assert_gt(gt, [[40, 15, 60, 35], [0, 0, 20, 10]], [0, 2], [])
    with pytest.raises(SparseYoloError, match="image_size is required"):
        load_labels(path)


def test_yolo_malformed(tmp_path: Path) -> None:
    path = _write(tmp_path, "bad.txt", "0 0.5 0.5 0.2 0.4\n1 0.5 0.5 0.2\n")
    with pytest.raises(SparseYoloError, match=r"bad\.txt: line 2:"):
        load_labels(path, image_size=(100, 100), fmt="yolo")
    path = _write(tmp_path, "bad2.txt", "0 0.5 0.5 0.2 0.4\n1.5 0.5 0.5 0.2 0.1\n")
    with pytest.raises(SparseYoloError, match="line 2: class must be an integer"):
        load_labels(path, image_size=(100, 100))


VISDRONE = (
    "10,20,30,40,1,1,0,0\n"  # pedestrian -> person
    "100,100,50,20,1,5,0,1\n"  # van -> car
    "0,0,200,100,0,0,0,0\n"  # ignored region
    "300,300,10,10,0,4,0,0\n"  # score 0 -> ignore
    "400,400,10,10,1,11,0,0\n"  # others -> dropped
    "500,500,20,20,1,8,0,0,\n"  # awning-tricycle -> motorcycle, trailing comma
)


def test_visdrone(tmp_path: Path) -> None:
    gt = load_labels(_write(tmp_path, "v.txt", VISDRONE))
    _assert_gt(
        gt,
        [[10, 20, 40, 60], [100, 100, 150, 120], [500, 500, 520, 520]],
        [0, 2, 3],
        [[0, 0, 200, 100], [300, 300, 310, 310]],
    )
    assert gt.names[2] == "car"


def test_visdrone_malformed(tmp_path: Path) -> None:
    path = _write(tmp_path, "v.txt", "10,20,30,40,1,1,0,0\n10,20,30,40,1,1,0\n")
    with pytest.raises(SparseYoloError, match=r"v\.txt: line 2: expected 8"):
        load_labels(path, fmt="visdrone")
    path = _write(tmp_path, "w.txt", "10,20,30,40,1,12,0,0\n")
    with pytest.raises(SparseYoloError, match="line 1: unknown VisDrone category 12"):
        load_labels(path)
    path = _write(tmp_path, "x.txt", "10,20,-3,40,1,1,0,0\n")
    with pytest.raises(SparseYoloError, match="line 1: negative box size"):
        load_labels(path)


DOTA = (
    "imagesource:GoogleEarth\r\n"
    "gsd:0.266\r\n"
    "674 375 683 375 684 394 675 395 small-vehicle 0\r\n"
    "465 371 455 372 451 324 460 323 large-vehicle 1\r\n"
    "10 10 90 10 90 50 10 50 harbor 0\r\n"
    "100 200 150 180 170 230 120 250 plane 0\r\n"
    "\r\n"
)


def test_dota(tmp_path: Path) -> None:
    gt = load_labels(_write(tmp_path, "P0001.txt", DOTA))
    _assert_gt(
        gt,
        [[674, 375, 684, 395], [100, 180, 170, 250]],
        [2, 4],
        [[451, 323, 465, 372]],
    )


def test_dota_without_header_and_malformed(tmp_path: Path) -> None:
    path = _write(tmp_path, "d.txt", "0 0 8 0 8 4 0 4 ship 0\n")
    assert detect_format(path, path.read_text()) == "dota"
    _assert_gt(load_labels(path), [[0, 0, 8, 4]], [8], [])
    path = _write(tmp_path, "e.txt", "gsd:null\n0 0 8 0 8 4 0 4 ship 0\n0 0 8 0 8 x 0 4 ship 0\n")
    with pytest.raises(SparseYoloError, match=r"e\.txt: line 3: non-numeric"):
        load_labels(path)
    path = _write(tmp_path, "f.txt", "gsd:null\n0 0 8 0 8 4 0 4 spaceship 0\n")
    with pytest.raises(SparseYoloError, match="line 2: unknown DOTA class 'spaceship'"):
        load_labels(path)


def _coco(images: list[dict]) -> str:
    anns = [
        {"id": 1, "image_id": 1, "bbox": [10, 20, 30, 40], "category_id": 2, "iscrowd": 0},
        {"id": 2, "image_id": 1, "bbox": [0, 0, 100, 50], "category_id": 0, "iscrowd": 1},
        {"id": 3, "image_id": 2, "bbox": [5, 5, 10, 10], "category_id": 7},
    ]
    cats = [{"id": 0, "name": "person"}, {"id": 2, "name": "car"}, {"id": 7, "name": "truck"}]
    return json.dumps({"images": images, "annotations": anns, "categories": cats})


def test_coco(tmp_path: Path) -> None:
    images = [{"id": 1, "file_name": "dir/big.tif"}, {"id": 2, "file_name": "other.png"}]
    path = _write(tmp_path, "inst.json", _coco(images))
    gt = load_labels(path, image_name="big.tif")
    _assert_gt(gt, [[10, 20, 40, 60]], [2], [[0, 0, 100, 50]])
    assert gt.names == {0: "person", 2: "car", 7: "truck"}
    _assert_gt(load_labels(path, image_name="/data/other.png"), [[5, 5, 15, 15]], [7], [])
    with pytest.raises(SparseYoloError, match=r"inst\.json: 2 images .* pass image_name"):
        load_labels(path)
    single = _write(tmp_path, "one.json", _coco(images[1:]))
    _assert_gt(load_labels(single), [[5, 5, 15, 15]], [7], [])


def test_coco_malformed(tmp_path: Path) -> None:
    with pytest.raises(SparseYoloError, match=r"c\.json: invalid JSON at line 2"):
        load_labels(_write(tmp_path, "c.json", '{"images": [],\n "annotations": [,]}'))
    with pytest.raises(SparseYoloError, match="not a COCO instances file"):
        load_labels(_write(tmp_path, "d.json", '{"annotations": []}'))


def test_auto_format_and_errors(tmp_path: Path) -> None:
    assert detect_format(Path("x.txt"), "1 0.5 0.5 0.1 0.1\n") == "yolo"
    assert detect_format(Path("x.txt"), "1,2,3,4,1,1,0,0\n") == "visdrone"
    assert detect_format(Path("x.txt"), DOTA) == "dota"
    assert detect_format(Path("x.json"), "") == "coco"
    with pytest.raises(SparseYoloError, match=r"x\.txt: line 1: cannot tell"):
        load_labels(_write(tmp_path, "x.txt", "1 2 3\n"))
    with pytest.raises(SparseYoloError, match="unknown label format 'kitti'"):
        load_labels(_write(tmp_path, "y.txt", ""), fmt="kitti")
    with pytest.raises(SparseYoloError, match=r"missing\.txt: cannot read"):
        load_labels(tmp_path / "missing.txt")
    empty = load_labels(_write(tmp_path, "z.txt", "\n"))
    assert len(empty) == 0 and empty.boxes.shape == (0, 4) and empty.ignore.shape == (0, 4)


def test_clip_to_image(tmp_path: Path) -> None:
    text = "-5,10,30,40,1,4,0,0\n90,10,30,40,1,4,0,0\n120,10,5,5,1,4,0,0\n"
    gt = load_labels(_write(tmp_path, "v.txt", text), image_size=(100, 80))
    _assert_gt(gt, [[0, 10, 25, 50], [90, 10, 100, 50]], [2, 2], [])


def test_mapping_tables_cover_datasets() -> None:
    assert set(VISDRONE_TO_COCO) == set(range(1, 12))
    dota_v15 = {
        "plane", "ship", "storage-tank", "baseball-diamond", "tennis-court", "basketball-court",
        "ground-track-field", "harbor", "bridge", "large-vehicle", "small-vehicle", "helicopter",
        "roundabout", "soccer-ball-field", "swimming-pool", "container-crane",
    }  # fmt: skip
    assert dota_v15 <= set(DOTA_TO_COCO)


@pytest.mark.shared
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is absent")
def test_real_label_files() -> None:
    for path in sorted((SHARED_DATA / "visdrone" / "annotations").glob("*.txt")):
        gt = load_labels(path, image_size=(1360, 765))
        area = (gt.boxes[:, 2] - gt.boxes[:, 0]) * (gt.boxes[:, 3] - gt.boxes[:, 1])
        assert 30 <= len(gt) <= 300, path
        assert (area < 32**2).mean() > 0.5, path
        assert len(gt.ignore) >= 1, path
        assert set(gt.classes.tolist()) <= {0, 1, 2, 3, 5, 7}
    gt = load_labels(SHARED_DATA / "dota" / "P1888.txt")
    assert 30 <= len(gt) <= 300
    assert set(gt.classes.tolist()) == {2, 7}
    area = (gt.boxes[:, 2] - gt.boxes[:, 0]) * (gt.boxes[:, 3] - gt.boxes[:, 1])
    assert (area < 32**2).mean() > 0.5
