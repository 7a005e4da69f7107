"""Walk YOLOv8 layers 0-4 (Conv, Conv, C2f, Conv, C2f) with a sparse backend.

The layers are plain Ultralytics modules; this walker only decides which backend op
each of their convs is, so every backend computes the function of the same parameters.
"""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.nn.modules import C2f, Conv

from sparse_yolo.sparse.active import ActivePyramid
from sparse_yolo.sparse.backends import SparseBackend


def c2f(m: C2f, x, backend: SparseBackend):
    """Ultralytics ``C2f.forward`` expressed in backend ops."""
    parts = backend.split(backend.conv(m.cv1, x), 2)
    for b in m.m:
        h = backend.conv(b.cv2, backend.conv(b.cv1, parts[-1]))
        parts.append(backend.add(parts[-1], h) if b.add else h)
    return backend.conv(m.cv2, backend.cat(parts))


def run_stem(
    layers: nn.ModuleList | list[nn.Module],
    backend: SparseBackend,
    image: torch.Tensor,
    pyramid: ActivePyramid,
):
    """Run the stem on the active cells of one image.

    Args:
        layers: YOLOv8 layers 0-4, ending at stride 8.
        backend: which kernels to use.
        image: (H, W, 3) uint8 BGR, H and W at most ``pyramid.padded_shape``.
        pyramid: active cells of the image.

    Returns:
        The backend's stride-8 features (``Rows`` or ``Grid``).
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


def receptive_radius(layers: nn.ModuleList | list[nn.Module]) -> int:
    """Pixels a stride-8 output of ``layers`` sees on each side of its centre.

    Only the top-level strided convs change the stride, so every conv adds
    ``(kernel // 2) * stride`` wherever it sits inside its layer.
    """
    radius, stride = 0, 1
    for layer in layers:
        for conv in layer.modules():
            if isinstance(conv, nn.Conv2d):
                radius += (conv.kernel_size[0] // 2) * stride
                stride *= conv.stride[0]
    return radius


def flat_response(layers: nn.ModuleList | list[nn.Module], rgb: torch.Tensor) -> torch.Tensor:
    """Stride-8 stem features of a flat image of each colour: the background fill.

    Sites outside the active set were skipped because they look like background; reading them
    as zeros gives the remainder features no real image produces (measured: a perfect mask
    still lost 11% of the dense detections on a cluttered 4K frame). Filling them with the
    stem's response to a uniform patch of the frame's mean colour recovered most of it.

    Args:
        layers: YOLOv8 layers 0-4 (their own dense forward; differentiable).
        rgb: (B, 3) colours in [0, 1], RGB.

    Returns:
        (B, C) features, one fill vector per colour.
    """
    size = 16 * (receptive_radius(layers) // 8 + 2)  # the centre site never sees padding
    x = rgb[:, :, None, None].expand(-1, -1, size, size)
    x = x.contiguous(memory_format=torch.channels_last)
    # BatchNorm uses its running statistics: a batch of flat patches must neither normalise
    # itself nor leak into the statistics while the model trains.
    norms = [m for layer in layers for m in layer.modules() if isinstance(m, nn.BatchNorm2d)]
    modes = [m.training for m in norms]
    for m in norms:
        m.eval()
    try:
        for layer in layers:
            x = layer(x)
    finally:
        for m, mode in zip(norms, modes, strict=True):
            m.train(mode)
    return x[:, :, x.shape[2] // 2, x.shape[3] // 2]
