"""SparseYOLO: a checkpoint's own Ultralytics graph, its stem run on active cells.

The layers are the checkpoint's Ultralytics modules, split where the data path splits:

* ``backbone``: the YAML's backbone layers. Its first layers, up to the stride-8 (P3)
  output, are the ``stem`` (:class:`~sparse_yolo.sparse.stem.Stem`), run by a sparse
  backend; a P2 head also reads the stem's stride-4 output.
* ``neck``: the head-section layers between the backbone and Detect (``pan``, the
  checkpoint's own: :class:`~sparse_yolo.model.neck.GraphNeck`), or the trainable GSConv
  ``slim`` neck built for the backbone's widths.
* ``head``: the checkpoint's Ultralytics ``Detect`` (YOLOv8, YOLO11, YOLO26; DFL or
  ``reg_max`` 1; end-to-end when the checkpoint's head says so).

Everything after the stem runs on dense windows of the stem outputs, with Ultralytics'
routing (``from`` indices, saved outputs).
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from ultralytics.nn.modules import Conv, Detect

from sparse_yolo.atomic import atomic_open
from sparse_yolo.config import ModelConfig
from sparse_yolo.errors import SparseYoloError
from sparse_yolo.model.graph import (
    build_detection_model,
    detection_layers,
    fuse_batchnorm,
    layer_shapes,
    run_layers,
    sources,
)
from sparse_yolo.model.head import candidate_detections
from sparse_yolo.model.masknet import build_mask_net, upgrade_state_dict
from sparse_yolo.model.neck import GraphNeck, PathAggregationNeck
from sparse_yolo.sparse.active import ActivePyramid
from sparse_yolo.sparse.backends import DenseBackend
from sparse_yolo.sparse.stem import Stem, flat_response, run_stem

CHECKPOINT_FORMAT = "sparse-yolo"
CHECKPOINT_VERSION = 2
STEM_STRIDE = 8  # the stem ends at the P3 output; windows are planned at this stride


@dataclass
class Graph:
    """An Ultralytics layer list and where its backbone ends.

    Attributes:
        layers: the layers (``.f``/``.i`` routing); the last is the Detect head. A ``slim``
            model's checkpoint omits the head-section layers it does not run.
        n_backbone: number of backbone layers (the YAML's ``backbone`` list).
        neck_inputs: backbone layer indices the head section reads, ascending.
    """

    layers: nn.Sequential
    n_backbone: int
    neck_inputs: tuple[int, ...]

    @classmethod
    def from_ultralytics(cls, model: nn.Module) -> Graph:
        layers, _, yaml = detection_layers(model)
        n_back = len(yaml.get("backbone") or ())
        if not n_back:
            raise SparseYoloError("the checkpoint carries no model YAML (backbone unknown)")
        reads = {j for m in layers[n_back:] for j in sources(m)}
        return cls(layers, n_back, tuple(sorted(j for j in reads if j < n_back)))


class SparseYOLO(nn.Module):
    """An Ultralytics detector split into a sparse stem and a dense, windowed remainder.

    Args:
        cfg: architecture (Ultralytics family YAML and scale, classes, neck); stored in
            every checkpoint.
        graph: the layers to run (a checkpoint's); None builds ``cfg``'s YAML with
            Ultralytics' random initialisation.
    """

    def __init__(self, cfg: ModelConfig, graph: Graph | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        if graph is None:
            graph = Graph.from_ultralytics(build_detection_model(cfg.arch, cfg.scale, cfg.nc))
        layers, n_back = graph.layers, graph.n_backbone
        self.backbone = nn.ModuleList(layers[:n_back])
        self.head: Detect = layers[-1]
        if self.head.nc != cfg.nc:
            raise SparseYoloError(f"the Detect head has {self.head.nc} classes, config {cfg.nc}")
        self.neck_inputs = graph.neck_inputs
        shapes = layer_shapes(self.backbone)
        strides = [s for s, _ in shapes]
        stem_end = _stem_end(self.backbone, strides)
        later = {j for m in layers[stem_end + 1 :] for j in sources(m)}
        outputs = sorted({stem_end} | {j for j in later if j <= stem_end})
        # not a registered submodule: the stem's modules are the backbone's (one state dict)
        self.__dict__["_stem"] = Stem(self.backbone[: stem_end + 1], tuple(outputs))
        self.stem_strides = tuple(strides[j] for j in outputs)
        # outputs of the backbone's later layers that later code reads
        self._keep = {j for m in layers[stem_end + 1 :] for j in sources(m)} | set(
            graph.neck_inputs
        )
        self.feature_info = [
            {"num_chs": shapes[j][1], "reduction": strides[j],
             "module": f"backbone.{j}"}
            for j in graph.neck_inputs
        ]  # fmt: skip
        self.neck = self._build_neck(layers, n_back, cfg.neck)
        self.stride = self.head.stride
        self.mask_net = build_mask_net() if cfg.mask_net else None
        self.names = dict(enumerate(cfg.names))

    def _build_neck(self, layers: nn.Sequential, n_back: int, kind: str) -> nn.Module:
        if kind == "pan":
            if len(layers) - 1 == n_back:
                raise SparseYoloError("this checkpoint has no pan neck layers (a slim model)")
            head_f = [self.head.f] if isinstance(self.head.f, int) else self.head.f
            return GraphNeck(list(layers[n_back:-1]), self.neck_inputs, tuple(head_f))
        if [f["reduction"] for f in self.feature_info] != [8, 16, 32]:
            raise SparseYoloError(
                "the slim neck needs a P3-P5 backbone; this one feeds strides "
                f"{[f['reduction'] for f in self.feature_info]}"
            )
        ins = tuple(f["num_chs"] for f in self.feature_info)
        outs = tuple(seq[0].conv.in_channels for seq in self.head.cv2)
        depth = max(len(getattr(self.backbone[2], "m", ())), 1)
        return PathAggregationNeck(ins, outs, depth)

    # ------------------------------------------------------------------ structure
    @property
    def stem(self) -> Stem:
        """The layers up to stride 8, run by a sparse backend (``stem.outputs`` leave it)."""
        return self._stem

    @property
    def end2end(self) -> bool:
        """The head decodes NMS-free (one-to-one, top-k), as the checkpoint's head says."""
        return bool(getattr(self.head, "end2end", False))

    @property
    def max_stride(self) -> int:
        """The coarsest stride the head reads (32, or 64 for P6): windows align to it."""
        return int(self.stride.max())

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype (float16 after ``.half()``): what inputs must be cast to."""
        return next(self.backbone.parameters()).dtype

    # ------------------------------------------------------------------- forward
    def dense_stem(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The stem as plain dense modules: (B, 3, H, W) RGB in [0, 1] -> its outputs."""
        saved: dict[int, torch.Tensor] = {-1: x}
        for m in self.stem:
            x = m(x)
            saved[m.i] = x
        return [saved[j] for j in self.stem.outputs]

    def backbone_features(self, stem_out: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
        """Stem outputs -> the backbone maps the neck reads (``feature_info``): the one home of
        the backbone after the stem, run with the checkpoint's routing.

        Args:
            stem_out: one (B, C, h, w) batch per ``stem.outputs`` (a tensor when one), at
                their strides (4 and/or 8) over the same B windows; h and w at stride 8
                multiples of ``max_stride / 8``.
        """
        outs = [stem_out] if isinstance(stem_out, torch.Tensor) else list(stem_out)
        saved = dict(zip(self.stem.outputs, outs, strict=True))
        run_layers(self.backbone[len(self.stem) :], saved, self._keep)
        return [saved[j] for j in self.neck_inputs]

    def features(self, stem_out: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
        """Stem outputs -> the Detect head's input maps (backbone after the stem, the neck)."""
        return self.neck(self.backbone_features(stem_out))

    def forward_p3(self, stem_out: torch.Tensor | list[torch.Tensor]):
        """Dense remainder: stem outputs -> Detect output (Ultralytics' eval output:
        ``(B, 4 + nc, A)`` xywh boxes and scores, or ``(B, max_det, 6)`` end-to-end, plus
        the raw maps)."""
        return self.head(self.features(stem_out))

    def detect_p3(
        self, stem_out: torch.Tensor | list[torch.Tensor], conf: float, features=None
    ) -> torch.Tensor:
        """Inference remainder: stem outputs -> decoded candidate detections.

        Computes what ``forward_p3`` plus Ultralytics' post-processing input computes above
        ``conf``, decoding only the anchors that pass it (:mod:`sparse_yolo.model.head`).
        ``features`` computes :meth:`features` another way (the engine's trace on CPU).

        Returns:
            (K, 7) float [x1, y1, x2, y2, score, class, window] in window pixels, before NMS.
        """
        return candidate_detections(self.head, (features or self.features)(stem_out), conf)

    def forward(
        self,
        x: torch.Tensor,
        cells: torch.Tensor | None = None,
        cell: int = 16,
        fill: str = "flat",
    ):
        """Dense forward of a (B, 3, H, W) RGB batch in [0, 1] (training, reference).

        Args:
            x: images, H and W multiples of ``max_stride``.
            cells: optional (B, H / cell, W / cell) bool active cells. When given, the stem
                applies the sparse active-set rules through the dense backend, so training
                sees exactly the function that sparse inference computes (before windows).
            cell: cell edge in pixels.
            fill: what inactive stem sites hold (``WindowConfig.fill``): ``flat``, the
                stem's response to each image's mean colour, or ``zero``.
        """
        if cells is None:
            return self.forward_p3(self.dense_stem(x))
        pyramid = ActivePyramid(cells.bool(), cell)
        outs = [g.x for g in run_stem(self.stem, DenseBackend(), x, pyramid)]
        if fill == "flat" and not pyramid.all_active:
            background = flat_response(self.stem, x.mean((2, 3)))
            outs = [
                torch.where(pyramid.mask(s)[:, None], o, bg[:, :, None, None])
                for o, bg, s in zip(outs, background, self.stem_strides, strict=True)
            ]
        return self.forward_p3(outs)

    def fused(self) -> SparseYOLO:
        """An inference copy with BatchNorm folded into every conv (as Ultralytics' fuse())."""
        return fuse_batchnorm(copy.deepcopy(self).eval())

    lean = False  # see set_lean_inference

    def set_lean_inference(self, lean: bool) -> SparseYOLO:
        """The engine's inference-only shortcuts (same function), or Ultralytics' own modules.

        * every ``Conv``'s SiLU in place: nothing else reads a conv's output before its
          activation, so it saves an allocation (and its page faults) per layer;
        * on CPU, the ``pan`` neck runs each upsample -> concat -> C2f/C3k2 chain without
          writing the upsampled map or the concatenation
          (:func:`~sparse_yolo.model.neck.c2f_on_upsampled_cat`); chains of other blocks run
          as Ultralytics runs them. Not on CUDA, where the extra kernel launches cost more
          than the memory passes they save (docs/performance.md).

        The dense baselines of ``compare`` keep them off: they stand for plain Ultralytics.
        Call it after moving the model to its device.
        """
        for m in self.modules():
            if isinstance(m, Conv) and isinstance(m.act, nn.SiLU):
                m.act = nn.SiLU(inplace=lean)
        self.lean = lean
        self.neck.lean = lean and next(self.parameters()).device.type == "cpu"
        return self

    # ----------------------------------------------------------------- checkpoints
    def graph(self) -> Graph:
        """The layers this model runs (the head section only with the ``pan`` neck)."""
        neck = list(self.neck.layers) if isinstance(self.neck, GraphNeck) else []
        layers = nn.Sequential(*self.backbone, *neck, self.head)
        return Graph(layers, len(self.backbone), tuple(self.neck_inputs))

    def save(self, path: str | Path, **extra: Any) -> None:
        """Write a self-describing checkpoint atomically: config, the layer graph's
        architecture (weightless, on the meta device) and the state dict."""
        graph = self.graph()
        skeleton = copy.deepcopy(graph.layers).to("meta")
        payload = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "model": dataclasses.asdict(self.cfg),
            "graph": {"layers": skeleton, "n_backbone": graph.n_backbone,
                      "neck_inputs": list(graph.neck_inputs)},
            "state_dict": self.state_dict(),
            **extra,
        }  # fmt: skip
        with atomic_open(path, binary=True) as f:
            torch.save(payload, f)

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> SparseYOLO:
        """Build from an already-loaded sparse-yolo checkpoint dict."""
        if ckpt.get("version") != CHECKPOINT_VERSION:
            raise SparseYoloError(
                f"sparse-yolo checkpoint version {ckpt.get('version')} (this release reads "
                f"{CHECKPOINT_VERSION}); export it again from its Ultralytics weights"
            )
        data = dict(ckpt["model"])
        data["names"] = tuple(data.get("names") or ())
        g = ckpt["graph"]
        layers = _materialise(g["layers"])
        model = cls(ModelConfig(**data), Graph(layers, g["n_backbone"], tuple(g["neck_inputs"])))
        state = dict(ckpt["state_dict"])
        net = {k.split(".", 1)[1]: state.pop(k) for k in list(state) if k.startswith("mask_net.")}
        model.load_state_dict(state, strict=model.mask_net is None)
        if model.mask_net is not None:
            try:
                model.mask_net.load_state_dict(upgrade_state_dict(net))
            except RuntimeError:  # a mask net of an earlier design: the detector still loads
                warnings.warn(
                    "the checkpoint's mask net is of an earlier design and is ignored; "
                    "--mask learned uses the shipped net (or retrain: sparse-yolo distill)",
                    stacklevel=2,
                )
                model.mask_net = None
        return model.eval()

    @classmethod
    def from_ultralytics(cls, src: str | Path | nn.Module, neck: str = "pan") -> SparseYOLO:
        """Import an Ultralytics detection model (YOLOv8, YOLO11, YOLO26, P2/P6 heads).

        Args:
            src: a ``.pt`` path, a ``YOLO`` object or a ``DetectionModel``.
            neck: ``pan`` runs the checkpoint's own neck; ``slim`` starts a slim neck fresh.
        """
        dense = _ultralytics_model(src)
        graph = Graph.from_ultralytics(dense)
        yaml = dense.yaml
        head = graph.layers[-1]
        cfg = ModelConfig(
            scale=yaml.get("scale") or next(iter(yaml.get("scales") or {"n": 0})),
            nc=int(head.nc),
            names=tuple(str(dense.names[i]) for i in sorted(dense.names)),
            neck=neck,
            arch=_family(yaml),
        )
        return cls(cfg, graph).eval()


def _stem_end(backbone: nn.ModuleList, strides: list[int]) -> int:
    """Index of the last layer of the leading chain (each reads the previous one) whose
    output stride is 8."""
    end = -1
    for k, m in enumerate(backbone):
        if m.f != -1 or strides[k] > STEM_STRIDE:
            break
        end = k
    if end < 0 or strides[end] != STEM_STRIDE:
        raise SparseYoloError("the backbone has no stride-8 (P3) output in its leading chain")
    return end


def _materialise(layers: nn.Sequential) -> nn.Sequential:
    """Weightless (meta) layers -> real CPU tensors, to be overwritten by a state dict."""
    return layers.to_empty(device="cpu")


def _family(yaml: dict) -> str:
    from sparse_yolo.model.graph import split_model_name  # noqa: PLC0415

    name = str(yaml.get("yaml_file") or "yolov8.yaml")
    return split_model_name(Path(name).name)[0]


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
    detection_layers(model)  # refuses non-detection models
    return model.float().eval()
