"""Active-set rules of the sparse stem, defined once for every backend.

The mask is given per *cell* (``cell`` pixels square, a multiple of 8). At any stride
``s <= cell`` a site ``(y, x)`` (in stride-``s`` units) is active iff its cell is active::

    active_s[y, x] = cells[y * s // cell, x * s // cell]

* Submanifold convs (3x3 stride 1, and 1x1) keep their input's active set.
* Stride-2 convs produce the downsampled cell mask ``active_2s``, never a dilated set.

Because cells are aligned to every stride up to 8, ``active_2s`` is exactly the 2x
downsampling of ``active_s``. Active sites are always stored in row-major order, which
is the order ``torch.nonzero`` returns; every backend uses that order.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch

# Offsets of a 3x3 kernel in (ky, kx) row-major order, matching conv weights [.., ky, kx].
_OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def cells_to_stride(cells: torch.Tensor, cell: int, stride: int) -> torch.Tensor:
    """Nearest-upsample a cell mask to a stride.

    Args:
        cells: (..., Hc, Wc) bool cell mask (a leading batch dimension is allowed).
        cell: cell edge in pixels.
        stride: target stride in pixels, dividing ``cell``.

    Returns:
        (..., Hc * cell // stride, Wc * cell // stride) bool mask.
    """
    if cell % stride:
        raise ValueError(f"stride {stride} does not divide cell {cell}")
    r = cell // stride
    if r == 1:
        return cells
    return cells.repeat_interleave(r, -2).repeat_interleave(r, -1)


@dataclass
class ActiveLevel:
    """Active sites of one stride level.

    Attributes:
        stride: pixels per site.
        shape: (H, W) sites.
        coords: (N, 2) long, (y, x) of active sites in row-major order.
        index: ((H + 2) * (W + 2),) long; row of each site in the feature table of a
            one-pixel zero-padded grid, ``N`` (the zero row) where inactive.
    """

    stride: int
    shape: tuple[int, int]
    coords: torch.Tensor
    index: torch.Tensor
    _tables: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def from_mask(cls, mask: torch.Tensor, stride: int) -> ActiveLevel:
        """The level of an (H, W) bool mask of active sites."""
        return cls._indexed(torch.nonzero(mask), tuple(mask.shape), stride)

    @classmethod
    def from_cells(cls, cells: torch.Tensor, cell: int, stride: int) -> ActiveLevel:
        """The level of an (Hc, Wc) bool cell mask at ``stride`` (dividing ``cell``), the same
        as :meth:`from_mask` of :func:`cells_to_stride`, built from the active cells alone:
        at 4K the stride-2 mask has 2M sites, and finding them costs more than the layer
        that reads them."""
        r = cell // stride
        hc, wc = cells.shape
        cc = torch.nonzero(cells)  # (K, 2), row-major
        if r == 1:
            return cls._indexed(cc, (hc, wc), stride)
        cy, cx = cc[:, 0], cc[:, 1]
        # Row-major over sites is (cell row, row in the cell, cell, column in the cell): the
        # K cells of a cell row are a run of cc, m of them starting at `first`.
        per_row = torch.bincount(cy, minlength=hc)
        first = (torch.cumsum(per_row, 0) - per_row)[cy]
        m = per_row[cy]
        j = torch.arange(len(cc), device=cells.device) - first  # place in its cell row
        d = torch.arange(r, device=cells.device)
        dy, dx = d.view(1, r, 1), d.view(1, 1, r)
        at = (first * r * r)[:, None, None] + dy * (m * r)[:, None, None] + (j * r)[:, None, None]
        at = (at + dx).reshape(-1)
        coords = torch.empty(len(cc) * r * r, 2, dtype=torch.long, device=cells.device)
        coords[at, 0] = (cy[:, None, None] * r + dy).expand(-1, r, r).reshape(-1)
        coords[at, 1] = (cx[:, None, None] * r + dx).expand(-1, r, r).reshape(-1)
        return cls._indexed(coords, (hc * r, wc * r), stride)

    @classmethod
    def _indexed(cls, coords: torch.Tensor, shape: tuple[int, int], stride: int) -> ActiveLevel:
        h, w = shape
        n = coords.shape[0]
        index = torch.full(((h + 2) * (w + 2),), n, dtype=torch.long, device=coords.device)
        index[(coords[:, 0] + 1) * (w + 2) + coords[:, 1] + 1] = torch.arange(
            n, device=coords.device
        )
        return cls(stride, (int(h), int(w)), coords, index)

    @property
    def mask(self) -> torch.Tensor:
        """(H, W) bool, active sites."""
        h, w = self.shape
        return self.index.view(h + 2, w + 2)[1:-1, 1:-1] != self.n

    @property
    def n(self) -> int:
        return int(self.coords.shape[0])

    def neighbours(self) -> torch.Tensor:
        """(N, 9) rows of the 3x3 neighbours of each active site (``N`` = zero row).

        Built once per level and shared by every submanifold conv at this stride.
        """
        if "subm" not in self._tables:
            self._tables["subm"] = self._lookup(self.coords, step=1)
        return self._tables["subm"]

    def strided_neighbours(self, finer: ActiveLevel) -> torch.Tensor:
        """(N, 9) rows in ``finer`` (stride / 2) read by a 3x3 stride-2 pad-1 conv."""
        key = f"from{finer.stride}"
        if key not in self._tables:
            self._tables[key] = finer._lookup(self.coords, step=2)
        return self._tables[key]

    def _lookup(self, centres: torch.Tensor, step: int) -> torch.Tensor:
        w = self.shape[1] + 2
        base = (centres[:, 0] * step + 1) * w + centres[:, 1] * step + 1
        offsets = torch.tensor([dy * w + dx for dy, dx in _OFFSETS], device=base.device)
        at = (base[:, None] + offsets[None, :]).view(-1)
        return self.index.index_select(0, at).view(-1, len(_OFFSETS))


class ActivePyramid:
    """Active levels at strides 1, 2, 4 and 8 derived from one cell mask.

    Args:
        cells: (Hc, Wc) bool cell mask; the dense backend also takes (B, Hc, Wc).
        cell: cell edge in pixels (8, 16 or 32).
    """

    strides = (1, 2, 4, 8)

    def __init__(self, cells: torch.Tensor, cell: int) -> None:
        if cell % 8:
            raise ValueError(f"cell must be a multiple of 8, got {cell}")
        self.cells = cells.bool()
        self.cell = cell
        self._levels: dict[int, ActiveLevel] = {}
        self.cache: dict[object, torch.Tensor] = {}  # backends' derived per-stride tensors

    @property
    def padded_shape(self) -> tuple[int, int]:
        """(H, W) in pixels covered by the cell grid."""
        return self.cells.shape[-2] * self.cell, self.cells.shape[-1] * self.cell

    def mask(self, stride: int) -> torch.Tensor:
        """(..., H / stride, W / stride) bool mask of active sites."""
        return cells_to_stride(self.cells, self.cell, stride)

    def level(self, stride: int) -> ActiveLevel:
        """Indexed active sites at ``stride`` (built lazily, then cached)."""
        if stride not in self._levels:
            if self.cells.dim() == 2:
                level = ActiveLevel.from_cells(self.cells, self.cell, stride)
            else:
                level = ActiveLevel.from_mask(self.mask(stride), stride)
            self._levels[stride] = level
        return self._levels[stride]

    @functools.cached_property
    def all_active(self) -> bool:
        return bool(self.cells.all())

    def active_fraction(self) -> float:
        return float(self.cells.float().mean()) if self.cells.numel() else 0.0


def pad_cells(cells: np.ndarray, cell: int, stride: int) -> np.ndarray:
    """Pad a (Hc, Wc) cell mask at the bottom and right, repeating its edge, until it covers
    a multiple of ``stride`` px (a P6 model's 64 px; a no-op at 32)."""
    per = max(stride // cell, 1)
    pad = ((0, -cells.shape[0] % per), (0, -cells.shape[1] % per))
    return np.pad(cells, pad, mode="edge") if any(p for _, p in pad) else cells
