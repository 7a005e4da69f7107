"""Small image and box conversions that every stage shares: one definition each.

Images are (H, W, 3) uint8 BGR arrays (OpenCV's order) until they enter a network, which
takes (B, 3, H, W) RGB in [0, 1]. Importable without torch (the masks need ``padded``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

PAD_TO = 32  # images are padded to a multiple of the model's largest stride


def padded(size: int, multiple: int = PAD_TO) -> int:
    """``size`` rounded up to a multiple of ``multiple``."""
    return -(-size // multiple) * multiple


def bgr_to_batch(
    image: np.ndarray | torch.Tensor,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    pad: int = PAD_TO,
) -> torch.Tensor:
    """(H, W, 3) uint8 BGR -> (1, 3, Hp, Wp) RGB in [0, 1], zero-padded on the bottom and
    right to multiples of ``pad`` px (0: not padded), so pixel coordinates are unchanged."""
    import torch  # noqa: PLC0415
    import torch.nn.functional as F  # noqa: PLC0415

    x = torch.from_numpy(np.ascontiguousarray(image)) if isinstance(image, np.ndarray) else image
    x = x.to(device).permute(2, 0, 1).flip(0)[None].to(dtype or torch.float32) / 255
    if not pad:
        return x
    h, w = x.shape[-2:]
    return F.pad(x, (0, padded(w, pad) - w, 0, padded(h, pad) - h))


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) top-left corner and size -> (N, 4) corners, same units."""
    boxes = np.asarray(boxes)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:4]], 1)


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) centre and size -> (N, 4) corners, same units."""
    boxes = np.asarray(boxes)
    half = boxes[:, 2:4] / 2
    return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], 1)
