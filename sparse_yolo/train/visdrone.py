"""VisDrone-DET in the Ultralytics layout, through Ultralytics' own conversion.

Ultralytics' ``VisDrone.yaml`` carries a ``download:`` script that fetches the three zips and
converts the raw annotations (``x,y,w,h,score,category,truncation,occlusion``; score 0 marks
an ignored region; category 1-10 -> class 0-9) into YOLO labels with its function
``visdrone2yolo``. ``sparse-yolo train --data VisDrone.yaml`` runs that script unchanged through
Ultralytics where the network allows. Offline, :func:`visdrone_converter` takes the very same
function out of the installed YAML, so raw VisDrone folders (a manual download, or the
two-image sample in ``../shared``) convert exactly as the real dataset does.
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import yaml

RAW_DIRS = {"train": "VisDrone2019-DET-train", "val": "VisDrone2019-DET-val"}


def ultralytics_visdrone_yaml() -> dict:
    """The dataset YAML shipped with the installed Ultralytics."""
    from ultralytics.utils import ROOT  # noqa: PLC0415 - heavy import

    return yaml.safe_load((ROOT / "cfg" / "datasets" / "VisDrone.yaml").read_text())


def visdrone_converter() -> Callable[..., None]:
    """Ultralytics' ``visdrone2yolo(dir, split, source_name=None)``, from its VisDrone.yaml.

    Only the script's imports and that one function definition are executed; its download
    and clean-up statements are left out.
    """
    script = ultralytics_visdrone_yaml()["download"]
    tree = ast.parse(script)
    keep = [
        node
        for node in tree.body
        if isinstance(node, (ast.Import, ast.ImportFrom))
        or (isinstance(node, ast.FunctionDef) and node.name == "visdrone2yolo")
    ]
    if not any(isinstance(n, ast.FunctionDef) for n in keep):
        raise RuntimeError("Ultralytics' VisDrone.yaml no longer defines visdrone2yolo")
    namespace: dict = {}
    exec(compile(ast.Module(body=keep, type_ignores=[]), "VisDrone.yaml", "exec"), namespace)  # noqa: S102
    return namespace["visdrone2yolo"]


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
    convert = visdrone_converter()
    root.mkdir(parents=True, exist_ok=True)
    for split, stems in splits.items():
        source = root / RAW_DIRS.get(split, f"VisDrone2019-DET-{split}")
        (source / "images").mkdir(parents=True, exist_ok=True)
        (source / "annotations").mkdir(parents=True, exist_ok=True)
        for img in images:
            if img.stem in stems:
                shutil.copy2(img, source / "images" / img.name)
                shutil.copy2(annotations / f"{img.stem}.txt", source / "annotations")
        convert(root, split, source.name)
        shutil.rmtree(source)
    data = ultralytics_visdrone_yaml()
    data.pop("download", None)
    data.update(path=str(root), train="images/train", val="images/val")
    data.pop("test", None)
    out = root / "data.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out
