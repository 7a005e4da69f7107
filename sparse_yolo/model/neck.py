"""Necks: the checkpoint's own (``pan``) layers, or the trainable ``slim`` neck.

``pan`` is :class:`GraphNeck`: the checkpoint's head-section layers (everything between the
backbone and Detect: YOLOv8's PAN, YOLO11's and YOLO26's C3k2 PAN, P2 and P6 variants) run
with Ultralytics' routing. ``slim`` is :class:`PathAggregationNeck`: YOLOv8's PAN topology
(top-down, then bottom-up) built from VoVGSCSP and GSConv, driven by the backbone's own
P3/P4/P5 channels and the Detect head's input channels; it starts fresh and is trained by
distillation. Both take the backbone outputs the head section reads and return the maps
the Detect head reads.
"""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.nn.modules import C2f, C3k2, Concat

from sparse_yolo.model.graph import run_layers, sources
from sparse_yolo.model.slim import GSConv, VoVGSCSP
from sparse_yolo.sparse.ops import activate, fold_conv, pixel_rows, pointwise_cat


class GraphNeck(nn.Module):
    """The checkpoint's head-section layers as a neck.

    Args:
        layers: the layers between the backbone and Detect (Ultralytics' ``.f``/``.i``).
        inputs: backbone layer indices the section reads, in the order of ``forward``'s list.
        outputs: layer indices the Detect head reads.
    """

    kind = "pan"
    lean = False  # inference shortcuts on (set by SparseYOLO.set_lean_inference)

    def __init__(self, layers: list[nn.Module], inputs: tuple[int, ...], outputs: tuple[int, ...]):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.inputs, self.outputs = tuple(inputs), tuple(outputs)
        read = {j for m in self.layers for j in sources(m)} | set(outputs)
        self.keep = read
        self._plan = self._fusable()

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Backbone outputs (one per ``inputs``) -> the maps Detect reads (one per ``outputs``)."""
        saved = dict(zip(self.inputs, feats, strict=True))
        if self.lean and not torch.is_grad_enabled():
            self._run_lean(saved)
        else:
            run_layers(self.layers, saved, self.keep)
        return [saved[i] for i in self.outputs]

    def _fusable(self) -> dict[int, int]:
        """Upsample (nearest 2x) -> Concat(upsampled, skip) -> C2f/C3k2 (1x1 cv1) chains
        whose upsampled map and concatenation nothing else reads: position of the Upsample
        -> the skip's layer index."""
        readers: dict[int, list[int]] = {}
        for m in self.layers:
            for j in sources(m):
                readers.setdefault(j, []).append(m.i)
        plan = {}
        ms = list(self.layers)
        for k in range(len(ms) - 2):
            up, cat, block = ms[k : k + 3]
            chain = (
                isinstance(up, nn.Upsample)
                and up.mode == "nearest"
                and float(up.scale_factor or 0) == 2.0
                and type(cat) is Concat
                and cat.d == 1
                and type(block) in (C2f, C3k2)
                and block.cv1.conv.kernel_size == (1, 1)
            )
            if not chain or len(sources(cat)) != 2 or sources(cat)[0] != up.i:
                continue
            private = readers.get(up.i) == [cat.i] and readers.get(cat.i) == [block.i]
            if private and not {up.i, cat.i} & set(self.outputs):
                plan[k] = sources(cat)[1]
        return plan

    def _run_lean(self, saved: dict[int, torch.Tensor]) -> None:
        """:func:`run_layers` with each fusable chain run by :func:`c2f_on_upsampled_cat`."""
        ms = list(self.layers)
        x, k = None, 0
        while k < len(ms):
            if k in self._plan:
                up, m = ms[k], ms[k + 2]
                coarse = saved.get(sources(up)[0], x)
                x = c2f_on_upsampled_cat(m, coarse, saved[self._plan[k]])
                k += 3
            else:
                m = ms[k]
                src = [saved.get(j, x) for j in sources(m)]
                x = m(src[0] if isinstance(m.f, int) else src)
                k += 1
            if m.i in self.keep:
                saved[m.i] = x


class PathAggregationNeck(nn.Module):
    """YOLOv8-style PAN topology from VoVGSCSP and GSConv blocks: the ``slim`` neck.

    Args:
        in_channels: channels of the backbone's (P3, P4, P5).
        out_channels: channels of (N3, N4, N5) fed to the Detect head (the checkpoint's
            head inputs, so the head imports unchanged); the top-down P4 map has N4's.
        depth: blocks per CSP stage.
    """

    kind = "slim"
    lean = False

    def __init__(
        self, in_channels: tuple[int, int, int], out_channels: tuple[int, int, int], depth: int
    ) -> None:
        super().__init__()
        c3, c4, c5 = in_channels
        o3, o4, o5 = out_channels
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.td4 = VoVGSCSP(c5 + c4, o4, depth)
        self.td3 = VoVGSCSP(o4 + c3, o3, depth)
        self.down3 = GSConv(o3, o3, 3, 2)
        self.bu4 = VoVGSCSP(o3 + o4, o4, depth)
        self.down4 = GSConv(o4, o4, 3, 2)
        self.bu5 = VoVGSCSP(o4 + c5, o5, depth)
        self.out_channels = out_channels

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """[(B, c3, H/8, W/8), (B, c4, H/16, W/16), (B, c5, H/32, W/32)] -> three maps."""
        p3, p4, p5 = feats
        t4 = self.td4(torch.cat((self.up(p5), p4), 1))
        n3 = self.td3(torch.cat((self.up(t4), p3), 1))
        n4 = self.bu4(torch.cat((self.down3(n3), t4), 1))
        n5 = self.bu5(torch.cat((self.down4(n4), p5), 1))
        return [n3, n4, n5]


def c2f_on_upsampled_cat(block: C2f, coarse: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
    """``block(torch.cat((up(coarse), fine), 1))`` with ``up`` nearest 2x, for inference.

    The block's first conv is 1x1, so it commutes with nearest upsampling: the coarse part is
    convolved at its own resolution (a quarter of the pixels), bias included, and only that
    result is upsampled, straight into the accumulator the fine part adds to; neither the
    upsampled map nor the concatenation is written (docs/performance.md). ``block`` is a
    ``C2f`` or a ``C3k2`` (which inherits ``C2f.forward``).
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
