"""The methods ``compare`` times: the sparse pipeline and its dense baselines.

Every method is a *runner*: ``runner(image) -> Detections`` for an (H, W, 3) uint8 BGR frame,
and ``runner.cost(image) -> (gflops, info)`` for the work of its last call.

* ``sparse``: the :class:`~sparse_yolo.detector.Detector` with its mask and backend.
* ``dense@S``: dense at input size S, letterboxed as Ultralytics does. Ultralytics' own
  predictor runs an Ultralytics checkpoint; a sparse-yolo checkpoint runs its SparseYOLO dense.
* ``dense-full``: the same model dense over the whole frame, zero-padded to a multiple of 32.
* ``sahi-S``: SAHI-style S px slices at an overlap ratio, dense and batched, merged greedily
  (SAHI's GREEDYNMM on intersection over the smaller box) or by NMS. SAHI's optional extra
  full-frame pass is left out: that is the ``dense@S`` row.

Dense baselines run a copy of the model with BatchNorm folded into the convs, as Ultralytics'
predictor does; the sparse pipeline runs the model as the ``detect`` command does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from sparse_yolo.bench.flops import FlopCounter
from sparse_yolo.config import PostprocessConfig
from sparse_yolo.imageops import PAD_TO, bgr_to_batch, padded
from sparse_yolo.model.yolo import CHECKPOINT_FORMAT, SparseYOLO
from sparse_yolo.postprocess import merge_tiles, merge_windows
from sparse_yolo.tiling import tile_offsets
from sparse_yolo.types import Detections


class Runner(Protocol):
    name: str

    def __call__(self, image: np.ndarray) -> Detections: ...

    def cost(self, image: np.ndarray) -> tuple[float, dict[str, Any]]: ...


def to_batch(image: np.ndarray, device: torch.device, half: bool = False) -> torch.Tensor:
    """(H, W, 3) uint8 BGR -> (1, 3, Hp, Wp) RGB in [0, 1], zero-padded to multiples of 32."""
    return bgr_to_batch(image, device, torch.float16 if half else torch.float32)


def _clip(d: torch.Tensor, height: int, width: int) -> torch.Tensor:
    d[:, [0, 2]] = d[:, [0, 2]].clamp(0, width)
    d[:, [1, 3]] = d[:, [1, 3]].clamp(0, height)
    return d


def _detections(d: torch.Tensor | np.ndarray, names: dict[int, str]) -> Detections:
    d = d.cpu().numpy() if isinstance(d, torch.Tensor) else d
    return Detections(d[:, :4], d[:, 4], d[:, 5].astype(np.int64), names)


def fused_copy(model: SparseYOLO, device: torch.device, half: bool = False) -> SparseYOLO:
    """A BN-fused copy for dense baselines (as Ultralytics does), without the mask net.

    Ultralytics' own modules (no in-place SiLU, no lean neck), whatever the engine set.
    """
    out = model.fused().set_lean_inference(False)
    out.mask_net = None
    out = out.to(device)
    return out.half() if half else out


@dataclass
class DenseModel:
    """What the dense baselines share.

    Attributes:
        model: a BN-fused copy (:func:`fused_copy`) on the device, fp16 when ``half``.
        post: confidence, IoU, class-agnostic flag and max_det of NMS.
        counter: conv cost of the (unfused) architecture.
        half: fp16 inputs.
    """

    model: SparseYOLO
    post: PostprocessConfig
    counter: FlopCounter
    half: bool = False

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def predict(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) RGB batch -> per image (N, 6) [x1, y1, x2, y2, score, class] after NMS."""
        from ultralytics.utils.nms import non_max_suppression  # noqa: PLC0415

        p = self.post
        with torch.no_grad():  # not inference_mode: callers shift and clip boxes in place
            out = non_max_suppression(
                self.model(x)[0], p.conf, p.iou, agnostic=p.agnostic, max_det=p.max_det
            )
        return [d.float() for d in out]

    def batch(self, image: np.ndarray) -> torch.Tensor:
        return to_batch(image, self.device, self.half)


