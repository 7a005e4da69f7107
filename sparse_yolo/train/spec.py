"""Model specs for training: sparse model YAMLs or Ultralytics model names.

``--model`` is either an Ultralytics model YAML (``yolo11n.yaml``, ``yolov8s-p2.yaml``, a path
to your own), trained with the ``pan`` neck, or a sparse model YAML (``configs/sparse-*.yaml``)
that maps onto :class:`~sparse_yolo.config.ModelConfig`::

    arch: yolo11      # Ultralytics family YAML without its scale letter (default yolov8)
    scale: n          # a scale of that YAML (n, s, m, l, x, or tiny for tests)
    neck: pan         # pan (the family's own) or slim (GSConv + VoVGSCSP)
    mask_net: false   # carry a learned mask net, trained from the labels alongside
    nc: 10            # optional: taken from the dataset YAML when absent

Weights come from an Ultralytics detection ``.pt`` (its graph is imported, see
:meth:`SparseYOLO.from_ultralytics`) or from a sparse-yolo checkpoint. When the dataset's
classes differ from the weights' classes, only the class branches of the head (``head.cv3``
and an end-to-end head's ``one2one_cv3``, whose widths depend on ``nc``) are re-initialised;
everything else transfers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from sparse_yolo.config import NECKS, ModelConfig
from sparse_yolo.errors import SparseYoloError
from sparse_yolo.model.graph import model_yaml, split_model_name
from sparse_yolo.model.yolo import SparseYOLO

CLASS_BRANCH = ("head.cv3.", "head.one2one_cv3.")


@dataclass(frozen=True)
class ModelSpec:
    """What a sparse model YAML asks for.

    Attributes:
        scale: a scale of the family's YAML, or ``tiny``.
        neck: ``pan`` or ``slim``.
        mask_net: the model carries a learned mask net.
        nc: class count, or None to take it from the dataset.
        arch: Ultralytics model family (``yolov8``, ``yolo11``, ``yolo26``, ``yolov8-p2``, ...)
            or a model YAML path.
    """

    scale: str = "n"
    neck: str = "pan"
    mask_net: bool = False
    nc: int | None = None
    arch: str = "yolov8"

    def __post_init__(self) -> None:
        if self.neck not in NECKS:
            raise ValueError(f"unknown neck {self.neck!r}; known: {', '.join(NECKS)}")
        if self.nc is not None and self.nc < 1:
            raise ValueError(f"nc must be >= 1, got {self.nc}")

    def model_config(self, names: tuple[str, ...]) -> ModelConfig:
        """The architecture for a dataset with these class names."""
        if self.nc is not None and self.nc != len(names):
            raise SparseYoloError(f"model nc={self.nc} but the dataset has {len(names)} classes")
        return ModelConfig(
            scale=self.scale,
            nc=len(names),
            names=names,
            neck=self.neck,
            mask_net=self.mask_net,
            arch=self.arch,
        )


def load_model_spec(path: str | Path) -> ModelSpec:
    """An Ultralytics model YAML name or path, or a sparse model YAML (unknown keys are
    rejected with the known ones); the scale is checked against the family's YAML."""
    path = Path(path)
    if not path.is_file():
        arch, scale = split_model_name(str(path))
        if scale:  # yolo11n.yaml: shipped with Ultralytics
            return _checked(ModelSpec(scale=scale, arch=arch), path)
        raise SparseYoloError("model YAML not found", path)
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise SparseYoloError("expected a mapping at the top level", path)
    if "backbone" in data:  # an Ultralytics model YAML of one's own
        scale = split_model_name(path.name)[1] or next(iter(data.get("scales") or {"n": 0}))
        return _checked(ModelSpec(scale=scale, arch=str(path)), path)
    known = {f.name for f in dataclasses.fields(ModelSpec)}
    unknown = set(data) - known
    if unknown:
        raise SparseYoloError(f"unknown keys {sorted(unknown)}; known: {sorted(known)}", path)
    try:
        return _checked(ModelSpec(**data), path)
    except (TypeError, ValueError) as exc:
        raise SparseYoloError(str(exc), path) from None


def _checked(spec: ModelSpec, path: Path) -> ModelSpec:
    """``spec`` once its family YAML is found and defines its scale."""
    try:
        model_yaml(spec.arch, spec.scale, 1)
    except SparseYoloError as exc:
        raise SparseYoloError(str(exc), path) from None
    return spec


