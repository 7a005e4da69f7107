"""The checkpoint's own Ultralytics layer graph: build it, route it, fold its BatchNorm.

An Ultralytics detection model is a list of layers; each layer reads the previous output
(``m.f == -1``) or saved outputs of earlier layers (``m.f``, an index or a list of them), and
the outputs later layers read are kept (``save``). :func:`run_layers` executes any slice of
that list with the same routing as ``BaseModel._predict_once``, so the sparse model runs the
checkpoint's graph, not a re-implementation of it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn
from ultralytics.nn.modules import Conv, Detect

from sparse_yolo.errors import SparseYoloError

# Not an Ultralytics scale: a random-init model small enough for unit tests (any family).
TEST_SCALES = {"tiny": [0.33, 0.125, 256]}
# Families whose YAMLs ship with Ultralytics and are tested here (README table).
FAMILIES = ("yolov8", "yolov8-p2", "yolov8-p6", "yolo11", "yolo26", "yolo26-p2", "yolo26-p6")


def split_model_name(name: str) -> tuple[str, str]:
    """``yolo11n.yaml`` -> (``yolo11``, ``n``); ``yolov8s-p2`` -> (``yolov8-p2``, ``s``).

    A name without a scale letter returns an empty scale; a path keeps its folder.
    """
    path = Path(name)
    stem = path.stem if path.suffix in (".yaml", ".yml") else path.name
    found = re.search(r"yolo(e-)?v?\d+([nslmx])", stem)
    if not found:
        return str(path.with_name(stem)) if path.parent != Path(".") else stem, ""
    family = stem[: found.end() - 1] + stem[found.end() :]
    folder = path.parent
    return (str(folder / family) if folder != Path(".") else family), found.group(2)


def model_yaml(arch: str, scale: str, nc: int) -> dict:
    """The Ultralytics model dict of a family (``yolo11``, a YAML path, ...) at a scale.

    Raises:
        SparseYoloError: no such YAML, or a scale it does not define.
    """
    from ultralytics.nn.tasks import yaml_model_load  # noqa: PLC0415 - heavy import

    name = arch if arch.endswith((".yaml", ".yml")) else f"{arch}.yaml"
    try:
        d = yaml_model_load(name)
    except (FileNotFoundError, OSError) as exc:
        raise SparseYoloError(
            f"unknown model {arch!r} ({exc}); e.g. {', '.join(FAMILIES)}"
        ) from None
    scales = {**d.get("scales", {}), **TEST_SCALES}
    if scale not in scales:
        raise SparseYoloError(f"model {arch!r} has no scale {scale!r}; known: {', '.join(scales)}")
    d["scales"], d["scale"], d["nc"] = scales, scale, nc
    return d


def build_detection_model(arch: str, scale: str, nc: int) -> nn.Module:
    """A random-init Ultralytics ``DetectionModel`` (Ultralytics' own initialisation)."""
    from ultralytics.nn.tasks import DetectionModel  # noqa: PLC0415 - heavy import
    from ultralytics.utils import LOGGER  # noqa: PLC0415

    level = LOGGER.level
    LOGGER.setLevel("WARNING")  # "Overriding model.yaml nc=..." on every build
    try:
        return DetectionModel(model_yaml(arch, scale, nc), nc=nc, verbose=False)
    finally:
        LOGGER.setLevel(level)


def sources(m: nn.Module) -> list[int]:
    """Absolute indices of the layers ``m`` reads."""
    f = [m.f] if isinstance(m.f, int) else list(m.f)
    return [m.i - 1 if j == -1 else j for j in f]


def run_layers(
    layers: Iterable[nn.Module], saved: dict[int, torch.Tensor], keep: set[int]
) -> torch.Tensor:
    """Run layers in order with Ultralytics' routing.

    Args:
        layers: consecutive Ultralytics layers (each with ``.f`` and ``.i``).
        saved: outputs by layer index; must hold every output the layers read. Outputs of
            the layers run here whose index is in ``keep`` are added to it.
        keep: indices whose outputs later code reads.

    Returns:
        The last layer's output.
    """
    x = None
    for m in layers:
        src = [saved.get(j, x) for j in sources(m)]
        x = m(src[0] if isinstance(m.f, int) else src)
        if m.i in keep:
            saved[m.i] = x
    return x


@torch.no_grad()
def layer_shapes(layers: Iterable[nn.Module], probe: int = 256) -> list[tuple[int, int]]:
    """(output stride, output channels) of each layer, probed on a zero image.

    Args:
        layers: consecutive layers from layer 0 (a backbone), reading only each other.
    """
    layers = list(layers)
    p = next(layers[0].parameters())
    x = torch.zeros(1, 3, probe, probe, dtype=p.dtype, device=p.device)
    saved: dict[int, torch.Tensor] = {}
    out = []
    modes = [m.training for m in layers]
    for m in layers:
        m.eval()
    try:
        for m in layers:
            src = [saved.get(j, x) for j in sources(m)]
            x = m(src[0] if isinstance(m.f, int) else src)
            saved[m.i] = x
            out.append((probe // x.shape[-1], int(x.shape[1])))
    finally:
        for m, mode in zip(layers, modes, strict=True):
            m.train(mode)
    return out


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every ``Conv``'s BatchNorm into its conv, in place (as Ultralytics' ``fuse``).

    The one home for BN folding: inference copies and the trainer's fuse both call it. The
    sparse backends fold on the fly either way (``fold_conv``); dense layers save a pass.
    """
    from ultralytics.utils.torch_utils import fuse_conv_and_bn  # noqa: PLC0415

    for m in model.modules():
        if isinstance(m, Conv) and hasattr(m, "bn"):
            m.conv = fuse_conv_and_bn(m.conv, m.bn)
            delattr(m, "bn")
            m.forward = m.forward_fuse
    return model


def detection_layers(src: nn.Module) -> tuple[nn.Sequential, list[int], dict]:
    """(layers, save list, yaml) of an Ultralytics detection model; refuses other tasks.

    Raises:
        SparseYoloError: not a detection model (segmentation, pose, OBB and RT-DETR heads
            are refused by name).
    """
    model = src
    if not isinstance(getattr(model, "model", None), nn.Sequential):
        model = getattr(model, "model", model)  # YOLO wrapper -> DetectionModel
    layers = getattr(model, "model", None)
    if not isinstance(layers, nn.Sequential) or not hasattr(layers[-1], "f"):
        raise SparseYoloError("expected an Ultralytics detection model")
    head = layers[-1]
    if type(head) is not Detect:
        raise SparseYoloError(
            f"expected an Ultralytics Detect head, got {type(head).__name__}: "
            "only detection models are supported"
        )
    return layers, list(model.save), dict(getattr(model, "yaml", None) or {})
