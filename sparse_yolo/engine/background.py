"""The background of a fixed camera: what windows read at the sites a frame skips.

A window densified from the sparse stem needs features at the sites its frame did not
compute. A still image offers only a guess, the stem's response to a flat image of the
frame's mean colour (``WindowConfig.fill``). A fixed camera knows better: the sites a frame
skips are the background it saw when it last computed every site, and their stem features
from that frame are what dense inference reads there, up to sensor noise and changes of
light. Borderline objects next to a moving one (a bag by a walking person, a boat by a
passing car) then score in a window as they do in the full frame, since the detector's
later layers see their real surroundings rather than a flat colour.

The engine keeps a :class:`Background` up to date itself: every frame that carries one and
runs every site (the dense path, or windows with every cell active) replaces it. Only such
frames do: the stem's features at the edge of a partial active set read zeros past the edge,
and written back they would spread that error into later frames.

The background is context, not evidence: it may still hold an object that has left since
(a car parked when the background was taken). A frame that read it keeps only the
detections centred on cells it computed (:func:`computed_only`).
"""

from __future__ import annotations

import numpy as np
import torch


class Background:
    """Stem features of the last frame of a stream computed at every site.

    Attributes:
        maps: per stem output, a (C, H, W) map over the padded frame at that output's stride
            (stored channels-last, so its sites are also a (H * W, C) row view); None until
            a frame was computed in full.
        image_hw: the (height, width) of the frame the maps came from.
    """

    def __init__(self) -> None:
        self.maps: list[torch.Tensor] | None = None
        self.image_hw: tuple[int, int] | None = None

    def fill(self, image_hw: tuple[int, int]) -> list[torch.Tensor] | None:
        """The maps, when they were computed on a frame of this size; else None."""
        if self.maps is None or self.image_hw != tuple(image_hw):
            return None
        return self.maps

    def capture(self, feats: list[torch.Tensor], image_hw: tuple[int, int]) -> None:
        """Keep one frame's stem outputs, computed at every site.

        Args:
            feats: per stem output, (C, H, W) features of the padded frame.
            image_hw: the frame's (height, width) in pixels.
        """
        self.maps = [f.detach().permute(1, 2, 0).contiguous().permute(2, 0, 1) for f in feats]
        self.image_hw = (int(image_hw[0]), int(image_hw[1]))


def computed_only(dets: torch.Tensor, cells: np.ndarray, cell: int) -> torch.Tensor:
    """The detections centred on a computed cell.

    Args:
        dets: (N, 6) [x1, y1, x2, y2, score, class] in frame pixels.
        cells: (Hc, Wc) bool, the cells the frame computed.
        cell: cell size in pixels.

    Returns:
        (M, 6) the rows of ``dets`` whose box centre lies in a computed cell.
    """
    if not len(dets):
        return dets
    centre = ((dets[:, :2] + dets[:, 2:4]) / 2 / cell).long().numpy()
    row = np.clip(centre[:, 1], 0, cells.shape[0] - 1)
    col = np.clip(centre[:, 0], 0, cells.shape[1] - 1)
    return dets[torch.from_numpy(cells[row, col])]
