"""Mask benchmark on real imagery: what each mask marks, covers, keeps and costs.

For every image under --data (recursively; labels found beside it, see ``find_labels``), a
synthetic 4K urban mosaic (:func:`sparse_yolo.bench.scenes.urban_scene`), a 4K frame of real
texture with a few real objects pasted on it (``textured_frame``) and a 4K frame of real
object-free water with waves (``water_frame``), and for each mask:

* ``cells``: share of cells the mask marks; ``windows``: share of the stride-8 grid the
  dense windows cover; ``computed``: share of cells the engine computed (``auto`` promotes a
  frame whose windows span it to every cell)
* ``objects``: labelled objects covered (box centre in an active cell), ``covered/total``
* ``kept``: dense detections the masked run recovers (same class, IoU >= 0.5)
* ``mask ms``: the mask alone; ``x dense``: end-to-end speed-up against ``--mask all``
  (the dense network) on the same frame, best of --rounds interleaved rounds

``perfect`` is the reference: the labelled objects' cells plus one cell of margin.
With --tiling, each mask (and ``all``) also runs both 4K frames saved as a GeoTIFF through the tiled
pipeline at ``--tile 1024 --overlap 128`` and ``--tile 8192`` and reports the F1 of the
two detection sets (IoU 0.7).

Usage (through the shared benchmark lock):
  flock /tmp/sparse-yolo-bench.lock env PYTHONPATH=$PWD python tools/mask_bench.py \\
      [--data ../shared/data] [--masks all gradient coarse ...] [--rounds 2] [--tiling]
      [--no-mosaic] [--md docs/mask_bench.md]
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from _shared import shared_dir

from sparse_yolo.bench.scenes import urban_scene
from sparse_yolo.config import MaskConfig
from sparse_yolo.detector import Detector
from sparse_yolo.eval.labels import load_labels
from sparse_yolo.eval.metrics import match_recall
from sparse_yolo.io.raster import open_source
from sparse_yolo.masks import cell_grid
from sparse_yolo.masks.measure import FixedMask, centres_covered, perfect_cells
from sparse_yolo.model.loading import load_model
from sparse_yolo.types import Detections

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
LABEL_SUFFIXES = (".txt", ".csv", ".json")
TEXTURE = "geotiff/cogeo.tif"  # object-free texture of the textured 4K frame
OBJECTS = "visdrone/images/0000300_00601_d_0000141.jpg"  # its objects


@dataclass
class Frame:
    """One benchmark frame: (H, W, 3) uint8 BGR, (H, W) bool valid, (N, 4) xyxy or None."""

    name: str
    image: np.ndarray
    valid: np.ndarray
    boxes: np.ndarray | None


@dataclass
class Row:
    frame: str
    mask: str
    cells: float
    windows: float
    computed: float
    objects: tuple[int, int] | None
    kept: float
    mask_ms: float
    speedup: float
    n_dets: int
    extra: dict = field(default_factory=dict)


def find_labels(image: Path) -> Path | None:
    """A label file beside the image (same stem), or in a sibling annotations/labels folder."""
    for folder in (
        image.parent,
        image.parent.parent / "annotations",
        image.parent.parent / "labels",
    ):
        for suffix in LABEL_SUFFIXES:
            p = folder / f"{image.stem}{suffix}"
            if p.is_file():
                return p
    return None


def read_frames(data: Path) -> list[Frame]:
    frames = []
    for path in sorted(p for p in data.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        with open_source(path) as src:
            bgr, valid = src.read(src.full_window)
        lbl = find_labels(path)
        boxes = None if lbl is None else load_labels(lbl, (bgr.shape[1], bgr.shape[0])).boxes
        frames.append(Frame(str(path.relative_to(data)), bgr, valid, boxes))
    return frames


def mosaic_frame(seed: int) -> Frame:
    image, boxes, _ = urban_scene(seed, data_dir=shared_dir())
    return Frame(f"urban mosaic 4K (seed {seed})", image, np.ones(image.shape[:2], bool), boxes)


def textured_frame(data: Path, seed: int, n: int = 30) -> Frame:
    """A 4K frame of real texture (cogeo.tif's snowy hills and forest, mirrored to 4K) with
    ``n`` real objects of the second VisDrone frame pasted on it (:mod:`sparse_yolo.train.synth`)."""
    from sparse_yolo.train.maskfit import Frame as LabelledFrame  # noqa: PLC0415
    from sparse_yolo.train.synth import object_crops, paste_objects  # noqa: PLC0415

    with open_source(data / TEXTURE) as src:
        texture, _ = src.read(src.full_window)
    h, w = texture.shape[:2]
    texture = cv2.copyMakeBorder(texture, 0, 2160 - h, 0, 3840 - w, cv2.BORDER_REFLECT_101)
    image = cv2.imread(str(data / OBJECTS))
    gt = load_labels(find_labels(data / OBJECTS), (image.shape[1], image.shape[0]))
    crops = object_crops([LabelledFrame(image, gt.boxes)], min_side=6)
    f = paste_objects(texture, crops, np.random.default_rng(seed), n, scale=(0.8, 1.25))
    return Frame(
        f"textured 4K (cogeo + {n} objects)", f.image, np.ones((2160, 3840), bool), f.boxes
    )


# boats.jpg's open water right of the learned net's training half (x >= 960): held-out pixels
HELD_OUT_WATER = (slice(620, 1060), slice(960, 1200))


def water_frame(data: Path) -> Frame:
    """A 4K frame of real, object-free water with waves: the held-out part of boats.jpg's
    open water, mirror-tiled (no seams) to 3840 x 2160."""
    from bench_e2e import mirror_tile  # noqa: PLC0415

    src = cv2.imread(str(data / "aerial" / "boats.jpg"))[HELD_OUT_WATER]
    image = mirror_tile(src, 2160, 3840)
    return Frame(
        "water 4K (boats.jpg held-out water, mirrored)", image, np.ones((2160, 3840), bool), None
    )


def timed(fn, rounds: int):
    best, out = math.inf, None
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def run_frame(frame: Frame, detectors: dict[str, Detector], rounds: int) -> list[Row]:
    """Every mask on one frame; timing rounds interleave the masks."""
    valid = None if frame.valid.all() else frame.valid
    dets: dict[str, Detections] = {}
    e2e: dict[str, float] = dict.fromkeys(detectors, math.inf)
    stats: dict[str, dict] = {}
    for _ in range(rounds):
        for name, det in detectors.items():
            t0 = time.perf_counter()
            res = det.predict_array(frame.image, valid, frame.name)
            e2e[name] = min(e2e[name], time.perf_counter() - t0)
            dets[name], stats[name] = res.detections, res.stats
    rows = []
    for name, det in detectors.items():
        mres, mask_s = timed(lambda det=det: det.mask(frame.image, valid), rounds)
        covered = None
        if frame.boxes is not None:
            hit = centres_covered(mres.cells, mres.cell, frame.boxes)
            covered = (int(hit.sum()), len(hit))
        st = stats[name]
        rows.append(
            Row(
                frame.name,
                name,
                mres.active_fraction,
                st.window_fraction,
                st.active_fraction,
                covered,
                match_recall(dets[name], dets["all"]),
                1000 * mask_s,
                e2e["all"] / e2e[name],
                len(dets[name]),
            )
        )
    return rows


def detectors_for(frame: Frame, model, masks: list[str], cell: int) -> dict[str, Detector]:
    out = {m: Detector(model, mask=m, device="cpu") for m in ["all", *masks] if m != "perfect"}
    if frame.boxes is not None and "perfect" in masks:
        cfg = MaskConfig(cell=cell)
        shape = cell_grid(frame.image.shape[0], frame.image.shape[1], cell)
        det = Detector(model, mask="all", device="cpu")
        det.mask = FixedMask(cfg, perfect_cells(frame.boxes, shape, cell))
        out["perfect"] = det
    return out


def tiling_f1(model, mask: str, frame: Frame, tmp: Path) -> float:
    """F1 (IoU 0.7) between --tile 1024 --overlap 128 and --tile 8192 on ``frame`` as a GeoTIFF."""
    import rasterio  # noqa: PLC0415
    from rasterio.transform import from_origin  # noqa: PLC0415

    path = tmp / "mosaic.tif"
    h, w = frame.image.shape[:2]
    rgb = frame.image[:, :, ::-1].transpose(2, 0, 1)
    profile = dict(driver="GTiff", width=w, height=h, count=3, dtype="uint8", crs="EPSG:32633")
    with rasterio.open(path, "w", transform=from_origin(500000, 4e6, 0.1, 0.1), **profile) as ds:
        ds.write(rgb)
    small = Detector(model, mask=mask, device="cpu", **{"tiling.tile": 1024, "tiling.overlap": 128})
    large = Detector(model, mask=mask, device="cpu", **{"tiling.tile": 8192, "tiling.overlap": 0})
    a, b = small.predict(path).detections, large.predict(path).detections
    p, r = match_recall(b, a, 0.7), match_recall(a, b, 0.7)
    return 2 * p * r / (p + r) if p + r else float("nan")


def fmt(rows: list[Row]) -> str:
    head = "| frame | mask | cells | windows | computed | objects | kept | mask ms | x dense |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        obj = (
            "-"
            if r.objects is None
            else f"{r.objects[0] / max(r.objects[1], 1):.1%} of {r.objects[1]}"
        )
        kept = "-" if math.isnan(r.kept) else f"{r.kept:.1%}"
        lines.append(
            f"| {r.frame} | {r.mask} | {r.cells:.1%} | {r.windows:.1%} | {r.computed:.1%} | "
            f"{obj} | {kept} | {r.mask_ms:.1f} | {r.speedup:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=shared_dir() / "data")
    ap.add_argument("--weights", type=Path, default=shared_dir() / "weights" / "yolov8n.pt")
    ap.add_argument("--masks", nargs="+", default=["gradient", "coarse", "perfect"])
    ap.add_argument("--only", nargs="+", help="frames whose name contains one of these")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cell", type=int, default=16)
    ap.add_argument("--no-mosaic", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiling", action="store_true", help="also the --tile 1024 vs 8192 F1")
    ap.add_argument("--md", type=Path, help="also write the table here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    model = load_model(args.weights)
    frames = read_frames(args.data)
    if not args.no_mosaic:
        frames += [
            mosaic_frame(args.seed),
            textured_frame(args.data, args.seed),
            water_frame(args.data),
        ]
    if args.only:
        frames = [f for f in frames if any(k in f.name for k in args.only)]
    rows: list[Row] = []
    for frame in frames:
        h, w = frame.image.shape[:2]
        n = "-" if frame.boxes is None else len(frame.boxes)
        print(f"{frame.name}: {w}x{h}, {n} labelled objects", flush=True)
        rows += run_frame(frame, detectors_for(frame, model, args.masks, args.cell), args.rounds)
    table = fmt(rows)
    print(table)
    if args.tiling:
        import tempfile  # noqa: PLC0415

        with tempfile.TemporaryDirectory() as tmp:
            for frame in (mosaic_frame(args.seed), textured_frame(args.data, args.seed)):
                for m in ["all", *(x for x in args.masks if x != "perfect")]:
                    f1 = tiling_f1(model, m, frame, Path(tmp))
                    print(f"tiling F1 (1024/128 vs 8192, IoU 0.7), {frame.name}, {m}: {f1:.3f}")
    if args.md:
        args.md.write_text(table + "\n")


if __name__ == "__main__":
    main()
