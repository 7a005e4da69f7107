"""Ground-truth labels for one image, mapped onto the detector's COCO-80 class ids.

Five formats are read: COCO instances JSON, YOLO txt, VisDrone-DET txt, DOTA txt and
DeepForest CSV (trees, class ``NOT_COCO``). Every
format ends up as a :class:`GroundTruth` in image pixels (xyxy) with class ids as used by
Ultralytics' COCO models, plus ignore regions where the dataset marks them.

Datasets map onto COCO-80 by the tables in :mod:`sparse_yolo.eval.classes`.
COCO JSON and YOLO txt carry no mapping: their class ids are taken as the detector's ids (so a
COCO JSON must use ``category_id`` 0..79 in Ultralytics order, not the original 1..90 ids).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sparse_yolo.errors import SparseYoloError
from sparse_yolo.eval.classes import (
    COCO_NAMES,
    DOTA_TO_COCO,
    VISDRONE_IGNORE_CATEGORY,
    VISDRONE_TO_COCO,
)

__all__ = ["COCO_NAMES", "DOTA_TO_COCO", "VISDRONE_TO_COCO", "GroundTruth", "load_labels"]

_DOTA_HEADERS = ("imagesource:", "gsd:")


@dataclass
class GroundTruth:
    """Labelled objects of one image.

    Attributes:
        boxes: (N, 4) float32 xyxy in image pixels.
        classes: (N,) int64 COCO-80 class ids (Ultralytics order).
        ignore: (M, 4) float32 xyxy ignore regions in image pixels; may be empty.
        names: class id -> class name, where the format provides them.
    """

    boxes: np.ndarray
    classes: np.ndarray
    ignore: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    names: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.classes = np.asarray(self.classes, dtype=np.int64).reshape(-1)
        self.ignore = np.asarray(self.ignore, dtype=np.float32).reshape(-1, 4)
        if len(self.boxes) != len(self.classes):
            raise ValueError("boxes and classes differ in length")

    def __len__(self) -> int:
        return len(self.boxes)


class _Collector:
    """Accumulates objects and ignore regions while a parser walks a file."""

    def __init__(self) -> None:
        self.boxes: list[list[float]] = []
        self.classes: list[int] = []
        self.ignore: list[list[float]] = []

    def add(self, box: list[float], cls: int) -> None:
        self.boxes.append(box)
        self.classes.append(cls)

    def result(self, names: dict[int, str]) -> GroundTruth:
        return GroundTruth(
            np.array(self.boxes, np.float32).reshape(-1, 4),
            np.array(self.classes, np.int64),
            np.array(self.ignore, np.float32).reshape(-1, 4),
            names,
        )


def _numbers(tokens: list[str], path: Path, lineno: int) -> list[float]:
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        raise SparseYoloError(f"line {lineno}: non-numeric value in {tokens}", path) from None
    if not all(math.isfinite(v) for v in values):
        raise SparseYoloError(f"line {lineno}: non-finite value in {tokens}", path)
    return values


def _integer(value: float, what: str, path: Path, lineno: int) -> int:
    if value != int(value):
        raise SparseYoloError(f"line {lineno}: {what} must be an integer, got {value}", path)
    return int(value)


def _xywh_to_xyxy(x: float, y: float, w: float, h: float, path: Path, where: str) -> list[float]:
    if w < 0 or h < 0:
        raise SparseYoloError(f"{where}: negative box size {w} x {h}", path)
    return [x, y, x + w, y + h]


def _content_lines(text: str) -> list[tuple[int, str]]:
    """Non-blank lines as (1-based line number, stripped text)."""
    return [(i, s) for i, line in enumerate(text.splitlines(), 1) if (s := line.strip())]


def _parse_yolo(path: Path, text: str, image_size: tuple[int, int] | None) -> GroundTruth:
    lines = _content_lines(text)
    if lines and image_size is None:
        raise SparseYoloError("YOLO labels are normalised; image_size is required", path)
    width, height = image_size or (1, 1)
    out = _Collector()
    for lineno, line in lines:
        tokens = line.split()
        if len(tokens) != 5:
            raise SparseYoloError(
                f"line {lineno}: expected 'cls cx cy w h', got {len(tokens)} values", path
            )
        cls, cx, cy, w, h = _numbers(tokens, path, lineno)
        box = _xywh_to_xyxy(
            (cx - w / 2) * width,
            (cy - h / 2) * height,
            w * width,
            h * height,
            path,
            f"line {lineno}",
        )
        out.add(box, _integer(cls, "class", path, lineno))
    return out.result({})


def visdrone_rows(path: Path, text: str) -> Iterator[tuple[list[float], int, float]]:
    """(xyxy box in pixels, category, score) of each row of a raw VisDrone-DET annotation.

    Raises:
        SparseYoloError: a malformed row or an unknown category, naming the line.
    """
    for lineno, line in _content_lines(text):
        tokens = [t.strip() for t in line.split(",")]
        if tokens and tokens[-1] == "":  # some releases end every row with a comma
            tokens = tokens[:-1]
        if len(tokens) != 8:
            raise SparseYoloError(
                f"line {lineno}: expected 8 comma-separated values "
                f"'x,y,w,h,score,category,truncation,occlusion', got {len(tokens)}",
                path,
            )
        x, y, w, h, score, category = _numbers(tokens, path, lineno)[:6]
        box = _xywh_to_xyxy(x, y, w, h, path, f"line {lineno}")
        category_id = _integer(category, "category", path, lineno)
        if category_id != VISDRONE_IGNORE_CATEGORY and category_id not in VISDRONE_TO_COCO:
            raise SparseYoloError(f"line {lineno}: unknown VisDrone category {category_id}", path)
        yield box, category_id, score


def _parse_visdrone(path: Path, text: str, image_size: tuple[int, int] | None) -> GroundTruth:
    out = _Collector()
    for box, category_id, score in visdrone_rows(path, text):
        if category_id == VISDRONE_IGNORE_CATEGORY or score == 0:
            out.ignore.append(box)
        elif (cls := VISDRONE_TO_COCO[category_id]) is not None:
            out.add(box, cls)
    return out.result(dict(COCO_NAMES))


def _parse_dota(path: Path, text: str, image_size: tuple[int, int] | None) -> GroundTruth:
    out = _Collector()
    for lineno, line in _content_lines(text):
        if line.lower().startswith(_DOTA_HEADERS):
            continue
        tokens = line.split()
        if len(tokens) not in (9, 10):  # 'difficult' is absent in some releases
            raise SparseYoloError(
                f"line {lineno}: expected 'x1 y1 x2 y2 x3 y3 x4 y4 class difficult', "
                f"got {len(tokens)} values",
                path,
            )
        values = _numbers(tokens[:8] + tokens[9:], path, lineno)
        corners = np.array(values[:8]).reshape(4, 2)
        name = tokens[8]
        if name not in DOTA_TO_COCO:
            raise SparseYoloError(f"line {lineno}: unknown DOTA class {name!r}", path)
        difficult = len(values) == 9 and _integer(values[8], "difficult", path, lineno) != 0
        cls = DOTA_TO_COCO[name]
        if cls is None:
            continue
        box = [*corners.min(0).tolist(), *corners.max(0).tolist()]
        if difficult:
            out.ignore.append(box)
        else:
            out.add(box, cls)
    return out.result(dict(COCO_NAMES))


def _pick_coco_image(path: Path, images: list[dict], image_name: str | None) -> dict:
    if image_name is not None:
        want = Path(image_name)
        for key in (lambda p: p.name, lambda p: p.stem):
            hits = [im for im in images if key(Path(str(im.get("file_name", "")))) == key(want)]
            if len(hits) == 1:
                return hits[0]
    if len(images) == 1:
        return images[0]
    if image_name is None:
        raise SparseYoloError(f"{len(images)} images in COCO JSON; pass image_name", path)
    raise SparseYoloError(f"no single image named {image_name!r} in COCO JSON", path)


def _parse_coco(
    path: Path, text: str, image_size: tuple[int, int] | None, image_name: str | None = None
) -> GroundTruth:
    try:
        data = json.loads(text)
        images, annotations = list(data["images"]), list(data["annotations"])
        names = {int(c["id"]): str(c["name"]) for c in data.get("categories", [])}
    except json.JSONDecodeError as e:
        raise SparseYoloError(f"invalid JSON at line {e.lineno}: {e.msg}", path) from None
    except (KeyError, TypeError, ValueError) as e:
        raise SparseYoloError(f"not a COCO instances file ({e!r})", path) from None
    image_id = _pick_coco_image(path, images, image_name).get("id")
    out = _Collector()
    for k, ann in enumerate(annotations):
        if ann.get("image_id") != image_id:
            continue
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
            cls = int(ann["category_id"])
        except (KeyError, TypeError, ValueError) as e:
            raise SparseYoloError(f"annotation {k}: malformed ({e!r})", path) from None
        box = _xywh_to_xyxy(x, y, w, h, path, f"annotation {k}")
        if ann.get("iscrowd", 0) or ann.get("ignore", 0):
            out.ignore.append(box)
        else:
            out.add(box, cls)
    return out.result(names)


DEEPFOREST_HEADER = "image_path,xmin,ymin,xmax,ymax,label"
NOT_COCO = -1  # class id of objects outside COCO-80 (DeepForest's trees)


def _parse_deepforest(path: Path, text: str, image_size: tuple[int, int] | None) -> GroundTruth:
    """DeepForest CSV: a header, then ``image_path,xmin,ymin,xmax,ymax,label`` in pixels."""
    out = _Collector()
    for lineno, line in _content_lines(text)[1:]:
        tokens = [t.strip() for t in line.split(",")]
        if len(tokens) != 6:
            raise SparseYoloError(
                f"line {lineno}: expected '{DEEPFOREST_HEADER}', got {len(tokens)} values", path
            )
        x0, y0, x1, y1 = _numbers(tokens[1:5], path, lineno)
        out.add([x0, y0, x1, y1], NOT_COCO)
    return out.result({NOT_COCO: "tree"})


_Parser = Callable[[Path, str, tuple[int, int] | None], GroundTruth]
LABEL_FORMATS: dict[str, _Parser] = {
    "coco": _parse_coco,
    "yolo": _parse_yolo,
    "visdrone": _parse_visdrone,
    "dota": _parse_dota,
    "deepforest": _parse_deepforest,
}


def detect_format(path: Path, text: str) -> str:
    """Guess the label format from the suffix and the first non-blank line.

    Args:
        path: the label file (only its suffix is used).
        text: its content.

    Returns:
        One of the keys of ``LABEL_FORMATS``; ``"yolo"`` for an empty text file.
    """
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        return "coco"
    lines = _content_lines(text)
    if not lines:
        return "yolo"  # nothing to parse; any text format gives an empty result
    lineno, first = lines[0]
    if first.replace(" ", "").lower().startswith(DEEPFOREST_HEADER):
        return "deepforest"
    tokens = first.split()
    if first.lower().startswith(_DOTA_HEADERS) or (
        len(tokens) in (9, 10) and tokens[8] in DOTA_TO_COCO
    ):
        return "dota"
    if "," in first:
        return "visdrone"
    if len(tokens) == 5:
        return "yolo"
    raise SparseYoloError(
        f"line {lineno}: cannot tell the label format; pass one of {', '.join(LABEL_FORMATS)}",
        path,
    )


def _clip(gt: GroundTruth, image_size: tuple[int, int]) -> GroundTruth:
    """Clip boxes and ignore regions to the image and drop boxes left with no area."""
    width, height = image_size
    lim = np.array([width, height, width, height], np.float32)
    boxes = np.clip(gt.boxes, 0, lim)
    ignore = np.clip(gt.ignore, 0, lim)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    keep_ig = (ignore[:, 2] > ignore[:, 0]) & (ignore[:, 3] > ignore[:, 1])
    return GroundTruth(boxes[keep], gt.classes[keep], ignore[keep_ig], gt.names)


def load_labels(
    path: str | Path,
    image_size: tuple[int, int] | None = None,
    fmt: str = "auto",
    image_name: str | None = None,
) -> GroundTruth:
    """Read ground truth for one image.

    Args:
        path: label file (COCO ``.json``, or a YOLO / VisDrone / DOTA ``.txt``).
        image_size: (width, height) of the image in pixels. Required for YOLO (normalised)
            labels; when given, boxes are clipped to the image and zero-area boxes dropped.
        fmt: ``"auto"`` (guess from suffix and content) or a key of ``LABEL_FORMATS``.
        image_name: for COCO JSON with several images, the ``file_name`` (or its stem) of the
            image to take; ignored by the other formats.

    Returns:
        GroundTruth with (N, 4) xyxy boxes in image pixels, COCO-80 class ids and ignore regions.

    Raises:
        SparseYoloError: unreadable file, unknown format, or a malformed line (named by number).
    """
    path = Path(path)
    if fmt != "auto" and fmt not in LABEL_FORMATS:
        raise SparseYoloError(
            f"unknown label format {fmt!r}; known: auto, {', '.join(LABEL_FORMATS)}", path
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise SparseYoloError(f"cannot read labels ({e.__class__.__name__})", path) from None
    fmt = detect_format(path, text) if fmt == "auto" else fmt
    if fmt == "coco":
        gt = _parse_coco(path, text, image_size, image_name)
    else:
        gt = LABEL_FORMATS[fmt](path, text, image_size)
    return _clip(gt, image_size) if image_size is not None else gt
