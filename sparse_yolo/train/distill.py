"""``sparse-yolo distill``: a ``slim``-neck student (and its mask net) from unlabeled images.

Student: the teacher's backbone and Detect head (imported and frozen by default) with a fresh
GSConv/VoVGSCSP neck. The neck takes the backbone's channels and feeds the head's, so the head
and the feature maps line up with the teacher's, whatever the family and width. On random native-resolution crops of the images:

* feature mimic: the student's neck outputs P3/P4/P5 against the teacher's
  (:func:`~sparse_yolo.train.losses.mimic_loss`);
* head KD: class scores (Bernoulli KL per expected object) and box distributions (KL of the
  DFL softmax, weighted by the teacher's confidence), back-propagated through the frozen head
  into the neck. A trainable head (``head_lr``) drifted in trials: neck features that mimic
  by least squares come out shrunk, and a head trained on them lost confidence on objects
  (docs/performance.md);
* mask net (unless ``mask=False``): self-distillation from the teacher's detections on the
  same crops (``target_conf``), BCE on the cells they overlap.

Both models share the frozen backbone weights, so its features are computed once per batch.
The mask net's threshold is then calibrated on the held-out images, where the report measures
the student's agreement with the teacher, the mask's recall and active fraction against the
``gradient`` mask, and the neck's cost against ``pan``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from ultralytics.utils.nms import non_max_suppression

from sparse_yolo.errors import SparseYoloError
from sparse_yolo.model.loading import load_model
from sparse_yolo.model.masknet import MASK_NET_STRIDE, batch_features, cell_targets, mask_net_loss
from sparse_yolo.model.yolo import SparseYOLO
from sparse_yolo.train.images import CropSampler, find_images, split_holdout, to_tensor
from sparse_yolo.train.losses import box_kd, class_kd, mimic_loss
from sparse_yolo.train.spec import export_checkpoint, fetch_weights


@dataclass(frozen=True)
class DistillConfig:
    """One distillation run.

    Attributes:
        teacher: Ultralytics detection ``.pt`` (YOLOv8, YOLO11, YOLO26, P3-P5 heads) or a
            sparse-yolo ``pan`` checkpoint.
        images: folder of unlabeled images (searched recursively).
        out: the student checkpoint to write.
        minutes: training time budget (evaluation comes on top).
        max_steps: optional cap on optimisation steps (tests, smoke runs).
        imgsz: crop edge in pixels (native resolution, a multiple of 32).
        batch: crops per step.
        lr: AdamW learning rate of the neck and the mask net.
        head_lr: learning rate of the Detect head; 0 keeps the teacher's head frozen (the
            head KD then trains the neck through it).
        mask: also train the learned mask net.
        holdout: fraction of images kept out of training for the report.
        val_images: folder of held-out images for the report (then ``holdout`` is unused).
        target_conf: teacher confidence that makes a detection a mask target.
        recall_target: mask recall the threshold is calibrated to on held-out images.
        device: torch device; default CUDA when available.
        seed: random seed.
    """

    teacher: str
    images: str
    out: str
    minutes: float = 10.0
    max_steps: int | None = None
    imgsz: int = 640
    batch: int = 8
    lr: float = 1e-3
    head_lr: float = 0.0
    mask: bool = True
    holdout: float = 0.2
    val_images: str | None = None
    target_conf: float = 0.1
    recall_target: float = 0.95
    device: str | None = None
    seed: int = 0


def build_student(teacher: SparseYOLO, mask_net: bool = True) -> SparseYOLO:
    """``slim``-neck student: a copy of the teacher's backbone and head (any family, any
    width: the slim neck is built for its channels), a fresh neck, a mask net."""
    cfg = replace(teacher.cfg, neck="slim", mask_net=mask_net)
    return SparseYOLO(cfg, copy.deepcopy(teacher.graph()))


def backbone_features(model: SparseYOLO, x: torch.Tensor) -> list[torch.Tensor]:
    """The neck's inputs (P3, P4, P5 backbone maps) of a dense (B, 3, H, W) batch."""
    return model.backbone_features(model.dense_stem(x))