class SparseRunner:
    """The sparse pipeline: ``Detector.predict_array`` with its configured mask and backend."""

    def __init__(self, detector, counter: FlopCounter, name: str = "sparse") -> None:
        self.detector, self.counter, self.name = detector, counter, name
        self.last = None

    def __call__(self, image: np.ndarray) -> Detections:
        self.last = self.detector.predict_array(image)
        return self.last.detections

    def cost(self, image: np.ndarray) -> tuple[float, dict[str, Any]]:
        res = self.last if self.last is not None else self.detector.predict_array(image)
        cfg, mask, stats, run = self.detector.config, res.mask, res.stats, res.engine
        # the cells and windows the engine used (auto may have promoted the frame to all cells)
        windows = run.windows
        # Stem work as run: the dense backend convolves every cell, then masks.
        stem = self.counter.stem(run.cells, run.cell, run.backend == "dense")
        stem = stem if len(windows) else 0.0
        remainder = self.counter.remainder(windows)
        mask_fn = self.detector.mask  # masks that run a network (learned, coarse) count it
        net = getattr(mask_fn, "net", None)
        mask_gflops = self.counter.during(lambda: mask_fn(image), self.detector.model, net)
        gflops = stem + remainder + mask_gflops
        info = {
            "input": f"act {stats.active_fraction:.0%} win {stats.window_fraction:.0%}",
            "mask": cfg.mask.name,
            "max_active": cfg.mask.max_active,
            "backend": stats.backend,
            "active_fraction": stats.active_fraction,
            "mask_fraction": mask.active_fraction,
            "window_fraction": stats.window_fraction,
            "n_windows": stats.n_windows,
            "gflops": {"stem": stem, "remainder": remainder, "mask": mask_gflops},
        }
        return gflops, info


@dataclass
class DenseRunner:
    """The model dense over the whole frame, zero-padded to a multiple of 32, then NMS.

    Post-processing is the sparse engine's (NMS, clip, NMS across windows), so this equals the
    Detector with ``mask=all, backend=dense`` up to BatchNorm folding.
    """

    dense: DenseModel
    name: str = "dense-full"

    def __call__(self, image: np.ndarray) -> Detections:

        d = self.dense.predict(self.dense.batch(image))[0].cpu()
        # the sparse engine's final step: clip to the frame, then NMS again
        return _detections(
            merge_windows(d, image.shape[:2], self.dense.post), self.dense.model.names
        )

    def cost(self, image: np.ndarray) -> tuple[float, dict[str, Any]]:
        hp, wp = (padded(s) for s in image.shape[:2])
        return self.dense.counter.dense(hp, wp), {"input": f"{wp}x{hp}"}


def letterbox(image: np.ndarray, imgsz: int) -> np.ndarray:
    """Ultralytics' predict-time letterbox: long side to ``imgsz``, pad to a multiple of 32."""
    from ultralytics.data.augment import LetterBox  # noqa: PLC0415

    return LetterBox((imgsz, imgsz), auto=True, stride=PAD_TO)(image=image)


@dataclass
class ResizedRunner:
    """The model dense on the frame letterboxed to ``imgsz`` (the downsampled baseline)."""

    dense: DenseModel
    imgsz: int

    @property
    def name(self) -> str:
        return f"dense@{self.imgsz}"

    def __call__(self, image: np.ndarray) -> Detections:
        from ultralytics.utils.ops import scale_boxes  # noqa: PLC0415

        x = self.dense.batch(letterbox(image, self.imgsz))
        d = self.dense.predict(x)[0]
        d[:, :4] = scale_boxes(x.shape[2:], d[:, :4], image.shape)
        return _detections(d, self.dense.model.names)

    def cost(self, image: np.ndarray) -> tuple[float, dict[str, Any]]:
        hp, wp = letterbox(image, self.imgsz).shape[:2]
        return self.dense.counter.dense(hp, wp), {"input": f"{wp}x{hp}", "engine": "sparse-yolo"}


class UltralyticsRunner(ResizedRunner):
    """``ultralytics.YOLO(weights).predict`` at ``imgsz``: the plain downsampled baseline."""

    def __init__(self, dense: DenseModel, imgsz: int, weights: str | Path) -> None:
        from ultralytics import YOLO  # noqa: PLC0415

        super().__init__(dense, imgsz)
        self.yolo = YOLO(str(weights))
        dev = dense.device
        p = dense.post
        self.kwargs = dict(
            imgsz=imgsz,
            conf=p.conf,
            iou=p.iou,
            max_det=p.max_det,
            agnostic_nms=p.agnostic,
            verbose=False,
            device="cpu" if dev.type == "cpu" else str(dev.index or 0),
        )
        if dense.half:  # newer Ultralytics spell fp16 ``quantize=16`` and warn on ``half``
            from ultralytics.cfg import DEFAULT_CFG_DICT  # noqa: PLC0415

            new = "quantize" in DEFAULT_CFG_DICT
            self.kwargs.update({"quantize": 16} if new else {"half": True})

    def __call__(self, image: np.ndarray) -> Detections:
        # Ultralytics' device selection resets torch's CPU threads to cpu_count - 1 (1 on a
        # 2-core machine), which silently slowed every method timed after this one.
        threads = torch.get_num_threads()
        try:
            b = self.yolo.predict(image, **self.kwargs)[0].boxes
        finally:
            torch.set_num_threads(threads)
        d = torch.cat([b.xyxy, b.conf[:, None], b.cls[:, None]], 1).float()
        return _detections(d, self.yolo.names)

    def cost(self, image: np.ndarray) -> tuple[float, dict[str, Any]]:
        gflops, info = super().cost(image)
        return gflops, {**info, "engine": "ultralytics"}


