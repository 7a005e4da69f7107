"""A training-free candidate that was measured and not shipped: RX anomaly of cell descriptors.

Each 16 px cell is described by its luma standard deviation and its contrast against the
5x5-cell neighbourhood (L*a*b* mean minus the neighbourhood's, luma deviation minus the
neighbourhood's); ``--colour`` adds the cell's own L*a*b* mean. The score is the Mahalanobis
distance of the descriptor from the frame's robust mean and covariance (the 90% least
anomalous cells), i.e. anomaly against the frame's own texture statistics. Cells above
--thresholds go through the shared post-processing chain. Reports, per frame, cells marked,
labelled objects covered and dense detections covered (centre in an active cell).

Usage: PYTHONPATH=$PWD python tools/mask_probe_rx.py [--thresholds 10 20 40] [--colour]
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch
from _shared import shared_dir
from mask_bench import mosaic_frame, read_frames, textured_frame

from sparse_yolo.config import MaskConfig
from sparse_yolo.detector import Detector
from sparse_yolo.masks import cell_grid, postprocess
from sparse_yolo.masks.measure import centres_covered
from sparse_yolo.model.loading import load_model

CELL = 16


def descriptors(image: np.ndarray, colour: bool) -> np.ndarray:
    """(Hc, Wc, D) float32 cell descriptors of an (H, W, 3) uint8 BGR image."""
    h, w = image.shape[:2]
    hc, wc = cell_grid(h, w, CELL)
    image = cv2.copyMakeBorder(image, 0, hc * CELL - h, 0, wc * CELL - w, cv2.BORDER_REFLECT_101)
    lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB).astype(np.float32)
    mean = cv2.resize(lab, (wc, hc), interpolation=cv2.INTER_AREA)
    sq = cv2.resize(lab[..., 0] ** 2, (wc, hc), interpolation=cv2.INTER_AREA)
    std = np.sqrt(np.maximum(sq - mean[..., 0] ** 2, 0))
    around = cv2.blur(mean, (5, 5), borderType=cv2.BORDER_REFLECT)
    std_around = cv2.blur(std, (5, 5), borderType=cv2.BORDER_REFLECT)
    parts = [std[..., None], mean - around, (std - std_around)[..., None]]
    return np.concatenate(([mean] if colour else []) + parts, -1)


def rx_scores(d: np.ndarray) -> np.ndarray:
    """(Hc, Wc) squared Mahalanobis distance from the robust mean of the frame's cells."""
    x = d.reshape(-1, d.shape[-1]).astype(np.float64)
    keep = np.ones(len(x), bool)
    for _ in range(2):  # the second pass drops the 10% most anomalous cells from the fit
        mu = x[keep].mean(0)
        inv = np.linalg.inv(np.cov(x[keep].T) + 1e-2 * np.eye(x.shape[1]))
        s = np.einsum("ij,jk,ik->i", x - mu, inv, x - mu)
        keep = s < np.percentile(s, 90)
    return s.reshape(d.shape[:2]).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--thresholds", type=float, nargs="+", default=[10.0, 20.0, 40.0])
    ap.add_argument("--colour", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    data = shared_dir() / "data"
    frames = read_frames(data) + [mosaic_frame(0), textured_frame(data, 0)]
    dense = Detector(load_model(shared_dir() / "weights" / "yolov8n.pt"), mask="all", device="cpu")
    refs = [
        dense.predict_array(f.image, None if f.valid.all() else f.valid).detections.boxes
        for f in frames
    ]
    scores = [rx_scores(descriptors(f.image, args.colour)) for f in frames]
    for t in args.thresholds:
        print(f"threshold {t}: frame, cells marked, labels covered, dense detections covered")
        for f, ref, s in zip(frames, refs, scores, strict=True):
            cells = postprocess(s > t, s, 2 * t, MaskConfig())
            lab = "-" if f.boxes is None else f"{centres_covered(cells, CELL, f.boxes).mean():.2f}"
            dd = (
                "-"
                if not len(ref)
                else f"{centres_covered(cells, CELL, ref).mean():.2f} of {len(ref)}"
            )
            print(f"  {f.name:45s} {cells.mean():.3f}  {lab}  {dd}")


if __name__ == "__main__":
    main()
