"""What the backends share: their inputs and feature layouts, and per-module helpers.

``Rows`` (sparse backends: an (N + 1, C) table whose last row is zero, so a neighbour index of
``N`` reads zeros) and ``Grid`` (the dense backend) are how features move between layers.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sparse_yolo.sparse.active import ActiveLevel, ActivePyramid


@dataclass
class ImageInput:
    """Stride-1 input and the pyramid of its active cells.

    ``image`` is an (H, W, 3) uint8 BGR image; the dense backend also accepts a
    (B, 3, H, W) float RGB batch in [0, 1] with (B, Hc, Wc) cells (training).
    """

    image: torch.Tensor
    pyramid: ActivePyramid


@dataclass
class Rows:
    """Sparse features: (N + 1, C) float, row ``i`` at ``level.coords[i]``, last row zero."""

    feats: torch.Tensor
    level: ActiveLevel
    pyramid: ActivePyramid


@dataclass
class Grid:
    """Dense features: (B, C, H, W) float, zero wherever ``pyramid.mask(stride)`` is off."""

    x: torch.Tensor
    stride: int
    pyramid: ActivePyramid


def fold_conv(m: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an Ultralytics ``Conv`` (conv + BatchNorm) into one weight and bias.

    Returns:
        weight (Cout, Cin, kh, kw) and bias (Cout,), both derived, never stored.
    """
    conv = m.conv
    if conv.groups != 1:
        raise ValueError("grouped convolutions belong to the dense part of the model")
    w = conv.weight
    b = conv.bias if conv.bias is not None else torch.zeros_like(w[:, 0, 0, 0])
    bn = getattr(m, "bn", None)
    if bn is None:  # already fused by ultralytics' fuse()
        return w, b
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return w * scale[:, None, None, None], bn.bias + (b - bn.running_mean) * scale


def masked_frame(inp: ImageInput, border: int, dtype: torch.dtype) -> torch.Tensor:
    """The uint8 BGR frame as is, in a zero frame of padded size, with the inactive cells
    that touch an active one zeroed.

    The first layer (3x3, stride 2, pad 1) at an active site reads at most one pixel beyond
    its cell, so only the inactive cells around active ones can reach an active output; the
    others keep their pixels (what is computed there is masked or never computed).

    Returns:
        (Hp + 2 * border, Wp + 2 * border, 3) of ``dtype``; only the borders and the ring of
        inactive cells are zero-filled, so a 4K frame costs one copy.
    """
    img, pyramid = inp.image, inp.pyramid
    hp, wp = pyramid.padded_shape
    h, w = img.shape[:2]
    out = img.new_empty((hp + 2 * border, wp + 2 * border, 3), dtype=dtype)
    out[:border] = 0
    out[border + h :] = 0
    out[:, :border] = 0
    out[:, border + w :] = 0
    frame = out[border : border + h, border : border + w]
    frame.copy_(img)
    if not pyramid.all_active:
        cells = pyramid.cells.float()[None, None]
        ring = (F.max_pool2d(cells, 3, 1, 1) > cells)[0, 0].nonzero()
        c = pyramid.cell
        grid = out[border : border + hp, border : border + wp]
        grid.unflatten(0, (-1, c)).unflatten(2, (-1, c))[ring[:, 0], :, ring[:, 1]] = 0
    return out


def frame_weight(weight: torch.Tensor) -> torch.Tensor:
    """First-layer weight for a raw uint8 BGR frame: BGR -> RGB and 1/255 folded in."""
    return weight.flip(1) / 255


def conv_kind(m: nn.Module) -> str:
    """``pointwise``, ``subm`` (3x3 stride 1) or ``strided`` (3x3 stride 2, pad 1)."""
    k, s, p = m.conv.kernel_size, m.conv.stride, m.conv.padding
    if k == (1, 1) and s == (1, 1):
        return "pointwise"
    if k == (3, 3) and p == (1, 1) and s in ((1, 1), (2, 2)):
        return "subm" if s == (1, 1) else "strided"
    raise ValueError(f"sparse stem supports 1x1 and 3x3 (stride 1 or 2) convs, got k={k} s={s}")


def pixel_rows(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) as a (B*H*W, C) matrix: a view when ``x`` is channels-last."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def pointwise_cat(
    m: nn.Module,
    parts: list[torch.Tensor],
    out: torch.Tensor | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """A 1x1 ``Conv`` (before its activation) on the channel concatenation of 2-D parts.

    Each part is a (rows, C_i) matrix: rows of active sites or channels-last pixels, possibly
    a column slice of a wider one (what ``split`` returns). The conv is one matmul per part
    into one accumulator, so the concatenation is never written (faster in the stem on CPU;
    in the remainder oneDNN's 1x1 conv on the concatenation was as fast, so it stays there:
    docs/performance.md).

    Args:
        m: the 1x1 ``Conv``.
        parts: (rows, C_i) matrices, in concatenation order.
        out: an accumulator already holding the conv of the first ``offset`` input channels,
            bias included (the neck fills it with an upsampled coarse part); None: zeros.
        offset: input channels ``out`` already accounts for.

    Returns:
        (rows, Cout) pre-activation output.
    """
    weight, bias = fold_conv(m)
    w = weight.flatten(1)
    c0 = offset
    for p in parts:
        wi = w[:, c0 : c0 + p.shape[1]].t()
        c0 += p.shape[1]
        out = torch.addmm(bias, p, wi) if out is None else out.addmm_(p, wi)
    return out


def activate(m: nn.Module, out: torch.Tensor) -> torch.Tensor:
    """A ``Conv``'s activation on its pre-activation output (SiLU in place: inference)."""
    if isinstance(m.act, nn.SiLU):
        return F.silu(out, inplace=True)
    return m.act(out)


@contextlib.contextmanager
def single_thread_on_cpu(device: torch.device) -> Iterator[None]:
    """spconv 2.3.8's CPU scatter-add races with more than one torch thread.

    It gave wrong output rows at 2 threads and exact ones at 1 (docs/performance.md). Its
    CPU build also mishandles bias, so bias is added outside spconv.
    """
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def spconv_available() -> bool:
    return importlib.util.find_spec("spconv") is not None


def rows_over_map(
    table: torch.Tensor, idx: torch.Tensor, sites: torch.Tensor, fill: torch.Tensor
) -> torch.Tensor:
    """Windows of active rows over a background map.

    Args:
        table: (N + 1, C) active rows, the last one a dummy.
        idx: (B, bh, bw) row of each window site, N where inactive.
        sites: (B, bh, bw) flat index of each window site in the level's (H, W) grid.
        fill: (C, H, W) channels-last map the inactive sites read.

    Returns:
        (B, C, bh, bw) channels-last windows.
    """
    b, bh, bw = idx.shape
    rows = fill.permute(1, 2, 0).reshape(-1, fill.shape[0])
    out = rows.index_select(0, sites.view(-1)).to(table.dtype)
    idx = idx.view(-1)
    active = (idx < len(table) - 1).nonzero().squeeze(1)
    out.index_copy_(0, active, table.index_select(0, idx.index_select(0, active)))
    return out.view(b, bh, bw, -1).permute(0, 3, 1, 2)
