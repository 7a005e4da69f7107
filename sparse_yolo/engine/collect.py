"""Windows of several frames on their way through the remainder, and their candidates.

The engine adds each frame's densified windows; equal-shaped windows of all frames are
batched together for the remainder's forward passes, and each candidate goes back to the
frame and window it came from before the frame's detections are merged.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from sparse_yolo.config import DetectorConfig
from sparse_yolo.postprocess import merge_windows, window_nms


class WindowCollector:
    """Windows of several frames, batched by shape across frames, and their candidates."""

    def __init__(self, n: int) -> None:
        self.boxes: list[list[torch.Tensor]] = [[] for _ in range(n)]
        self.count = [0] * n
        self.cands: list[list[torch.Tensor]] = [[] for _ in range(n)]
        self.pending: dict[tuple[int, int], list[tuple[int, int, torch.Tensor]]] = {}

    def add_windows(
        self, frame: int, boxes: torch.Tensor, feats: list[torch.Tensor] | None
    ) -> None:
        """(B, 4) stride-8 windows of a frame and their (B, C, h, w) features per stem output
        (None: no remainder to run, the candidates come from elsewhere)."""
        local = self.count[frame]
        self.boxes[frame].append(boxes.cpu())
        self.count[frame] += len(boxes)
        if feats is not None:
            key = tuple(feats[-1].shape[-2:])
            self.pending.setdefault(key, []).append((frame, local, feats))

    def window_batches(self, per_batch) -> Iterator[tuple[torch.Tensor, list[tuple[int, int]]]]:
        """Equal-shaped windows of every frame, ``per_batch(h, w)`` at a time, with the
        (frame, window) each row belongs to."""
        for (h, w), items in self.pending.items():
            levels = range(len(items[0][2]))
            feats = [torch.cat([t[k] for _, _, t in items]) for k in levels]
            owners = [(f, first + k) for f, first, t in items for k in range(len(t[-1]))]
            per = per_batch(h, w)
            for s in range(0, len(owners), per):
                yield [f[s : s + per] for f in feats], owners[s : s + per]
        self.pending.clear()

    def add_candidates(self, cand: torch.Tensor, owners: list[tuple[int, int]]) -> None:
        """(K, 7) candidates whose last column is the row in the batch ``owners`` describes."""
        if not len(cand):
            return
        row = cand[:, 6].long().cpu()
        frame = torch.tensor([f for f, _ in owners])[row]
        window = torch.tensor([w for _, w in owners], dtype=cand.dtype)[row].to(cand.device)
        for f in frame.unique().tolist():
            sel = (frame == f).to(cand.device)
            mine = cand[sel]
            mine[:, 6] = window[sel]
            self.cands[f].append(mine)

    def detections(
        self, frame: int, image_hw: tuple[int, int], cfg: DetectorConfig, end2end: bool = False
    ):
        """(N, 6) merged detections of one frame in its pixels, on CPU.

        An end-to-end (NMS-free) head's candidates are final within a window; only the
        objects that overlapping windows see twice are merged by NMS, and one window of such a
        head is left exactly as Ultralytics leaves it.
        """
        if not self.boxes[frame]:
            return torch.zeros((0, 6))
        boxes = torch.cat(self.boxes[frame])
        cand = torch.cat(self.cands[frame]) if self.cands[frame] else torch.zeros((0, 7))
        dets = window_nms(cand, boxes, cfg.post, suppress=not end2end)
        return merge_windows(dets, image_hw, cfg.post, suppress=not (end2end and len(boxes) == 1))
