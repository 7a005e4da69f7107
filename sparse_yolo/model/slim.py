"""GSConv and VoVGSCSP from "Slim-neck by GSConv" (Li et al., 2022).

Ultralytics does not ship these blocks, so they are written here on top of its ``Conv``.
GSConv's depthwise 5x5 has no spconv equivalent; these blocks live in the dense part.
"""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.nn.modules import Conv


class GSConv(nn.Module):
    """Half dense conv, half depthwise 5x5 on its output, then a channel shuffle.

    Args:
        c1: input channels.
        c2: output channels (even).
        k: kernel of the dense half.
        s: stride of the dense half.
        act: apply SiLU.
    """

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, act: bool = True) -> None:
        super().__init__()
        c_ = c2 // 2
        self.cv1 = Conv(c1, c_, k, s, act=act)
        self.cv2 = Conv(c_, c_, 5, 1, g=c_, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, c1, H, W) -> (B, c2, H / s, W / s)."""
        x1 = self.cv1(x)
        x2 = torch.cat((x1, self.cv2(x1)), 1)
        b, n, h, w = x2.shape
        # Interleave dense and depthwise channels (the paper's shuffle).
        return x2.view(b, 2, n // 2, h, w).transpose(1, 2).reshape(b, n, h, w)


class GSBottleneck(nn.Module):
    """Two GSConvs plus a 1x1 shortcut."""

    def __init__(self, c1: int, c2: int, e: float = 0.5) -> None:
        super().__init__()
        c_ = max(2, int(c2 * e) // 2 * 2)
        self.conv_lighting = nn.Sequential(GSConv(c1, c_, 1, 1), GSConv(c_, c2, 3, 1, act=False))
        self.shortcut = Conv(c1, c2, 1, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_lighting(x) + self.shortcut(x)


class VoVGSCSP(nn.Module):
    """One-shot aggregation CSP block built from GSBottlenecks (replaces C2f in the neck).

    Args:
        c1: input channels.
        c2: output channels.
        n: number of GSBottlenecks.
        e: hidden channel ratio.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, e: float = 0.5) -> None:
        super().__init__()
        c_ = max(2, int(c2 * e) // 2 * 2)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.gsb = nn.Sequential(*(GSBottleneck(c_, c_, e=1.0) for _ in range(n)))
        self.cv3 = Conv(2 * c_, c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.gsb(self.cv1(x)), self.cv2(x)), 1))