@dataclass
class SlicedRunner:
    """SAHI-style slicing: ``size`` px slices at ``overlap`` (ratio), batched, then merged.

    Slices step by ``size * (1 - overlap)``, the last one pushed inside the frame; each gets its
    own NMS, then boxes from all slices are merged in frame pixels (``greedy`` or ``nms``).
    """

    dense: DenseModel
    size: int = 640
    overlap: float = 0.2
    merge: str = "greedy"
    batch: int = 8

    def __post_init__(self) -> None:
        if self.size % PAD_TO or not 0 <= self.overlap < 1 or self.merge not in ("greedy", "nms"):
            raise ValueError(
                f"slice must be a multiple of {PAD_TO}, overlap in [0, 1), merge greedy or nms"
            )

    @property
    def name(self) -> str:
        return f"sahi-{self.size}"

    def slices(self, height: int, width: int) -> tuple[list[tuple[int, int]], int, int]:
        """Slice origins (x, y) in frame pixels and the padded slice (height, width)."""
        overlap = round(self.size * self.overlap)
        ys, xs = ([o for o, _ in tile_offsets(s, self.size, overlap, 1)] for s in (height, width))
        th, tw = (padded(min(self.size, s)) for s in (height, width))
        return [(x, y) for y in ys for x in xs], th, tw

    def __call__(self, image: np.ndarray) -> Detections:
        origins, th, tw = self.slices(*image.shape[:2])
        frame = self.dense.batch(image)[0]
        dets = []
        for i in range(0, len(origins), self.batch):
            part = origins[i : i + self.batch]
            x = torch.stack([frame[:, y : y + th, x : x + tw] for x, y in part])
            for d, (x0, y0) in zip(self.dense.predict(x), part, strict=True):
                dets.append(d.cpu() + torch.tensor([x0, y0, x0, y0, 0.0, 0.0]))
        d = _clip(torch.cat(dets), *image.shape[:2])
        return _detections(merge_tiles(d, self.dense.post, self.merge), self.dense.model.names)

    def cost(self, image: np.ndarray) -> tuple[float, dict[str, Any]]:
        origins, th, tw = self.slices(*image.shape[:2])
        info = {
            "input": f"{len(origins)} x {tw}x{th}",
            "slices": len(origins),
            "overlap": self.overlap,
            "merge": self.merge,
        }
        return self.dense.counter.dense(th, tw, len(origins)), info


def is_ultralytics_checkpoint(weights: str | Path) -> bool:
    """True for a dense Ultralytics ``.pt``, False for a sparse-yolo checkpoint."""
    ckpt = torch.load(weights, map_location="cpu", weights_only=False)
    return not (isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT)


def build_runners(
    detector,
    weights: str | Path | None,
    imgsz: Sequence[int] = (640, 1280),
    slice_size: int | None = 640,
    overlap: float = 0.2,
    merge: str = "greedy",
    batch: int = 8,
) -> list[Runner]:
    """Runners for: sparse, dense at each ``imgsz``, dense full-res and (unless
    ``slice_size`` is falsy) SAHI slicing, all with the detector's weights and settings.

    Args:
        detector: the configured ``Detector`` (the sparse runner uses it as is).
        weights: the checkpoint it was loaded from: an Ultralytics one makes ``dense@S`` run
            Ultralytics' predictor; None or a sparse-yolo one runs the SparseYOLO dense.
        batch: slices per forward pass.
    """
    half = detector.config.half  # the baselines run in the detector's precision
    if half and detector.engine.device.type != "cuda":
        raise ValueError("fp16 (--half) comparisons need a CUDA device")
    counter = FlopCounter(detector.model)
    model = fused_copy(detector.model, detector.engine.device, half)
    dense = DenseModel(model, detector.config.post, counter, half)
    ultra = weights is not None and is_ultralytics_checkpoint(weights)
    runners: list[Runner] = [SparseRunner(detector, counter)]
    for s in imgsz:
        runners.append(UltralyticsRunner(dense, s, weights) if ultra else ResizedRunner(dense, s))
    runners.append(DenseRunner(dense))
    if slice_size:
        runners.append(SlicedRunner(dense, slice_size, overlap, merge, batch))
    return runners