def head_raw(model: SparseYOLO, neck_out: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Raw Detect outputs (``boxes`` (B, 4 * reg_max, A), ``scores`` (B, nc, A)) in any mode."""
    return model.head.forward_head(neck_out, **model.head.one2many)


class Distiller:
    """Optimises a student against a frozen teacher, one batch of crops at a time.

    Args:
        teacher: the ``pan`` model (frozen; its backbone is the student's too).
        student: from :func:`build_student`.
        cfg: learning rate and mask-target settings.
        device: where both models run.
    """

    def __init__(
        self, teacher: SparseYOLO, student: SparseYOLO, cfg: DistillConfig, device
    ) -> None:
        self.device = torch.device(device)
        self.cfg = cfg
        self.teacher = teacher.to(self.device).eval().requires_grad_(False)
        self.student = student.to(self.device)
        self.student.eval()  # backbone and head keep the teacher's BatchNorm statistics
        self.student.backbone.requires_grad_(False)
        self.student.head.requires_grad_(cfg.head_lr > 0)
        self.student.neck.train()  # a fresh neck needs its own statistics
        groups = [{"params": list(self.student.neck.parameters()), "lr": cfg.lr}]
        if cfg.head_lr > 0:
            groups.append({"params": list(self.student.head.parameters()), "lr": cfg.head_lr})
        if self.student.mask_net is not None:
            self.student.mask_net.train()
            groups.append({"params": list(self.student.mask_net.parameters()), "lr": cfg.lr})
        self.optimizer = torch.optim.AdamW(groups, weight_decay=1e-4)
        self.base_lrs = [g["lr"] for g in groups]

    def losses(self, pixels: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """Loss terms on B crops ((S, S, 3) uint8 BGR): mimic, kd_cls, kd_box[, mask]."""
        x = to_tensor(pixels, self.device)
        with torch.no_grad():
            feats = backbone_features(self.teacher, x)
            t_neck = self.teacher.neck(feats)
            t_dec, t_raw = self.teacher.head(t_neck)
        s_neck = self.student.neck(feats)
        s_raw = head_raw(self.student, s_neck)
        weight = t_raw["scores"].sigmoid().amax(1)
        out = {
            "mimic": mimic_loss(s_neck, t_neck),
            "kd_cls": class_kd(s_raw["scores"], t_raw["scores"]),
            "kd_box": box_kd(s_raw["boxes"], t_raw["boxes"], weight, self.student.head.reg_max),
        }
        if self.student.mask_net is not None:
            out["mask"] = self._mask_loss(pixels, t_dec, x.shape[-2:])
        return out

    def _mask_loss(self, pixels, teacher_dec: torch.Tensor, hw) -> torch.Tensor:
        dets = non_max_suppression(teacher_dec, self.cfg.target_conf, 0.7, max_det=3000)
        shape = (hw[0] // MASK_NET_STRIDE, hw[1] // MASK_NET_STRIDE)
        targets = torch.stack([cell_targets(d[:, :4], shape, MASK_NET_STRIDE) for d in dets])
        logits = self.student.mask_net(batch_features(pixels, self.device))
        return mask_net_loss(logits, targets.to(self.device))

    def step(self, pixels: list[np.ndarray], progress: float = 0.0) -> dict[str, float]:
        """One optimisation step; ``progress`` in [0, 1] sets the cosine learning rate."""
        scale = 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
        for group, lr in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = lr * (0.05 + 0.95 * scale)
        terms = self.losses(pixels)
        loss = torch.stack(list(terms.values())).sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {k: float(v.detach()) for k, v in terms.items()}


@dataclass
class DistillResult:
    """A finished run: the checkpoint, the loss history and the report numbers."""

    checkpoint: str
    steps: int
    seconds: float
    first: dict[str, float]
    last: dict[str, float]
    report: dict = field(default_factory=dict)


def distill(cfg: DistillConfig, log: Callable[[str], None] = print) -> DistillResult:
    """Run distillation end to end and write the student checkpoint."""
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    if cfg.val_images:
        train_paths, held_paths = find_images(cfg.images), find_images(cfg.val_images)
    else:
        train_paths, held_paths = split_holdout(find_images(cfg.images), cfg.holdout, cfg.seed)
    teacher = load_model(fetch_weights(cfg.teacher), neck="pan")
    if teacher.cfg.neck != "pan":
        raise SparseYoloError("the teacher must have the pan neck", cfg.teacher)
    distiller = Distiller(teacher, build_student(teacher, cfg.mask), cfg, device)
    sampler = CropSampler(train_paths, cfg.imgsz, cfg.seed)
    log(f"distilling on {len(train_paths)} images, {len(held_paths)} held out, device {device}")
    t0 = time.perf_counter()
    history = _train_loop(distiller, sampler, cfg, log)
    seconds = time.perf_counter() - t0
    student = distiller.student.eval()
    export_checkpoint(copy.deepcopy(student).cpu(), cfg.out)  # kept even if the report fails
    from sparse_yolo.train.distill_report import build_report  # noqa: PLC0415 - heavy

    report = build_report(teacher, student, held_paths or train_paths, cfg, bool(held_paths), log)
    first, last = _window_mean(history[:5]), _window_mean(history[-5:])
    result = DistillResult(cfg.out, len(history), seconds, first, last, report)
    export_checkpoint(student.cpu(), cfg.out, distill=dataclasses.asdict(result))
    log(f"wrote {cfg.out}")
    return result


def _train_loop(distiller: Distiller, sampler: CropSampler, cfg: DistillConfig, log) -> list[dict]:
    budget = cfg.minutes * 60.0
    t0 = time.perf_counter()
    history: list[dict[str, float]] = []
    while True:
        elapsed = time.perf_counter() - t0
        step = len(history)
        if elapsed >= budget or (cfg.max_steps is not None and step >= cfg.max_steps):
            break
        progress = elapsed / budget if budget > 0 else 1.0
        if cfg.max_steps:
            progress = max(progress, step / cfg.max_steps)
        history.append(distiller.step(sampler.batch(cfg.batch), progress))
        if step % 50 == 0:
            log(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in history[-1].items()))
    if not history:
        raise SparseYoloError("no distillation step fitted in the time budget; raise --minutes")
    return history


def _window_mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}
