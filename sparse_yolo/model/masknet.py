"""The learned foreground mask: a tiny CNN that predicts per-cell objectness.

It has to see small-object detail, so it never looks at a downsampled frame alone. Its input
is a set of cheap *full-resolution statistics* pooled over 4x4 pixel blocks (1/4 resolution):

* the block mean of B, G and R (3 channels),
* the block standard deviation of luma (1 channel): the texture a 4-6 px object leaves
  even where a 1/4-resolution image has averaged it away.

Both come from OpenCV ``INTER_AREA`` reductions of the uint8 frame (:func:`mask_features`),
the one implementation used in training and in CPU inference, so the net sees the same
numbers in both; :func:`mask_features_torch` computes them on the GPU for CUDA inference.
A few strided 3x3 convs then reach stride 16 and predict one logit per 16 px cell (coarser
or finer cells are max-pooled or repeated from it).

The net lives inside the detector checkpoint (``SparseYOLO.mask_net``) together with its
operating point, ``threshold``: the probability above which a cell is active, calibrated on
held-out images when the net is trained (``sparse-yolo distill``). ``--mask learned`` selects
it; the usual post-processing chain of :mod:`sparse_yolo.masks` (close, de-speck, dilate,
budget) follows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.nn.modules import Conv

from sparse_yolo.errors import SparseYoloError
from sparse_yolo.imageops import padded

MASK_NET_STRIDE = 16  # one logit per 16 px cell
FEATURE_STRIDE = 4  # statistics are pooled over 4x4 pixel blocks
N_FEATURES = 4
DEFAULT_THRESHOLD = 0.3


def mask_features(image: np.ndarray) -> np.ndarray:
    """Cheap full-resolution statistics of one frame.

    Args:
        image: (H, W, 3) uint8 BGR. It is zero-padded to a multiple of 32 first, like the
            cell grid of :func:`sparse_yolo.masks.cell_grid`.

    Returns:
        (4, Hp / 4, Wp / 4) float32: block means of B, G, R in [0, 1] and the block standard
        deviation of luma (grey levels / 64, so typically in [0, 1]).
    """
    h, w = image.shape[:2]
    s = FEATURE_STRIDE
    h4, w4 = -(-h // s) * s, -(-w // s) * s
    if (h4, w4) != (h, w):  # whole blocks only; the rest of the padding is added at 1/4
        image = cv2.copyMakeBorder(image, 0, h4 - h, 0, w4 - w, cv2.BORDER_CONSTANT, value=0)
    size = (w4 // s, h4 // s)
    mean = cv2.resize(image, size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    grey_mean = cv2.resize(grey.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    sq = grey.astype(np.uint16)
    np.multiply(sq, sq, out=sq)
    sq_mean = cv2.resize(sq, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    std = np.sqrt(np.maximum(sq_mean - grey_mean * grey_mean, 0.0)) / 64.0
    feats = np.concatenate([mean.transpose(2, 0, 1), std[None]], 0)
    hp, wp = padded(h) // s, padded(w) // s
    return np.pad(feats, ((0, 0), (0, hp - feats.shape[1]), (0, wp - feats.shape[2])))


def mask_features_torch(image: torch.Tensor) -> torch.Tensor:
    """:func:`mask_features` computed by torch on the image's device (CUDA inference).

    Same statistics with exact (unrounded) block means: it agrees with the OpenCV version to
    about 0.5 / 255 in the means and 0.02 in the luma deviation, far below what the net
    resolves, and saves the ~40 ms single-threaded OpenCV pass per 4K frame on a GPU host.

    Args:
        image: (H, W, 3) uint8 BGR tensor.

    Returns:
        (4, Hp / 4, Wp / 4) float32 on the same device.
    """
    h, w = image.shape[:2]
    s = FEATURE_STRIDE
    hp, wp = padded(h), padded(w)
    x = image.permute(2, 0, 1).float()
    x = F.pad(x, (0, wp - w, 0, hp - h))
    b, g, r = x[0], x[1], x[2]
    grey = torch.floor((b * 1868 + g * 9617 + r * 4899 + 8192) / 16384)  # OpenCV's fixed point
    mean = F.avg_pool2d(x[None], s)[0] / 255.0
    grey_mean = F.avg_pool2d(grey[None, None], s)[0, 0]
    sq_mean = F.avg_pool2d((grey * grey)[None, None], s)[0, 0]
    std = (sq_mean - grey_mean * grey_mean).clamp_min(0).sqrt() / 64.0
    return torch.cat([mean, std[None]], 0)


def batch_features(images: list[np.ndarray], device: torch.device | str = "cpu") -> torch.Tensor:
    """Stack :func:`mask_features` of equally sized frames into a (B, 4, H/4, W/4) tensor."""
    feats = np.stack([mask_features(im) for im in images])
    return torch.from_numpy(feats).to(device)


class MaskNet(nn.Module):
    """Tiny CNN: (B, 4, H/4, W/4) statistics -> (B, 1, H/16, W/16) objectness logits.

    Args:
        width: channels of the stride-16 layers.

    Attributes:
        threshold: () float buffer, the calibrated probability threshold of active cells.
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.width = width
        self.body = nn.Sequential(
            Conv(N_FEATURES, width // 2, 3, 2),  # 1/8
            Conv(width // 2, width, 3, 2),  # 1/16
            Conv(width, width, 3, 1),
            Conv(width, width, 3, 1, d=2),  # context: about 10 cells across
        )
        self.out = nn.Conv2d(width, 1, 1)
        nn.init.constant_(self.out.bias, -2.0)  # prior: most cells are background
        self.register_buffer("threshold", torch.tensor(DEFAULT_THRESHOLD))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, 4, h, w) statistics, h and w multiples of 4 -> (B, 1, h / 4, w / 4) logits."""
        return self.out(self.body(feats))

    @torch.no_grad()
    def cell_probs(self, image: np.ndarray, cell: int) -> np.ndarray:
        """Probability that each cell of one frame holds (part of) an object.

        Args:
            image: (H, W, 3) uint8 BGR.
            cell: cell edge in pixels (8, 16 or 32).

        Returns:
            (Hc, Wc) float32 on the grid of :func:`sparse_yolo.masks.cell_grid`.
        """
        device = next(self.parameters()).device
        if device.type == "cuda":
            feats = mask_features_torch(torch.from_numpy(image).to(device))[None]
        else:
            feats = torch.from_numpy(mask_features(image))[None]
        was_training = self.training
        self.eval()
        try:
            probs = self(feats).sigmoid()
        finally:
            self.train(was_training)
        return logits_to_cells(probs, cell)[0, 0].float().cpu().numpy()


def logits_to_cells(maps: torch.Tensor, cell: int) -> torch.Tensor:
    """Resample (B, 1, H/16, W/16) net outputs to a ``cell`` px grid (max over merged cells)."""
    if cell == MASK_NET_STRIDE:
        return maps
    if cell > MASK_NET_STRIDE:
        return F.max_pool2d(maps, cell // MASK_NET_STRIDE)
    r = MASK_NET_STRIDE // cell
    return maps.repeat_interleave(r, -2).repeat_interleave(r, -1)


MASK_NET_FORMAT = "sparse-yolo-masknet"


def save_mask_net(net: MaskNet, path: str | Path, **extra: Any) -> None:
    """Write a mask net alone (weights and calibrated threshold) atomically: a few hundred
    KB that ``--mask learned:PATH`` adds to any detector."""
    from sparse_yolo.atomic import atomic_open  # noqa: PLC0415

    payload = {"format": MASK_NET_FORMAT, "width": net.width, "state_dict": net.state_dict()}
    with atomic_open(path, binary=True) as f:
        torch.save({**payload, **extra}, f)


def load_mask_net(path: str | Path) -> MaskNet | None:
    """The net of a :func:`save_mask_net` file, or None when ``path`` is another checkpoint.

    Raises:
        SparseYoloError: unreadable file.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise SparseYoloError(f"not a PyTorch checkpoint ({type(exc).__name__})", path) from exc
    if not (isinstance(ckpt, dict) and ckpt.get("format") == MASK_NET_FORMAT):
        return None
    net = MaskNet(ckpt["width"])
    net.load_state_dict(ckpt["state_dict"])
    return net.eval()


def build_mask_net() -> MaskNet:
    """The mask net every checkpoint with ``ModelConfig.mask_net`` carries."""
    return MaskNet()


def cell_targets(
    boxes: np.ndarray | torch.Tensor, shape: tuple[int, int], cell: int
) -> torch.Tensor:
    """Objectness target of each cell: 1 where any box overlaps it.

    Args:
        boxes: (N, 4) xyxy in pixels of the frame the grid covers.
        shape: (Hc, Wc) cells.
        cell: cell edge in pixels.

    Returns:
        (Hc, Wc) float32 in {0, 1}.
    """
    out = torch.zeros(shape, dtype=torch.float32)
    b = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4).cpu()
    if not len(b):
        return out
    lo = (b[:, :2] / cell).floor().long()
    hi = (b[:, 2:] / cell).ceil().long()
    lo[:, 0].clamp_(0, shape[1])
    lo[:, 1].clamp_(0, shape[0])
    hi[:, 0].clamp_(0, shape[1])
    hi[:, 1].clamp_(0, shape[0])
    for (x0, y0), (x1, y1) in zip(lo.tolist(), hi.tolist(), strict=False):
        out[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)] = 1.0
    return out


def mask_net_loss(
    logits: torch.Tensor, targets: torch.Tensor, pos_weight: float = 2.0
) -> torch.Tensor:
    """Binary cross-entropy of (B, 1, h, w) logits against (B, h, w) cell targets.

    Positives weigh ``pos_weight`` times as much as background: a missed object cell costs
    recall, a false active cell only costs a little compute.
    """
    weight = torch.as_tensor(pos_weight, device=logits.device, dtype=logits.dtype)
    return F.binary_cross_entropy_with_logits(logits[:, 0], targets.to(logits), pos_weight=weight)
