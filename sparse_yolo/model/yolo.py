"""SparseYOLO: a YOLOv8 whose stem (layers 0-4, down to stride 8) runs on active cells.

Layer map (Ultralytics YOLOv8 index -> this model), used by :meth:`from_ultralytics`:

==============  =====================  ==============================================
Ultralytics     SparseYOLO             notes
==============  =====================  ==============================================
model.0 - 4     backbone.0 - 4         sparse stem (gather / spconv / dense backends)
model.5 - 9     backbone.5 - 9         dense P4, P5, SPPF, run on stride-8 windows
model.12        neck.td4               ``pan`` neck only
model.15        neck.td3               ``pan`` neck only (P3 output)
model.16        neck.down3             ``pan`` neck only
model.18        neck.bu4               ``pan`` neck only (P4 output)
model.19        neck.down4             ``pan`` neck only
model.21        neck.bu5               ``pan`` neck only (P5 output)
model.22        head                   Ultralytics ``Detect``, unchanged
==============  =====================  ==============================================

Layers 10, 11, 13, 14, 17 and 20 (Upsample, Concat) have no parameters. A ``slim`` neck
(GSConv + VoVGSCSP) has no dense counterpart and starts from random init; it is trained
by distillation. Its Detect head still imports, since the neck keeps YOLOv8's channels.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn
from ultralytics.nn.modules import SPPF, C2f, Conv, Detect
from ultralytics.utils.ops import make_divisible
from ultralytics.utils.torch_utils import fuse_conv_and_bn, initialize_weights

from sparse_yolo.atomic import atomic_open
from sparse_yolo.config import SCALES, ModelConfig
from sparse_yolo.errors import SparseYoloError
from sparse_yolo.model.head import candidate_detections
from sparse_yolo.model.masknet import build_mask_net
from sparse_yolo.model.neck import PAN_LAYER_NAMES, PathAggregationNeck
from sparse_yolo.sparse.active import ActivePyramid
from sparse_yolo.sparse.backends import DenseBackend
from sparse_yolo.sparse.stem import flat_response, run_stem

CHECKPOINT_FORMAT = "sparse-yolo"
CHECKPOINT_VERSION = 1
STEM_LAYERS = 5  # backbone[:5] is the sparse stem; it ends at stride 8


class V8Detect(Detect):
    """Ultralytics' Detect with YOLOv8's head (plain 3x3 class branch, not the v11 DWConv)."""

    legacy = True


class SparseYOLO(nn.Module):
    """YOLOv8 detector split into a sparse stem and a dense, windowed remainder.

    Args:
        cfg: architecture; stored in every checkpoint.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        depth, width, max_ch = SCALES[cfg.scale]

        def ch(c: int) -> int:
            return int(make_divisible(min(c, max_ch) * width, 8))

        def n(k: int) -> int:
            return max(round(k * depth), 1)

        c1, c2, c3, c4, c5 = ch(64), ch(128), ch(256), ch(512), ch(1024)
        self.backbone = nn.ModuleList(
            [
                Conv(3, c1, 3, 2),
                Conv(c1, c2, 3, 2),
                C2f(c2, c2, n(3), True),
                Conv(c2, c3, 3, 2),
                C2f(c3, c3, n(6), True),
                Conv(c3, c4, 3, 2),
                C2f(c4, c4, n(6), True),
                Conv(c4, c5, 3, 2),
                C2f(c5, c5, n(3), True),
                _v8_sppf(c5),
            ]
        )
        # timm-style description of the backbone outputs the neck reads.
        self.feature_info = [
            {"num_chs": c3, "reduction": 8, "module": "backbone.4"},
            {"num_chs": c4, "reduction": 16, "module": "backbone.6"},
            {"num_chs": c5, "reduction": 32, "module": "backbone.9"},
        ]
        self.neck = PathAggregationNeck(
            tuple(f["num_chs"] for f in self.feature_info),
            (ch(256), ch(512), ch(1024)),
            n(3),
            cfg.neck,
        )
        self.head = V8Detect(nc=cfg.nc, ch=self.neck.out_channels)
        self.stride = torch.tensor([float(f["reduction"]) for f in self.feature_info])
        self.head.stride = self.stride
        initialize_weights(self)  # ultralytics' BN eps 1e-3 / momentum 0.03, as trained
        self.head.bias_init()
        self.mask_net = build_mask_net() if cfg.mask_net else None
        self.names = dict(enumerate(cfg.names))

    @property
    def stem(self) -> nn.ModuleList:
        """YOLOv8 layers 0-4: run by a sparse backend."""
        return self.backbone[:STEM_LAYERS]

    def forward_p3(self, p3: torch.Tensor):
        """Dense remainder: stride-8 features -> Detect output.

        Args:
            p3: (B, C3, h, w) stride-8 features of B windows, h and w multiples of 4.

        Returns:
            Detect's output; in eval mode ``(B, 4 + nc, A)`` boxes (xywh, window pixels)
            and class scores, plus the raw maps.
        """
        b = self.backbone
        p4 = b[6](b[5](p3))
        p5 = b[9](b[8](b[7](p4)))
        return self.head(self.neck([p3, p4, p5]))

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype (float16 after ``.half()``): what inputs must be cast to."""
        return self.stem[0].conv.weight.dtype

    def dense_stem(self, x: torch.Tensor) -> torch.Tensor:
        """Layers 0-4 as plain dense modules: (B, 3, H, W) RGB in [0, 1] -> stride-8 features."""
        for layer in self.stem:
            x = layer(x)
        return x

    def detect_p3(self, p3: torch.Tensor, conf: float) -> torch.Tensor:
        """Inference remainder: stride-8 features -> decoded candidate detections.

        Computes what ``forward_p3`` plus Ultralytics' NMS input computes above ``conf``,
        decoding only the anchors that pass it (:mod:`sparse_yolo.model.head`).

        Returns:
            (K, 7) float [x1, y1, x2, y2, score, class, window] in window pixels, before NMS.
        """
        b = self.backbone
        p4 = b[6](b[5](p3))
        p5 = b[9](b[8](b[7](p4)))
        return candidate_detections(self.head, self.neck([p3, p4, p5]), conf)

    def forward(
        self,
        x: torch.Tensor,
        cells: torch.Tensor | None = None,
        cell: int = 16,
        fill: str = "flat",
    ):
        """Dense forward of a (B, 3, H, W) RGB batch in [0, 1] (training, reference).

        Args:
            x: images, H and W multiples of 32.
            cells: optional (B, H / cell, W / cell) bool active cells. When given, the stem
                applies the sparse active-set rules through the dense backend, so training
                sees exactly the function that sparse inference computes (before windows).
            cell: cell edge in pixels.
            fill: what inactive stride-8 sites hold (``WindowConfig.fill``): ``flat``, the
                stem's response to each image's mean colour, or ``zero``.
        """
        if cells is None:
            return self.forward_p3(self.dense_stem(x))
        pyramid = ActivePyramid(cells.bool(), cell)
        p3 = run_stem(self.stem, DenseBackend(), x, pyramid).x
        if fill == "flat" and not pyramid.all_active:
            background = flat_response(self.stem, x.mean((2, 3)))
            p3 = torch.where(pyramid.mask(8)[:, None], p3, background[:, :, None, None])
        return self.forward_p3(p3)

    def fused(self) -> SparseYOLO:
        """An inference copy with BatchNorm folded into every conv (as Ultralytics' fuse()).

        The sparse backends fold on the fly either way; the dense layers save a pass.
        """
        out = copy.deepcopy(self).eval()
        for m in out.modules():
            if isinstance(m, Conv) and hasattr(m, "bn"):
                m.conv = fuse_conv_and_bn(m.conv, m.bn)
                delattr(m, "bn")
                m.forward = m.forward_fuse
        return out

    lean = False  # see set_lean_inference

    def set_lean_inference(self, lean: bool) -> SparseYOLO:
        """The engine's inference-only shortcuts (same function), or Ultralytics' own modules.

        * every ``Conv``'s SiLU in place: nothing else reads a conv's output before its
          activation; it saves an allocation (and its page faults) per layer: the 4K
          cluttered frame ran 1561 -> 1461 ms (interleaved x6, identical detections).
        * on CPU, the ``pan`` neck convolves its top-down inputs before upsampling them and
          writes no concatenation (:meth:`PathAggregationNeck._forward_inference`): 4K neck
          526 -> 383 ms. Not on CUDA, where the extra kernel launches cost more than the
          memory passes they save (H200, fp16, two runs on fresh machines with dense full
          at 9.0 and 9.7 ms: remainder 6.1 -> 8.7 ms; not an interleaved measurement).

        The dense baselines of ``compare`` keep them off: they stand for plain YOLOv8. Call it
        after moving the model to its device.
        """
        for m in self.modules():
            if isinstance(m, Conv) and isinstance(m.act, nn.SiLU):
                m.act = nn.SiLU(inplace=lean)
        self.lean = lean
        self.neck.lean = lean and next(self.parameters()).device.type == "cpu"
        return self

    # ----------------------------------------------------------------- checkpoints
    def save(self, path: str | Path, **extra: Any) -> None:
        """Write a self-describing checkpoint atomically (config embedded)."""
        payload = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "model": dataclasses.asdict(self.cfg),
            "state_dict": self.state_dict(),
            **extra,
        }
        with atomic_open(path, binary=True) as f:
            torch.save(payload, f)

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> SparseYOLO:
        """Build from an already-loaded sparse-yolo checkpoint dict."""
        data = dict(ckpt["model"])
        data["names"] = tuple(data.get("names") or ())
        model = cls(ModelConfig(**data))
        model.load_state_dict(ckpt["state_dict"])
        return model.eval()

    @classmethod
    def from_ultralytics(cls, src: str | Path | nn.Module, neck: str = "pan") -> SparseYOLO:
        """Import a dense Ultralytics YOLOv8 detection model by module name.

        Args:
            src: a ``.pt`` path, a ``YOLO`` object or a ``DetectionModel``.
            neck: ``pan`` imports the neck too; ``slim`` starts the neck fresh.
        """
        dense = _ultralytics_model(src)
        cfg = ModelConfig(
            scale=_infer_scale(dense),
            nc=int(dense.nc) if hasattr(dense, "nc") else len(dense.names),
            names=tuple(dense.names[i] for i in sorted(dense.names)),
            neck=neck,
        )
        model = cls(cfg)
        mapped = map_ultralytics_state(dense.state_dict(), neck)
        own = model.state_dict()
        bad = [k for k, v in mapped.items() if k not in own or own[k].shape != v.shape]
        if bad:
            raise SparseYoloError(
                f"checkpoint does not match a YOLOv8-{cfg.scale} layout ({bad[0]})"
            )
        own.update({k: v.float() for k, v in mapped.items()})
        model.load_state_dict(own)
        return model.eval()


def _v8_sppf(c: int) -> SPPF:
    """YOLOv8's SPPF: ultralytics >= 8.4 defaults to YOLO26's unactivated cv1."""
    m = SPPF(c, c, 5)
    m.cv1.act = Conv.default_act
    return m


def map_ultralytics_state(state: dict[str, torch.Tensor], neck: str) -> dict[str, torch.Tensor]:
    """Rename Ultralytics ``model.{i}.*`` keys to SparseYOLO keys (see the module table)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] != "model" or not parts[1].isdigit():
            continue
        i, rest = int(parts[1]), ".".join(parts[2:])
        if i <= 9:
            out[f"backbone.{i}.{rest}"] = value
        elif i in PAN_LAYER_NAMES and neck == "pan":
            out[f"neck.{PAN_LAYER_NAMES[i]}.{rest}"] = value
        elif i == 22:
            out[f"head.{rest}"] = value
    return out


