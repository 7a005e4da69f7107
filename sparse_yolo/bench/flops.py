"""Conv cost (GFLOPs) of a SparseYOLO: dense, on active cells, on windows, or of any run.

One counter for the project: forward hooks on every ``Conv2d`` that runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from sparse_yolo.model.yolo import SparseYOLO

GFLOPS_CONVENTION = (
    "GFLOPs = 2 x multiply-accumulates / 1e9 of every Conv2d that runs, zero padding included; "
    "bias, BatchNorm, activations, pooling, upsampling, NMS and image statistics (the gradient "
    "mask) are not counted. Sparse: stem convs x active output sites, layers 5-22 x windowed "
    "area (an upper bound: the Detect box branch runs only around candidate anchors), plus any "
    "network the mask runs (learned, coarse)."
)
PROBE = 32  # px: every YOLOv8 conv's cost scales with the input area at multiples of this


def _conv_calls(run: Callable[[], Any], modules: Iterable[nn.Module]) -> list:
    """(MACs, output shape) of every call of a Conv2d inside ``modules`` while ``run()`` runs.

    The modules are put in eval mode meanwhile (no BatchNorm statistics change).
    """
    modules = [m for m in modules if m is not None]
    convs = {id(c): c for m in modules for c in m.modules() if isinstance(c, nn.Conv2d)}
    found: list[tuple[int, tuple[int, ...]]] = []

    def hook(c: nn.Conv2d, _inp: Any, out: torch.Tensor) -> None:
        per_output = c.in_channels // c.groups * c.kernel_size[0] * c.kernel_size[1]
        found.append((out[0].numel() * per_output, tuple(out.shape)))

    modes = [(m, m.training) for m in modules]
    handles = [c.register_forward_hook(hook) for c in convs.values()]
    try:
        for m in modules:
            m.eval()
        with torch.inference_mode():
            run()
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.train(training)
    return found


class FlopCounter:
    """Analytic conv cost of a SparseYOLO, dense or on active cells and windows.

    Each conv's MACs are counted once at a ``PROBE`` px input. YOLOv8 at any multiple of 32 px
    costs that times the area ratio; the sparse stem costs each conv's MACs per output site
    times its active sites (the mask's active cells at that conv's stride), and the dense
    remainder costs its MACs per stride-8 cell times the windowed area.

    Args:
        model: the detector (its device and dtype are used for the probe).
    """

    def __init__(self, model: SparseYOLO) -> None:
        lean = model.lean
        model.set_lean_inference(False)  # count the convs as Ultralytics' modules run them
        try:
            self._probe(model)
        finally:
            model.set_lean_inference(lean)

    def _probe(self, model: SparseYOLO) -> None:
        p = next(model.parameters())
        x = torch.zeros(1, 3, PROBE, PROBE, device=p.device, dtype=p.dtype)
        self._dense = sum(m for m, _ in _conv_calls(lambda: model(x), [model]))  # per PROBE^2 px

        def stem() -> None:
            t = x
            for layer in model.stem:
                t = layer(t)

        # (MACs per output site, stride in px) of each stem conv
        self._stem = [(m / (s[-2] * s[-1]), PROBE / s[-1]) for m, s in _conv_calls(stem, [model])]
        c3 = model.feature_info[0]["num_chs"]
        p3 = torch.zeros(1, c3, PROBE // 8, PROBE // 8, device=p.device, dtype=p.dtype)
        rem = _conv_calls(lambda: model.forward_p3(p3), [model])
        self._remainder = sum(m for m, _ in rem) / (PROBE // 8) ** 2  # per stride-8 cell

    def dense(self, height: int, width: int, batch: int = 1) -> float:
        """GFLOPs of the dense model on a (batch, 3, height, width) input, sides multiples of 32."""
        if height % PROBE or width % PROBE:
            raise ValueError(f"dense input {height}x{width} is not a multiple of {PROBE} px")
        return 2 * self._dense * batch * height * width / PROBE**2 / 1e9

    def stem(self, cells: np.ndarray, cell: int, dense: bool = False) -> float:
        """GFLOPs of the stem on the active (Hc, Wc) cells, or on every cell when ``dense``."""
        n = cells.size if dense else int(np.count_nonzero(cells))
        return 2 * sum(m * n * (cell / s) ** 2 for m, s in self._stem) / 1e9

    def remainder(self, windows: np.ndarray) -> float:
        """GFLOPs of layers 5-22 on (K, 4) windows (y0, x0, h, w) in stride-8 cells."""
        area = int((windows[:, 2] * windows[:, 3]).sum()) if len(windows) else 0
        return 2 * self._remainder * area / 1e9

    @staticmethod
    def during(run: Callable[[], Any], *modules: nn.Module | None) -> float:
        """GFLOPs of the convs of ``modules`` that ``run()`` calls (e.g. a mask's own network)."""
        return 2 * sum(m for m, _ in _conv_calls(run, modules)) / 1e9
