"""Cell masks stay blob-shaped, keep small objects, drop specks, and respect a budget."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from rasterio.windows import Window

from sparse_yolo.config import MaskConfig
from sparse_yolo.masks import MASKS, cell_grid, gradient_scores, make_mask

CELL = 16


def plain(h=512, w=640, seed=0):
    rng = np.random.default_rng(seed)
    return (np.full((h, w, 3), 100, np.int16) + rng.integers(-2, 3, (h, w, 3))).astype(np.uint8)


def put_object(img, y, x, size=10, seed=0):
    rng = np.random.default_rng(seed)
    img[y : y + size, x : x + size] = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)


def cell_of(y, x):
    return y // CELL, x // CELL


def test_isolated_small_object_survives_and_specks_do_not():
    img = plain()
    put_object(img, 200, 300, size=8)  # a lone car-sized object
    rng = np.random.default_rng(1)
    for y, x in rng.integers(20, 480, (12, 2)):  # faint specks: 2 px, low contrast
        img[y : y + 2, x : x + 2] += 12
    res = make_mask(MaskConfig(context=0))(img)
    assert res.cells.shape == cell_grid(512, 640, CELL)
    assert res.cells[cell_of(204, 304)]
    assert res.active_fraction < 0.02  # the object's cells only


def test_context_margin_and_blob_closing():
    img = plain()
    put_object(img, 100, 100, size=40)
    put_object(img, 100, 150, size=40, seed=1)  # a 10 px gap between two objects
    no_ctx = make_mask(MaskConfig(context=0))(img).cells
    ctx = make_mask(MaskConfig(context=1))(img).cells
    assert ctx.sum() > no_ctx.sum() and (ctx | no_ctx).sum() == ctx.sum()
    ys, xs = np.nonzero(no_ctx)
    # closed into one blob: every cell of the bounding box row between them is active
    assert no_ctx[cell_of(110, 0)[0], xs.min() : xs.max() + 1].all()


def test_budget_keeps_the_strongest_cells():
    img = plain()
    for i in range(6):
        put_object(img, 40 + 70 * i, 40 + 90 * i, size=30, seed=i)
    full = make_mask(MaskConfig())(img)
    budget = make_mask(MaskConfig(max_active=0.02))(img)
    assert full.active_fraction > 0.02 >= budget.active_fraction > 0.015
    assert (budget.cells & ~full.cells).sum() == 0
    # context cells rank with their blob's best score (3x3 max for context=1)
    ranked = cv2.dilate(full.scores, np.ones((3, 3), np.uint8))
    assert ranked[budget.cells].min() >= ranked[full.cells & ~budget.cells].max()


def test_nodata_never_activates_cells():
    img = plain()
    put_object(img, 100, 100, size=40)
    valid = np.ones(img.shape[:2], bool)
    valid[:, :256] = False
    res = make_mask(MaskConfig(context=0))(img, valid)
    assert not res.cells[:, : 256 // CELL].any()


def test_cells_without_pixels_of_the_image_stay_inactive():
    """The grid covers the frame padded to 32 px; an object at the bottom-right corner marks
    its cells and their context, but not the padding cells beyond the frame."""
    img = plain(136, 140)  # grid 10 x 10: row 9 (144-160 px) and column 9 hold no pixel
    put_object(img, 118, 120, size=16)
    res = make_mask(MaskConfig(context=2))(img)
    assert res.cells[cell_of(125, 125)] and res.cells[5, 5]  # the object and its context
    assert not res.cells[9].any() and not res.cells[:, 9].any()


def test_all_mask_and_registry():
    res = make_mask(MaskConfig(name="all"))(plain(100, 130))
    assert res.cells.all() and res.cells.shape == (8, 10)
    assert {"all", "gradient", "coarse"} <= set(MASKS)
    with pytest.raises(ValueError, match="known: all, gradient"):
        make_mask(MaskConfig(name="nope"))


def test_coarse_cascade_marks_cells_of_confident_detections(shared):
    from sparse_yolo import Detector

    image = cv2.imread(str(sorted((shared / "data" / "visdrone" / "images").glob("*.jpg"))[0]))
    det = Detector(shared / "weights" / "yolov8n.pt", mask="coarse", **{"mask.coarse_size": 960})
    res = det.mask(image)
    assert 0 < res.active_fraction < 1
    low_res = det.model  # same weights: its own confident detections must lie in active cells
    full = Detector(low_res, mask="all", **{"post.conf": 0.5}).predict(image)
    cy = ((full.boxes[:, 1] + full.boxes[:, 3]) / 2 // CELL).astype(int)
    cx = ((full.boxes[:, 0] + full.boxes[:, 2]) / 2 // CELL).astype(int)
    assert len(full) > 3 and res.cells[cy, cx].mean() >= 0.8


def test_coarse_mask_needs_the_detector():
    with pytest.raises(ValueError, match="needs the detector"):
        make_mask(MaskConfig(name="coarse"))(plain(64, 64))


@pytest.mark.parametrize(("h", "w"), [(203, 317), (64, 96), (2, 40), (129, 33), (300, 70)])
def test_gradient_scores_on_the_device_equal_opencv(h, w):
    """The torch gradient mask (what runs on CUDA, from the frame uploaded for the stem) is
    bit-exact with OpenCV's: fixed-point grey, reflect-101 Sobel, saturation at 255 (hard
    0/255 edges), half-to-even rounding, cell means over a frame padded to 32 px, whatever
    the strips the CPU path cuts the frame into."""
    rng = np.random.default_rng(h)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[: h // 2, : w // 3] = 255
    img[h // 2 :, w // 3 : w // 2] = 0
    mask = make_mask(MaskConfig(name="gradient"))
    want = mask.scores(img)
    got = gradient_scores(torch.from_numpy(img), CELL)
    assert got.shape == want.shape == cell_grid(h, w, CELL) and want.max() > 5
    assert np.array_equal(got.numpy(), want)
    a, b = mask(img), mask(img, frame=torch.from_numpy(img))
    assert np.array_equal(a.cells, b.cells) and np.array_equal(a.scores, b.scores)


def test_masks_import_without_torch_and_masknet_does_not_import_masks():
    import subprocess
    import sys

    code = (
        "import sys, sparse_yolo.masks as m; assert 'torch' not in sys.modules, 'torch'; "
        "print(','.join(sorted(m.MASKS)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "all,coarse,gradient,learned"
    import ast
    import inspect

    import sparse_yolo.model.masknet as masknet
    from sparse_yolo.imageops import padded

    imported = {
        n.module
        for n in ast.walk(ast.parse(inspect.getsource(masknet)))
        if isinstance(n, ast.ImportFrom)
    }
    assert not any(m.startswith("sparse_yolo.masks") for m in imported if m)
    assert masknet.padded is padded  # the net pads frames exactly like the cell grid


def test_learned_mask_path_is_parsed_from_the_name():
    cfg = MaskConfig(name="learned:/some/ckpt.pt")
    assert (cfg.name, cfg.path) == ("learned", "/some/ckpt.pt")
    with pytest.raises(ValueError, match="NAME:PATH"):
        MaskConfig(name="learned:")


def test_gradient_statistics_come_from_the_whole_source_not_the_tile(tmp_path):
    from rasters import write_raster

    from sparse_yolo.io.raster import open_source

    rng = np.random.default_rng(0)
    h, w = 1500, 2500
    bands = 90 + rng.integers(0, 4, (3, h, w), dtype=np.uint8)  # faint noise
    bands[:, :, : w // 3] += rng.integers(0, 60, (3, h, w // 3), dtype=np.uint8)  # texture
    path = write_raster(tmp_path / "half.tif", bands)
    mask = make_mask(MaskConfig(name="gradient"))
    with open_source(path) as src:
        levels = {}
        for tile in (1024, 2048, 8192):
            mask.prepare(src, tile)
            levels[tile] = mask.stats
        mask.prepare(None)
        quiet, _ = src.read(Window(w - 512, 0, 512, 512))
        busy, _ = src.read(Window(0, 0, 512, 512))
    assert levels[1024] == levels[2048] == levels[8192] > 0
    assert mask.stats is None
    alone = mask(busy).active_fraction  # a textured tile alone calls its texture background
    mask.stats = levels[1024]  # the source's quiet background: its texture stands out
    assert mask(quiet).active_fraction == 0.0 and mask(busy).active_fraction > alone + 0.5


# The right half of cogeo.tif (snowy hills, forest) is held out of the shipped net's training
# in every form (tools/mask_learn.py SPLIT), and so is the VisDrone frame whose objects are
# pasted on it.
HELD_OUT_TEXTURE = "geotiff/cogeo.tif"
HELD_OUT_OBJECTS = "0000300_00601_d_0000141"


def held_out_half(shared, name):
    """(H, W, 3) BGR and (H, W) valid of the right half of a raster, split as in training."""
    from sparse_yolo.io.raster import open_source

    with open_source(shared / "data" / name) as src:
        image, valid = src.read(src.full_window)
    mid = (image.shape[1] // 2) // 32 * 32
    return np.ascontiguousarray(image[:, mid:]), np.ascontiguousarray(valid[:, mid:])


def test_shipped_learned_mask_marks_pasted_objects_not_the_texture(shared):
    from sparse_yolo.eval.labels import load_labels
    from sparse_yolo.masks.measure import centres_covered, perfect_cells
    from sparse_yolo.train.maskfit import Frame
    from sparse_yolo.train.synth import object_crops, paste_objects

    image, valid = held_out_half(shared, HELD_OUT_TEXTURE)
    mask = make_mask(MaskConfig(name="learned"))  # the net shipped with the package
    bare = mask(image, valid).active_fraction
    assert bare <= 0.10  # the goal of issue 11 for object-free texture
    visdrone = shared / "data" / "visdrone"
    source = cv2.imread(str(visdrone / "images" / f"{HELD_OUT_OBJECTS}.jpg"))
    gt = load_labels(visdrone / "annotations" / f"{HELD_OUT_OBJECTS}.txt", source.shape[1::-1])
    crops = object_crops([Frame(source, gt.boxes)], min_side=10)
    f = paste_objects(image, crops, np.random.default_rng(0), 6, scale=(0.9, 1.1))
    res = mask(f.image, valid)
    assert len(f.boxes) == 6
    assert centres_covered(res.cells, CELL, f.boxes).all()
    near = perfect_cells(f.boxes, res.cells.shape, CELL, margin=3)
    assert res.cells[~near].mean() <= bare + 0.03  # objects do not light up the texture


@pytest.mark.parametrize("name", ["OSBS_029.tif", "water"])
def test_shipped_learned_mask_leaves_held_out_forest_and_water_dark(shared, name):
    """Object-free real texture the net never saw (issue 11: <= 10% of the cells): the right
    half of the OSBS forest tile, and boats.jpg's open water right of its training half,
    mirror-tiled to 1024 px (waves, no boats)."""
    if name == "water":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
        from bench_e2e import mirror_tile
        from mask_bench import HELD_OUT_WATER

        src = cv2.imread(str(shared / "data" / "aerial" / "boats.jpg"))[HELD_OUT_WATER]
        image, valid = mirror_tile(src, 1024, 1024), None
    else:
        image, valid = held_out_half(shared, "geotiff/" + name)
    res = make_mask(MaskConfig(name="learned"))(np.ascontiguousarray(image), valid)
    assert res.active_fraction <= 0.10


def test_shipped_learned_scores_do_not_depend_on_the_tile(shared):
    """No image-wide statistics: a cell's score is the same in a tile and in the whole frame
    once the tile's edge lies beyond the net's receptive field (about 8 cells)."""
    from sparse_yolo.io.raster import open_source

    with open_source(shared / "data" / "geotiff" / "cogeo.tif") as src:
        image, _ = src.read(src.full_window)
    mask = make_mask(MaskConfig(name="learned"))
    whole = mask(image).scores
    tile = mask(np.ascontiguousarray(image[256:768, 256:768])).scores  # 16 cells in
    np.testing.assert_allclose(tile[8:-8, 8:-8], whole[24:40, 24:40], atol=1e-5)
