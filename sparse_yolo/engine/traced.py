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

Features = Callable[[Sequence[torch.Tensor]], list[torch.Tensor]]


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
        eager = _Forward(self.model).eval()
        fn: Callable = eager
        try:
            with warnings.catch_warnings():
                # TracerWarnings (the check below decides) and TorchScript's deprecation
                # notice (if a release drops it, the eager network stays)
                warnings.simplefilter("ignore")
                traced = torch.jit.freeze(torch.jit.trace(eager, tuple(example), check_trace=False))
            probe = _other_shape(example, getattr(self.model, "max_stride", 32) // 8)
            if all(torch.equal(a, b) for a, b in zip(traced(*probe), eager(*probe), strict=True)):
                fn = traced
        except Exception:  # noqa: BLE001 - any failure to trace keeps the eager network
            fn = eager
        self._fns[key] = fn
        return fn


def _other_shape(example: list[torch.Tensor], grow: int) -> list[torch.Tensor]:
    """The example with one more batch item and ``grow`` more stride-8 cells (one cell of
    the model's coarsest stride) down and across, each input at its own resolution."""
    last = example[-1].shape[-1]
    out = []
    for x in example:
        r = max(1, x.shape[-1] // max(last, 1))
        y = F.pad(torch.cat([x, x[:1].flip(-1)]), (0, grow * r, 0, grow * r))
        out.append(y.contiguous(memory_format=torch.channels_last))
    return out