def _ultralytics_model(src: str | Path | nn.Module) -> nn.Module:
    if isinstance(src, (str, Path)):
        from ultralytics.nn.tasks import load_checkpoint  # noqa: PLC0415 - heavy import

        try:
            model, _ = load_checkpoint(str(src), device="cpu")
        except Exception as exc:  # ultralytics raises many types for bad files
            raise SparseYoloError(f"not a loadable Ultralytics checkpoint ({exc})", src) from exc
        src = model
    model = src
    if not isinstance(getattr(model, "model", None), nn.Sequential):
        model = getattr(model, "model", model)  # YOLO wrapper -> DetectionModel
    if not isinstance(getattr(model, "model", None), nn.Sequential) or len(model.model) != 23:
        raise SparseYoloError("expected a YOLOv8 detection model with 23 layers")
    if type(model.model[22]).__name__ != "Detect":
        raise SparseYoloError("expected a YOLOv8 Detect head at layer 22")
    return model.float().eval()


def _infer_scale(dense: nn.Module) -> str:
    scale = (getattr(dense, "yaml", None) or {}).get("scale")
    if scale in SCALES:
        return scale
    c0 = dense.model[0].conv.out_channels
    depth2 = len(dense.model[2].m)
    for name, (d, w, m) in SCALES.items():
        if make_divisible(min(64, m) * w, 8) == c0 and max(round(3 * d), 1) == depth2:
            return name
    raise SparseYoloError(f"cannot infer YOLOv8 scale (stem width {c0}, depth {depth2})")
