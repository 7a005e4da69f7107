"""Fixed costs off the GPU's critical path: pinned uploads and CUDA graphs.

On a GPU a small model is bound by per-launch and per-copy costs, not arithmetic
(docs/engine.md). Two remedies, both CUDA-only in use and off on CPU:

* :class:`HostStaging`: frames go to the device from reused page-locked buffers without
  blocking the host (a pageable copy is staged and synchronous).
* :class:`GraphCache`: a fixed-shape forward is captured once as a CUDA graph and replayed,
  one launch for the whole network. Batches are padded to a power of two, and window shapes
  come from the planner's ladder (grown to shared shapes on CUDA), so a few graphs cover
  every frame. The captured function is the model's dense ``forward_p3`` with Ultralytics'
  full decode (static shapes); candidates above ``conf`` are picked after the replay. The
  engine sets the Detect head ``dynamic``, so each graph makes its own anchors: a graph
  captured for one shape must not read anchor tensors another shape has since replaced.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import torch

MAX_GRAPHS = 16  # captured shapes kept (least recently used dropped); each owns its memory
RING = 16  # pinned buffers per frame shape (frames of one batch in flight)


class HostStaging:
    """Uploads (H, W, 3) uint8 frames from reused pinned buffers, non-blocking."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._ring: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.cuda.Event | None]]] = {}

    def upload(self, image: np.ndarray) -> torch.Tensor:
        """``image`` on the device; the copy is queued on the current stream."""
        ring = self._ring.setdefault(image.shape, [])
        slot = next((i for i, (_, ev) in enumerate(ring) if ev is None or ev.query()), None)
        if slot is None:
            if len(ring) < RING:
                ring.append((torch.empty(image.shape, dtype=torch.uint8).pin_memory(), None))
                slot = len(ring) - 1
            else:  # every buffer still in flight: wait for the oldest
                slot = 0
                ring[0][1].synchronize()
        buf = ring[slot][0]
        np.copyto(buf.numpy(), image)
        out = buf.to(self.device, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        ring[slot] = (buf, event)
        return out


def bucket(n: int) -> int:
    """The batch size a graph is captured for: the next power of two."""
    return 1 << max(0, int(n) - 1).bit_length()


class GraphCache:
    """Runs ``fn`` on fixed-shape batches, replaying a CUDA graph per (name, shape).

    Args:
        capture: capture CUDA graphs (CUDA only); False runs ``fn`` eagerly with the same
            batch padding, which is what CPU tests check.
    """

    def __init__(self, capture: bool) -> None:
        self.capture = capture
        self._graphs: OrderedDict[tuple, tuple] = OrderedDict()

    def candidates(
        self, name: str, fn: Callable[[torch.Tensor], tuple], x: torch.Tensor, conf: float
    ) -> torch.Tensor:
        """Candidate detections of a batch through ``fn`` (a ``forward_p3``-like callable).

        Args:
            x: (B, C, H, W) input batch; padded with zeros to :func:`bucket` ``(B)`` rows.
            conf: score threshold.

        Returns:
            (K, 7) float [x1, y1, x2, y2, score, class, row] in input pixels, rows < B.
        """
        b = x.shape[0]
        if bucket(b) > b:
            pad = x.new_zeros((bucket(b) - b, *x.shape[1:]))
            x = torch.cat([x, pad]).contiguous(memory_format=torch.channels_last)
        y = self._run((name, tuple(x.shape), x.dtype), fn, x)
        return decode_candidates(y[:b], conf)

    def _run(self, key: tuple, fn: Callable[[torch.Tensor], tuple], x: torch.Tensor):
        if not self.capture:
            return fn(x)[0]
        if key not in self._graphs:
            self._graphs[key] = _capture(fn, x)
            if len(self._graphs) > MAX_GRAPHS:
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(key)
        graph, static_in, static_out = self._graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out


def _capture(fn: Callable[[torch.Tensor], tuple], x: torch.Tensor) -> tuple:
    """Warm ``fn`` up on a side stream, then capture it; returns (graph, input, output)."""
    static_in = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn(static_in)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = fn(static_in)[0]
    return graph, static_in, static_out


def decode_candidates(y: torch.Tensor, conf: float) -> torch.Tensor:
    """Ultralytics' decoded head output -> candidates above ``conf``.

    Args:
        y: (B, 4 + nc, A) boxes (xywh, input pixels) and class scores.

    Returns:
        (K, 7) float [x1, y1, x2, y2, score, class, row].
    """
    score, cls = y[:, 4:].max(1)  # (B, A)
    row, anchor = torch.nonzero(score > conf, as_tuple=True)
    xywh = y[row, :4, anchor].float()
    xyxy = torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
    picked = [score[row, anchor].float()[:, None], cls[row, anchor].float()[:, None]]
    return torch.cat([xyxy, *picked, row.float()[:, None]], 1)