def build_model(
    spec: ModelSpec, names: tuple[str, ...], weights: str | Path | SparseYOLO | None = None
) -> tuple[SparseYOLO, list[str]]:
    """A SparseYOLO for ``names``, initialised from ``weights`` where shapes allow.

    Args:
        spec: architecture asked for by the model YAML.
        names: the dataset's class names (their count is ``nc``).
        weights: dense Ultralytics YOLOv8 ``.pt``, sparse-yolo checkpoint, a model, or None
            (random init, Ultralytics' initialisation).

    Returns:
        The model in train mode, and the state-dict keys left at their initial values.
    """
    model = SparseYOLO(spec.model_config(names))
    fresh = list(model.state_dict())
    if weights is not None:
        source = weights if isinstance(weights, SparseYOLO) else _load_source(weights, spec.neck)
        fresh = transfer_weights(source, model)
    return model.train(), fresh


def _load_source(weights: str | Path, neck: str) -> SparseYOLO:
    from sparse_yolo.model.loading import load_model  # noqa: PLC0415 - loading imports yolo

    return load_model(fetch_weights(weights), neck=neck)


def fetch_weights(weights: str | Path) -> Path:
    """A local weights file; a bare Ultralytics asset name (``yolov8n.pt``) that is not here
    is downloaded by Ultralytics, as ``yolo train model=yolov8n.pt`` would.

    Raises:
        SparseYoloError: missing and not downloadable.
    """
    path = Path(weights).expanduser()
    if path.is_file() or path.parent != Path(".") or path.suffix != ".pt":
        return path  # load_model reports a missing path
    from ultralytics.utils.downloads import attempt_download_asset  # noqa: PLC0415

    try:
        found = Path(attempt_download_asset(str(path)))
    except Exception as exc:  # network errors come in many types
        raise SparseYoloError(f"not found here and could not be downloaded ({exc})", path) from exc
    if not found.is_file():
        raise SparseYoloError("not found here and could not be downloaded", path)
    return found


def transfer_weights(
    source: SparseYOLO, target: SparseYOLO, skip: tuple[str, ...] = ()
) -> list[str]:
    """Copy every tensor of ``source`` whose name and shape ``target`` shares.

    The class branch is skipped when the class names differ, so it keeps the fresh
    initialisation (including Ultralytics' prior bias) instead of another dataset's classes.
    So is a neck of another kind (``pan`` and ``slim`` share some block names, not meaning).

    Args:
        source: model to copy from.
        target: model to copy into (modified in place).
        skip: further key prefixes to leave at their initial values.

    Returns:
        The target keys left at their initial values.

    Raises:
        SparseYoloError: the two models are of different families or scales.
    """
    src_arch = (Path(source.cfg.arch).name, source.cfg.scale)
    if src_arch != (Path(target.cfg.arch).name, target.cfg.scale):
        raise SparseYoloError(
            f"weights are {src_arch[0]} scale {src_arch[1]!r} but the model asks for "
            f"{Path(target.cfg.arch).name} scale {target.cfg.scale!r}"
        )
    same_classes = tuple(source.cfg.names) == tuple(target.cfg.names)
    if source.cfg.neck != target.cfg.neck:
        skip = (*skip, "neck.")
    src, own = source.state_dict(), target.state_dict()
    kept: list[str] = []
    for key, value in own.items():
        other = src.get(key)
        fits = other is not None and other.shape == value.shape
        skipped = key.startswith(skip) or (not same_classes and key.startswith(CLASS_BRANCH))
        if fits and not skipped:
            own[key] = other.to(value.dtype)
        else:
            kept.append(key)
    target.load_state_dict(own)
    return kept


def dataset_names(data: dict[str, Any]) -> tuple[str, ...]:
    """Class names of an Ultralytics dataset dict (``names`` as a dict or a list)."""
    names = data["names"]
    if isinstance(names, dict):
        return tuple(str(names[i]) for i in sorted(names))
    return tuple(str(n) for n in names)


def export_checkpoint(model: SparseYOLO, path: str | Path, **extra: Any) -> Path:
    """Write ``model`` as a sparse-yolo checkpoint that ``Detector`` loads (fp32, eval)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.float().eval()
    with torch.no_grad():
        model.save(path, **extra)
    return path
