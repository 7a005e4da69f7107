"""Backends that run Ultralytics ``Conv`` modules on active sites only.

Every backend reads the parameters of the same ``Conv`` modules (no copies are stored)
and applies the rules of :mod:`sparse_yolo.sparse.active`:

* ``gather``: pure torch. A neighbour table per active level, then each 3x3 conv is an
  im2col gather plus one matmul, chunked to bound memory. CPU default; inference only.
* ``spconv``: ``SubMConv2d`` and strided ``SparseConv2d``. CUDA default.
* ``dense``: ``F.conv2d`` (the module's own forward) plus explicit masks: the reference,
  the fallback without spconv, and the training path (autograd and BatchNorm statistics).

Features move between layers as ``Rows`` or ``Grid`` (:mod:`sparse_yolo.sparse.ops`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sparse_yolo.errors import SparseYoloError
from sparse_yolo.sparse.active import ActiveLevel, ActivePyramid
from sparse_yolo.sparse.ops import (
    Grid,
    ImageInput,
    Rows,
    activate,
    conv_kind,
    fold_conv,
    frame_weight,
    masked_frame,
    pixel_rows,
    pointwise_cat,
    rows_over_map,
    single_thread_on_cpu,
    spconv_available,
)

# Bytes of im2col columns materialised at once by the gather kernel: small enough to stay in
# cache between the gather and the matmul (docs/performance.md, "Model and sparse stem").
_CHUNK_BYTES = 4 * 2**20


class SparseBackend:
    """Interface shared by the backends; the stem walker only uses these methods."""

    name = "base"
    channel_dim = -1

    def enter(self, image: torch.Tensor, pyramid: ActivePyramid) -> ImageInput:
        return ImageInput(image, pyramid)

    def conv(self, m: nn.Module, x):  # pragma: no cover - interface
        raise NotImplementedError

    def split(self, x, chunks: int) -> list:
        return [self._wrap(x, t) for t in self._data(x).chunk(chunks, self.channel_dim)]

    def cat(self, xs: list):
        return self._wrap(xs[0], torch.cat([self._data(x) for x in xs], self.channel_dim))

    def add(self, a, b):
        return self._wrap(a, self._data(a) + self._data(b))

    def conv_cat(self, m: nn.Module, xs: list):
        """``conv(m, cat(xs))``; backends override it to skip writing the concatenation."""
        return self.conv(m, self.cat(xs))

    def grid(self, x) -> torch.Tensor:
        """(1, C, H, W) dense view of features (for tests and tools, not the hot path)."""
        raise NotImplementedError

    def windows(self, x, boxes: torch.Tensor, fill: torch.Tensor | None = None) -> torch.Tensor:
        """Densify equal-sized windows of stride-8 features.

        Args:
            boxes: (B, 4) long (y0, x0, h, w) in stride units; every h and w equal.
            fill: what the inactive sites read: one (C,) vector for all of them, a (C, H, W)
                map over the whole level (channels-last) giving each its own (a fixed
                camera's background, :mod:`sparse_yolo.engine.background`), or None (zeros).

        Returns:
            (B, C, h, w) float in channels-last memory format.
        """
        raise NotImplementedError

    @staticmethod
    def _data(x) -> torch.Tensor:
        return x.feats if isinstance(x, Rows) else x.x

    @staticmethod
    def _wrap(like, data: torch.Tensor):
        if isinstance(like, Rows):
            return Rows(data, like.level, like.pyramid)
        return Grid(data, like.stride, like.pyramid)


class DenseBackend(SparseBackend):
    """Reference: each module's own forward on the full grid, then the active mask."""

    name = "dense"
    channel_dim = 1

    def conv(self, m: nn.Module, x) -> Grid:
        if isinstance(x, ImageInput):
            if not x.image.is_floating_point():
                return self._image_conv(m, x)
            x = self._image_grid(x)
        kind = conv_kind(m)
        stride = x.stride * 2 if kind == "strided" else x.stride
        out = m(x.x)
        if not x.pyramid.all_active:  # all active: skip a full-resolution pass per layer
            mask = self._mask(x.pyramid, stride, out.dtype)
            out = out.mul_(mask) if not torch.is_grad_enabled() else out * mask
        return Grid(out, stride, x.pyramid)

    def conv_cat(self, m: nn.Module, xs: list[Grid]) -> Grid:
        # Training runs the modules; CUDA too, where the extra launches cost more than they
        # save, while on CPU the part-wise matmuls win (docs/performance.md).
        x = xs[0]
        if torch.is_grad_enabled() or conv_kind(m) != "pointwise" or x.x.device.type != "cpu":
            return super().conv_cat(m, xs)
        b, _, h, w = x.x.shape  # channels-last grids: each a (B*H*W, C_i) matrix view
        out = pointwise_cat(m, [pixel_rows(g.x) for g in xs])
        out = activate(m, out).view(b, h, w, -1).permute(0, 3, 1, 2)
        if not x.pyramid.all_active:
            out.mul_(self._mask(x.pyramid, x.stride, out.dtype))
        return Grid(out, x.stride, x.pyramid)

    @staticmethod
    def _mask(pyramid: ActivePyramid, stride: int, dtype: torch.dtype) -> torch.Tensor | float:
        if pyramid.all_active:
            return 1.0
        key = (stride, dtype)
        if key not in pyramid.cache:  # every conv at a stride reuses one float mask
            mask = pyramid.mask(stride).to(dtype)
            pyramid.cache[key] = mask[:, None] if mask.dim() == 3 else mask  # (B,1,H,W)|(H,W)
        return pyramid.cache[key]

    def _image_grid(self, inp: ImageInput) -> Grid:
        """A (B, 3, H, W) float RGB batch (training), zero-padded and masked."""
        hp, wp = inp.pyramid.padded_shape
        x = F.pad(inp.image, (0, wp - inp.image.shape[-1], 0, hp - inp.image.shape[-2]))
        return Grid(x * self._mask(inp.pyramid, 1, x.dtype), 1, inp.pyramid)

    def _image_conv(self, m: nn.Module, inp: ImageInput) -> Grid:
        """First layer on a uint8 BGR frame, inference.

        The frame is copied once into a zero-padded channels-last float buffer, as is: the
        BGR -> RGB order and the 1/255 scaling are folded into the conv's weight instead of
        costing two more passes over a 4K frame.
        """
        pyramid = inp.pyramid
        weight, bias = fold_conv(m)
        nhwc = masked_frame(inp, 0, weight.dtype)[None]
        conv = m.conv
        # a channels-last weight keeps oneDNN on the channels-last path for this and later layers
        weight = frame_weight(weight).contiguous(memory_format=torch.channels_last)
        out = F.conv2d(nhwc.permute(0, 3, 1, 2), weight, bias, conv.stride, conv.padding)
        out = activate(m, out)
        if not pyramid.all_active:
            out.mul_(self._mask(pyramid, 2, out.dtype))
        return Grid(out, 2, pyramid)

    def grid(self, x: Grid) -> torch.Tensor:
        return x.x

    def windows(
        self, x: Grid, boxes: torch.Tensor, fill: torch.Tensor | None = None
    ) -> torch.Tensor:
        grid = x.x
        if fill is not None and not x.pyramid.all_active:
            off = ~x.pyramid.mask(x.stride)
            fill = fill if fill.dim() == 3 else fill[:, None, None]  # a map, or one vector
            grid = grid + off.to(grid.dtype) * fill.to(grid.dtype)  # inactive sites are zero
        if boxes.tolist() == [[0, 0, *grid.shape[-2:]]]:  # one window, the whole frame
            return grid.contiguous(memory_format=torch.channels_last)
        crops = [grid[0, :, y0 : y0 + h, x0 : x0 + w] for y0, x0, h, w in boxes.tolist()]
        return torch.stack(crops).contiguous(memory_format=torch.channels_last)


class FlatBackend(SparseBackend):
    """The stem inside an infinite flat image: features are one (B, C) vector per image.

    Every site sees the same input there, so a conv (any stride, zero padding never reached)
    is its kernel summed over space applied to that vector. Not a user-selectable backend: it
    computes the background fill (:func:`sparse_yolo.sparse.stem.flat_response`).
    """

    name = "flat"
    channel_dim = -1

    def enter(self, image: torch.Tensor, pyramid: ActivePyramid | None) -> torch.Tensor:
        return image  # (B, 3) RGB colours in [0, 1]

    def conv(self, m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        weight, bias = fold_conv(m)
        return m.act(torch.addmm(bias, x, weight.sum((2, 3)).t()))

    @staticmethod
    def _data(x: torch.Tensor) -> torch.Tensor:
        return x

    @staticmethod
    def _wrap(like: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
        return data


class RowsBackend(SparseBackend):
    """Shared parts of the backends that keep features as rows of active sites."""

    def grid(self, x: Rows) -> torch.Tensor:
        h, w = x.level.shape
        out = x.feats.new_zeros(h * w, x.feats.shape[1])
        out[x.level.coords[:, 0] * w + x.level.coords[:, 1]] = x.feats[:-1]
        return out.view(h, w, -1).permute(2, 0, 1)[None]

    def windows(
        self, x: Rows, boxes: torch.Tensor, fill: torch.Tensor | None = None
    ) -> torch.Tensor:
        h, w = x.level.shape
        b, (bh, bw) = boxes.shape[0], (int(boxes[0, 2]), int(boxes[0, 3]))
        dy = torch.arange(bh, device=boxes.device)
        dx = torch.arange(bw, device=boxes.device)
        ys = boxes[:, 0, None, None] + 1 + dy[None, :, None]
        xs = boxes[:, 1, None, None] + 1 + dx[None, None, :]
        # (B, bh, bw) rows, N where inactive (index_select: a third of indexing's time)
        idx = x.level.index.index_select(0, (ys * (w + 2) + xs).view(-1)).view(b, bh, bw)
        table = x.feats
        if fill is not None and fill.dim() == 3:  # a map: each inactive site reads its own
            return rows_over_map(table, idx, (ys - 1) * w + xs - 1, fill)
        if fill is not None:  # the last row is what inactive sites read
            table = torch.cat([table[:-1], fill[None].to(table.dtype)])
        return table.index_select(0, idx.view(-1)).view(b, bh, bw, -1).permute(0, 3, 1, 2)

    def conv_cat(self, m: nn.Module, xs: list[Rows]) -> Rows:
        if conv_kind(m) != "pointwise":
            return super().conv_cat(m, xs)
        out = pointwise_cat(m, [x.feats for x in xs])
        return Rows(self._finish(m, out), xs[0].level, xs[0].pyramid)

    @staticmethod
    def _finish(m: nn.Module, out: torch.Tensor) -> torch.Tensor:
        out = activate(m, out)
        out[-1].zero_()
        return out

    @staticmethod
    def _level_out(m: nn.Module, x: Rows | ImageInput) -> tuple[ActiveLevel, ActivePyramid]:
        if isinstance(x, ImageInput):
            return x.pyramid.level(2), x.pyramid
        if conv_kind(m) == "strided":
            return x.pyramid.level(x.level.stride * 2), x.pyramid
        return x.level, x.pyramid


class GatherBackend(RowsBackend):
    """Pure-torch gather-GEMM kernel: fastest on CPU; inference only."""

    name = "gather"

    def conv(self, m: nn.Module, x: Rows | ImageInput) -> Rows:
        if torch.is_grad_enabled():
            raise RuntimeError("the gather backend is inference-only; train with backend='dense'")
        weight, bias = fold_conv(m)
        level, pyramid = self._level_out(m, x)
        if isinstance(x, ImageInput):
            out = self._image_conv(x, weight, bias, level)
            return Rows(self._finish(m, out), level, pyramid)
        kind = conv_kind(m)
        if kind == "pointwise":
            out = torch.addmm(bias, x.feats, weight.flatten(1).t())
            return Rows(self._finish(m, out), level, pyramid)
        table = level.neighbours() if kind == "subm" else level.strided_neighbours(x.level)
        cols_w = weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1).t()  # (9*Cin, Cout)
        out = x.feats.new_empty(level.n + 1, weight.shape[0])
        cin = x.feats.shape[1]
        step = max(1, _CHUNK_BYTES // (9 * cin * x.feats.element_size()))
        for i in range(0, level.n, step):
            rows = table[i : i + step].reshape(-1)
            cols = x.feats.index_select(0, rows).view(-1, 9 * cin)
            torch.addmm(bias, cols, cols_w, out=out[i : min(i + step, level.n)])
        return Rows(self._finish(m, out), level, pyramid)

    @staticmethod
    def _image_conv(
        inp: ImageInput, weight: torch.Tensor, bias: torch.Tensor, level: ActiveLevel
    ) -> torch.Tensor:
        """First layer (3x3 stride 2) gathered straight from the uint8 BGR image.

        The image is copied once into a zero border with its inactive cells zeroed, so each
        chunk is one gather and one matmul, with no per-pixel bounds or activity tests.
        """
        img = inp.image
        wp = inp.pyramid.padded_shape[1]
        flat = masked_frame(inp, 1, img.dtype).view(-1, 3)
        cols_w = frame_weight(weight).permute(0, 2, 3, 1).reshape(weight.shape[0], -1).t()
        offsets = torch.tensor(
            [dy * (wp + 2) + dx for dy in (0, 1, 2) for dx in (0, 1, 2)], device=img.device
        )
        out = torch.empty(level.n + 1, weight.shape[0], dtype=weight.dtype, device=img.device)
        step = max(1, _CHUNK_BYTES // (27 * 4))
        for i in range(0, level.n, step):
            c = level.coords[i : i + step]
            base = (c[:, 0] * 2) * (wp + 2) + c[:, 1] * 2  # top-left of the 3x3 in padded
            pix = flat.index_select(0, (base[:, None] + offsets).reshape(-1))
            cols = pix.view(-1, 27).to(weight.dtype)
            torch.addmm(bias, cols, cols_w, out=out[i : min(i + step, level.n)])
        return out


class SpconvBackend(RowsBackend):
    """spconv ``SubMConv2d`` / ``SparseConv2d``; features stay in our row order."""

    name = "spconv"

    def __init__(self) -> None:
        import spconv.pytorch as spconv  # noqa: PLC0415 - optional dependency

        self._sp = spconv
        self._mods: dict[tuple[int, str], nn.Module] = {}

    def conv(self, m: nn.Module, x: Rows | ImageInput) -> Rows:
        weight, bias = fold_conv(m)
        if isinstance(x, ImageInput):
            x = self._image_rows(x, weight.dtype)
        level, pyramid = self._level_out(m, x)
        kind = conv_kind(m)
        if kind == "pointwise":
            out = torch.addmm(bias, x.feats, weight.flatten(1).t())
            return Rows(self._finish(m, out), level, pyramid)
        sp = self._module(m, kind, x.level.stride)
        # spconv stores weights as [out, kh, kw, in]; this is the one conversion point.
        sp.weight.data = weight.permute(0, 2, 3, 1).clone(memory_format=torch.contiguous_format)
        tensor = self._sp.SparseConvTensor(
            x.feats[:-1].contiguous(), self._indices(x.level), list(x.level.shape), 1
        )
        with single_thread_on_cpu(tensor.features.device):
            y = sp(tensor)
        out = bias.expand(level.n + 1, -1).clone()
        if kind == "subm":
            out[:-1] += y.features  # submanifold output keeps the input's indices and order
        else:
            # spconv emits the dilated set; keep exactly the downsampled cell mask.
            yw = level.shape[1] + 2
            rows = level.index[(y.indices[:, 1].long() + 1) * yw + y.indices[:, 2].long() + 1]
            keep = rows < level.n
            out[rows[keep]] += y.features[keep]
        return Rows(self._finish(m, out), level, pyramid)

    def _module(self, m: nn.Module, kind: str, stride: int) -> nn.Module:
        key = (id(m), kind)
        if key not in self._mods:
            cin, cout = m.conv.in_channels, m.conv.out_channels
            if kind == "subm":
                mod = self._sp.SubMConv2d(cin, cout, 3, 1, 1, bias=False, indice_key=f"s{stride}")
            else:
                mod = self._sp.SparseConv2d(cin, cout, 3, 2, 1, bias=False)
            self._mods[key] = mod.to(m.conv.weight.device)
        return self._mods[key]

    @staticmethod
    def _indices(level: ActiveLevel) -> torch.Tensor:
        zeros = torch.zeros_like(level.coords[:, :1])
        return torch.cat([zeros, level.coords], 1).int().contiguous()

    @staticmethod
    def _image_rows(inp: ImageInput, dtype: torch.dtype) -> Rows:
        level = inp.pyramid.level(1)
        h, w = inp.image.shape[:2]
        ys, xs = level.coords[:, 0], level.coords[:, 1]
        inside = ((ys < h) & (xs < w))[:, None]
        pix = inp.image[ys.clamp(max=h - 1), xs.clamp(max=w - 1)] * inside
        rgb = pix.flip(-1).to(dtype).div_(255)
        feats = torch.cat([rgb, rgb.new_zeros(1, 3)])
        return Rows(feats, level, inp.pyramid)


BACKENDS: dict[str, type[SparseBackend]] = {
    "gather": GatherBackend,
    "spconv": SpconvBackend,
    "dense": DenseBackend,
}


def make_backend(name: str, device: torch.device | str = "cpu") -> SparseBackend:
    """Instantiate a backend by name; ``auto`` picks gather on CPU and dense on CUDA.

    On CUDA the masked dense stem beat both sparse kernels at every measured activity
    (docs/performance.md); spconv stays selectable by name.

    Raises:
        ValueError: unknown name, or spconv requested but not installed.
    """
    device = torch.device(device)
    if name == "auto":
        name = "dense" if device.type == "cuda" else "gather"
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; known: auto, {', '.join(BACKENDS)}")
    if name == "spconv" and not spconv_available():
        raise SparseYoloError(
            "backend 'spconv' needs spconv: pip install 'sparse-yolo[cpu]' or '[cu118]'"
        )
    return BACKENDS[name]()
