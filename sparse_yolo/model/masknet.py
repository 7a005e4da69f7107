"""The learned foreground mask: a small CNN that predicts per-cell objectness.

Its input is the frame itself at half resolution (OpenCV ``INTER_AREA``, :func:`mask_features`),
so the net sees colour and shape at object scale (a 6 px person is still 3 px) for a fraction
of the cost of any full-resolution pass: a 2x2-block layer and two strided 3x3 convs reach the
16 px cell grid, two more (one dilated) add context, and a 1x1 conv predicts one logit per
16 px cell (coarser or finer cells are max-pooled or repeated from it). :func:`batch_features`
is the one implementation used in training and in CPU inference, so the net sees the same
numbers in both; :func:`mask_features_torch` computes them on the GPU for CUDA inference.

The net lives inside the detector checkpoint (``SparseYOLO.mask_net``) or alone in a small file
(:func:`save_mask_net`), together with its operating point, ``threshold``: the probability
above which a cell is active, calibrated on held-out frames when the net is trained.
``--mask learned`` selects it; the usual post-processing chain of :mod:`sparse_yolo.masks`
(close, de-speck, dilate, budget) follows. It has no image-wide statistics: a cell's score
depends on the pixels around it only, so it does not depend on ``--tile``.
"""

from __future__ import annotations

import copy
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
N_INPUT = 6  # channels of the net's input: 2 horizontally adjacent half-resolution B, G, R
ARCH_VERSION = 3  # input and layers of the net; version 2 is converted on load, others refused
DEFAULT_THRESHOLD = 0.3


