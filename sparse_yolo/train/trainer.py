"""``sparse-yolo train``: Ultralytics' detection trainer driving a SparseYOLO.

Everything but the model is Ultralytics': dataset YAML checks and downloads (VisDrone's
conversion included), augmentation, ``v8DetectionLoss`` with the task-aligned assigner, the
validator's mAP, EMA, checkpoints and multi-GPU DDP. The model is a
:class:`~sparse_yolo.train.model.SparseDetectionModel` built before training starts (so DDP
workers receive it pickled, like any model Ultralytics is handed).

At the end the best (else last) EMA weights are written as a sparse-yolo checkpoint,
``<project>/<name>/weights/sparse_best.pt``, which ``Detector`` and ``sparse-yolo detect``
load. When the model carries a mask net, its threshold is first calibrated on the
validation images at their native resolution.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import LOGGER

from sparse_yolo.config import MaskConfig
from sparse_yolo.errors import SparseYoloError
from sparse_yolo.model.yolo import SparseYOLO
from sparse_yolo.train.model import SparseDetectionModel
from sparse_yolo.train.spec import build_model, dataset_names, export_checkpoint, load_model_spec

SPARSE_BEST = "sparse_best.pt"


@dataclass(frozen=True)
class TrainConfig:
    """One training run.

    Attributes:
        data: Ultralytics dataset YAML (e.g. ``VisDrone.yaml``).
        model: sparse model YAML (``configs/sparse-yolov8n.yaml``).
        weights: dense YOLOv8 ``.pt`` or sparse-yolo checkpoint to start from; None: scratch.
        epochs, imgsz, batch, workers, device, project, name: as in Ultralytics.
        mask: cell mask applied to every training image (``all`` trains the dense function).
        cell: mask cell edge in pixels.
        ultralytics: further Ultralytics training arguments, e.g. ``{"plots": False}``.
    """

    data: str
    model: str
    weights: str | None = None
    epochs: int = 100
    imgsz: int = 640
    batch: int = 16
    mask: str = "gradient"
    cell: int = 16
    workers: int = 8
    device: str | None = None
    project: str | None = None
    name: str = "train"
    ultralytics: dict[str, Any] = field(default_factory=dict)

    def overrides(self) -> dict[str, Any]:
        """Arguments for Ultralytics' trainer."""
        args = {
            "task": "detect",
            "model": str(self.model),
            "data": str(self.data),
            "epochs": self.epochs,
            "imgsz": self.imgsz,
            "batch": self.batch,
            "workers": self.workers,
            "name": self.name,
        }
        if self.device is not None:
            args["device"] = self.device
        if self.project is not None:
            args["project"] = str(Path(self.project).resolve())
        return {**args, **self.ultralytics}


class SparseDetectionTrainer(DetectionTrainer):
    """Ultralytics' ``DetectionTrainer`` whose model is a prepared ``SparseDetectionModel``."""

    def get_model(self, cfg=None, weights=None, verbose=True):
        """Only reached when no model was attached (e.g. ``resume``): not supported."""
        raise SparseYoloError(
            "SparseDetectionTrainer trains the SparseDetectionModel attached as trainer.model"
        )


@dataclass
class TrainResult:
    """Where a run left its outputs.

    Attributes:
        save_dir: the run folder (``<project>/<name>``).
        checkpoint: the sparse-yolo checkpoint written from the best weights.
        metrics: the validator's final metrics (mAP50, mAP50-95, ...).
    """

    save_dir: Path
    checkpoint: Path
    metrics: dict[str, float]


def train(cfg: TrainConfig) -> TrainResult:
    """Train a sparse model with Ultralytics' machinery and export a sparse-yolo checkpoint."""
    spec = load_model_spec(cfg.model)
    try:  # argument and dataset checks (and the dataset download) happen here
        trainer = SparseDetectionTrainer(overrides=cfg.overrides())
    except (RuntimeError, FileNotFoundError, ValueError, SyntaxError) as exc:
        raise SparseYoloError(" ".join(str(exc).split()), cfg.data) from exc
    net, fresh = build_model(spec, dataset_names(trainer.data), cfg.weights)
    if cfg.mask == "learned" and (net.mask_net is None or "mask_net.threshold" in fresh):
        raise SparseYoloError(
            "--mask learned needs a trained mask net: mask_net: true in the model YAML and "
            "--weights from sparse-yolo distill"
        )
    trainer.model = SparseDetectionModel(net, MaskConfig(name=cfg.mask, cell=cfg.cell))
    trainer.train()
    checkpoint = export_run(trainer.wdir, cfg)
    metrics = {k: float(v) for k, v in (trainer.metrics or {}).items() if _is_number(v)}
    return TrainResult(Path(trainer.save_dir), checkpoint, metrics)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) or (isinstance(v, torch.Tensor) and v.numel() == 1)


def trained_net(ckpt_path: Path) -> SparseYOLO:
    """The SparseYOLO inside an Ultralytics checkpoint written by this trainer."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    wrapper = ckpt.get("ema") or ckpt.get("model")
    if not isinstance(wrapper, SparseDetectionModel):
        raise SparseYoloError("not a checkpoint of sparse-yolo train", ckpt_path)
    return wrapper.net.float().eval()


def export_run(weights_dir: Path, cfg: TrainConfig) -> Path:
    """Write ``sparse_best.pt`` from ``best.pt`` (or ``last.pt``) of a finished run."""
    source = weights_dir / "best.pt"
    if not source.is_file():
        source = weights_dir / "last.pt"
    if not source.is_file():
        raise SparseYoloError("training wrote no checkpoint", weights_dir)
    net = trained_net(source)
    if net.mask_net is not None:
        _calibrate_from_labels(net, cfg)
    out = export_checkpoint(
        net,
        weights_dir / SPARSE_BEST,
        source=source.name,
        train={k: str(v) for k, v in dataclasses.asdict(cfg).items()},
    )
    LOGGER.info(f"sparse-yolo checkpoint: {out}")
    return out


def _calibrate_from_labels(net: SparseYOLO, cfg: TrainConfig) -> None:
    """Set the mask net's threshold on the dataset's validation images (native resolution)."""
    from ultralytics.data.utils import check_det_dataset  # noqa: PLC0415

    from sparse_yolo.train.maskfit import calibrate_threshold, labelled_frames  # noqa: PLC0415

    data = check_det_dataset(cfg.data)
    frames = labelled_frames(data.get("val") or data["train"])
    if frames:
        thr = calibrate_threshold(net.mask_net, frames)
        LOGGER.info(f"mask net threshold calibrated on {len(frames)} validation images: {thr:.3f}")
