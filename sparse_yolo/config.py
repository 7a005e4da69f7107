"""Frozen, validated configuration grouped by concern.

Precedence: dataclass defaults, then a YAML file (``configs/*.yaml``), then CLI overrides.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

NECKS = ("pan", "slim")
BACKENDS = ("auto", "gather", "spconv", "dense")
FILLS = ("flat", "zero")


def _choice(name: str, value: str, allowed: tuple[str, ...] | list[str]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; known: {', '.join(allowed)}")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a SparseYOLO model; embedded in every checkpoint.

    Attributes:
        scale: a scale of the family's YAML (``n``, ``s``, ``m``, ``l``, ``x``), or ``tiny``
            (not an Ultralytics scale: a random-init model small enough for unit tests).
        nc: number of classes.
        names: class names, ``len(names) == nc`` (defaults to ``class{i}``).
        neck: ``pan`` (the checkpoint's own neck) or ``slim`` (GSConv + VoVGSCSP).
        mask_net: whether the model carries a learned mask net (``--mask learned``).
        arch: the Ultralytics model family: a YAML shipped with Ultralytics without its
            scale letter (``yolov8``, ``yolov8-p2``, ``yolov8-p6``, ``yolo11``, ``yolo26``,
            ...) or a path to a model YAML. A checkpoint also carries its layer graph, so
            ``arch`` only matters when a model is built fresh.
    """

    scale: str = "n"
    nc: int = 80
    names: tuple[str, ...] = ()
    neck: str = "pan"
    mask_net: bool = False
    arch: str = "yolov8"

    def __post_init__(self) -> None:
        if not self.scale or not self.arch:
            raise ValueError("model scale and arch must be non-empty")
        _choice("neck", self.neck, NECKS)
        if self.nc < 1:
            raise ValueError(f"nc must be >= 1, got {self.nc}")
        names = tuple(self.names) or tuple(f"class{i}" for i in range(self.nc))
        if len(names) != self.nc:
            raise ValueError(f"{len(names)} class names given for nc={self.nc}")
        object.__setattr__(self, "names", names)

    @classmethod
    def from_name(cls, name: str, **kwargs: Any) -> ModelConfig:
        """From an Ultralytics model name, e.g. ``yolo11n.yaml`` or ``yolov8s-p2.yaml``."""
        from sparse_yolo.model.graph import split_model_name  # noqa: PLC0415

        arch, scale = split_model_name(name)
        return cls(scale=scale or "n", arch=arch, **kwargs)


@dataclass(frozen=True)
class MaskConfig:
    """Which cells the sparse stem computes.

    Attributes:
        name: mask implementation (see ``sparse_yolo.masks.MASKS``); ``learned:PATH`` is
            ``name="learned", path=PATH``.
        path: checkpoint whose mask net the ``learned`` mask uses (default: the detector's).
        roi: vector file of the region of interest (rasters with a CRS); cells outside it
            are never examined.
        roi_buffer: metres added around the ROI's features.
        roi_layer: layer of a multi-layer ROI file (GeoPackage, ...).
        roi_where: SQL ``WHERE`` filter on the ROI's features, e.g. ``"highway='primary'"``.
        cell: cell edge in pixels; the active set is aligned to it (8, 16 or 32).
        context: cells of dilation around whatever the mask marks.
        min_blob: active groups smaller than this many cells are dropped as specks,
            unless their own score is strong (see ``masks``).
        max_active: keep at most this fraction of cells (top-scoring), or None.
        threshold: scale of the adaptive threshold (higher marks fewer cells).
        coarse_size: long side in pixels of the low-resolution pass of the ``coarse`` mask.
        coarse_conf: confidence threshold of its candidate boxes.
    """

    name: str = "gradient"
    cell: int = 16
    context: int = 1
    min_blob: int = 3
    max_active: float | None = None
    threshold: float = 1.0
    coarse_size: int = 1280
    coarse_conf: float = 0.01
    path: str | None = None
    roi: str | None = None
    roi_buffer: float = 0.0
    roi_layer: str | None = None
    roi_where: str | None = None

    def __post_init__(self) -> None:
        name, sep, path = self.name.partition(":")
        if sep:
            if not path:
                raise ValueError(f"mask {self.name!r}: expected NAME:PATH")
            object.__setattr__(self, "name", name)
            object.__setattr__(self, "path", path)
        if self.cell not in (8, 16, 32):
            raise ValueError(f"mask cell must be 8, 16 or 32 px, got {self.cell}")
        if self.context < 0 or self.min_blob < 1:
            raise ValueError("mask context must be >= 0 and min_blob >= 1")
        if self.max_active is not None and not 0.0 < self.max_active <= 1.0:
            raise ValueError(f"max_active must be in (0, 1], got {self.max_active}")
        if self.roi_buffer < 0:
            raise ValueError(f"roi_buffer must be >= 0 metres, got {self.roi_buffer}")


