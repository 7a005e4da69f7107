"""The cost model behind ``backend: auto``: which execution path is cheapest for a frame.

Three paths compute a frame's detections (docs/engine.md):

* ``windows``: the stem on the active cells with a sparse backend, the dense remainder on
  windows around them (the sparse pipeline).
* ``every_cell``: the engine over every cell: the stem on the whole frame, one frame-wide
  window (exactly the dense network, with the engine's lean stem input and candidate head).
* ``dense``: the plain dense forward of the padded frame.

Each path's time is predicted from a :class:`CostTable` measured on the device at hand
(:mod:`sparse_yolo.engine.calibrate`), and ``auto`` takes the cheapest. The model is linear
in the work each path does, with these terms (seconds):

* stem with backend ``b``: ``stem[b].fixed + stem[b].per_px * frame_px +
  stem[b].per_active_px * active_px``
* remainder: ``per_forward * forwards + per_cell * window_cells`` (stride-8 cells)
* every cell: ``every_fixed + every_px * frame_px`` + the remainder of one frame-wide window
* dense: ``dense.fixed + dense.per_px * frame_px``
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

PATHS = ("windows", "every_cell", "dense")


@dataclass(frozen=True)
class Linear:
    """``fixed + per_unit * units`` seconds."""

    fixed: float = 0.0
    per_unit: float = 0.0

    def __call__(self, units: float) -> float:
        return self.fixed + self.per_unit * units


@dataclass(frozen=True)
class StemCost:
    """Seconds of a sparse backend's stem: per frame pixel, per active pixel, per call."""

    per_px: float = 0.0
    per_active_px: float = 0.0
    fixed: float = 0.0

    def __call__(self, frame_px: float, active_px: float) -> float:
        return self.fixed + self.per_px * frame_px + self.per_active_px * active_px


@dataclass(frozen=True)
class CostTable:
    """Measured costs of one model on one device (see the module docstring for the terms).

    Attributes:
        key: what it was measured for (device, model architecture, dtype, torch, threads).
        dense: plain dense forward, seconds per padded frame pixel plus a fixed cost.
        every_px: the every-cell stem, seconds per padded frame pixel (plus ``every_fixed``
            per call).
        stem: per sparse backend name (``gather``, ``dense`` masked, ``spconv``).
        remainder: seconds per forward pass (``fixed``) and per window stride-8 cell.
    """

    key: str
    dense: Linear
    every_px: float
    stem: dict[str, StemCost]
    remainder: Linear
    meta: dict[str, Any] = field(default_factory=dict)
    every_fixed: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CostTable:
        """Inverse of :meth:`to_dict`.

        Raises:
            KeyError, TypeError: a field is missing or malformed.
        """
        return cls(
            key=str(d["key"]),
            dense=Linear(**d["dense"]),
            every_px=float(d["every_px"]),
            stem={k: StemCost(**v) for k, v in d["stem"].items()},
            remainder=Linear(**d["remainder"]),
            meta=dict(d.get("meta", {})),
            every_fixed=float(d.get("every_fixed", 0.0)),
        )


@dataclass(frozen=True)
class Choice:
    """The path a frame runs, and the predicted seconds of every candidate."""

    path: str
    backend: str | None
    predicted: dict[str, float]


def predict(
    costs: CostTable,
    frame_px: int,
    active_px: int,
    window_cells: int,
    forwards: int,
    grid_cells: int,
    backends: tuple[str, ...],
) -> dict[str, float]:
    """Predicted seconds of each candidate path for one frame.

    Args:
        frame_px: pixels of the frame padded to the mask grid (a multiple of 32 each way).
        active_px: pixels in active cells.
        window_cells: stride-8 cells in the planned windows; ``forwards``: their batches.
        grid_cells: stride-8 cells of the whole frame.
        backends: sparse backends available for the windows path.

    Returns:
        ``windows:<backend>``, ``every_cell`` and ``dense`` -> seconds.
    """
    remainder = costs.remainder.per_unit * window_cells + costs.remainder.fixed * forwards
    out = {
        f"windows:{b}": costs.stem[b](frame_px, active_px) + remainder
        for b in backends
        if b in costs.stem
    }
    out["every_cell"] = costs.every_fixed + costs.every_px * frame_px + costs.remainder(grid_cells)
    out["dense"] = costs.dense(frame_px)
    return {k: float(v) for k, v in out.items()}


def choose(
    costs: CostTable,
    cells: np.ndarray,
    cell: int,
    windows: np.ndarray,
    forwards: Callable[[np.ndarray], int],
    backends: tuple[str, ...],
) -> Choice:
    """The cheapest path for a frame with these active cells and planned windows.

    Args:
        cells: (Hc, Wc) bool active cells of the frame padded to the grid.
        cell: cell edge in pixels.
        windows: (K, 4) planned windows (y0, x0, h, w) in stride-8 cells.
        forwards: how many remainder passes a set of windows takes on this device.
        backends: sparse backends to consider for the windows path.
    """
    frame_px = cells.size * cell * cell
    active = int(np.count_nonzero(cells))
    grid_cells = frame_px // 64
    window_cells = int((windows[:, 2] * windows[:, 3]).sum())
    n_forwards = forwards(windows) if len(windows) else 0
    predicted = predict(
        costs,
        frame_px,
        active * cell * cell,
        window_cells,
        n_forwards,
        grid_cells,
        backends,
    )
    best = min(predicted, key=lambda k: (predicted[k], k))
    path, _, backend = best.partition(":")
    return Choice(path, backend or None, predicted)
