"""Run the stem (the checkpoint's layers up to stride 8) with a sparse backend.

The layers are the checkpoint's own Ultralytics modules; a per-module-type translation
(:data:`SPARSE_FORMS`) expresses each one's forward in backend ops over the same parameters,
so every backend computes the function of the same weights. A module type without a
translation is refused by name, except by the dense backend on an all-active frame, which
runs the module's own forward (``--backend dense --mask all``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.nn.modules import C3, Bottleneck, C2f, C3k2, Conv
from ultralytics.nn.modules.block import C3k

from sparse_yolo.errors import SparseYoloError
from sparse_yolo.sparse.active import ActivePyramid
from sparse_yolo.sparse.backends import (
    DenseBackend,
    FlatBackend,
    Grid,
    ImageInput,
    SparseBackend,
    conv_kind,
)


class Stem(nn.ModuleList):
    """The stem layers, plus the indices of the outputs later layers read.

    Args:
        layers: the checkpoint's layers 0..k (each with Ultralytics' ``.f`` and ``.i``); the
            last one ends at stride 8.
        outputs: indices of the layers whose outputs leave the stem, ascending stride
            (``(4,)`` for YOLOv8; ``(2, 4)`` for a P2 head, which reads stride 4 too).
    """

    def __init__(self, layers=None, outputs: tuple[int, ...] = ()) -> None:
        super().__init__(layers)
        self.outputs = tuple(outputs) or ((len(self) - 1,) if len(self) else ())


def conv(m: Conv, x, backend: SparseBackend):
    return backend.conv(m, x)


def bottleneck(m: Bottleneck, x, backend: SparseBackend):
    """Ultralytics ``Bottleneck.forward``: cv2(cv1(x)), plus x when ``m.add``."""
    h = backend.conv(m.cv2, backend.conv(m.cv1, x))
    return backend.add(x, h) if m.add else h


def c2f(m: C2f, x, backend: SparseBackend):
    """Ultralytics ``C2f.forward`` (and ``C3k2``'s, which inherits it) in backend ops."""
    parts = backend.split(backend.conv(m.cv1, x), 2)
    for b in m.m:
        parts.append(run_module(b, parts[-1], backend))
    return backend.conv_cat(m.cv2, parts)


def c3(m: C3, x, backend: SparseBackend):
    """Ultralytics ``C3.forward`` (and ``C3k``'s): cv3(cat(m(cv1(x)), cv2(x)))."""
    y = backend.conv(m.cv1, x)
    for b in m.m:
        y = run_module(b, y, backend)
    return backend.conv_cat(m.cv3, [y, backend.conv(m.cv2, x)])


def sequential(m: nn.Sequential, x, backend: SparseBackend):
    for child in m:
        x = run_module(child, x, backend)
    return x


# Exact types: a subclass may change forward (C2fAttn, C3x, ...), so it is not inherited.
SPARSE_FORMS: dict[type, Callable] = {
    Conv: conv,
    Bottleneck: bottleneck,
    C2f: c2f,
    C3k2: c2f,
    C3: c3,
    C3k: c3,
    nn.Sequential: sequential,
}


def run_module(m: nn.Module, x, backend: SparseBackend):
    """One module in backend ops, by its exact type.

    Raises:
        SparseYoloError: the module (or one inside it) has no sparse form.
    """
    form = SPARSE_FORMS.get(type(m))
    if form is None:
        raise SparseYoloError(
            f"stem module {type(m).__name__} has no sparse form (sparse forms: "
            f"{', '.join(t.__name__ for t in SPARSE_FORMS)}); run this model with "
            "--backend dense --mask all"
        )
    return form(m, x, backend)


def unsupported(m: nn.Module) -> str | None:
    """Why ``m`` (a stem layer) has no sparse form, or None when it has one."""
    if type(m) not in SPARSE_FORMS:
        return type(m).__name__
    if type(m) is Conv:
        try:
            conv_kind(m)
        except ValueError:
            return f"Conv k={m.conv.kernel_size} s={m.conv.stride}"
        return "grouped Conv" if m.conv.groups != 1 else None
    for child in m.children():
        for k in child if isinstance(child, nn.ModuleList) else [child]:
            reason = unsupported(k)
            if reason:
                return reason
    return None


def refusal(layer: nn.Module, reason: str) -> SparseYoloError:
    return SparseYoloError(
        f"stem layer {getattr(layer, 'i', '?')} ({type(layer).__name__}: {reason}) has no "
        "sparse form; run this model with --backend dense --mask all"
    )


def run_stem(
    stem: Stem | nn.ModuleList | list[nn.Module],
    backend: SparseBackend,
    image: torch.Tensor,
    pyramid: ActivePyramid | None,
) -> list:
    """Run the stem on the active cells of one image.

    Args:
        stem: the stem layers (a :class:`Stem`; a plain list is one chain ending at stride 8).
        backend: which kernels to use.
        image: (H, W, 3) uint8 BGR, H and W at most ``pyramid.padded_shape`` (the dense
            backend also takes a float batch; the flat backend (B, 3) colours).
        pyramid: active cells of the image (None for the flat backend).

    Returns:
        The backend's features (``Rows``, ``Grid`` or flat vectors) of each of
        ``stem.outputs``, ascending stride (stride 8 last).

    Raises:
        SparseYoloError: a layer has no sparse form and the run is not dense and all-active.
    """
    outputs = getattr(stem, "outputs", (len(stem) - 1,))
    own_ok = isinstance(backend, DenseBackend) and pyramid is not None and pyramid.all_active
    x = backend.enter(image, pyramid)
    saved = {}
    for k, layer in enumerate(stem):
        reason = unsupported(layer)
        if reason and not own_ok:
            raise refusal(layer, reason)
        x = _own_forward(layer, x) if reason else run_module(layer, x, backend)
        saved[k] = x
    return [saved[k] for k in outputs]


def _own_forward(m: nn.Module, x) -> Grid:
    """The module's own forward on an all-active dense grid (no sparse form needed)."""
    pyramid = x.pyramid
    if isinstance(x, ImageInput):
        img = x.image
        if not img.is_floating_point():  # (H, W, 3) uint8 BGR -> (1, 3, H, W) RGB in [0, 1]
            dtype = next(m.parameters()).dtype
            img = img.flip(-1).permute(2, 0, 1)[None].to(dtype) / 255
        hp, wp = pyramid.padded_shape
        x = Grid(F.pad(img, (0, wp - img.shape[-1], 0, hp - img.shape[-2])), 1, pyramid)
    out = m(x.x)
    return Grid(out, x.stride * x.x.shape[-1] // out.shape[-1], pyramid)


def densify(
    backend: SparseBackend, feats: list, boxes: torch.Tensor, fill: list | None = None
) -> list[torch.Tensor]:
    """Dense windows of every stem output over the same boxes.

    Args:
        backend: the backend that computed ``feats``.
        feats: :func:`run_stem`'s outputs.
        boxes: (B, 4) long (y0, x0, h, w) in stride-8 units, equal h and w.
        fill: per output, (C,) features for inactive sites, or None (zeros).

    Returns:
        One (B, C, h * 8 / s, w * 8 / s) channels-last batch per output of stride ``s``.
    """
    fill = fill or [None] * len(feats)
    out = []
    for f, fl in zip(feats, fill, strict=True):
        stride = f.level.stride if hasattr(f, "level") else f.stride
        out.append(backend.windows(f, boxes * (8 // stride), fl))
    return out


def flat_response(stem: Stem | nn.ModuleList, rgb: torch.Tensor) -> list[torch.Tensor]:
    """Stem features of a flat image of each colour, per stem output: the background fill.

    Sites outside the active set were skipped because they look like background; reading them
    as zeros gives the remainder features no real image produces. Filling them with the stem's
    response to a uniform image of the frame's mean colour recovers most of what a perfect
    mask lost (docs/performance.md).

    Computed exactly and for almost nothing by :class:`FlatBackend`: inside a flat image every
    site sees the same input, so each conv is its kernel's sum applied to one vector.

    Args:
        stem: the stem layers (BatchNorm folded with its running statistics, as in
            inference; differentiable, so training learns through the fill too).
        rgb: (B, 3) colours in [0, 1], RGB.

    Returns:
        One (B, C) tensor per stem output, one fill vector per colour.
    """
    return run_stem(stem, FlatBackend(), rgb, None)
