"""Walk YOLOv8 layers 0-4 (Conv, Conv, C2f, Conv, C2f) with a sparse backend.

The layers are plain Ultralytics modules; this walker only decides which backend op
each of their convs is, so every backend computes the function of the same parameters.
"""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.nn.modules import C2f, Conv

from sparse_yolo.sparse.active import ActivePyramid
from sparse_yolo.sparse.backends import FlatBackend, SparseBackend


def c2f(m: C2f, x, backend: SparseBackend):
    """Ultralytics ``C2f.forward`` expressed in backend ops."""
    parts = backend.split(backend.conv(m.cv1, x), 2)
    for b in m.m:
        h = backend.conv(b.cv2, backend.conv(b.cv1, parts[-1]))
        parts.append(backend.add(parts[-1], h) if b.add else h)
    return backend.conv_cat(m.cv2, parts)


def run_stem(
    layers: nn.ModuleList | list[nn.Module],
    backend: SparseBackend,
    image: torch.Tensor,
    pyramid: ActivePyramid | None,
):
    """Run the stem on the active cells of one image.

    Args:
        layers: YOLOv8 layers 0-4, ending at stride 8.
        backend: which kernels to use.
        image: (H, W, 3) uint8 BGR, H and W at most ``pyramid.padded_shape`` (the dense
            backend also takes a float batch; the flat backend (B, 3) colours).
        pyramid: active cells of the image (None for the flat backend).

    Returns:
        The backend's stride-8 features (``Rows``, ``Grid`` or flat vectors).
    """
    x = backend.enter(image, pyramid)
    for layer in layers:
        if isinstance(layer, C2f):
            x = c2f(layer, x, backend)
        elif isinstance(layer, Conv):
            x = backend.conv(layer, x)
        else:
            raise TypeError(f"sparse stem cannot run {type(layer).__name__}")
    return x


def flat_response(layers: nn.ModuleList | list[nn.Module], rgb: torch.Tensor) -> torch.Tensor:
    """Stride-8 stem features of a flat image of each colour: the background fill.

    Sites outside the active set were skipped because they look like background; reading them
    as zeros gives the remainder features no real image produces (measured: a perfect mask
    still lost 11% of the dense detections on a cluttered 4K frame). Filling them with the
    stem's response to a uniform image of the frame's mean colour recovered most of it.

    Computed exactly and for almost nothing by :class:`FlatBackend`: inside a flat image every
    site sees the same input, so each conv is its kernel's sum applied to one vector.

    Args:
        layers: YOLOv8 layers 0-4 (BatchNorm folded with its running statistics, as in
            inference; differentiable, so training learns through the fill too).
        rgb: (B, 3) colours in [0, 1], RGB.

    Returns:
        (B, C) features, one fill vector per colour.
    """
    return run_stem(layers, FlatBackend(), rgb, None)
