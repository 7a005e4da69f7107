"""``sparse-yolo train`` and ``sparse-yolo distill``."""

from __future__ import annotations

from pathlib import Path

import click

from sparse_yolo.errors import SparseYoloError


@click.command()
@click.option(
    "--data",
    required=True,
    help="Ultralytics dataset YAML, e.g. VisDrone.yaml (downloaded and converted by "
    "Ultralytics on first use) or a path to your own.",
)
@click.option(
    "--model",
    "model_yaml",
    required=True,
    help="An Ultralytics model YAML (yolov8n.yaml, yolo11s.yaml, yolo26n.yaml, "
    "yolov8n-p2.yaml or a path to your own) or a sparse model YAML such as "
    "configs/sparse-yolov8n-slim.yaml (neck, mask net).",
)
@click.option(
    "--weights",
    help="Start from an Ultralytics detection .pt of the same family and scale (e.g. "
    "yolov8n.pt, downloaded by Ultralytics when missing; your best.pt) or a sparse-yolo "
    "checkpoint. Default: random init.",
)
@click.option("--epochs", type=click.IntRange(1), default=100, show_default=True)
@click.option("--imgsz", type=click.IntRange(32), default=640, show_default=True)
@click.option("--batch", type=int, default=16, show_default=True, help="-1: Ultralytics AutoBatch.")
@click.option(
    "--mask",
    default="gradient",
    show_default=True,
    help="Cell mask applied to every training image (all, gradient, learned): the model "
    "trains as it runs. all trains the dense function.",
)
@click.option("--cell", type=click.Choice(["8", "16", "32"]), default="16", show_default=True)
@click.option("--device", help="e.g. cpu, 0, or 0,1 for multi-GPU DDP (default: auto).")
@click.option("--project", type=click.Path(file_okay=False), help="Where runs go (Ultralytics').")
@click.option("--name", default="train", show_default=True, help="Run folder name.")
@click.option("--workers", type=click.IntRange(0), default=8, show_default=True)
@click.option("--amp/--no-amp", default=True, show_default=True, help="Mixed precision on GPU.")
@click.option("--plots/--no-plots", default=True, show_default=True)
def train(**opts) -> None:
    """Train a sparse model with Ultralytics' trainer (data, augmentation, loss, mAP).

    The sparse model is trained as it runs: every augmented image gets its cell mask and
    the stem applies the sparse active-set rules (through the dense reference backend,
    which supports autograd). The best weights are written as a sparse-yolo checkpoint,
    <project>/<name>/weights/sparse_best.pt, for `sparse-yolo detect --weights`.

    \b
    Example:
      sparse-yolo train --data VisDrone.yaml --model configs/sparse-yolov8n.yaml \\
          --weights yolov8n.pt --epochs 100 --imgsz 1344 --batch 8 --mask gradient
    """
    from sparse_yolo.train.trainer import TrainConfig  # noqa: PLC0415 - keep --help fast
    from sparse_yolo.train.trainer import train as run_train  # noqa: PLC0415

    cfg = TrainConfig(
        data=opts["data"],
        model=opts["model_yaml"],
        weights=opts["weights"],
        epochs=opts["epochs"],
        imgsz=opts["imgsz"],
        batch=opts["batch"],
        mask=opts["mask"],
        cell=int(opts["cell"]),
        workers=opts["workers"],
        device=opts["device"],
        project=opts["project"],
        name=opts["name"],
        ultralytics={"amp": opts["amp"], "plots": opts["plots"]},
    )
    _check_mask(cfg.mask)
    result = run_train(cfg)
    click.echo(f"sparse-yolo checkpoint: {result.checkpoint}")


TRAIN_MASKS = ("all", "gradient", "learned")  # masks computed from the pixels alone


def _check_mask(name: str) -> None:
    if name not in TRAIN_MASKS:
        raise SparseYoloError(f"unknown training mask {name!r}; known: {', '.join(TRAIN_MASKS)}")


@click.command()
@click.option(
    "--teacher",
    required=True,
    help="Ultralytics detection .pt (YOLOv8, YOLO11, YOLO26; P3-P5 heads) or a sparse-yolo "
    "pan checkpoint.",
)
@click.option(
    "--images",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of unlabeled images (searched recursively).",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Student checkpoint to write (slim neck + mask net).",
)
@click.option("--minutes", type=click.FloatRange(0, min_open=True), default=10.0, show_default=True)
@click.option("--steps", type=click.IntRange(1), help="Stop after this many steps at the latest.")
@click.option("--imgsz", type=click.IntRange(64), default=640, show_default=True, help="Crop edge.")
@click.option("--batch", type=click.IntRange(1), default=8, show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=1e-3, show_default=True)
@click.option(
    "--holdout",
    type=click.FloatRange(0, 0.9),
    default=0.2,
    show_default=True,
    help="Fraction of --images kept out of training for the report.",
)
@click.option(
    "--val-images",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Held-out images for the report instead of a --holdout split.",
)
@click.option("--mask/--no-mask", default=True, show_default=True, help="Train the mask net.")
@click.option("--device", help="torch device (default: CUDA if any).")
@click.option("--seed", type=int, default=0, show_default=True)
def distill(**opts) -> None:
    """Distill a slim-neck student (and the learned mask) from a teacher, without labels.

    The student keeps the teacher's backbone and head, and learns a GSConv/VoVGSCSP neck by
    mimicking the teacher's neck outputs (P3/P4/P5) and head outputs (class scores and box
    distributions) on random full-resolution crops. Unless --no-mask, the same run trains
    the learned foreground mask from the teacher's detections. The report (agreement on
    held-out images, mask recall and active fraction, neck GFLOPs/params against pan) is
    printed and stored in the checkpoint.

    \b
    Example:
      sparse-yolo distill --teacher yolov8n.pt --images frames/ --minutes 30 -o slim.pt
      sparse-yolo detect frame.jpg --weights slim.pt --mask learned
    """
    from sparse_yolo.train.distill import DistillConfig  # noqa: PLC0415 - keep --help fast
    from sparse_yolo.train.distill import distill as run_distill  # noqa: PLC0415

    if (opts["imgsz"] % 32) != 0:
        raise SparseYoloError(f"--imgsz must be a multiple of 32, got {opts['imgsz']}")
    cfg = DistillConfig(
        teacher=opts["teacher"],
        images=str(opts["images"]),
        out=str(opts["output"]),
        minutes=opts["minutes"],
        max_steps=opts["steps"],
        imgsz=opts["imgsz"],
        batch=opts["batch"],
        lr=opts["lr"],
        mask=opts["mask"],
        holdout=opts["holdout"],
        val_images=str(opts["val_images"]) if opts["val_images"] else None,
        device=opts["device"],
        seed=opts["seed"],
    )
    result = run_distill(cfg, log=click.echo)
    click.echo(
        f"{result.steps} steps in {result.seconds:.0f} s; mimic loss "
        f"{result.first.get('mimic', float('nan')):.4f} -> {result.last.get('mimic', float('nan')):.4f}"
    )
