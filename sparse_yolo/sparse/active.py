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
        mask: (H, W) bool, active sites.
        coords: (N, 2) long, (y, x) of active sites in row-major order.
        index: ((H + 2) * (W + 2),) long; row of each site in the feature table of a
            one-pixel zero-padded grid, ``N`` (the zero row) where inactive.
    """

    stride: int
    mask: torch.Tensor
    coords: torch.Tensor
    index: torch.Tensor
    _tables: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def from_mask(cls, mask: torch.Tensor, stride: int) -> ActiveLevel:
        h, w = mask.shape
        coords = torch.nonzero(mask)
        n = coords.shape[0]
        index = torch.full(((h + 2) * (w + 2),), n, dtype=torch.long, device=mask.device)
        index[(coords[:, 0] + 1) * (w + 2) + coords[:, 1] + 1] = torch.arange(n, device=mask.device)
        return cls(stride, mask, coords, index)

    @property
    def n(self) -> int:
        return int(self.coords.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.mask.shape[0]), int(self.mask.shape[1])

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
        return self.index[base[:, None] + offsets[None, :]]


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
            self._levels[stride] = ActiveLevel.from_mask(self.mask(stride), stride)
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
