"""VisDrone-DET in the Ultralytics layout (``images/<split>``, ``labels/<split>``, YOLO txt).

``sparse-yolo train --data VisDrone.yaml`` lets Ultralytics download and convert the real
dataset where the network allows. Offline, :func:`build_visdrone_dataset` converts raw
VisDrone folders (a manual download, or the two-image sample in ``../shared``) the way
Ultralytics' ``visdrone2yolo`` does: rows with score 0 (ignored regions) are skipped and
category 1-10 becomes class 0-9. The rows are read by the project's one VisDrone reader,
:func:`sparse_yolo.eval.labels.visdrone_rows`.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

import cv2
import yaml

from sparse_yolo.errors import SparseYoloError
from sparse_yolo.eval.labels import visdrone_rows

N_CLASSES = 10  # VisDrone-DET categories 1-10; 0 (ignored) and 11 (others) are not classes


def ultralytics_visdrone_yaml() -> dict:
    """The dataset YAML shipped with the installed Ultralytics."""
    from ultralytics.utils import ROOT  # noqa: PLC0415 - heavy import

    return yaml.safe_load((ROOT / "cfg" / "datasets" / "VisDrone.yaml").read_text())


def yolo_labels(annotation: Path, width: int, height: int) -> str:
    """One raw annotation file as YOLO label lines ``class cx cy w h`` (normalised)."""
    lines = []
    for (x1, y1, x2, y2), category, score in visdrone_rows(annotation, annotation.read_text()):
        if score == 0 or not 1 <= category <= N_CLASSES:
            continue
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        w, h = (x2 - x1) / width, (y2 - y1) / height
        lines.append(f"{category - 1} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
    return "".join(lines)


def build_visdrone_dataset(
    images: Iterable[Path],
    annotations: Path,
    root: Path,
    splits: dict[str, list[str]] | None = None,
) -> Path:
    """Convert raw VisDrone images and annotations into an Ultralytics dataset under ``root``.

    Args:
        images: raw ``.jpg`` frames.
        annotations: folder of the raw ``<stem>.txt`` annotation files.
        root: dataset root to create (``images/<split>``, ``labels/<split>``, ``data.yaml``).
        splits: split name -> image stems; default: every image in both ``train`` and ``val``.

    Returns:
        Path of the dataset YAML (Ultralytics' VisDrone class names, ``path`` set to ``root``).
    """
    images = sorted(Path(p) for p in images)
    splits = splits or {"train": [p.stem for p in images], "val": [p.stem for p in images]}
    for split, stems in splits.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for img in images:
            if img.stem not in stems:
                continue
            pixels = cv2.imread(str(img))
            if pixels is None:
                raise SparseYoloError("cannot read the image", img)
            height, width = pixels.shape[:2]
            shutil.copy2(img, root / "images" / split / img.name)
            labels = yolo_labels(annotations / f"{img.stem}.txt", width, height)
            (root / "labels" / split / f"{img.stem}.txt").write_text(labels)
    data = ultralytics_visdrone_yaml()
    data.pop("download", None)
    data.update(path=str(root), train="images/train", val="images/val")
    data.pop("test", None)
    out = root / "data.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out
