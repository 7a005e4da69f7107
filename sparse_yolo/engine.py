"""Run SparseYOLO on one image: sparse stem, windowed dense remainder, decode and merge.

This is the one place that knows the stage order for an in-memory image. Rasters larger
than a tile are cut into tiles by the pipeline and each tile comes through here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import cv2
import numpy as np
import torch

from sparse_yolo.config import DetectorConfig
from sparse_yolo.masks import MaskResult
from sparse_yolo.model.windows import group_by_shape, plan_windows
from sparse_yolo.model.yolo import SparseYOLO
from sparse_yolo.postprocess import merge_windows, window_nms
from sparse_yolo.sparse.active import ActivePyramid, pad_cells
from sparse_yolo.sparse.backends import SparseBackend, make_backend
from sparse_yolo.sparse.stem import densify, flat_response, run_stem
from sparse_yolo.types import EngineRun

# Above this active fraction the gather kernel loses to dense convolution plus masks on CPU.
# Measured on a 4K frame, 2 threads, blob masks: gather 131/219/316/446/867 ms against dense
# 685/663/626/797/789 ms at 10/20/30/40/50% active, so ``auto`` runs the stem dense above 45%.
GATHER_MAX_ACTIVE = 0.45
# When ``auto`` runs the stem dense and the windows cover at least this share of the frame,
# it computes every cell: on a cluttered 4K frame (84% active, windows 94%) the masked run
# took 1.99 s and recovered 0.969 of the dense detections; every cell took 1.88 s, exact.
ALL_WINDOWS = 0.9
# Stride-8 cells per remainder batch: bounds activation memory (about 2048 x 2048 px).
MAX_BATCH_CELLS = 256 * 256
# The fixed cost of one more remainder forward pass, in stride-8 cells of compute: windows
# grow to a shared shape when that costs less (model.windows.group_by_shape). On an H200
# (fp16) a forward took about 5.5 ms however small (7 window shapes: 38.7 ms) and the whole
# 4K frame (123k cells) 8.2 ms, so about 64k cells. On CPU the per-cell cost dominates (2
# threads: 1.6 s for 123k cells), so windows keep their own (ladder-snapped) shapes.
FORWARD_CELLS = {"cuda": 64 * 1024}


class Timer:
    """Accumulates seconds per stage name."""

    def __init__(self, device: torch.device) -> None:
        self.seconds: dict[str, float] = {}
        self.device = device

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


class SparseEngine:
    """Sparse inference of one model on in-memory images.

    Args:
        model: the detector (moved to ``device`` and put in eval mode).
        cfg: backend, window and post-processing settings.
        device: torch device.
    """

    def __init__(self, model: SparseYOLO, cfg: DetectorConfig, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        # BN folded and channels-last weights: the dense layers run oneDNN's fastest path
        # (measured on 2 threads: YOLOv8n at 3840x2176 2.5 s channels-last vs 3.3 s NCHW).
        self.model = model.fused().to(self.device).to(memory_format=torch.channels_last)
        if cfg.half:
            self.model.half()
        self.model.set_lean_inference(True)
        self.cfg = cfg

    def backend_for(self, active_fraction: float) -> SparseBackend:
        """The configured backend; ``auto`` goes dense when most cells are active."""
        name = self.cfg.backend
        if name == "auto" and active_fraction > GATHER_MAX_ACTIVE:
            name = "dense"
        return make_backend(name, self.device)

    def upload(self, image: np.ndarray) -> torch.Tensor:
        """The (H, W, 3) uint8 frame on the model's device (a view on CPU)."""
        return torch.from_numpy(np.ascontiguousarray(image)).to(self.device)

    @torch.inference_mode()
    def run(
        self,
        image: np.ndarray,
        mask: MaskResult,
        timer: Timer,
        valid: np.ndarray | None = None,
        frame: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, EngineRun]:
        """Detect objects in the active cells of one image.

        Args:
            image: (H, W, 3) uint8 BGR.
            mask: its active cells (covering the image padded to a multiple of 32).
            timer: receives ``plan``, ``stem``, ``densify``, ``remainder`` and ``merge`` seconds.
            valid: optional (H, W) bool of real pixels (not nodata): the background fill
                takes its colour from them only.
            frame: ``image`` already on the device (:meth:`upload`), if it is.

        Returns:
            (N, 6) float tensor [x1, y1, x2, y2, score, class] in image pixels, on CPU,
            and the cells and windows the engine actually used.
        """
        cells = pad_cells(mask.cells, mask.cell, self.model.max_stride)  # P6: 64 px
        align = self.model.max_stride // 8
        backend = self.backend_for(mask.active_fraction)
        with timer.stage("plan"):
            windows = plan_windows(cells, mask.cell, self.cfg.window, align)
        grid_hw = (cells.shape[0] * mask.cell // 8, cells.shape[1] * mask.cell // 8)
        run = EngineRun(backend.name, self.cfg.window.fill, cells, mask.cell, windows)
        auto_dense = self.cfg.backend == "auto" and backend.name == "dense"
        if auto_dense and run.window_fraction >= ALL_WINDOWS:
            # The masked dense stem costs more than the cells it skips, and the windows
            # span the frame anyway: compute every cell (exactly the dense network).
            cells = np.ones_like(cells)
            with timer.stage("plan"):
                windows = plan_windows(cells, mask.cell, self.cfg.window, align)
            run = EngineRun(backend.name, run.fill, cells, mask.cell, windows)
        if not len(windows):
            return torch.zeros((0, 6)), run
        with timer.stage("stem"):
            pyramid = ActivePyramid(torch.from_numpy(cells).to(self.device), mask.cell)
            img = self.upload(image) if frame is None else frame
            feats = run_stem(self.model.stem, backend, img, pyramid)
        with timer.stage("densify"):
            fill = self._fill(image, pyramid, valid, frame)
        dets = []
        for boxes in self._batches(windows, grid_hw, align):
            with timer.stage("densify"):
                batch = densify(backend, feats, boxes.to(self.device), fill)
            with timer.stage("remainder"):
                cand = self.model.detect_p3(batch, self.cfg.post.conf)
            with timer.stage("merge"):
                dets.append(window_nms(cand, boxes, self.cfg.post, suppress=not self.model.end2end))
        with timer.stage("merge"):
            # an end-to-end head's one window is final as Ultralytics leaves it; overlapping
            # windows see objects twice, so their union is merged by NMS
            single = self.model.end2end and len(windows) == 1
            out = merge_windows(torch.cat(dets), image.shape[:2], self.cfg.post, not single)
        return out, run

    def _fill(
        self,
        image: np.ndarray,
        pyramid: ActivePyramid,
        valid: np.ndarray | None,
        frame: torch.Tensor | None = None,
    ) -> list[torch.Tensor] | None:
        """(C,) features for inactive sites per stem output: the stem's flat mean-colour response.

        The mean colour (of valid pixels) is taken on the uploaded ``frame`` when there is one
        (a CUDA frame: no pass over the pixels on the CPU), else with OpenCV on ``image``.
        """
        if self.cfg.window.fill == "zero" or pyramid.all_active:
            return None
        use = None if valid is None or not valid.any() else valid
        if frame is not None:
            pix = frame.reshape(-1, 3)
            if use is not None:
                pix = pix[torch.from_numpy(use.reshape(-1)).to(frame.device)]
            bgr = pix.float().mean(0)
        else:
            weights = None if use is None else use.astype(np.uint8)
            bgr = torch.tensor(cv2.mean(image, weights)[:3], device=self.device)
        rgb = (bgr.flip(0) / 255).to(self.device, self.model.dtype)[None]
        return [f[0] for f in flat_response(self.model.stem, rgb)]

    def _batches(
        self, windows: np.ndarray, grid_hw: tuple[int, int], align: int
    ) -> Iterator[torch.Tensor]:
        forward_cells = FORWARD_CELLS.get(self.device.type, 0)
        for group in group_by_shape(windows, grid_hw, forward_cells, align):
            per = max(1, MAX_BATCH_CELLS // int(group[0, 2] * group[0, 3]))
            yield from group.split(per)
