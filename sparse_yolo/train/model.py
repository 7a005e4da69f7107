"""SparseYOLO dressed as an Ultralytics ``DetectionModel``, so its trainer can train it.

Ultralytics' trainer, validator, EMA, checkpointing and ``v8DetectionLoss`` only need a few
things from a model: ``nc``, ``names``, ``args``, ``stride``, ``model[-1]`` (the Detect head),
``loss(batch, preds)`` and a forward that returns the head's raw output in training and
``(decoded, raw)`` in eval. :class:`SparseDetectionModel` provides exactly those around one
:class:`~sparse_yolo.model.yolo.SparseYOLO` (``.net``), whose state dict is the sparse-yolo
checkpoint's.

Training computes what sparse inference computes. For every (augmented) batch image the
cell mask is computed from its uint8 BGR pixels by the same :mod:`sparse_yolo.masks` code as
in inference, and ``SparseYOLO.forward(x, cells)`` runs the stem under the sparse active-set
rules through the ``dense`` backend, the reference that computes the same function as
``gather`` and ``spconv`` but supports autograd. (``gather`` is inference-only: its
index-gather kernels have no backward, and training on GPU batches is dense work anyway.)

BatchNorm in the stem: batch statistics over a masked grid would count the zeroed inactive
sites, so with any mask but ``all`` the stem's BatchNorm layers keep their running statistics
(eval mode) while their affine parameters and every conv weight train. The stem then computes
in training exactly the function it computes in sparse inference.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from ultralytics.nn.tasks import DetectionModel

from sparse_yolo.config import MaskConfig
from sparse_yolo.masks import make_mask
from sparse_yolo.model.graph import fuse_batchnorm
from sparse_yolo.model.masknet import MASK_NET_STRIDE, batch_features, cell_targets, mask_net_loss
from sparse_yolo.model.yolo import SparseYOLO


def to_uint8_bgr(images: torch.Tensor) -> list[np.ndarray]:
    """(B, 3, H, W) RGB float in [0, 1] -> B (H, W, 3) uint8 BGR arrays (inference input)."""
    u8 = (images.detach().float() * 255).round_().clamp_(0, 255).to(torch.uint8)
    arr = u8.flip(1).permute(0, 2, 3, 1).cpu().numpy()
    return [np.ascontiguousarray(a) for a in arr]


class SparseDetectionModel(DetectionModel):
    """Ultralytics-facing wrapper of a SparseYOLO.

    Args:
        net: the model to train; its weights are this wrapper's weights.
        mask: the cell mask applied to every batch image (``all`` trains the dense function).
    """

    def __init__(self, net: SparseYOLO, mask: MaskConfig | None = None) -> None:
        nn.Module.__init__(self)  # DetectionModel.__init__ would parse an Ultralytics YAML
        self.net = net
        self.mask_cfg = mask or MaskConfig()
        cfg = net.cfg
        self.yaml = {
            "channels": 3,
            "nc": cfg.nc,
            "scale": cfg.scale,
            "arch": cfg.arch,
            "sparse_neck": cfg.neck,
        }
        self.nc = cfg.nc
        self.names = dict(net.names)
        self.stride = net.stride
        self.inplace = True
        self.save: list[int] = []
        self.criterion = None

    @property
    def model(self) -> nn.ModuleList:
        """Ultralytics reads ``model[-1]`` as the Detect head (loss, strides, attributes)."""
        return nn.ModuleList([self.net.head])

    # ------------------------------------------------------------------ forward
    def forward(self, x, *args, **kwargs):
        """A batch dict gives ``(loss, loss_items)``; an image tensor gives predictions."""
        if isinstance(x, dict):
            return self.loss(x, *args, **kwargs)
        return self.predict(x, *args, **kwargs)

    def predict(self, x: torch.Tensor, profile=False, augment=False, embed=None, **kwargs):
        """Run the sparse model on a (B, 3, H, W) RGB batch in [0, 1], H and W multiples of 32.

        Returns:
            The Detect head's output: the raw dict in training, ``(decoded, raw)`` in eval.
        """
        return self._run(x, to_uint8_bgr(x) if self._needs_pixels() else None)

    def _run(self, x: torch.Tensor, pixels: list[np.ndarray] | None):
        cells = self.batch_cells(pixels, x.device) if self.mask_cfg.name != "all" else None
        return self.net(x, cells=cells, cell=self.mask_cfg.cell)

    def _needs_pixels(self) -> bool:
        return self.mask_cfg.name != "all"

    def batch_cells(self, pixels: list[np.ndarray], device: torch.device) -> torch.Tensor:
        """(B, H / cell, W / cell) bool active cells of uint8 BGR batch images."""
        mask = make_mask(self.mask_cfg, mask_net=self.net.mask_net)
        cells = np.stack([mask(im).cells for im in pixels])
        return torch.from_numpy(cells).to(device)

    # --------------------------------------------------------------------- loss
    def loss(self, batch: dict, preds=None):
        """Detection loss (``v8DetectionLoss``), plus the mask net's loss when there is one.

        Returns:
            (loss, items): loss summed over the batch, per term (box, cls, dfl[, mask]), and
            the detached per-term dict the trainer logs.
        """
        if self.criterion is None:
            self.criterion = self.init_criterion()
        img = batch["img"]
        with_net = self.net.mask_net is not None
        pixels = to_uint8_bgr(img) if (with_net or self._needs_pixels()) else None
        if preds is None:
            preds = self._run(img, pixels)
        loss, items = self.criterion(preds, batch)
        if not with_net:
            return loss, items
        mask_loss = self.mask_loss(batch, pixels)
        items = {**items, "mask_loss": mask_loss.detach()}
        return torch.cat([loss, (mask_loss * img.shape[0]).view(1)]), items

    def mask_loss(self, batch: dict, pixels: list[np.ndarray]) -> torch.Tensor:
        """BCE of the mask net against the cells the batch's labelled boxes overlap."""
        img = batch["img"]
        b, _, h, w = img.shape
        feats = batch_features(pixels, img.device).to(img.dtype)
        logits = self.net.mask_net(feats)
        targets = label_cell_targets(batch, b, (h, w)).to(img.device)
        return mask_net_loss(logits.float(), targets)

    # ------------------------------------------------------------ train / fuse
    def train(self, mode: bool = True) -> SparseDetectionModel:
        """Train mode, with the stem's BatchNorm frozen whenever a sparse mask is applied."""
        super().train(mode)
        if mode and self.mask_cfg.name != "all":
            for m in self.net.stem.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def fuse(self, verbose: bool = True, imgsz: int = 640) -> SparseDetectionModel:
        """Fold every Conv's BatchNorm (the sparse backends accept fused Convs)."""
        fuse_batchnorm(self.net)
        return self


def label_cell_targets(batch: dict, n: int, hw: tuple[int, int]) -> torch.Tensor:
    """(B, H / 16, W / 16) mask-net targets from an Ultralytics batch's normalised boxes.

    Args:
        batch: ``bboxes`` (N, 4) normalised xywh and ``batch_idx`` (N,) image index.
        n: batch size.
        hw: (H, W) of the batch images in pixels.
    """
    h, w = hw
    boxes = batch["bboxes"].detach().float().cpu()
    idx = batch["batch_idx"].detach().cpu().long().view(-1)
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    xyxy = torch.cat([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], 1) * scale
    shape = (h // MASK_NET_STRIDE, w // MASK_NET_STRIDE)
    return torch.stack([cell_targets(xyxy[idx == i], shape, MASK_NET_STRIDE) for i in range(n)])