def half_frame(image: np.ndarray) -> np.ndarray:
    """The frame at half resolution (OpenCV ``INTER_AREA``), padded to half the grid of a frame
    padded to a multiple of 32 (like :func:`sparse_yolo.masks.cell_grid`).

    The padding mirrors the frame (OpenCV ``BORDER_REFLECT_101``): a black band would be an
    edge the net never saw in training and marks the cells along it.

    Args:
        image: (H, W, 3) uint8 BGR.

    Returns:
        (Hp / 2, Wp / 2, 3) uint8 BGR.
    """
    h, w = image.shape[:2]
    h2, w2 = -(-h // 2) * 2, -(-w // 2) * 2
    if (h2, w2) != (h, w):  # whole 2 x 2 blocks only; the rest is padded at 1/2
        image = cv2.copyMakeBorder(image, 0, h2 - h, 0, w2 - w, cv2.BORDER_REPLICATE)
    small = cv2.resize(image, (w2 // 2, h2 // 2), interpolation=cv2.INTER_AREA)
    hp, wp = padded(h) // 2, padded(w) // 2
    pad_y, pad_x = hp - small.shape[0], wp - small.shape[1]
    mode = (
        cv2.BORDER_REFLECT_101 if min(small.shape[:2]) > max(pad_y, pad_x) else cv2.BORDER_REPLICATE
    )
    return cv2.copyMakeBorder(small, 0, pad_y, 0, pad_x, mode)


def mask_features(image: np.ndarray) -> np.ndarray:
    """The net's input values: :func:`half_frame` scaled to [0, 1].

    Returns:
        (Hp / 2, Wp / 2, 3) float32, channels last (B, G, R).
    """
    return np.multiply(half_frame(image), np.float32(1 / 255), dtype=np.float32)


def _as_input(halves: torch.Tensor) -> torch.Tensor:
    """(B, h, w, 3) half frames -> (B, 6, h, w / 2) net input, a view: each pair of
    horizontally adjacent pixels is one position of 6 channels, ``dx * 3 + c``.

    The first layer is then a (2, 1) stride-(2, 1) convolution over 6 channels-last channels,
    which CPU kernels run at full speed, where a 2 x 2 convolution over 3 channels (or any
    regrouping copy of the frame into 2 x 2 blocks) costs several times as much.
    """
    b, h, w, _ = halves.shape
    return halves.view(b, h, w // 2, N_INPUT).permute(0, 3, 1, 2)


def mask_features_torch(image: torch.Tensor) -> torch.Tensor:
    """The net input of one frame computed by torch on the image's device (CUDA inference).

    Exact (unrounded) 2 x 2 means: they agree with OpenCV's rounded ones to 0.5 / 255.

    Args:
        image: (H, W, 3) uint8 BGR tensor.

    Returns:
        (1, 6, Hp / 2, Wp / 4) float32 on the same device.
    """
    h, w = image.shape[:2]
    x = image.permute(2, 0, 1).float()[None]
    x = F.pad(x, (0, w % 2, 0, h % 2), mode="replicate")
    half = F.avg_pool2d(x, 2) / 255.0  # (1, 3, H / 2, W / 2), rounded up
    pad_y, pad_x = padded(h) // 2 - half.shape[2], padded(w) // 2 - half.shape[3]
    mode = "reflect" if min(half.shape[2:]) > max(pad_y, pad_x) else "replicate"
    half = F.pad(half, (0, pad_x, 0, pad_y), mode=mode)  # as half_frame's padding
    return _as_input(half.permute(0, 2, 3, 1).contiguous())


def batch_features(images: list[np.ndarray], device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, 6, Hp/2, Wp/4) float32 net input of equally sized (H, W, 3) uint8 BGR frames, in
    channels-last memory (which the CPU convolutions prefer)."""
    halves = [half_frame(im) for im in images]
    halves = halves[0][None] if len(halves) == 1 else np.stack(halves)
    x = torch.from_numpy(halves).to(device).float().mul_(1 / 255)
    return _as_input(x)


def upgrade_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert a version-2 net's weights to this version's input layout, exactly.

    Version 2 read 12 channels ``(2 dy + dx) * 3 + c`` per 2 x 2 half-resolution block through
    a 1 x 1 convolution; this version reads 6 channels ``dx * 3 + c`` through a (2, 1) kernel
    over ``dy``. Same weights, rearranged; other states are returned unchanged.
    """
    w = state.get("body.0.conv.weight")
    if w is None or tuple(w.shape[1:]) != (2 * N_INPUT, 1, 1):
        return state
    o = w.shape[0]
    return {**state, "body.0.conv.weight": w.view(o, 2, N_INPUT).permute(0, 2, 1)[..., None]}


class MaskNet(nn.Module):
    """Small CNN: (B, 6, H/2, W/4) :func:`batch_features` -> (B, 1, H/16, W/16) logits.

    Args:
        width: channels of the stride-16 layers (the stride-4 and stride-8 layers have a
            quarter and a half of them).

    Attributes:
        threshold: () float buffer, the calibrated probability threshold of active cells.
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.width = width
        relu = nn.ReLU(inplace=True)  # SiLU's exp costs as much as the convolutions here
        self.body = nn.Sequential(
            Conv(N_INPUT, width // 4, (2, 1), (2, 1), p=0, act=relu),  # 2x2 conv at 1/2 -> 1/4
            Conv(width // 4, width // 2, 3, 2, act=relu),  # 1/8
            Conv(width // 2, width, 3, 2, act=relu),  # 1/16: the cell grid
            Conv(width, width, 3, 1, act=relu),
            Conv(width, width, 3, 1, d=2, act=relu),  # context: about 7 cells across
        )
        for m in self.body.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.1  # short trainings: running statistics settle in ~50 steps
        self.out = nn.Conv2d(width, 1, 1)
        nn.init.constant_(self.out.bias, -2.0)  # prior: most cells are background
        self.register_buffer("threshold", torch.tensor(DEFAULT_THRESHOLD))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, 6, 2h, w) input, h and w multiples of 4 -> (B, 1, h / 4, w / 4) logits."""
        return self.out(self.body(feats))

    def for_inference(self) -> MaskNet:
        """A copy in eval mode with every BatchNorm folded into its convolution (same
        outputs, one pass less over each feature map); it cannot be trained further."""
        from ultralytics.utils.torch_utils import fuse_conv_and_bn  # noqa: PLC0415

        net = copy.deepcopy(self).eval()
        for m in net.body:
            if hasattr(m, "bn"):
                m.conv = fuse_conv_and_bn(m.conv, m.bn)
                delattr(m, "bn")
                m.forward = m.forward_fuse
        return net

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
            feats = mask_features_torch(torch.from_numpy(image).to(device))
        else:
            feats = batch_features([image])
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

    payload = {
        "format": MASK_NET_FORMAT,
        "version": ARCH_VERSION,
        "width": net.width,
        "state_dict": net.state_dict(),
    }
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
    if ckpt.get("version", 1) not in (2, ARCH_VERSION):
        raise SparseYoloError(
            f"mask net of version {ckpt.get('version', 1)}; this sparse-yolo reads version "
            f"{ARCH_VERSION} (retrain it with tools/mask_learn.py)",
            path,
        )
    net = MaskNet(ckpt["width"])
    net.load_state_dict(upgrade_state_dict(ckpt["state_dict"]))
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
