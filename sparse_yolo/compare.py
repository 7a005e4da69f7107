"""The sparse pipeline against its dense baselines on one image: latency, GFLOPs, memory, accuracy.

Every method is a *runner*: ``runner(image) -> Detections`` for an (H, W, 3) uint8 BGR frame,
and ``runner.cost(image) -> (gflops, info)`` for the work of its last call. :func:`measure`
times runners in interleaved rounds and records their peak memory; the ``compare`` command and
``tools/bench_e2e.py`` both build their rows with :func:`build_runners` and :func:`measure_all`.

Methods (all with the same weights and post-processing settings):

* ``sparse``: the :class:`~sparse_yolo.detector.Detector` with its mask and backend.
* ``dense@S``: dense at input size S, letterboxed as Ultralytics does. Ultralytics' own
  predictor runs an Ultralytics checkpoint; a sparse-yolo checkpoint runs its SparseYOLO dense.
* ``dense-full``: the same model dense over the whole frame, zero-padded to a multiple of 32.
* ``sahi-S``: SAHI-style S px slices at an overlap ratio, dense and batched, merged greedily
  (SAHI's GREEDYNMM on intersection over the smaller box) or by NMS. SAHI's optional extra
  full-frame pass is left out: that is the ``dense@S`` row.

Dense baselines run a copy of the model with BatchNorm folded into the convs, as Ultralytics'
predictor does; the sparse pipeline runs the model as the ``detect`` command does.

The metering (:class:`FlopCounter`, :class:`PeakMemory`) lives here too, so this module is
longer than the guide's ~400 lines; it is the first candidate to split out (``metering.py``).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import math
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sparse_yolo.config import DetectorConfig, PostprocessConfig
from sparse_yolo.eval.labels import GroundTruth
from sparse_yolo.eval.metrics import evaluate, match_recall
from sparse_yolo.masks import PAD_TO
from sparse_yolo.model.yolo import CHECKPOINT_FORMAT, SparseYOLO
from sparse_yolo.postprocess import merge_tiles, merge_windows
from sparse_yolo.tiling import tile_offsets
from sparse_yolo.types import Detections

GFLOPS_CONVENTION = (
    "GFLOPs = 2 x multiply-accumulates / 1e9 of every Conv2d that runs, zero padding included; "
    "bias, BatchNorm, activations, pooling, upsampling, NMS and image statistics (the gradient "
    "mask) are not counted. Sparse: stem convs x active output sites, layers 5-22 x windowed "
    "area (an upper bound: the Detect box branch runs only around candidate anchors), plus any "
    "network the mask runs (learned, coarse)."
)
PROBE = 32  # px: every YOLOv8 conv's cost scales with the input area at multiples of this


# ------------------------------------------------------------------------------- GFLOPs
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


# ------------------------------------------------------------------------------- memory
def _reset_high_water_mark() -> bool:
    """Reset this process's peak RSS (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _high_water_mark() > 0
    except OSError:
        return False


