"""Necks that read (P3, P4, P5) and return three maps for the Detect head.

Both necks share one topology (YOLOv8's PAN: top-down, then bottom-up) and differ only in
their blocks: ``pan`` uses Ultralytics' C2f and Conv, ``slim`` uses VoVGSCSP and GSConv.
The Detect head reads the outputs of the last block at each stride (``td3``, ``bu4``,
``bu5``); none of the neck's blocks is left unused.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from ultralytics.nn.modules import C2f, Conv

from sparse_yolo.model.slim import GSConv, VoVGSCSP
from sparse_yolo.sparse.backends import activate, fold_conv, pixel_rows, pointwise_cat

# Ultralytics YOLOv8 head layer index -> this neck's attribute (for weight import).
PAN_LAYER_NAMES = {12: "td4", 15: "td3", 16: "down3", 18: "bu4", 19: "down4", 21: "bu5"}


class PathAggregationNeck(nn.Module):
    """YOLOv8-style PAN neck.

    Args:
        in_channels: channels of (P3, P4, P5).
        out_channels: channels of (N3, N4, N5) fed to the head; YOLOv8 uses
            (c(256), c(512), c(1024)) and the top-down P4 map also has c(512) channels.
        depth: blocks per CSP stage.
        kind: ``pan`` or ``slim``.
    """

    lean = False  # inference shortcuts on (set by SparseYOLO.set_lean_inference)

    def __init__(
        self,
        in_channels: tuple[int, int, int],
        out_channels: tuple[int, int, int],
        depth: int,
        kind: str = "pan",
    ) -> None:
        super().__init__()
        c3, c4, c5 = in_channels
        o3, o4, o5 = out_channels
        csp, down = _blocks(kind)
        self.kind = kind
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.td4 = csp(c5 + c4, o4, depth)
        self.td3 = csp(o4 + c3, o3, depth)
        self.down3 = down(o3, o3)
        self.bu4 = csp(o3 + o4, o4, depth)
        self.down4 = down(o4, o4)
        self.bu5 = csp(o4 + c5, o5, depth)
        self.out_channels = out_channels

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """[(B, c3, H/8, W/8), (B, c4, H/16, W/16), (B, c5, H/32, W/32)] -> three maps."""
        p3, p4, p5 = feats
        if self.lean and self.kind == "pan" and not torch.is_grad_enabled():
            return self._forward_inference(p3, p4, p5)
        t4 = self.td4(torch.cat((self.up(p5), p4), 1))
        n3 = self.td3(torch.cat((self.up(t4), p3), 1))
        n4 = self.bu4(torch.cat((self.down3(n3), t4), 1))
        n5 = self.bu5(torch.cat((self.down4(n4), p5), 1))
        return [n3, n4, n5]

    def _forward_inference(
        self, p3: torch.Tensor, p4: torch.Tensor, p5: torch.Tensor
    ) -> list[torch.Tensor]:
        """:meth:`forward` of the ``pan`` neck without writing the upsampled top-down maps or
        their concatenations (:func:`_c2f_on_upsampled_cat`); the same function."""
        t4 = _c2f_on_upsampled_cat(self.td4, p5, p4)
        n3 = _c2f_on_upsampled_cat(self.td3, t4, p3)
        n4 = self.bu4(torch.cat((self.down3(n3), t4), 1))
        n5 = self.bu5(torch.cat((self.down4(n4), p5), 1))
        return [n3, n4, n5]


def _c2f_on_upsampled_cat(block: C2f, coarse: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
    """``block(torch.cat((up(coarse), fine), 1))`` with ``up`` nearest 2x, for inference.

    The block's first conv is 1x1, so it commutes with nearest upsampling: the coarse part is
    convolved at its own resolution (a quarter of the pixels), bias included, and only that
    result is upsampled, straight into the accumulator the fine part adds to; neither the
    upsampled map nor the concatenation is written. The top-down P3 block on a 4K frame
    (2 threads): upsample + cat + first conv 115 -> 23 ms.
    """
    weight, bias = fold_conv(block.cv1)
    b, cc, h, w = coarse.shape
    low = torch.addmm(bias, pixel_rows(coarse), weight.flatten(1)[:, :cc].t())
    c = low.shape[1]
    acc = low.new_empty(b, h, 2, w, 2, c)
    acc.copy_(low.view(b, h, 1, w, 1, c))  # the upsampling: one broadcast write
    acc = acc.view(-1, c)
    acc = pointwise_cat(block.cv1, [pixel_rows(fine)], out=acc, offset=cc)
    x = activate(block.cv1, acc).view(b, 2 * h, 2 * w, c).permute(0, 3, 1, 2)
    y = list(x.chunk(2, 1))  # the rest of Ultralytics' C2f.forward
    y.extend(m(y[-1]) for m in block.m)
    return block.cv2(torch.cat(y, 1))


def _blocks(kind: str) -> tuple[Callable[..., nn.Module], Callable[[int, int], nn.Module]]:
    if kind == "pan":
        return (lambda c1, c2, n: C2f(c1, c2, n, shortcut=False)), (
            lambda c1, c2: Conv(c1, c2, 3, 2)
        )
    if kind == "slim":
        return (lambda c1, c2, n: VoVGSCSP(c1, c2, n)), (lambda c1, c2: GSConv(c1, c2, 3, 2))
    raise ValueError(f"unknown neck {kind!r}; known: pan, slim")
