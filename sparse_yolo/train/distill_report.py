"""The report ``sparse-yolo distill`` prints and stores in the student checkpoint.

On images the student did not train on (the held-out split):

* agreement: recall of the teacher's full-resolution detections (conf 0.25, IoU >= 0.5, same
  class) by the student, densely (mask ``all``) and with its learned mask;
* mask: the learned mask's recall of the teacher's detections and its active fraction,
  next to the ``gradient`` mask's, after the threshold is calibrated on the same images;
* neck: GFLOPs and parameters of ``slim`` against ``pan`` at 640 x 640.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from sparse_yolo.config import MaskConfig
from sparse_yolo.detector import Detector
from sparse_yolo.model.yolo import SparseYOLO
from sparse_yolo.train.maskfit import calibrate_threshold, read_frame
from sparse_yolo.train.report import (
    agreement,
    detections,
    frames_with_boxes,
    mask_point,
    neck_cost,
)

REPORT_IMGSZ = 640


def build_report(
    teacher: SparseYOLO,
    student: SparseYOLO,
    paths: list[Path],
    cfg,
    held_out: bool,
    log: Callable[[str], None] = print,
    calibrate: bool = True,
) -> dict:
    """Measure the student against the teacher on ``paths``; see the module docstring.

    Args:
        teacher: the ``pan`` model.
        student: the distilled model (its mask net, if any, is calibrated unless not asked).
        paths: images to measure on.
        cfg: anything with ``recall_target`` (a ``DistillConfig``).
        held_out: whether ``paths`` were kept out of training (reported).
        log: receives the summary lines.
        calibrate: set the mask threshold on ``paths`` first (else keep the stored one).
    """
    read = [(p, read_frame(p)) for p in paths]
    paths = [p for p, im in read if im is not None]
    images = [im for _, im in read if im is not None]
    frames = frames_with_boxes(paths, [np.zeros((0, 6), np.float32)] * len(images), images)
    teacher_dets = detections(teacher, frames)
    frames = frames_with_boxes(paths, teacher_dets, images)
    report: dict = {
        "held_out": held_out,
        "images": [p.name for p in paths],
        "teacher_detections": int(sum(len(d) for d in teacher_dets)),
        "agreement_all": agreement(detections(student, frames), teacher_dets),
    }
    if student.mask_net is not None:
        report.update(_mask_report(teacher, student, frames, teacher_dets, cfg, calibrate))
    slim, pan = neck_cost(student, REPORT_IMGSZ), neck_cost(teacher, REPORT_IMGSZ)
    report["neck"] = {"slim": asdict(slim), "pan": asdict(pan), "imgsz": REPORT_IMGSZ}
    for line in report_lines(report):
        log(line)
    return report


def _mask_report(teacher, student, frames, teacher_dets, cfg, calibrate: bool) -> dict:
    thr = float(student.mask_net.threshold)
    if calibrate:
        thr = calibrate_threshold(student.mask_net, frames, MaskConfig(), cfg.recall_target)
    learned = mask_point("learned", frames, student.mask_net)
    gradient = mask_point("gradient", frames)
    student_learned = Detector(student, backend="dense", mask="learned")
    teacher_gradient = Detector(teacher, backend="dense", mask="gradient")
    return {
        "mask_threshold": thr,
        "mask_learned": asdict(learned),
        "mask_gradient": asdict(gradient),
        "agreement_learned": agreement(detections(student_learned, frames), teacher_dets),
        "agreement_teacher_gradient": agreement(detections(teacher_gradient, frames), teacher_dets),
    }


def report_lines(report: dict) -> list[str]:
    """Human-readable summary of a report dict."""
    where = "held-out" if report.get("held_out") else "training (no held-out split!)"
    n = report.get("teacher_detections", 0)
    lines = [
        f"evaluated on {len(report.get('images', []))} {where} images, {n} teacher detections",
        f"agreement (recall of teacher detections, IoU 0.5): slim/all {report['agreement_all']:.3f}",
    ]
    if "mask_learned" in report:
        ml, mg = report["mask_learned"], report["mask_gradient"]
        lines += [
            f"agreement slim/learned {report['agreement_learned']:.3f}, "
            f"pan/gradient {report['agreement_teacher_gradient']:.3f}",
            f"mask threshold {report['mask_threshold']:.3f}: learned recall {ml['recall']:.3f} "
            f"at {ml['active']:.3f} active; gradient recall {mg['recall']:.3f} "
            f"at {mg['active']:.3f} active",
        ]
    slim, pan = report["neck"]["slim"], report["neck"]["pan"]
    lines.append(
        f"neck at {report['neck']['imgsz']}px: slim {slim['gflops']:.2f} GFLOPs "
        f"{slim['params'] / 1e6:.3f} M params; pan {pan['gflops']:.2f} GFLOPs "
        f"{pan['params'] / 1e6:.3f} M params"
    )
    return lines
