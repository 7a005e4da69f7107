"""The remainder's feature network (backbone after the stem, then the neck) as a frozen
TorchScript trace on CPU.

A window's remainder pass runs some forty small convolutions; on a CPU, for the small windows
of a sparse frame, the Python around them (module calls, C2f's chunk and concatenation, the
neck's glue) costs as much as the arithmetic, and it holds the GIL that the parallel lanes
(:mod:`.lanes`) share. A frozen trace runs the same operators from C++. It computes the same
numbers (checked exactly at trace time, see below).

A trace records operators, not shapes, unless a layer reads its input's shape into Python
(e.g. an attention block that reshapes by ``H * W``); then the trace would be right for its
example's shape only. So every trace is checked once, on an input of another batch size and
spatial size, against the eager network, bit for bit; a model whose trace differs, or that
cannot be traced, keeps the eager network.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class _Forward(nn.Module):
    """``model.features`` with the stem outputs as positional tensors (traceable)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *stem_out: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.features(list(stem_out)))


class TracedFeatures:
    """``model.features`` through a frozen trace, one per (number of stem outputs, dtype),
    made on first use; the eager network where a trace would not be exact.

    Args:
        model: a fused SparseYOLO in eval mode whose weights no longer change (the trace
            holds them as constants).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._fns: dict[tuple, Callable[..., Sequence[torch.Tensor]]] = {}
        self._lock = threading.Lock()  # lanes may meet a new key at once

    def __call__(self, stem_out: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        key = (len(stem_out), stem_out[-1].dtype)
        fn = self._fns.get(key)
        if fn is None:
            with self._lock:
                fn = self._fns.get(key) or self._make(list(stem_out), key)
        return list(fn(*stem_out))

    @property
    def traced(self) -> bool:
        """Whether any trace is in use (for tests and reports)."""
        return any(isinstance(f, torch.jit.ScriptModule) for f in self._fns.values())

    def _make(self, example: list[torch.Tensor], key: tuple) -> Callable:
        """Trace on a small crop of ``example`` (two cells of the coarsest stride: tracing
        a whole 4K frame would cost seconds), check on a larger one of two items."""
        eager = _Forward(self.model).eval()
        fn: Callable = eager
        unit = max(1, getattr(self.model, "max_stride", 32) // 8)  # stride-8 cells
        try:
            with warnings.catch_warnings():
                # TracerWarnings (the check below decides) and TorchScript's deprecation
                # notice (if a release drops it, the eager network stays)
                warnings.simplefilter("ignore")
                small = tuple(_crop(example, 2 * unit, 1))
                traced = torch.jit.freeze(torch.jit.trace(eager, small, check_trace=False))
            probe = _crop(example, 3 * unit, 2)
            if all(torch.equal(a, b) for a, b in zip(traced(*probe), eager(*probe), strict=True)):
                fn = traced
        except Exception:  # noqa: BLE001 - any failure to trace keeps the eager network
            fn = eager
        self._fns[key] = fn
        return fn


def _crop(example: list[torch.Tensor], cells: int, batch: int) -> list[torch.Tensor]:
    """``batch`` items (the first, then mirrored copies) of the top-left ``cells`` x ``cells``
    stride-8 cells of each stem output at its own resolution, zero-padded where the example
    is smaller, channels-last."""
    last = example[-1].shape[-1]
    out = []
    for x in example:
        side = cells * max(1, x.shape[-1] // max(last, 1))
        y = x[:1, :, :side, :side]
        y = F.pad(y, (0, side - y.shape[-1], 0, side - y.shape[-2]))
        y = torch.cat([y] + [y.flip(-1)] * (batch - 1))
        out.append(y.contiguous(memory_format=torch.channels_last))
    return out