@dataclass(frozen=True)
class WindowConfig:
    """How stride-8 features are cut into dense windows.

    Attributes:
        margin: stride-8 cells of context added around each active group.
        merge_slack: merge two windows when the union box costs at most this factor
            of their separate areas (1.0 = merge only when it is no dearer).
        fill: what inactive stride-8 sites hold when windows are densified: ``flat``, the
            stem's response to a flat image of the frame's mean colour
            (:func:`sparse_yolo.sparse.stem.flat_response`), or ``zero``.
    """

    # The smallest margin that keeps the dense detections with the flat fill
    # (docs/performance.md): wider margins only add window area.
    margin: int = 2
    merge_slack: float = 1.0
    fill: str = "flat"

    def __post_init__(self) -> None:
        if self.margin < 0 or self.merge_slack < 1.0:
            raise ValueError("window margin must be >= 0 and merge_slack >= 1.0")
        _choice("window fill", self.fill, FILLS)


@dataclass(frozen=True)
class PostprocessConfig:
    """Decoding and merging of detections (boxes are xyxy in image pixels)."""

    conf: float = 0.25
    iou: float = 0.5
    max_det: int = 3000
    agnostic: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.conf <= 1.0 or not 0.0 < self.iou <= 1.0:
            raise ValueError("conf must be in [0, 1] and iou in (0, 1]")


@dataclass(frozen=True)
class TileConfig:
    """Raster tiling: windows read from disk, in pixels.

    Attributes:
        tile: tile edge; memory is bounded by it, not by the raster size.
        overlap: pixels shared by neighbouring tiles; objects smaller than this are seen
            whole by at least one tile.
        merge: ``nms`` (boxes cut by a seam are dropped, duplicates suppressed) or
            ``greedy`` (SAHI-style greedy merging of boxes cut by a seam).
    """

    tile: int = 4096
    overlap: int = 128
    merge: str = "nms"

    def __post_init__(self) -> None:
        if self.tile < 64 or not 0 <= self.overlap < self.tile // 2:
            raise ValueError("tile must be >= 64 and overlap in [0, tile/2)")
        _choice("merge", self.merge, ("nms", "greedy"))


@dataclass(frozen=True)
class DetectorConfig:
    """Everything the inference pipeline needs besides the weights."""

    backend: str = "auto"
    # fp16 weights and activations: for CUDA (tensor cores); on CPU it runs, but slower.
    half: bool = False
    mask: MaskConfig = field(default_factory=MaskConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    post: PostprocessConfig = field(default_factory=PostprocessConfig)
    tiling: TileConfig = field(default_factory=TileConfig)

    def __post_init__(self) -> None:
        _choice("backend", self.backend, BACKENDS)

    def replace(self, **overrides: Any) -> DetectorConfig:
        """Return a copy with dotted overrides applied, e.g. ``{"mask.name": "all"}``."""
        return from_dict(_merge(dataclasses.asdict(self), _undot(overrides)))


def _undot(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        if value is None and not key.endswith("max_active"):
            continue
        *parents, leaf = key.split(".")
        node = nested
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return nested


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


_SECTIONS = {
    "mask": MaskConfig,
    "window": WindowConfig,
    "post": PostprocessConfig,
    "tiling": TileConfig,
}


def from_dict(data: dict[str, Any]) -> DetectorConfig:
    """Build a validated ``DetectorConfig`` from nested plain data."""
    known = {f.name for f in dataclasses.fields(DetectorConfig)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)}; known: {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        cls = _SECTIONS.get(key)
        if cls is None:
            kwargs[key] = value
            continue
        fields = {f.name for f in dataclasses.fields(cls)}
        bad = set(value) - fields
        if bad:
            raise ValueError(f"unknown {key} keys {sorted(bad)}; known: {sorted(fields)}")
        kwargs[key] = cls(**value)
    return DetectorConfig(**kwargs)


def load_config(path: str | Path | None) -> DetectorConfig:
    """Read a pipeline YAML file (or return defaults when ``path`` is None)."""
    if path is None:
        return DetectorConfig()
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return from_dict(data)
