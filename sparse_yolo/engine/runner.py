"""Run SparseYOLO on in-memory frames: plan, stem, windowed remainder, decode and merge.

This is the one place that knows the stage order for in-memory images. Rasters larger than a
tile are cut into tiles by the pipeline and each tile comes through here. Several frames (or
tiles) run together through :meth:`SparseEngine.run_batch`: each is planned and its stem run
alone, then the windows of all of them share the remainder's forward passes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
from ultralytics.nn.modules import Detect

from sparse_yolo.config import DetectorConfig
from sparse_yolo.engine.background import Background, computed_only
from sparse_yolo.engine.calibrate import load_costs
from sparse_yolo.engine.collect import WindowCollector
from sparse_yolo.engine.gpu import GraphCache, HostStaging
from sparse_yolo.engine.lanes import run_in_lanes
from sparse_yolo.engine.policy import CostTable, choose
from sparse_yolo.engine.traced import TracedFeatures
from sparse_yolo.engine.windows import group_by_shape, plan_windows
from sparse_yolo.imageops import bgr_to_batch, padded
from sparse_yolo.masks import MaskResult
from sparse_yolo.model.yolo import SparseYOLO
from sparse_yolo.sparse.active import ActivePyramid, pad_cells
from sparse_yolo.sparse.backends import make_backend, spconv_available
from sparse_yolo.sparse.stem import densify, flat_response, run_stem
from sparse_yolo.types import EngineRun

# Stride-8 cells per remainder batch: bounds activation memory (CPU: about 2048 x 2048 px;
# CUDA: about eight 4K frames, so predict_batch fills one forward).
MAX_BATCH_CELLS = {"cpu": 256 * 256, "cuda": 1024 * 1024}
# One more remainder forward's fixed cost in stride-8 cells: windows grow to a shared shape
# when that costs less (windows.group_by_shape). Not on CPU, where the grown context moved
# borderline scores (docs/performance.md) and lanes (engine.lanes) take the overhead.
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


@dataclass
class Frame:
    """One frame for the engine: (H, W, 3) uint8 BGR ``image``, its cell ``mask``, optional
    (H, W) bool ``valid`` pixels, the ``uploaded`` image on the device, and the
    ``background`` of its camera (a stream's frames share one: its windows read skipped
    sites from it, and a frame computed at every site renews it)."""

    image: np.ndarray
    mask: MaskResult
    valid: np.ndarray | None = None
    uploaded: torch.Tensor | None = None
    background: Background | None = None


@dataclass
class Plan:
    """How one frame runs: ``path`` (policy.PATHS), stem ``backend`` (None: plain dense), the
    cells the stem computes, the (K, 4) stride-8 windows, and facts for the run record."""

    path: str
    backend: str | None
    cells: np.ndarray
    windows: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


class SparseEngine:
    """Sparse inference of one model on in-memory images.

    Args:
        model: the detector (moved to ``device`` and put in eval mode).
        cfg: backend, window and post-processing settings.
        device: torch device.
        costs: the cost table ``backend: auto`` decides with; None loads it on first need
            (:func:`sparse_yolo.engine.calibrate.load_costs`).
        graphs: capture CUDA graphs for fixed-shape forwards; default on CUDA only.
    """

    def __init__(
        self,
        model: SparseYOLO,
        cfg: DetectorConfig,
        device: str | torch.device = "cpu",
        costs: CostTable | None = None,
        graphs: bool | None = None,
    ):
        self.device = torch.device(device)
        # BN folded and channels-last weights: the dense layers run oneDNN's fastest path.
        self.model = model.fused().to(self.device).to(memory_format=torch.channels_last)
        if cfg.half:
            self.model.half()
        self.model.set_lean_inference(True)
        self.cfg = cfg
        # windows align to the coarsest stride: 4 stride-8 cells (32 px), 8 for P6 (64 px)
        self.align = self.model.max_stride // 8
        self._costs = costs
        cuda = self.device.type == "cuda"
        self.graphs = GraphCache(capture=cuda) if (cuda if graphs is None else graphs) else None
        if self.graphs is not None and self.graphs.capture:
            for m in self.model.modules():
                if isinstance(m, Detect):  # anchors made inside each graph, not shared state
                    m.dynamic = True
        self._staging = HostStaging(self.device) if cuda else None
        self.features = self.model.features if cuda else TracedFeatures(self.model)  # CPU: C++
        # the last windows and active pyramid, reused while the active set is unchanged (video)
        self._last_plan: dict[str, tuple[bytes, Any]] = {}

    @property
    def costs(self) -> CostTable:
        self._costs = self._costs if self._costs is not None else load_costs(self)
        return self._costs

    def sparse_backends(self) -> tuple[str, ...]:
        """Backends ``auto`` weighs for the windows path (spconv only on CUDA: its CPU build
        runs single-threaded)."""
        cuda_spconv = self.device.type == "cuda" and spconv_available()
        return ("gather", "dense", "spconv") if cuda_spconv else ("gather", "dense")

    def upload(self, image: np.ndarray) -> torch.Tensor:
        """The (H, W, 3) uint8 frame on the model's device (a view on CPU)."""
        if self._staging is not None:
            return self._staging.upload(np.ascontiguousarray(image))
        return torch.from_numpy(np.ascontiguousarray(image)).to(self.device)

    # ------------------------------------------------------------------ planning
    def plan(self, mask: MaskResult) -> Plan:
        """The windows over the active cells, and the path the frame takes."""
        cells = pad_cells(mask.cells, mask.cell, self.model.max_stride)
        windows = self._reused(
            "windows", cells, mask.cell, plan_windows, self.cfg.window, self.align
        )
        grid_hw = (cells.shape[0] * mask.cell // 8, cells.shape[1] * mask.cell // 8)
        if self.cfg.backend != "auto" or not len(windows):
            return Plan("windows", self.cfg.backend, cells, windows)
        forwards = lambda w: self.n_forwards(w, grid_hw)  # noqa: E731
        choice = choose(self.costs, cells, mask.cell, windows, forwards, self.sparse_backends())
        info = {"predicted_ms": {k: round(v * 1e3, 1) for k, v in choice.predicted.items()}}
        if choice.path == "windows":
            return Plan("windows", choice.backend, cells, windows, info)
        full = np.array([[0, 0, *grid_hw]], dtype=np.int64)
        backend = "dense" if choice.path == "every_cell" else None
        return Plan(choice.path, backend, np.ones_like(cells), full, info)

    def active_pyramid(self, cells: np.ndarray, cell: int) -> ActivePyramid:
        """The active set of (Hc, Wc) ``cells`` at every stride, reused while unchanged."""
        return self._reused(
            "pyramid",
            cells,
            cell,
            lambda c, s: ActivePyramid(torch.from_numpy(c).to(self.device), s),
        )

    def _reused(self, what: str, cells: np.ndarray, cell: int, make, *args: Any) -> Any:
        key = cells.tobytes() + bytes(str((cells.shape, cell)), "ascii")
        last = self._last_plan.get(what)
        if last is None or last[0] != key:
            last = self._last_plan[what] = (key, make(cells, cell, *args))
        return last[1]

    def n_forwards(self, windows: np.ndarray, grid_hw: tuple[int, int]) -> int:
        """Remainder forward passes the windows of one frame take alone."""
        groups = self._shape_groups(windows, grid_hw)
        return sum(-(-len(g) // self._per_batch(int(g[0, 2]), int(g[0, 3]))) for g in groups)

    def _shape_groups(self, windows: np.ndarray, grid_hw: tuple[int, int]) -> list:
        """Windows by shape; on CUDA grown to shared shapes when a forward costs more."""
        forward_cells = FORWARD_CELLS.get(self.device.type, 0)
        return group_by_shape(windows, grid_hw, forward_cells, self.align)

    # ------------------------------------------------------------------ running
    @torch.inference_mode()
    def run(
        self,
        image: np.ndarray,
        mask: MaskResult,
        timer: Timer,
        valid: np.ndarray | None = None,
        frame: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, EngineRun]:
        """Detect objects in the active cells of one image; see :meth:`run_batch`."""
        return self.run_batch([Frame(image, mask, valid, frame)], timer)[0]

    @torch.inference_mode()
    def run_batch(self, frames: list[Frame], timer: Timer) -> list[tuple[torch.Tensor, EngineRun]]:
        """Detect objects in several frames, sharing the remainder's forward passes.

        Args:
            frames: images with their masks (any sizes; masks cover each image padded to a
                multiple of 32).
            timer: receives ``plan``, ``stem``, ``densify``, ``remainder`` and ``merge``
                seconds, summed over the frames.

        Returns:
            Per frame: (N, 6) float tensor [x1, y1, x2, y2, score, class] in its pixels, on
            CPU, and what the engine computed (path, backend, cells, windows, predictions).
        """
        plans = []
        for f in frames:
            with timer.stage("plan"):
                plans.append(self.plan(f.mask))
        out = WindowCollector(len(frames))
        sparse = [i for i, p in enumerate(plans) if p.path != "dense" and len(p.windows)]
        for i in sparse:
            self._stem_windows(frames[i], plans[i], i, out, timer)
        self._remainder(out, timer)
        self._dense(frames, [i for i, p in enumerate(plans) if p.path == "dense"], out, timer)
        results = []
        for i, (f, p) in enumerate(zip(frames, plans, strict=True)):
            with timer.stage("merge"):
                dets = out.detections(i, f.image.shape[:2], self.cfg, self.model.end2end)
                if p.info.get("fill") == "background":
                    dets = computed_only(dets, p.cells, f.mask.cell)
            results.append((dets, self._record(f, p)))
        return results

    def _record(self, frame: Frame, plan: Plan) -> EngineRun:
        predicted = plan.info.get("predicted_ms", {})
        backend = plan.backend or "plain"
        fill = plan.info.get("fill", self.cfg.window.fill)
        return EngineRun(
            backend, fill, plan.cells, frame.mask.cell, plan.windows, plan.path, predicted
        )

    def _stem_windows(
        self, f: Frame, plan: Plan, index: int, out: WindowCollector, timer: Timer
    ) -> None:
        """Sparse stem of one frame, then its windows densified into ``out``."""
        backend = make_backend(plan.backend, self.device)
        with timer.stage("stem"):
            pyramid = self.active_pyramid(plan.cells, f.mask.cell)
            img = self.upload(f.image) if f.uploaded is None else f.uploaded
            feats = run_stem(self.model.stem, backend, img, pyramid)
        with timer.stage("densify"):
            fill = self._background(f, pyramid, backend, feats, plan)
            fill = fill or self._fill(f.image, pyramid, f.valid, f.uploaded)
            for boxes in self._shape_groups(plan.windows, _grid_hw(plan, f.mask.cell)):
                out.add_windows(index, boxes, densify(backend, feats, boxes.to(self.device), fill))

    @staticmethod
    def _background(f: Frame, pyramid: ActivePyramid, backend, feats, plan: Plan) -> list | None:
        """The frame's background maps as the fill of its skipped sites, if it has them; a
        frame whose every site is active renews them instead (engine.background)."""
        if f.background is None:
            return None
        if pyramid.all_active:
            f.background.capture([backend.grid(x)[0] for x in feats], f.image.shape[:2])
            return None
        maps = f.background.fill(f.image.shape[:2])
        if maps is not None:
            plan.info["fill"] = "background"
        return maps

    def _remainder(self, out: WindowCollector, timer: Timer) -> None:
        batches = list(out.window_batches(self._per_batch))
        cpu = self.device.type == "cpu" and self.graphs is None
        lanes, sizes = torch.get_num_threads() if cpu else 1, [b[-1].numel() for b, _ in batches]
        with timer.stage("remainder"):
            cands = run_in_lanes(self.remainder, [b for b, _ in batches], sizes, lanes)
        for cand, (_, owners) in zip(cands, batches, strict=True):
            out.add_candidates(cand, owners)

    def _per_batch(self, h: int, w: int) -> int:
        return max(1, MAX_BATCH_CELLS.get(self.device.type, MAX_BATCH_CELLS["cpu"]) // (h * w))

    @torch.inference_mode()
    def remainder(self, stem_out: list[torch.Tensor]) -> torch.Tensor:
        """Windows of every stem output ((B, C, h, w) each, stride 8 last) -> (K, 7) candidates
        [.., window] in window pixels."""
        conf = self.cfg.post.conf
        if self.graphs is not None and len(stem_out) == 1:
            return self.graphs.candidates("remainder", self.model.forward_p3, stem_out[0], conf)
        return self.model.detect_p3(stem_out, conf, self.features)

    @torch.inference_mode()
    def dense_path(self, image: np.ndarray) -> torch.Tensor:
        """The plain dense forward of one frame: (K, 7) candidates in its pixels."""
        return self._dense_forward(self._dense_input([image]))

    def _dense_input(self, images: list[np.ndarray | torch.Tensor]) -> torch.Tensor:
        """(B, 3, H', W') RGB in [0, 1], zero-padded to multiples of the model's coarsest
        stride, channels-last."""
        x = torch.cat(
            [
                bgr_to_batch(
                    im if torch.is_tensor(im) else self.upload(im),
                    self.device,
                    self.model.dtype,
                    self.model.max_stride,
                )
                for im in images
            ]
        )
        return x.contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def _dense_forward(self, x: torch.Tensor, frames: list[Frame] = ()) -> torch.Tensor:
        """(K, 7) candidates of the (B, 3, H, W) batch; the ``frames`` it holds, in order,
        renew their backgrounds from its stem outputs."""
        conf, model = self.cfg.post.conf, self.model
        if any(f.background is not None for f in frames):
            stem = model.dense_stem(x)
            for k, f in enumerate(frames):
                if f.background is not None:
                    f.background.capture([s[k] for s in stem], f.image.shape[:2])
            return self.remainder(stem)
        if self.graphs is not None:
            fn = lambda t: model.forward_p3(model.dense_stem(t))  # noqa: E731
            return self.graphs.candidates("dense", fn, x, conf)
        return model.detect_p3(model.dense_stem(x), conf)

    def _dense(self, frames: list[Frame], which: list[int], out: WindowCollector, timer: Timer):
        """The plain dense path for frames the policy sent there, equal sizes batched."""
        by_size: dict[tuple[int, int], list[int]] = {}
        for i in which:
            by_size.setdefault(frames[i].image.shape[:2], []).append(i)
        for (h, w), ids in by_size.items():
            per = self._per_batch(padded(h) // 8, padded(w) // 8)
            for k in range(0, len(ids), per):
                chunk = ids[k : k + per]
                with timer.stage("remainder"):
                    x = self._dense_input([_pixels(frames[i]) for i in chunk])
                    cand = self._dense_forward(x, [frames[i] for i in chunk])
                whole = torch.tensor([[0, 0, -(-h // 8), -(-w // 8)]])
                for i in chunk:
                    out.add_windows(i, whole, None)
                out.add_candidates(cand, [(i, 0) for i in chunk])

    def _fill(
        self,
        image: np.ndarray,
        pyramid: ActivePyramid,
        valid: np.ndarray | None,
        frame: torch.Tensor | None = None,
    ) -> list[torch.Tensor] | None:
        """(C,) features for inactive sites per stem output: the stem's flat mean-colour
        response.

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


def _pixels(f: Frame) -> np.ndarray | torch.Tensor:
    """The frame on the device when it was uploaded already, else its array."""
    return f.image if f.uploaded is None else f.uploaded


def _grid_hw(plan: Plan, cell: int) -> tuple[int, int]:
    return plan.cells.shape[0] * cell // 8, plan.cells.shape[1] * cell // 8