def _high_water_mark() -> int:
    """Peak RSS in bytes since the last reset (``VmHWM``), 0 if unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # no /proc (macOS): fall back to the process-wide maximum
        import resource  # noqa: PLC0415

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _trim_heap() -> None:
    """Give freed heap back to the OS so the baseline RSS is what is really in use (glibc)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Peak memory above the level at entry, in MiB (``peak_mib``).

    On CUDA: the allocator's ``max_memory_allocated``. On CPU: the kernel's resident-set
    high-water mark (``VmHWM``, reset at entry through ``/proc/self/clear_refs``), so no thread
    competes with the timed run; where that is unavailable, RSS sampled by a background
    thread every ``interval`` seconds. A sampler at 5 ms slowed 2-thread CPU inference about
    2x (it preempts OpenMP workers that spin at barriers), so it is only the fallback.
    """

    def __init__(self, device: torch.device | str, interval: float = 0.005) -> None:
        self.device = torch.device(device)
        self.interval = interval
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        gc.collect()
        _trim_heap()
        self._base = self._peak = _rss_bytes()
        if not _reset_high_water_mark():
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, _rss_bytes())

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self._thread is None:
            peak = max(_high_water_mark(), _rss_bytes())
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, _rss_bytes())
        self.peak_mib = max(0, peak - self._base) / 2**20


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------- runners
class Runner(Protocol):
    name: str

    def __call__(self, image: np.ndarray) -> Detections: ...

    def cost(self, image: np.ndarray) -> tuple[float, dict[str, Any]]: ...


def to_batch(image: np.ndarray, device: torch.device, half: bool = False) -> torch.Tensor:
    """(H, W, 3) uint8 BGR -> (1, 3, Hp, Wp) RGB in [0, 1], zero-padded to multiples of 32."""
    x = torch.from_numpy(np.ascontiguousarray(image)).to(device)
    x = x.permute(2, 0, 1).flip(0)[None].to(torch.float16 if half else torch.float32) / 255
    h, w = image.shape[:2]
    return F.pad(x, (0, -w % PAD_TO, 0, -h % PAD_TO))


def _padded(size: int) -> int:
    return -(-size // PAD_TO) * PAD_TO


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
        from sparse_yolo.engine.windows import plan_windows  # noqa: PLC0415

        res = self.last if self.last is not None else self.detector.predict_array(image)
        cfg, mask, stats = self.detector.config, res.mask, res.stats
        # the cells the stem computed: auto may have promoted a near-full mask to every cell
        cells = mask.cells if stats["active_fraction"] < 1 else np.ones_like(mask.cells)
        windows = plan_windows(cells, mask.cell, cfg.window)
        # Stem work as run: the dense backend convolves every cell, then masks.
        stem = self.counter.stem(cells, mask.cell, stats["backend"] == "dense")
        stem = stem if len(windows) else 0.0
        remainder = self.counter.remainder(windows)
        mask_fn = self.detector.mask  # masks that run a network (learned, coarse) count it
        net = getattr(mask_fn, "net", None)
        mask_gflops = self.counter.during(lambda: mask_fn(image), self.detector.model, net)
        gflops = stem + remainder + mask_gflops
        info = {
            "input": f"act {stats['active_fraction']:.0%} win {stats['window_fraction']:.0%}",
            "mask": cfg.mask.name,
            "max_active": cfg.mask.max_active,
            "backend": stats["backend"],
            "active_fraction": stats["active_fraction"],
            "mask_fraction": mask.active_fraction,
            "window_fraction": stats["window_fraction"],
            "n_windows": stats["n_windows"],
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
        cfg = DetectorConfig(post=self.dense.post)
        return _detections(merge_windows(d, image.shape[:2], cfg.post), self.dense.model.names)

    def cost(self, image: np.ndarray) -> tuple[float, dict[str, Any]]:
        hp, wp = (_padded(s) for s in image.shape[:2])
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
        ys, xs = (tile_offsets(s, self.size, overlap) for s in (height, width))
        th, tw = (_padded(min(self.size, s)) for s in (height, width))
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


# ------------------------------------------------------------------------------- rows
@dataclass
class Row:
    """One method's measurements on one image.

    Attributes:
        latency_ms: median over the timed runs, after one warm-up run.
        peak_mib: peak memory above the level before the timed runs (see :class:`PeakMemory`).
        metrics: :func:`~sparse_yolo.eval.metrics.evaluate` against labels, by size bucket.
        recall_vs_full: share of the dense full-resolution detections this method recovers.
    """

    method: str
    latency_ms: float
    gflops: float
    peak_mib: float
    n_det: int
    info: dict[str, Any]
    latencies_ms: list[float]
    detections: Detections = field(repr=False)
    metrics: dict[str, dict[str, float | int]] | None = None
    recall_vs_full: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k != "detections"}
        return json_safe(out)


def measure(
    runner: Runner, image: np.ndarray, runs: int = 3, device: torch.device | str = "cpu"
) -> Row:
    """Time one runner: :func:`measure_all` with a single method."""
    return measure_all([runner], image, runs, device)[0]


def measure_all(
    runners: Sequence[Runner],
    image: np.ndarray,
    runs: int = 3,
    device: torch.device | str = "cpu",
    announce: Callable[[str], Any] | None = None,
) -> list[Row]:
    """Time every runner on ``image``: one warm-up each, then ``runs`` rounds, median per runner.

    Rounds are interleaved (A B C, A B C, ...) so that a slow drift of the machine (thermal,
    a neighbour's load) spreads over every method instead of landing on whichever ran last.
    Peak memory comes from one more call per runner after the timed rounds: metering trims
    the heap first, and the page faults that follow would otherwise be timed too.

    Args:
        announce: called with each runner's name before its warm-up (progress).
    """
    device = torch.device(device)
    for runner in runners:
        if announce is not None:
            announce(runner.name)
        runner(image)
        synchronize(device)
    times: list[list[float]] = [[] for _ in runners]
    for _ in range(max(1, runs)):
        for i, runner in enumerate(runners):
            t0 = time.perf_counter()
            runner(image)
            synchronize(device)
            times[i].append((time.perf_counter() - t0) * 1e3)
    rows = []
    for runner, t in zip(runners, times, strict=True):
        with PeakMemory(device) as mem:
            dets = runner(image)
            synchronize(device)
        gflops, info = runner.cost(image)
        rows.append(
            Row(runner.name, statistics.median(t), gflops, mem.peak_mib, len(dets), info, t, dets)
        )
    return rows


def score(rows: Sequence[Row], gt: GroundTruth | None, reference: Detections | None) -> None:
    """Fill ``metrics`` (against labels) and ``recall_vs_full`` (against ``reference``)."""
    for row in rows:
        if gt is not None:
            row.metrics = evaluate(row.detections, gt)
        if reference is not None:
            row.recall_vs_full = match_recall(row.detections, reference)


def json_safe(obj: Any) -> Any:
    """Plain JSON data: NaN and infinities become None, numpy scalars Python numbers."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
