"""``coarse``: the detector itself, dense at low resolution, marks candidate cells."""

from __future__ import annotations

import cv2
import numpy as np

from sparse_yolo.config import PostprocessConfig
from sparse_yolo.masks.base import CellMask, cell_grid

# Ultralytics' NMS settings for the low-resolution candidate boxes.
COARSE_NMS = PostprocessConfig(conf=0.0, iou=0.7, max_det=3000)


class CoarseMask(CellMask):
    """Cascade: the same detector, dense at low resolution with a low confidence threshold.

    Candidate boxes, grown by one cell, mark the cells to examine at full resolution; a
    cell scores the best confidence among the boxes covering it. Such a cascade misses many
    of the smallest objects, which a full-resolution statistic catches (docs/masks.md).
    """

    name = "coarse"

    def scores(self, image: np.ndarray) -> np.ndarray:
        import torch  # noqa: PLC0415 - the masks package imports without torch

        from sparse_yolo.imageops import bgr_to_batch  # noqa: PLC0415
        from sparse_yolo.postprocess import nms  # noqa: PLC0415

        detector = self.context.get("detector")
        if detector is None:
            raise ValueError("the coarse mask needs the detector (make_mask(cfg, detector=...))")
        model = detector.model
        h, w = image.shape[:2]
        c = self.cfg.cell
        scale = min(1.0, self.cfg.coarse_size / max(h, w))
        size = (max(32, round(w * scale / 32) * 32), max(32, round(h * scale / 32) * 32))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        device = next(model.parameters()).device
        x = bgr_to_batch(small, device, model.dtype, pad=0)  # sides are multiples of 32
        with torch.inference_mode():  # dense stem, then the candidate-only head
            cand = model.detect_p3(model.dense_stem(x), self.cfg.coarse_conf)
            d = nms(cand[:, :6], COARSE_NMS).cpu().numpy()
        d[:, [0, 2]] *= w / size[0]
        d[:, [1, 3]] *= h / size[1]
        hc, wc = cell_grid(h, w, c)
        out = np.zeros((hc, wc), np.float32)
        for x1, y1, x2, y2, conf, _ in d[np.argsort(d[:, 4])]:  # best confidence painted last
            r0, r1 = max(0, int(y1 // c) - 1), min(hc, int(y2 // c) + 2)
            c0, c1 = max(0, int(x1 // c) - 1), min(wc, int(x2 // c) + 2)
            out[r0:r1, c0:c1] = np.maximum(out[r0:r1, c0:c1], conf)
        return out

    def select(self, scores: np.ndarray) -> tuple[np.ndarray, float]:
        return scores > 0, 10 * self.cfg.coarse_conf
