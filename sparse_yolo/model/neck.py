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
        t4 = self.td4(torch.cat((self.up(p5), p4), 1))
        n3 = self.td3(torch.cat((self.up(t4), p3), 1))
        n4 = self.bu4(torch.cat((self.down3(n3), t4), 1))
        n5 = self.bu5(torch.cat((self.down4(n4), p5), 1))
        return [n3, n4, n5]


def _blocks(kind: str) -> tuple[Callable[..., nn.Module], Callable[[int, int], nn.Module]]:
    if kind == "pan":
        return (lambda c1, c2, n: C2f(c1, c2, n, shortcut=False)), (
            lambda c1, c2: Conv(c1, c2, 3, 2)
        )
    if kind == "slim":
        return (lambda c1, c2, n: VoVGSCSP(c1, c2, n)), (lambda c1, c2: GSConv(c1, c2, 3, 2))
    raise ValueError(f"unknown neck {kind!r}; known: pan, slim")
